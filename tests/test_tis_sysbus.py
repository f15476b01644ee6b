"""The sysbus TIS (QEMU's ``tpm-tis-device``): the TIS on another bus.

Runs on both variants (``tis_sysbus_class``). The registers are the TIS's;
these tests pin what the sysbus device changes (no PPI, a 32-bit ``irq``
property that only shows in INT_VECTOR, the platform base) and that the rest
is the TIS itself (the same reset values, commands, interrupts). The register
behaviour against QEMU is tests/oracle/ (``tpm-tis-device`` on Arm virt).
"""

from __future__ import annotations

import threading

import pytest

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.hw import regs as R
from tpmdev.wire import response_code

# Every 4-byte register slot of the five localities, and the sizes read there.
_SLOTS = [(loc << 12) + off for loc in range(5) for off in range(0, 0x100, 4)] + [
    (loc << 12) + off for loc in range(5) for off in range(0xF00, 0xF10, 4)
]


def test_exported_and_a_tis() -> None:
    assert tpmdev.TISSysbus.__module__ == "tpmdev.tis"
    assert issubclass(tpmdev.TISSysbus, tpmdev.TIS)
    assert "TISSysbus" in tpmdev.__all__


def test_base_addresses() -> None:
    assert tpmdev.TIS.base_address == R.TIS_BASE_ADDRESS == 0xFED40000
    assert tpmdev.TISSysbus.base_address == R.TIS_SYSBUS_BASE_ADDRESS == 0x0C000000
    assert tpmdev.TISSysbus.region_size == tpmdev.TIS.region_size == 0x5000


def test_no_ppi(tis_sysbus_class: type[tpmdev.TISSysbus]) -> None:
    with tis_sysbus_class(tpmdev.backends.Builtin()) as dev:
        assert dev.ppi is None and dev.ppi_address is None
    with pytest.raises(TypeError, match="ppi"):
        tis_sysbus_class(tpmdev.backends.Builtin(), ppi=True)  # type: ignore[call-arg]


@pytest.mark.parametrize("version", [1, 2])
def test_same_registers_as_the_isa_tis(
    tis_class: type[tpmdev.TIS], tis_sysbus_class: type[tpmdev.TISSysbus], version: int
) -> None:
    with (
        tis_class(tpmdev.backends.Builtin(tpm_version=version)) as isa,
        tis_sysbus_class(tpmdev.backends.Builtin(tpm_version=version)) as sysbus,
    ):
        for dev in (isa, sysbus):
            dev.write(0x1000 + R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        assert [sysbus.read(a) for a in _SLOTS] == [isa.read(a) for a in _SLOTS]
        assert sysbus.read(R.TPM_INTF_CAPABILITY) == R.intf_capability(version)


@pytest.mark.parametrize("irq_num", [0, 5, 15, 16, 300, 0xFFFFFFFF])
def test_irq_num_is_a_32_bit_property(tis_sysbus_class: type[tpmdev.TISSysbus], irq_num: int) -> None:
    with tis_sysbus_class(tpmdev.backends.Builtin(), irq_num=irq_num) as dev:
        assert dev.irq_num == irq_num
        assert [dev.read((n << 12) + R.TPM_INT_VECTOR) for n in range(5)] == [irq_num] * 5
        assert dev.read(R.TPM_INT_VECTOR, 1) == irq_num & 0xFF


@pytest.mark.parametrize(
    "kwargs",
    [{"irq_num": -1}, {"irq_num": 1 << 32}, {"irq_num": True}, {"irq": 5}, {"tpm_version": 3}],
    ids=["irq-1", "irq-2**32", "irq-bool", "irq-not-callable", "version"],
)
def test_bad_configuration(tis_sysbus_class: type[tpmdev.TISSysbus], kwargs: dict[str, object]) -> None:
    with pytest.raises(tpmdev.ConfigurationError):
        tis_sysbus_class(tpmdev.backends.Builtin(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_commands(tis_sysbus_class: type[tpmdev.TISSysbus], asynchronous: bool) -> None:
    names: list[str] = []
    with tis_sysbus_class(
        tpmdev.backends.Builtin(),
        asynchronous=asynchronous,
        on_complete=lambda: names.append(threading.current_thread().name),
    ) as dev:
        driver = TisDriver(dev, locality=0, timeout=10)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        assert len(C.decode_get_random(driver.transmit(C.tpm2_get_random(24)))) == 24
    assert names == (["tpmdev-tis-sysbus-worker"] * 2 if asynchronous else [])


def test_irq_line(tis_sysbus_class: type[tpmdev.TISSysbus]) -> None:
    levels: list[int] = []
    with tis_sysbus_class(tpmdev.backends.Builtin(), irq=levels.append) as dev:
        dev.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        dev.write(R.TPM_INT_ENABLE, R.TPM_INT_GLOBAL_ENABLE | R.TPM_INT_COMMAND_READY)
        dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
        assert (levels, dev.irq_level, dev.read(R.TPM_INT_STATUS)) == ([1], 1, R.TPM_INT_COMMAND_READY)
        dev.write(R.TPM_INT_STATUS, R.TPM_INT_COMMAND_READY)
        assert (levels, dev.irq_level) == ([1, 0], 0)
