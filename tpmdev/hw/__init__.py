"""The register models: typed Python compiled in place by Cython.

Each hot module here (see :data:`HOT_MODULES`) is ordinary Python that Cython
compiles with the declarations in ``ext/tpmdev/hw/<name>.pxd``. Python's
import system prefers the compiled extension when both are present, so
``import tpmdev.hw.tis`` gives the compiled model after a build and the source
otherwise.

Environment:

* ``TPMDEV_NO_EXTENSIONS=1`` -- load the pure-Python source even when a
  compiled module exists (``USE_EXTENSIONS`` is then False).
* ``TPMDEV_REQUIRE_EXTENSIONS=1`` -- fail the import when a compiled module is
  missing, instead of silently falling back (CI sets it).

:func:`pure` loads the source variant of a module under a private name, so
tests can run the compiled and the pure model side by side in one process.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

__all__ = ["HOT_MODULES", "USE_EXTENSIONS", "pure", "is_compiled"]

#: Modules of this package that are compiled.
HOT_MODULES = ("core", "tis", "crb")

_HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def is_compiled(module: ModuleType) -> bool:
    """True if *module* was loaded from a compiled extension."""
    return not (getattr(module, "__file__", None) or "").endswith(".py")


def pure(name: str) -> ModuleType:
    """Load (once) the pure-Python source of hot module *name*.

    A hot module may import the hot modules listed before it in
    :data:`HOT_MODULES` (``crb`` derives from ``core``'s base class); while
    its source runs, those names resolve to their pure variants too, so a
    pure module never mixes with compiled code.
    """
    modname = f"tpmdev.hw._pure_{name}"
    module = sys.modules.get(modname)
    if module is None:
        deps = HOT_MODULES[: HOT_MODULES.index(name)] if name in HOT_MODULES else ()
        saved = {dep: sys.modules.get(f"{__name__}.{dep}") for dep in deps}
        spec = importlib.util.spec_from_file_location(modname, os.path.join(_HERE, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            for dep in deps:
                sys.modules[f"{__name__}.{dep}"] = pure(dep)
            sys.modules[modname] = module
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(modname, None)
            raise
        finally:
            for dep, previous in saved.items():
                if previous is None:
                    sys.modules.pop(f"{__name__}.{dep}", None)
                else:
                    sys.modules[f"{__name__}.{dep}"] = previous
    return module


def _built(name: str) -> bool:
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    return spec is not None and not (spec.origin or "").endswith(".py")


def _load() -> bool:
    # All compiled or all pure: a compiled base class and a pure subclass
    # (or the reverse) do not mix, so a partial build loads the sources.
    compiled = not _flag("TPMDEV_NO_EXTENSIONS") and all(_built(name) for name in HOT_MODULES)
    if not compiled:
        if _flag("TPMDEV_REQUIRE_EXTENSIONS") and not _flag("TPMDEV_NO_EXTENSIONS"):
            raise ImportError(
                "TPMDEV_REQUIRE_EXTENSIONS is set but the compiled register models are missing: "
                "build them with `pip install -e .` (needs Cython>=3 and a C compiler)"
            )
        for name in HOT_MODULES:
            sys.modules[f"{__name__}.{name}"] = globals()[name] = pure(name)
        return False
    for name in HOT_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return True


#: True when the compiled register models are in use.
USE_EXTENSIONS: bool = _load()
