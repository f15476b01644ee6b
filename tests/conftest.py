"""Shared fixtures.

``tis_class`` runs a test once per register-model variant, in the manner of
aio-libs: id ``c`` is the compiled model, id ``py`` the pure-Python source
of the same module. ``c`` fails (not skips) when the extension is missing and
TPMDEV_REQUIRE_EXTENSIONS is set, and is skipped otherwise, so a pure
install still runs every behavioural test once.
"""

from __future__ import annotations

import os

import pytest

import tpmdev
import tpmdev.hw
import tpmdev.hw.core
import tpmdev.hw.crb
import tpmdev.hw.tis


def _pure_tis_class() -> type[tpmdev.TIS]:
    core = tpmdev.hw.pure("tis").TisCore

    class PureTIS(tpmdev.TIS):
        _Core = core

    PureTIS.__name__ = PureTIS.__qualname__ = "TIS"
    return PureTIS


def _require_compiled() -> None:
    if not all(tpmdev.hw.is_compiled(m) for m in (tpmdev.hw.core, tpmdev.hw.tis, tpmdev.hw.crb)):
        if os.environ.get("TPMDEV_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            pytest.fail("compiled register models are missing")
        pytest.skip("compiled register models are not built")


@pytest.fixture(params=["c", "py"])
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
def tis_class(impl: str) -> type[tpmdev.TIS]:
    """``tpmdev.TIS`` backed by the variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.TIS
    return _pure_tis_class()


@pytest.fixture
def core_class(impl: str) -> type:
    """``TisCore`` (the sans-IO register model) of the variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.hw.tis.TisCore
    core: type = tpmdev.hw.pure("tis").TisCore
    return core


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
