"""Fixtures for the benchmarks: both register-model variants and QEMU over qtest."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from collections.abc import Iterator

import pytest

import tpmdev
import tpmdev.hw
import tpmdev.hw.crb
import tpmdev.hw.tis

# The QEMU/swtpm harness lives with the conformance tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.oracle.qtest import Qemu, QemuTis, Swtpm


def _pure_tis_class() -> type[tpmdev.TIS]:
    class PureTIS(tpmdev.TIS):
        _Core = tpmdev.hw.pure("tis").TisCore

    return PureTIS


def _require_compiled() -> None:
    if not (tpmdev.hw.is_compiled(tpmdev.hw.tis) and tpmdev.hw.is_compiled(tpmdev.hw.crb)):
        if os.environ.get("TPMDEV_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            pytest.fail("compiled register models are missing")
        pytest.skip("compiled register models are not built")


@pytest.fixture(params=["c", "py"])
def tis_class(request: pytest.FixtureRequest) -> type[tpmdev.TIS]:
    if request.param == "c":
        _require_compiled()
        return tpmdev.TIS
    return _pure_tis_class()


@pytest.fixture(params=["c", "py"])
def crb_class(request: pytest.FixtureRequest) -> type[tpmdev.CRB]:
    if request.param == "c":
        _require_compiled()
        return tpmdev.CRB

    class PureCRB(tpmdev.CRB):
        _Core = tpmdev.hw.pure("crb").CrbCore

    return PureCRB


@pytest.fixture(scope="session")
def qemu_tis() -> Iterator[QemuTis]:
    """QEMU 7.2's tpm-tis on a real swtpm, driven over qtest."""
    with tempfile.TemporaryDirectory(prefix="tpmdev-bench-") as tmp:
        swtpm = Swtpm(Path(tmp), tpm2=True).start()
        try:
            with Qemu(Path(tmp), swtpm).start() as qemu:
                yield QemuTis(qemu)
        finally:
            swtpm.close()
