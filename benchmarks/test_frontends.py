"""A whole TPM2_GetRandom(32) through the sysbus TIS and the sPAPR vTPM, on
Builtin, in one group with the same command through the TIS, the CRB and the
TIS over I2C (benchmarks/test_crb.py, benchmarks/test_i2c_bus.py) and the
backend alone (the floor of every frontend).

Each frontend is driven by the guest driver of :mod:`tpmdev.drivers`: the TIS
ones as Linux's tpm_tis_core, the sPAPR one as Linux's tpm_ibmvtpm (CRQ
messages, the command and response moved by DMA through a TCE-mapped buffer).

Run: ``python -m pytest benchmarks/test_frontends.py benchmarks/test_crb.py
benchmarks/test_i2c_bus.py --benchmark-enable --benchmark-group-by=group``.
"""

from __future__ import annotations

from typing import Callable

import pytest

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.drivers.spapr import IbmvtpmDriver, SpaprPlatform
from tpmdev.drivers.tis import TisDriver

#: the group shared with benchmarks/test_crb.py and benchmarks/test_i2c_bus.py
GROUP_COMMAND = "TPM2_GetRandom(32) through a frontend (Builtin)"
GET_RANDOM = C.tpm2_get_random(32)


@pytest.fixture
def sysbus_class(tis_class: type[tpmdev.TIS]) -> type[tpmdev.TISSysbus]:
    """TISSysbus on the TIS core variant of ``tis_class`` (ids c / py)."""
    if tis_class is tpmdev.TIS:
        return tpmdev.TISSysbus

    class PureTISSysbus(tpmdev.TISSysbus):
        _Core = tis_class._Core

    return PureTISSysbus


@pytest.mark.benchmark(group=GROUP_COMMAND)
def test_get_random_through_tis_sysbus(
    benchmark: Callable[..., object], sysbus_class: type[tpmdev.TISSysbus]
) -> None:
    with sysbus_class(tpmdev.backends.Builtin()) as dev:
        driver = TisDriver(dev)
        driver.transmit(C.tpm2_startup())
        response = benchmark(driver.transmit, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32  # type: ignore[arg-type]


@pytest.mark.benchmark(group=GROUP_COMMAND)
def test_get_random_through_spapr(benchmark: Callable[..., object]) -> None:
    platform = SpaprPlatform()
    with tpmdev.SPAPR(
        tpmdev.backends.Builtin(),
        dma_read=platform.dma_read,
        dma_write=platform.dma_write,
        send_crq=platform.send_crq,
    ) as dev:
        driver = IbmvtpmDriver(dev, platform)
        driver.probe()
        driver.transmit(C.tpm2_startup())
        response = benchmark(driver.transmit, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32  # type: ignore[arg-type]
