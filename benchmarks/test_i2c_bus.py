"""TIS over I2C speed: a whole TPM2_GetRandom as Linux's tpm_tis_i2c runs it,
in the group of the same command through every frontend (benchmarks/test_crb.py,
benchmarks/test_frontends.py),
and one register read over the bus beside the TIS's.

The I2C layer is plain Python around the TIS core (either variant): a real
fast-mode bus needs some 25 microseconds a byte, far more than this layer.

Run: ``python -m pytest benchmarks/test_i2c_bus.py --benchmark-only
--benchmark-group-by=group``.
"""

from __future__ import annotations

from typing import Callable

import pytest

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis_i2c import TisI2CDriver
from tpmdev.hw import regs as R


@pytest.fixture
def i2c_class(tis_class: type[tpmdev.TIS]) -> type[tpmdev.TISI2C]:
    """TISI2C on the TIS core variant of ``tis_class`` (ids c / py)."""
    if tis_class is tpmdev.TIS:
        return tpmdev.TISI2C

    class PureTISI2C(tpmdev.TISI2C):
        _Core = tis_class._Core

    return PureTISI2C


@pytest.mark.benchmark(group="TPM2_GetRandom(32) through a frontend (Builtin)")  # benchmarks/test_crb.py's
def test_get_random_through_tis_i2c(benchmark: Callable[..., object], i2c_class: type[tpmdev.TISI2C]) -> None:
    with i2c_class(tpmdev.backends.Builtin()) as dev:
        driver = TisI2CDriver(dev)
        driver.probe()
        driver.transmit(C.tpm2_startup())
        response = benchmark(driver.transmit, C.tpm2_get_random(32))
        assert len(C.decode_get_random(response)) == 32  # type: ignore[arg-type]


@pytest.mark.benchmark(group="read STS")
def test_i2c_read_sts(benchmark: Callable[..., object], i2c_class: type[tpmdev.TISI2C]) -> None:
    with i2c_class(tpmdev.backends.Builtin()) as dev:
        dev.i2c_write(bytes([R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE]))
        value = benchmark(dev.i2c_read_reg, R.TPM_I2C_STS, 4)
        assert value == bytes.fromhex("00001000")
