"""CRB speed, each beside its floor and the TIS, measured in the same run.

Floor: a bare C method call from Python (``bytearray(1).__len__``), the
least a register access through a Python-visible method can cost. Target
(issue: every QEMU frontend): a compiled CRB register read within 1.5x of
the floor. The register read is CTRL_START, the one a driver polls; the TIS
read beside it is STS, the TIS's polled register.

Run: ``python -m pytest benchmarks/test_crb.py --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

from typing import Callable

import pytest

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.drivers.crb import CrbDriver
from tpmdev.drivers.tis import TisDriver
from tpmdev.hw import regs as R

GROUP_READ = "register read: CRB CTRL_START, TIS STS"
GROUP_COMMAND = "TPM2_GetRandom(32) through a frontend (Builtin)"
GET_RANDOM = C.tpm2_get_random(32)


@pytest.mark.benchmark(group=GROUP_READ)
def test_floor_c_method_call(benchmark: Callable[..., object]) -> None:
    benchmark(bytearray(1).__len__)


@pytest.mark.benchmark(group=GROUP_READ)
def test_crb_read_ctrl_start(benchmark: Callable[..., object], crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin()) as dev:
        dev.write(R.TPM_LOC_CTRL, R.TPM_LOC_CTRL_REQUEST_ACCESS)
        value = benchmark(dev.read, R.TPM_CRB_CTRL_START)
        assert value == 0


@pytest.mark.benchmark(group=GROUP_READ)
def test_crb_read_intf_id(benchmark: Callable[..., object], crb_class: type[tpmdev.CRB]) -> None:
    # a value above the small-int cache: the result is a new Python int, as for the TIS STS
    with crb_class(tpmdev.backends.Builtin()) as dev:
        value = benchmark(dev.read, R.TPM_CRB_INTF_ID)
        assert value == 0x00025811


@pytest.mark.benchmark(group=GROUP_READ)
def test_crb_read_quadword(benchmark: Callable[..., object], crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin()) as dev:
        value = benchmark(dev.read, R.TPM_CRB_CTRL_RSP_ADDR, 8)
        assert value == 0xFED40080


@pytest.mark.benchmark(group=GROUP_READ)
def test_tis_read_sts(benchmark: Callable[..., object], tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        dev.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        value = benchmark(dev.read, R.TPM_STS)
        assert value == 0x04100000


@pytest.mark.benchmark(group=GROUP_COMMAND)
def test_get_random_builtin_direct(benchmark: Callable[..., object]) -> None:
    with tpmdev.backends.Builtin() as tpm:
        tpm.execute(C.tpm2_startup())
        response = benchmark(tpm.execute, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32


@pytest.mark.benchmark(group=GROUP_COMMAND)
@pytest.mark.parametrize("style", ["linux", "edk2"])
def test_get_random_through_crb(
    benchmark: Callable[..., object], crb_class: type[tpmdev.CRB], style: str
) -> None:
    with crb_class(tpmdev.backends.Builtin()) as dev:
        driver = CrbDriver(dev, style=style)
        driver.transmit(C.tpm2_startup())
        response = benchmark(driver.transmit, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32


@pytest.mark.benchmark(group=GROUP_COMMAND)
def test_get_random_through_tis(benchmark: Callable[..., object], tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        driver = TisDriver(dev)
        driver.transmit(C.tpm2_startup())
        response = benchmark(driver.transmit, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32
