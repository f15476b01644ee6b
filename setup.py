"""Build: compile the register models of tpmdev/hw in place with Cython.

The hot modules are typed Python (Cython pure-Python mode); the ``.pxd``
files under ``ext/`` add C declarations and no behaviour. Environment:

* ``TPMDEV_NO_EXTENSIONS=1``: build nothing; the package runs pure Python.
* ``TPMDEV_REQUIRE_EXTENSIONS=1``: a failed compile fails the build (CI).
* ``TPMDEV_DEBUG_BUILD=1``: bounds checks and line tracing on.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

HOT_MODULES = ["core", "tis", "crb"]

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
    "initializedcheck": False,
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def _extensions() -> list:
    if _flag("TPMDEV_NO_EXTENSIONS"):
        return []
    try:
        from Cython import __version__ as cython_version
        from Cython.Build import cythonize
    except ImportError:
        if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
            raise
        print("tpmdev: Cython>=3 not found; installing the pure-Python register models", file=sys.stderr)
        return []
    if int(cython_version.split(".")[0]) < 3:
        raise RuntimeError(f"tpmdev needs Cython>=3 to build, found {cython_version}")
    directives = dict(COMPILER_DIRECTIVES)
    macros = []
    if _flag("TPMDEV_DEBUG_BUILD"):
        directives.update(boundscheck=True, wraparound=True, initializedcheck=True, linetrace=True)
        macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    from setuptools import Extension

    modules = [
        Extension(f"tpmdev.hw.{name}", [f"tpmdev/hw/{name}.py"], define_macros=macros) for name in HOT_MODULES
    ]
    return cythonize(modules, include_path=["ext"], compiler_directives=directives, quiet=True)


class _OptionalBuildExt:
    """build_ext that falls back to pure Python unless extensions are required."""

    @staticmethod
    def make() -> type:
        from setuptools.command.build_ext import build_ext

        class build_ext_optional(build_ext):  # noqa: N801 - setuptools command name
            def run(self) -> None:
                try:
                    super().run()
                except Exception as exc:
                    if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
                        raise
                    print(f"tpmdev: compiling the register models failed ({exc}); using pure Python",
                          file=sys.stderr)

            def build_extension(self, ext: object) -> None:
                try:
                    super().build_extension(ext)
                except Exception as exc:
                    if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
                        raise
                    print(f"tpmdev: could not compile {ext.name} ({exc}); using pure Python",  # type: ignore[attr-defined]
                          file=sys.stderr)

        return build_ext_optional


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt.make()})
