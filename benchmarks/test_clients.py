"""The TSS as a client: what each layer costs per command.

* group "tpm2_getrandom 16 (a tool run)": the tpm2-tools process through
  ``tpmdev tcti`` (a tpmdev process per tool run: Python start-up, the state
  file read and written), through ``tpmdev serve`` (mssim, a long-running
  server) and directly against a swtpm (``-T swtpm:port=N``), all on
  libtpms 0.9 through a CRB;
* group "GetRandom(16) in process (CRB, Libtpms)": tpm2-pytss's ESAPI
  through :class:`tpmdev.tcti.TCTI` beside the driver's ``transmit`` alone
  with the same command: the TSS layer's own cost.

Run: ``python -m pytest benchmarks/test_clients.py --benchmark-enable
--benchmark-group-by=group``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

import tpmdev
from tests.tools_workflow import ReferenceSwtpm, tcti_cmd, tpmdev_env
from tpmdev.drivers import commands as C
from tpmdev.drivers import for_device

GROUP_TOOL = "tpm2_getrandom 16 (a tool run)"
GROUP_ESAPI = "GetRandom(16) in process (CRB, Libtpms)"


def _tool(tcti: str, cwd: Path) -> bytes:
    result = subprocess.run(
        ["tpm2_getrandom", "-T", tcti, "16"], cwd=cwd, capture_output=True, env=tpmdev_env(), check=True
    )
    return result.stdout


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tpmdev", "serve", "--frontend", "crb", "--backend", "libtpms", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tpmdev_env(),
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"port (\d+)", proc.stdout.readline())
        assert match
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


@pytest.mark.benchmark(group=GROUP_TOOL)
def test_tpm2_getrandom_through_tpmdev_tcti(benchmark: Callable[..., object], tmp_path: Path) -> None:
    tcti = tcti_cmd("--frontend", "crb", "--backend", "libtpms", "--state", "tpm.state")
    subprocess.run(["tpm2_startup", "-c", "-T", tcti], cwd=tmp_path, env=tpmdev_env(), check=True)
    assert len(benchmark(_tool, tcti, tmp_path)) == 16  # type: ignore[arg-type]


@pytest.mark.benchmark(group=GROUP_TOOL)
def test_tpm2_getrandom_through_tpmdev_serve(
    benchmark: Callable[..., object], server: int, tmp_path: Path
) -> None:
    tcti = f"mssim:port={server}"
    subprocess.run(["tpm2_startup", "-c", "-T", tcti], cwd=tmp_path, env=tpmdev_env(), check=True)
    assert len(benchmark(_tool, tcti, tmp_path)) == 16  # type: ignore[arg-type]


@pytest.mark.benchmark(group=GROUP_TOOL)
def test_tpm2_getrandom_directly_against_swtpm(benchmark: Callable[..., object], tmp_path: Path) -> None:
    ref = ReferenceSwtpm()
    try:
        subprocess.run(["tpm2_startup", "-c", "-T", ref.tcti], cwd=tmp_path, check=True)
        assert len(benchmark(_tool, ref.tcti, tmp_path)) == 16  # type: ignore[arg-type]
    finally:
        ref.close()


@pytest.fixture
def crb() -> Iterator[tpmdev.CRB]:
    with tpmdev.CRB(tpmdev.backends.Libtpms()) as dev:
        yield dev


@pytest.mark.benchmark(group=GROUP_ESAPI)
def test_esapi_get_random_through_tcti(benchmark: Callable[..., object], crb: tpmdev.CRB) -> None:
    tss = pytest.importorskip("tpm2_pytss")
    from tpm2_pytss.constants import TPM2_SU

    from tpmdev.tcti import TCTI

    esapi = tss.ESAPI(TCTI(crb))
    try:
        esapi.startup(TPM2_SU.CLEAR)
        assert len(bytes(benchmark(esapi.get_random, 16))) == 16  # type: ignore[arg-type]
    finally:
        esapi.close()


@pytest.mark.benchmark(group=GROUP_ESAPI)
def test_driver_transmit_get_random(benchmark: Callable[..., object], crb: tpmdev.CRB) -> None:
    driver = for_device(crb)
    driver.transmit(C.tpm2_startup())
    response = benchmark(driver.transmit, C.tpm2_get_random(16))
    assert len(C.decode_get_random(response)) == 16  # type: ignore[arg-type]
