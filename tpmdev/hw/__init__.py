"""The register models: typed Python compiled in place by Cython.

Each hot module here (see :data:`HOT_MODULES`) is ordinary Python that Cython
compiles with the declarations in ``ext/tpmdev/hw/<name>.pxd``. Python's
import system prefers the compiled extension when both are present, so
``import tpmdev.hw.tis`` gives the compiled model after a build and the source
otherwise. The source needs nothing but the runtime dependencies: where
Cython is not installed, its ``cython`` names come from
:mod:`tpmdev.hw._cython_shim`.

Selection, made once for all hot modules when this package is imported:

* ``TPMDEV_NO_EXTENSIONS=1`` -- load the pure-Python source even when a
  compiled module exists. It wins over ``TPMDEV_REQUIRE_EXTENSIONS``.
* otherwise the compiled modules, if every one of them is built and loads;
* otherwise the pure-Python source of every hot module (never a mix), unless
  ``TPMDEV_REQUIRE_EXTENSIONS=1``: then the import fails with
  :class:`ImportError` (CI sets it).

:data:`USE_EXTENSIONS` tells which was chosen. :func:`pure` loads the source
variant of a module under a private name, so tests can run the compiled and
the pure model side by side in one process; when the pure variant is in use
it is the module already loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from types import ModuleType

from tpmdev.errors import ConfigurationError

__all__ = ["HOT_MODULES", "USE_EXTENSIONS", "pure", "is_compiled"]

#: Modules of this package that are compiled, each after the hot modules it imports
#: (``crb`` and ``tis`` derive from ``core``'s base class).
HOT_MODULES = ("core", "tis", "crb")

_log = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def is_compiled(module: ModuleType) -> bool:
    """True if *module* was loaded from a compiled extension."""
    return not (getattr(module, "__file__", None) or "").endswith(".py")


def _exec_source(modname: str, name: str) -> ModuleType:
    """Execute the source of hot module *name* as module *modname* (registered in ``sys.modules``).

    A hot module imports the hot modules listed before it in
    :data:`HOT_MODULES` (a core derives from ``core``'s base class). When the
    source runs under a private name beside the compiled variant, those
    imports resolve to the pure variants while it runs: a pure core on a
    compiled base would not work (compiled methods cannot be overridden from
    Python), so the two never mix.
    """
    spec = importlib.util.spec_from_file_location(modname, os.path.join(_HERE, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    private = modname != f"{__name__}.{name}"
    deps = HOT_MODULES[: HOT_MODULES.index(name)] if private else ()
    saved = {dep: sys.modules.get(f"{__name__}.{dep}") for dep in deps}
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


def pure(name: str) -> ModuleType:
    """The pure-Python variant of hot module *name*.

    The loaded module itself when the pure variant is in use; otherwise the
    source loaded once under the private name ``tpmdev.hw._pure_<name>``.
    """
    if name not in HOT_MODULES:
        known = ", ".join(HOT_MODULES)
        raise ConfigurationError(f"{name!r} is not a hot module of tpmdev.hw (those are: {known})")
    loaded = sys.modules.get(f"{__name__}.{name}")
    if loaded is not None and not is_compiled(loaded):
        return loaded
    modname = f"{__name__}._pure_{name}"
    return sys.modules.get(modname) or _exec_source(modname, name)


def _load_pure() -> None:
    """Make every hot module the pure-Python one (reusing any source module already loaded)."""
    package = sys.modules[__name__]
    for name in HOT_MODULES:
        modname = f"{__name__}.{name}"
        module = sys.modules.get(modname)
        if module is None or is_compiled(module):
            module = _exec_source(modname, name)
        setattr(package, name, module)


def _load_compiled() -> str:
    """Import every compiled hot module; say why not where one is missing (empty string: all loaded)."""
    for name in HOT_MODULES:
        modname = f"{__name__}.{name}"
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            return f"{modname} did not load ({exc})"
        if not is_compiled(module):
            return f"{modname} is not built"
    return ""


def _load() -> bool:
    if _flag("TPMDEV_NO_EXTENSIONS"):
        _load_pure()
        return False
    problem = _load_compiled()
    if problem:
        if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
            raise ImportError(
                f"TPMDEV_REQUIRE_EXTENSIONS is set but the compiled register models are missing: {problem}. "
                "Build them with `pip install .` (or `python setup.py build_ext --inplace` in a source tree; "
                "both need a C compiler), or unset TPMDEV_REQUIRE_EXTENSIONS to run the pure-Python models"
            )
        _log.debug("using the pure-Python register models: %s", problem)
        _load_pure()
        return False
    return True


#: True when the compiled register models are in use.
USE_EXTENSIONS: bool = _load()
