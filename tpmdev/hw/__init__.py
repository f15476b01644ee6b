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
HOT_MODULES = ("tis",)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def is_compiled(module: ModuleType) -> bool:
    """True if *module* was loaded from a compiled extension."""
    return not (getattr(module, "__file__", None) or "").endswith(".py")


def pure(name: str) -> ModuleType:
    """Load (once) the pure-Python source of hot module *name*."""
    modname = f"tpmdev.hw._pure_{name}"
    module = sys.modules.get(modname)
    if module is None:
        spec = importlib.util.spec_from_file_location(modname, os.path.join(_HERE, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
    return module


def _load() -> bool:
    if _flag("TPMDEV_NO_EXTENSIONS"):
        for name in HOT_MODULES:
            sys.modules[f"{__name__}.{name}"] = pure(name)
        return False
    compiled = all(is_compiled(importlib.import_module(f"{__name__}.{name}")) for name in HOT_MODULES)
    if not compiled and _flag("TPMDEV_REQUIRE_EXTENSIONS"):
        raise ImportError(
            "TPMDEV_REQUIRE_EXTENSIONS is set but the compiled register models are missing: "
            "build them with `pip install -e .` (needs Cython>=3 and a C compiler)"
        )
    return compiled


#: True when the compiled register models are in use.
USE_EXTENSIONS: bool = _load()
