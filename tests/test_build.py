"""How the register models are built and chosen, as a new user meets them.

The selection rule of ``tpmdev.hw`` (``USE_EXTENSIONS``,
``TPMDEV_NO_EXTENSIONS``, ``TPMDEV_REQUIRE_EXTENSIONS``, a build without a
compiler, an install without Cython) is decided once per process at import,
so each case runs in a fresh interpreter. There, import hooks stand in for
the machine: one makes ``cython`` unimportable (Cython is a build tool, not a
runtime dependency), one hides the compiled modules (what a build without a
C compiler leaves), one makes them fail to load.

The static checks keep every hot module on the one shared way to run
without Cython (:mod:`tpmdev.hw._cython_shim`), and the build checks make
sure a change of Cython directives (``TPMDEV_DEBUG_BUILD``) regenerates the C
code instead of reusing a stale file.
"""

from __future__ import annotations

import ast
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tpmdev
import tpmdev.hw
from tpmdev.hw import _cython_shim

ROOT = Path(__file__).resolve().parent.parent
HW = ROOT / "tpmdev" / "hw"

# -- a fresh interpreter on a chosen machine ---------------------------------------------------------------

_BLOCK_CYTHON = """
class _NoCython:
    # Cython is not installed.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("cython", "Cython"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoCython())
"""

_HIDE_COMPILED = """
class _NoCompiled:
    # Only the sources of tpmdev.hw exist, as after a build without a C compiler.
    def find_spec(self, name, path=None, target=None):
        if name.startswith("tpmdev.hw.") and path:
            source = os.path.join(path[0], name.rpartition(".")[2] + ".py")
            if os.path.exists(source):
                return importlib.util.spec_from_file_location(name, source)
        return None
sys.meta_path.insert(0, _NoCompiled())
"""

_BREAK_COMPILED = """
class _Broken(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError("undefined symbol: __pyx_stand_in (a compiled module that does not load)")
    def exec_module(self, module):
        raise AssertionError("not reached")
class _BrokenCompiled:
    # The compiled modules are there but do not load (built for another interpreter, say).
    def find_spec(self, name, path=None, target=None):
        if name.rpartition(".")[0] == "tpmdev.hw" and name.rpartition(".")[2] in HOT:
            return importlib.util.spec_from_loader(name, _Broken())
        return None
sys.meta_path.insert(0, _BrokenCompiled())
"""


def run_python(
    code: str,
    *,
    env: dict[str, str] | None = None,
    no_cython: bool = False,
    no_compiled: bool = False,
    broken_compiled: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter with only the given tpmdev variables set."""
    prelude = "import importlib.abc, importlib.util, os, sys\n"
    if no_cython:
        prelude += _BLOCK_CYTHON
    if no_compiled:
        prelude += _HIDE_COMPILED
    if broken_compiled:
        prelude += f"HOT = {tpmdev.hw.HOT_MODULES!r}\n" + _BREAK_COMPILED
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TPMDEV_")}
    environ.update(env or {})
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_python(code: str, **kwargs: Any) -> str:
    result = run_python(code, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


# What every case checks about the pure variant once tpmdev is imported: one module per hot module,
# the same object as a package attribute, in sys.modules and behind tpmdev.TIS, and a device that works.
_PURE_IN_USE = """
import tpmdev, tpmdev.hw
from tpmdev.hw import tis as imported
assert tpmdev.USE_EXTENSIONS is False
for name in tpmdev.hw.HOT_MODULES:
    module = getattr(tpmdev.hw, name)
    assert module is sys.modules["tpmdev.hw." + name], name
    assert module.__name__ == "tpmdev.hw." + name, module.__name__
    assert module.__file__.endswith(os.sep + name + ".py"), module.__file__
    assert not tpmdev.hw.is_compiled(module)
    assert tpmdev.hw.pure(name) is module
assert imported is tpmdev.hw.tis and tpmdev.TIS._Core is tpmdev.hw.tis.TisCore
with tpmdev.TIS(tpmdev.backends.Builtin()) as dev:
    dev.write(0x000, 0x02, 1)
    assert dev.read(0x000, 1) == 0xA1
    assert dev.read(0x018) == 0x04100000, hex(dev.read(0x018))
"""


def test_no_extensions_selects_the_pure_modules() -> None:
    check_python(_PURE_IN_USE, env={"TPMDEV_NO_EXTENSIONS": "1"})


def test_no_extensions_wins_over_require_extensions() -> None:
    check_python(_PURE_IN_USE, env={"TPMDEV_NO_EXTENSIONS": "1", "TPMDEV_REQUIRE_EXTENSIONS": "1"})


@pytest.mark.parametrize(
    ("env", "no_compiled"),
    [({}, True), ({"TPMDEV_NO_EXTENSIONS": "1"}, False)],
    ids=["no-compiler", "no-extensions"],
)
def test_pure_variant_runs_without_cython(env: dict[str, str], no_compiled: bool) -> None:
    out = check_python(
        _PURE_IN_USE
        + """
import tpmdev.cli
from tpmdev.hw import _cython_shim
assert tpmdev.hw.tis.cython is _cython_shim
assert "cython" not in sys.modules and "Cython" not in sys.modules, "the shim must not pose as Cython"
assert tpmdev.cli.main(["demo"]) == 0
""",
        env=env,
        no_cython=True,
        no_compiled=no_compiled,
    )
    assert out.count("rc=0x0 (success)") == 4


def test_build_without_compiler_falls_back_to_pure() -> None:
    check_python(_PURE_IN_USE, no_compiled=True)


def test_require_extensions_refuses_the_fallback() -> None:
    result = run_python("import tpmdev", env={"TPMDEV_REQUIRE_EXTENSIONS": "1"}, no_compiled=True)
    assert result.returncode != 0
    assert "ImportError: TPMDEV_REQUIRE_EXTENSIONS is set but the compiled register models are missing" in (
        result.stderr
    )
    assert "tpmdev.hw.core is not built" in result.stderr


def test_compiled_module_that_does_not_load_falls_back_to_pure() -> None:
    check_python(_PURE_IN_USE, broken_compiled=True)
    result = run_python("import tpmdev", env={"TPMDEV_REQUIRE_EXTENSIONS": "1"}, broken_compiled=True)
    assert result.returncode != 0
    assert "tpmdev.hw.core did not load (undefined symbol: __pyx_stand_in" in result.stderr


@pytest.mark.parametrize("env", [{}, {"TPMDEV_REQUIRE_EXTENSIONS": "1"}], ids=["default", "required"])
def test_compiled_modules_preferred(compiled_core_class: type, env: dict[str, str]) -> None:
    check_python(
        """
import tpmdev, tpmdev.hw
assert tpmdev.USE_EXTENSIONS is True
for name in tpmdev.hw.HOT_MODULES:
    module = getattr(tpmdev.hw, name)
    assert module is sys.modules["tpmdev.hw." + name] and tpmdev.hw.is_compiled(module), module
    twin = tpmdev.hw.pure(name)
    assert twin.__name__ == "tpmdev.hw._pure_" + name and not tpmdev.hw.is_compiled(twin)
    assert tpmdev.hw.pure(name) is twin
assert tpmdev.TIS._Core is tpmdev.hw.tis.TisCore
""",
        env=env,
    )


def test_pure_refuses_unknown_module() -> None:
    with pytest.raises(tpmdev.ConfigurationError, match=r"'regs' is not a hot module of tpmdev.hw"):
        tpmdev.hw.pure("regs")


def test_compiled_core_is_an_extension_type(compiled_core_class: type) -> None:
    # Cython saw the declarations: C attributes and cdef methods, invisible from Python.
    core = compiled_core_class(2, 4096, 5, None, lambda kind: None)
    pure_core = tpmdev.hw.pure("tis").TisCore(2, 4096, 5, None, lambda kind: None)
    assert not hasattr(core, "__dict__") and hasattr(pure_core, "__dict__")
    assert not hasattr(core, "_read") and hasattr(pure_core, "_read")


# -- every hot module uses the one shim, and the shim is a faithful subset of Cython's API -------------------

SHARED_IMPORT = """
try:
    import cython
except ImportError:  # Cython builds the package; the pure variant runs without it
    from tpmdev.hw import _cython_shim as cython
"""


def _cython_names(tree: ast.AST) -> set[str]:
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cython"
    }


def _imports_of_cython(tree: ast.AST) -> list[ast.stmt]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(alias.name == "cython" or alias.asname == "cython" for alias in node.names)
    ]


@pytest.mark.parametrize("name", tpmdev.hw.HOT_MODULES)
def test_hot_module_imports_cython_the_shared_way(name: str) -> None:
    source = (HW / f"{name}.py").read_text()
    assert SHARED_IMPORT in source, f"tpmdev/hw/{name}.py must import cython exactly as:{SHARED_IMPORT}"
    tree = ast.parse(source)
    assert len(_imports_of_cython(tree)) == 2, "one import of cython, one of the shim"
    missing = _cython_names(tree) - set(_cython_shim.__all__)
    assert not missing, f"add {sorted(missing)} to tpmdev/hw/_cython_shim.py"


def test_only_hot_modules_use_cython() -> None:
    users = {path.stem for path in HW.glob("*.py") if _imports_of_cython(ast.parse(path.read_text()))}
    assert users == set(tpmdev.hw.HOT_MODULES)


def test_hot_modules_agree_with_the_build() -> None:
    setup = runpy.run_path(str(ROOT / "setup.py"), run_name="tpmdev_setup")
    assert tuple(setup["HOT_MODULES"]) == tpmdev.hw.HOT_MODULES
    for name in tpmdev.hw.HOT_MODULES:
        assert (ROOT / "ext" / "tpmdev" / "hw" / f"{name}.pxd").is_file(), name


def test_shim_names_are_cythons(cython_module: ModuleType) -> None:
    for name in _cython_shim.__all__:
        assert hasattr(cython_module, name), f"Cython has no cython.{name}"


def test_shim_behaves_as_cython_in_python(cython_module: ModuleType) -> None:
    cy, shim = cython_module, _cython_shim
    assert shim.compiled is False and cy.compiled is False
    for name in ("int", "uint", "longlong", "Py_ssize_t", "size_t", "uchar"):
        assert getattr(shim, name)(7) == getattr(cy, name)(7) == 7
    assert shim.bint(3) is cy.bint(3) is True
    assert shim.declare(shim.int) is cy.declare(cy.int) is None
    assert shim.declare(shim.uint, 5) == cy.declare(cy.uint, 5) == 5
    assert shim.cast(shim.int, 2.7) == cy.cast(cy.int, 2.7) == 2
    assert shim.cast(shim.bint, 0) is cy.cast(cy.bint, 0) is False

    class Plain:
        def method(self) -> int:
            return 1

    for decorator in ("cclass", "final"):
        assert getattr(shim, decorator)(Plain) is Plain
    for decorator in ("cfunc", "ccall", "inline"):
        assert getattr(shim, decorator)(Plain.method) is Plain.method
    assert shim.locals(n=shim.int)(Plain.method) is Plain.method
    assert shim.returns(shim.int)(Plain.method) is Plain.method
    assert shim.exceptval(-1, check=False)(Plain.method) is Plain.method
    for directive in ("boundscheck", "wraparound", "cdivision", "initializedcheck"):
        assert getattr(shim, directive)(False)(Plain.method) is Plain.method
        with getattr(shim, directive)(False):
            pass


# -- a change of build settings regenerates the C code ----------------------------------------------


@pytest.fixture
def setup_module() -> dict[str, Any]:
    """The functions of setup.py (importing it does not run setup())."""
    return runpy.run_path(str(ROOT / "setup.py"), run_name="tpmdev_setup")


def test_build_inputs_cover_settings_and_sources(
    setup_module: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for part in ("tpmdev/hw/tis.py", "ext/tpmdev/hw/tis.pxd"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, tmp_path / part)
    monkeypatch.chdir(tmp_path)
    build_settings, build_inputs = setup_module["build_settings"], setup_module["build_inputs"]
    release = build_inputs("tis", *build_settings(False), "3.0.0")
    assert release == build_inputs("tis", *build_settings(False), "3.0.0")
    assert release != build_inputs("tis", *build_settings(True), "3.0.0")
    assert release != build_inputs("tis", *build_settings(False), "3.0.1")
    with open("ext/tpmdev/hw/tis.pxd", "a") as f:
        f.write("\n")
    assert release != build_inputs("tis", *build_settings(False), "3.0.0")


def test_needs_cythonize_reads_the_stamp(setup_module: dict[str, Any], tmp_path: Path) -> None:
    needs_cythonize, stamp_line = setup_module["needs_cythonize"], setup_module["stamp_line"]
    c_file = tmp_path / "tis.c"
    assert needs_cythonize(str(c_file), "aaaa")  # no file
    c_file.write_bytes(b"/* Generated by Cython */\nint x;\n")
    assert needs_cythonize(str(c_file), "aaaa")  # generated by an earlier build: no stamp
    c_file.write_bytes(b"/* Generated by Cython */\nint x;\n" + stamp_line("aaaa"))
    assert not needs_cythonize(str(c_file), "aaaa")
    assert needs_cythonize(str(c_file), "bbbb")


@pytest.mark.slow
def test_debug_build_regenerates_stale_c(cython_module: ModuleType, tmp_path: Path) -> None:
    # Cythonizes the hot modules in a copy of the tree (no C compiler needed): release, debug, release,
    # release; tis.c is the one looked at.
    for part in (
        "setup.py",
        *(str(p.relative_to(ROOT)) for p in ROOT.glob("tpmdev/hw/*.py")),
        *(str(p.relative_to(ROOT)) for p in ROOT.glob("ext/**/*.pxd")),
    ):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, tmp_path / part)
    c_file = tmp_path / "tpmdev" / "hw" / "tis.c"

    def cythonize(debug: bool) -> str:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TPMDEV_")}
        if debug:
            environ["TPMDEV_DEBUG_BUILD"] = "1"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import runpy; runpy.run_path('setup.py', run_name='s')['hot_extensions']()",
            ],
            cwd=tmp_path,
            env=environ,
            check=True,
            capture_output=True,
            timeout=300,
        )
        return c_file.read_text()

    traced = "__Pyx_TraceLine("  # line tracing, on only in the debug build
    assert traced not in cythonize(debug=False)
    assert traced in cythonize(debug=True)
    assert traced not in cythonize(debug=False)
    before = c_file.stat().st_mtime_ns
    cythonize(debug=False)
    assert c_file.stat().st_mtime_ns == before, "an up-to-date .c must not be regenerated"
