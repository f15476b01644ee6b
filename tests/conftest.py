"""Shared fixtures.

``impl`` runs a test once per register-model variant, in the manner of
aio-libs: id ``c`` is the compiled model, id ``py`` the pure-Python source
of the same module. Which variants exist decides which ids there are:

* compiled models in use (``tpmdev.USE_EXTENSIONS``): ``c`` and ``py``;
* ``TPMDEV_REQUIRE_EXTENSIONS`` set: ``c`` and ``py`` always, and ``c``
  fails where the compiled models are missing;
* otherwise (a pure install, ``TPMDEV_NO_EXTENSIONS=1``): ``py`` only.

Tests that need what a pure install lacks on purpose (the compiled models,
through ``compiled_core_class``; Cython itself, through ``cython_module``;
tpm2-pytss, the ``tss`` extra, through ``tss``)
are deselected, never skipped, in a pure install without
``TPMDEV_REQUIRE_EXTENSIONS``, and the summary says how many and why. A
pure install therefore runs every behavioural test once and skips nothing.

Every test also checks that no device worker thread it started outlives it
(a device dropped without ``close()`` must be collected with its thread).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest

import tpmdev
import tpmdev.hw
import tpmdev.hw.core
import tpmdev.hw.crb
import tpmdev.hw.tis


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0")


def _cython_importable() -> bool:
    try:
        importlib.import_module("cython")
    except ImportError:
        return False
    return True


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


REQUIRE = _flag("TPMDEV_REQUIRE_EXTENSIONS")
#: The variants this run tests (the ids of ``impl``).
VARIANTS = ["c", "py"] if tpmdev.USE_EXTENSIONS or REQUIRE else ["py"]
#: Fixture name -> what it needs, for tests that cannot run in every install.
NEEDS = {
    "compiled_core_class": ("the compiled register models", tpmdev.USE_EXTENSIONS),
    "compiled_crb_core_class": ("the compiled register models", tpmdev.USE_EXTENSIONS),
    "cython_module": ("Cython", _cython_importable()),
    "tss": ("tpm2-pytss (the tss extra)", _importable("tpm2_pytss")),
}
_DROPPED = pytest.StashKey[tuple[int, list[str]]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRE:
        return  # the fixtures fail where something is missing
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    reasons: set[str] = set()
    for item in items:
        missing = [
            what
            for name, (what, there) in NEEDS.items()
            if not there and name in getattr(item, "fixturenames", ())
        ]
        if missing:
            dropped.append(item)
            reasons.update(missing)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        config.stash[_DROPPED] = (len(dropped), sorted(reasons))


def pytest_report_header(config: pytest.Config) -> str:
    models = "compiled" if tpmdev.USE_EXTENSIONS else "pure Python"
    return f"tpmdev: {models} register models in use; testing variants {', '.join(VARIANTS)}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _DROPPED in config.stash:
        count, reasons = config.stash[_DROPPED]
        terminalreporter.write_line(
            f"tpmdev: {count} tests deselected: they need {' and '.join(reasons)}, which this install "
            "does not have (with TPMDEV_REQUIRE_EXTENSIONS=1 they run, and fail)"
        )


def _require_compiled() -> None:
    if not tpmdev.USE_EXTENSIONS:
        pytest.fail(
            "compiled register models are not in use (TPMDEV_REQUIRE_EXTENSIONS is set, "
            "TPMDEV_NO_EXTENSIONS too?): build them or unset TPMDEV_REQUIRE_EXTENSIONS"
        )


def _pure_tis_class() -> type[tpmdev.TIS]:
    core = tpmdev.hw.pure("tis").TisCore
    if core is tpmdev.TIS._Core:
        return tpmdev.TIS

    class PureTIS(tpmdev.TIS):
        _Core = core

    PureTIS.__name__ = PureTIS.__qualname__ = "TIS"
    return PureTIS


@pytest.fixture(params=VARIANTS)
def impl(request: pytest.FixtureRequest) -> str:
    """The variant under test: 'c' (compiled) or 'py' (pure Python)."""
    if request.param == "c":
        _require_compiled()
    return str(request.param)


@pytest.fixture
def compiled_core_class() -> type:
    """The compiled ``TisCore``, for tests that need both variants at once."""
    _require_compiled()
    return tpmdev.hw.tis.TisCore


@pytest.fixture
def cython_module() -> ModuleType:
    """Cython's ``cython`` module (Cython installed), for the build tests."""
    try:
        return importlib.import_module("cython")
    except ImportError:
        pytest.fail("Cython is not installed (the test extra installs it)")


@pytest.fixture
def tss() -> ModuleType:
    """tpm2-pytss (the ``tss`` extra), for the tests of :mod:`tpmdev.tcti`."""
    try:
        return importlib.import_module("tpm2_pytss")
    except ImportError:
        pytest.fail("tpm2-pytss is not installed (pip install '.[tss]'; it builds against libtss2-dev)")


@pytest.fixture
def tis_class(impl: str) -> type[tpmdev.TIS]:
    """``tpmdev.TIS`` backed by the variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.TIS
    return _pure_tis_class()


@pytest.fixture
def tis_sysbus_class(impl: str) -> type[tpmdev.TISSysbus]:
    """``tpmdev.TISSysbus`` backed by the variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.TISSysbus
    core = tpmdev.hw.pure("tis").TisCore

    class PureTISSysbus(tpmdev.TISSysbus):
        _Core = core

    PureTISSysbus.__name__ = PureTISSysbus.__qualname__ = "TISSysbus"
    return PureTISSysbus


@pytest.fixture
def core_class(impl: str) -> type:
    """``TisCore`` (the sans-IO register model) of the variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.hw.tis.TisCore
    core: type = tpmdev.hw.pure("tis").TisCore
    return core


def _is_device_worker(thread: threading.Thread) -> bool:
    return thread.name.startswith("tpmdev-") and thread.name.endswith("-worker")


@pytest.fixture(autouse=True)
def no_worker_thread_left() -> Iterator[None]:
    """Fail a test that leaves a device worker thread running after it."""
    before = set(threading.enumerate())
    yield
    started = [t for t in threading.enumerate() if t not in before and _is_device_worker(t)]
    if not started:
        return
    gc.collect()  # devices dropped without close() end their worker when collected
    for thread in started:
        thread.join(10)
    alive = [t.name for t in started if t.is_alive()]
    assert not alive, f"device worker threads still running after the test: {alive}"


def _variant(impl: str, module: str, name: str) -> type:
    source = getattr(tpmdev.hw, module) if impl == "c" else tpmdev.hw.pure(module)
    cls: type = getattr(source, name)
    return cls


@pytest.fixture
def crb_core_class(impl: str) -> type:
    """``CrbCore`` of the variant chosen by ``impl``."""
    return _variant(impl, "crb", "CrbCore")


@pytest.fixture
def compiled_crb_core_class() -> type:
    """The compiled ``CrbCore``, for tests that need both variants at once."""
    _require_compiled()
    return tpmdev.hw.crb.CrbCore


@pytest.fixture
def recording_core_class(impl: str) -> type:
    """``RecordingCore`` (the bare access layer) of the variant chosen by ``impl``."""
    return _variant(impl, "core", "RecordingCore")


@pytest.fixture
def crb_class(impl: str) -> type[tpmdev.CRB]:
    """``tpmdev.CRB`` backed by the variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.CRB
    core = tpmdev.hw.pure("crb").CrbCore

    class PureCRB(tpmdev.CRB):
        _Core = core

    PureCRB.__name__ = PureCRB.__qualname__ = "CRB"
    return PureCRB
