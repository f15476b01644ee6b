"""Build: compile the register models of tpmdev/hw in place with Cython.

The hot modules are typed Python (Cython pure-Python mode); the ``.pxd``
files under ``ext/`` add C declarations and no behaviour. Environment:

* ``TPMDEV_NO_EXTENSIONS=1``: build nothing; the package runs pure Python.
* ``TPMDEV_REQUIRE_EXTENSIONS=1``: a failed compile fails the build (CI).
* ``TPMDEV_DEBUG_BUILD=1``: bounds checks and line tracing on.

Cython regenerates a ``.c`` file only when a source is newer than it, so a
change of directives (the debug flag), of Cython or of an augmenting ``.pxd``
would reuse a stale one. Each generated ``.c`` therefore ends with a stamp
line carrying a digest of everything it was generated from (sources,
``.pxd`` files, directives, macros, Cython version); a missing or different
stamp forces regeneration.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from typing import Any

HOT_MODULES = ["core", "tis", "crb"]

#: Optional native glue written as ``.pyx`` (see ext/README.md): module -> source. Built after the
#: hot modules it cimports; a failure to build one never fails the build (the package falls back to
#: Python callbacks), unless TPMDEV_REQUIRE_EXTENSIONS is set.
NATIVE_MODULES = {
    "tpmdev.adapters._unicorn_native": os.path.join("ext", "tpmdev", "adapters", "_unicorn_native.pyx"),
}

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
    "initializedcheck": False,
}

#: What TPMDEV_DEBUG_BUILD=1 changes.
DEBUG_DIRECTIVES = {"boundscheck": True, "wraparound": True, "initializedcheck": True, "linetrace": True}
DEBUG_MACROS = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

INCLUDE_PATH = ["ext"]
_STAMP = "tpmdev-build-inputs"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def build_settings(debug: bool) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The Cython directives and C macros of a release or a debug build."""
    directives = dict(COMPILER_DIRECTIVES)
    if debug:
        directives.update(DEBUG_DIRECTIVES)
        return directives, list(DEBUG_MACROS)
    return directives, []


def build_inputs(
    name: str, directives: dict[str, Any], macros: list[tuple[str, str]], cython: str, source: str = ""
) -> str:
    """Digest of everything the ``.c`` of hot module *name* (or of the
    ``.pyx`` *source*) is generated from."""
    digest = hashlib.sha256()
    settings = {"cython": cython, "directives": directives, "macros": macros, "include_path": INCLUDE_PATH}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    pxds = sorted(glob.glob(os.path.join(INCLUDE_PATH[0], "**", "*.pxd"), recursive=True))
    for path in [source or os.path.join("tpmdev", "hw", f"{name}.py"), *pxds]:
        with open(path, "rb") as f:
            digest.update(f"\0{path}\0".encode() + f.read())
    return digest.hexdigest()


def stamp_line(inputs: str) -> bytes:
    """The last line of a ``.c`` generated from *inputs* (a C comment)."""
    return f"/* {_STAMP} {inputs} */\n".encode()


def needs_cythonize(c_file: str, inputs: str) -> bool:
    """True unless *c_file* exists and was generated from *inputs* (its stamp says so)."""
    want = stamp_line(inputs)
    try:
        with open(c_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - len(want)))
            return f.read() != want
    except FileNotFoundError:
        return True


def hot_extensions() -> list[Any]:
    """Cythonize the hot modules (when their ``.c`` is stale) and describe their extensions."""
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
    from setuptools import Extension

    directives, macros = build_settings(_flag("TPMDEV_DEBUG_BUILD"))
    extensions = []
    for name in HOT_MODULES:
        source = os.path.join("tpmdev", "hw", f"{name}.py")
        c_file = source[: -len(".py")] + ".c"
        inputs = build_inputs(name, directives, macros, cython_version)
        stale = needs_cythonize(c_file, inputs)
        module = Extension(f"tpmdev.hw.{name}", [source], define_macros=macros)
        extensions += cythonize(
            [module], include_path=INCLUDE_PATH, compiler_directives=directives, quiet=True, force=stale
        )
        if needs_cythonize(c_file, inputs):  # freshly generated: record what from
            with open(c_file, "ab") as f:
                f.write(stamp_line(inputs))
    for module_name, source in NATIVE_MODULES.items():
        if not os.path.exists(source):  # (a partial tree: the build tests copy the hot modules only)
            continue
        c_file = source[: -len(".pyx")] + ".c"
        inputs = build_inputs(module_name, directives, macros, cython_version, source)
        stale = needs_cythonize(c_file, inputs)
        module = Extension(module_name, [source], define_macros=macros)
        try:
            extensions += cythonize(
                [module], include_path=INCLUDE_PATH, compiler_directives=directives, quiet=True, force=stale
            )
        except Exception as exc:  # optional: the package works without it
            if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
                raise
            print(f"tpmdev: could not cythonize {module_name} ({exc}); skipping it", file=sys.stderr)
            continue
        if needs_cythonize(c_file, inputs):
            with open(c_file, "ab") as f:
                f.write(stamp_line(inputs))
    return extensions


def _optional_build_ext() -> type:
    """build_ext that falls back to pure Python unless extensions are required."""
    from setuptools.command.build_ext import build_ext

    class build_ext_optional(build_ext):  # setuptools names commands in lower case
        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:
                if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
                    raise
                print(
                    f"tpmdev: compiling the register models failed ({exc}); using pure Python",
                    file=sys.stderr,
                )

        def build_extension(self, ext: Any) -> None:
            try:
                super().build_extension(ext)
            except Exception as exc:
                if _flag("TPMDEV_REQUIRE_EXTENSIONS"):
                    raise
                print(f"tpmdev: could not compile {ext.name} ({exc}); using pure Python", file=sys.stderr)

    return build_ext_optional


if __name__ == "__main__":  # as setuptools runs it; tests import the functions above
    from setuptools import setup

    setup(ext_modules=hot_extensions(), cmdclass={"build_ext": _optional_build_ext()})
