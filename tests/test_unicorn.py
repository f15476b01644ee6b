"""Guest code under unicorn drives a TPM through tpmdev.adapters.unicorn.

x86-64 machine code (assembled in tests/guest_x86.py) requests locality 0,
sends TPM2_Startup and TPM2_GetRandom through the TIS FIFO byte by byte
polling STS and burstCount (or through the CRB data buffer, polling
CTRL_START), copies each response into guest RAM and halts; the test reads
the responses from guest memory. Both variants: with the compiled models the
adapter maps native callbacks, with the pure ones Python callbacks.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import unicorn
from unicorn import x86_const

import tpmdev
import tpmdev.hw
from tests.guest_x86 import crb_program, tis_program, unaligned_fifo_program
from tpmdev.adapters import unicorn as adapter
from tpmdev.drivers import commands as C

CODE = 0x1000
DATA = 0x10000
STARTUP = C.tpm2_startup()
GET_RANDOM = C.tpm2_get_random(16)


def _expected(seed: int) -> list[bytes]:
    backend = tpmdev.backends.Builtin(seed=seed)
    with tpmdev.TIS(backend) as dev:
        from tpmdev.drivers.tis import TisDriver

        driver = TisDriver(dev)
        return [driver.transmit(STARTUP), driver.transmit(GET_RANDOM)]


def _machine(code: bytes) -> Any:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(CODE, 0x1000)
    uc.mem_map(DATA, 0x10000)
    uc.mem_write(CODE, code)
    uc.mem_write(DATA, STARTUP)
    uc.mem_write(DATA + 0x100, GET_RANDOM)
    return uc


COMMANDS = [(DATA, len(STARTUP), DATA + 0x1000), (DATA + 0x100, len(GET_RANDOM), DATA + 0x2000)]


def _run(uc: Any, end: int, use_helper: bool) -> None:
    if use_helper:
        adapter.emu_start(uc, CODE, end)
    else:
        uc.emu_start(CODE, end)


def _responses(uc: Any, expected: list[bytes]) -> list[bytes]:
    return [
        bytes(uc.mem_read(DATA + 0x1000, len(expected[0]))),
        bytes(uc.mem_read(DATA + 0x2000, len(expected[1]))),
    ]


def test_python_callbacks_over_the_compiled_core(compiled_core_class: type) -> None:
    """native=False: the Python path with the compiled models gives the same responses."""
    expected = _expected(seed=5)
    with tpmdev.TIS(tpmdev.backends.Builtin(seed=5)) as dev:
        code, end = tis_program(CODE, dev.base_address, COMMANDS)
        uc = _machine(code)
        assert not adapter.attach(uc, dev, native=False).native
        adapter.emu_start(uc, CODE, end)
        assert _responses(uc, expected) == expected


def test_native_refused_for_a_pure_core() -> None:
    core = tpmdev.hw.pure("tis").TisCore

    class PureTIS(tpmdev.TIS):
        _Core = core

    with PureTIS(tpmdev.backends.Builtin()) as dev:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        with pytest.raises(tpmdev.ConfigurationError, match="native unicorn callbacks need"):
            adapter.attach(uc, dev, native=True)


@pytest.mark.parametrize("use_helper", [True, False], ids=["emu_start", "uc.emu_start"])
@pytest.mark.parametrize("frontend", ["tis", "tis_sysbus"])
def test_tis_guest_sends_commands(
    impl: str,
    tis_class: type[tpmdev.TIS],
    tis_sysbus_class: type[tpmdev.TISSysbus],
    frontend: str,
    use_helper: bool,
) -> None:
    cls = tis_class if frontend == "tis" else tis_sysbus_class
    expected = _expected(seed=5)
    with cls(tpmdev.backends.Builtin(seed=5)) as dev:
        code, end = tis_program(CODE, cls.base_address, COMMANDS)
        uc = _machine(code)
        found = adapter.attach(uc, dev)
        assert found.native == (impl == "c")
        assert found.mappings[0] == (cls.base_address, 0x5000, "mmio")
        _run(uc, end, use_helper)
        found.check()
        assert _responses(uc, expected) == expected
        assert expected[0] == bytes.fromhex("80010000000a00000000")
        assert len(expected[1]) == 28 and expected[1][6:10] == b"\0\0\0\0"
        assert dev.active_locality == 0


@pytest.mark.parametrize("use_helper", [True, False], ids=["emu_start", "uc.emu_start"])
def test_crb_guest_sends_commands(impl: str, crb_class: type[tpmdev.CRB], use_helper: bool) -> None:
    expected = _expected(seed=9)
    with crb_class(tpmdev.backends.Builtin(seed=9)) as dev:
        code, end = crb_program(CODE, dev.address, COMMANDS)
        uc = _machine(code)
        found = adapter.attach(uc, dev)
        assert found.native == (impl == "c")
        _run(uc, end, use_helper)
        found.check()
        assert _responses(uc, expected) == expected
        # the guest and the device see the same bytes: the data buffer holds the last response
        assert bytes(dev.buffer[: len(expected[1])]) == expected[1]


def test_crb_data_buffer_is_memory(impl: str, crb_class: type[tpmdev.CRB]) -> None:
    """Accesses of any size and alignment to the data buffer store and load bytes, as RAM."""
    with crb_class(tpmdev.backends.Builtin()) as dev:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        adapter.attach(uc, dev)
        uc.mem_write(dev.address + 0x81, bytes(range(1, 12)))  # unicorn's own access path
        assert bytes(dev.buffer[1:12]) == bytes(range(1, 12))
        dev.buffer[20:24] = [0xAA, 0xBB, 0xCC, 0xDD]
        assert bytes(uc.mem_read(dev.address + 0x80 + 19, 6)) == bytes([0, 0xAA, 0xBB, 0xCC, 0xDD, 0])


class _PageBackedPpi:
    """A PPI page object of the shape the device will carry (``dev.ppi.memory``)."""

    def __init__(self) -> None:
        raw = np.zeros(0x3000, np.uint8)
        start = (-raw.ctypes.data) % 0x1000
        self.memory = raw[start : start + 0x1000]  # page-aligned, a whole page
        self.memory[:0x400] = 0


class _SmallPpi:
    def __init__(self) -> None:
        self.memory = np.zeros(0x400, np.uint8)


@pytest.mark.parametrize("ppi_kind", ["page", "small"])
def test_ppi_page_is_ram_on_the_devices_array(impl: str, tis_class: type[tpmdev.TIS], ppi_kind: str) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        ppi = _PageBackedPpi() if ppi_kind == "page" else _SmallPpi()
        dev.ppi = ppi  # type: ignore[assignment]
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        found = adapter.attach(uc, dev)
        how = "ram" if ppi_kind == "page" else "ram-mmio"
        assert found.mappings[1] == (adapter.PPI_ADDRESS, 0x1000, how)
        uc.mem_write(adapter.PPI_ADDRESS + 0x15A, b"\x01")  # movv
        assert ppi.memory[0x15A] == 1
        ppi.memory[0x100] = 0x42
        assert bytes(uc.mem_read(adapter.PPI_ADDRESS + 0x100, 1)) == b"\x42"


def test_the_devices_own_ppi_page(impl: str, tis_class: type[tpmdev.TIS]) -> None:
    """A TIS with ppi=True (QEMU's default): its 0x400-byte page, shared with the guest."""
    with tis_class(tpmdev.backends.Builtin()) as dev:
        assert dev.ppi is not None
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        found = adapter.attach(uc, dev)
        assert found.mappings[1] == (0xFED45000, 0x1000, "ram-mmio")
        uc.mem_write(0xFED45000 + 0x109, (23).to_bytes(4, "little"))  # pprq, as the ACPI _DSM stores it
        assert int(dev.ppi.fields["pprq"]) == 23
        dev.ppi.fields["pprp"] = 0xFFFFFFF1
        assert bytes(uc.mem_read(0xFED45000 + 0x105, 4)) == b"\xf1\xff\xff\xff"
        assert bytes(uc.mem_read(0xFED45000 + 0x400, 4)) == bytes(4)  # past the 0x400 bytes: unassigned


def test_ppi_absent_maps_nothing_more(impl: str, tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin(), ppi=False) as dev:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        found = adapter.attach(uc, dev)
        assert [m[2] for m in found.mappings] == ["mmio"]


def test_bytes_past_the_region_are_unassigned(impl: str, crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin(), localities=1) as dev:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        adapter.attach(uc, dev)
        assert bytes(uc.mem_read(dev.address, 4)) == (0x81).to_bytes(
            4, "little"
        )  # LOC_STATE: valid, not established


def test_attach_refuses_bad_arguments(tis_class: type[tpmdev.TIS], crb_class: type[tpmdev.CRB]) -> None:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    with tis_class(tpmdev.backends.Builtin()) as dev:
        with pytest.raises(tpmdev.ConfigurationError, match="page-aligned"):
            adapter.attach(uc, dev, base=0xFED40010)
        with pytest.raises(tpmdev.ConfigurationError, match=r"unicorn\.Uc"):
            adapter.attach(object(), dev)
    with pytest.raises(tpmdev.ConfigurationError, match="memory-mapped"):
        adapter.attach(uc, object())
    crb = crb_class(tpmdev.backends.Builtin())
    with pytest.raises(tpmdev.ConfigurationError, match="address=0x"):
        adapter.attach(uc, crb, base=0x10000000)
    crb.close()


@pytest.mark.parametrize("use_helper", [True, False], ids=["emu_start", "uc.emu_start"])
def test_an_exception_in_the_core_stops_the_guest_and_is_raised(
    impl: str, tis_class: type[tpmdev.TIS], use_helper: bool
) -> None:
    """A host callable that breaks its contract (an established-flag source that raises) reaches the host."""
    with tis_class(tpmdev.backends.Builtin()) as dev:
        code, end = tis_program(CODE, dev.base_address, COMMANDS)
        uc = _machine(code)
        found = adapter.attach(uc, dev)

        def broken() -> bool:
            raise ZeroDivisionError("established flag")

        dev.core.set_established_source(broken)
        with pytest.raises(ZeroDivisionError, match="established flag"):
            _run(uc, end, use_helper)
            found.check()  # (uc.emu_start cannot see what a callback kept)
        rip = uc.reg_read(x86_const.UC_X86_REG_RIP)
        assert CODE < rip < CODE + 0x40  # stopped in the first loop, polling ACCESS


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
def test_exact_unaligned_reads_consume_what_qemu_does(
    impl: str, tis_class: type[tpmdev.TIS], native: bool
) -> None:
    """Unaligned 2-byte FIFO reads: each takes two response bytes, as QEMU's memory core cuts it
    (1 at 0x25, 1 at 0x26), not the four unicorn's own cut would take (2 at 0x24, 2 at 0x26)."""
    if native and impl == "py":
        native = False  # (the pure models have no native path)
    expected = _expected(seed=3)[0]  # the Startup response, 10 bytes
    results = {}
    for exact in (True, False):
        with tis_class(tpmdev.backends.Builtin(seed=3)) as dev:
            code, end = unaligned_fifo_program(CODE, dev.base_address, STARTUP, DATA + 0x1000, 5)
            uc = _machine(code)
            adapter.attach(uc, dev, native=native if impl == "c" else None, exact_unaligned=exact)
            adapter.emu_start(uc, CODE, end)
            results[exact] = bytes(uc.mem_read(DATA + 0x1000, 10))
            if exact:
                assert dev.core.rw_offset == 10  # every byte read once
    assert results[True] == expected
    assert results[False] != expected  # unicorn's own cut reads past bytes: what the option is for


@pytest.mark.swtpm
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_tis_guest_on_swtpm(
    impl: str, tis_class: type[tpmdev.TIS], tmp_path: Path, asynchronous: bool
) -> None:
    """A real swtpm behind the device; asynchronous: the worker runs while the guest polls
    (the native path gives up the GIL now and then for it)."""
    from tpmdev.backends.emulator import Emulator

    with tis_class(Emulator.spawn(tmp_path / "state", tpm_version=2), asynchronous=asynchronous) as dev:
        code, end = tis_program(CODE, dev.base_address, COMMANDS)
        uc = _machine(code)
        adapter.attach(uc, dev)
        adapter.emu_start(uc, CODE, end)
        startup = bytes(uc.mem_read(DATA + 0x1000, 10))
        random = bytes(uc.mem_read(DATA + 0x2000, 28))
        assert startup == bytes.fromhex("80010000000a00000000")
        assert random[:10] == bytes.fromhex("80010000001c00000000") and random[10:12] == b"\x00\x10"


def test_a_failed_attach_leaves_no_dangling_callback(impl: str, tis_class: type[tpmdev.TIS]) -> None:
    """The PPI page's address already taken: attach fails after the device region is mapped;
    the callbacks unicorn keeps for that region still reach a live device."""
    with tis_class(tpmdev.backends.Builtin()) as dev:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        uc.mem_map(0xFED45000, 0x1000)
        with pytest.raises(unicorn.UcError):
            adapter.attach(uc, dev)
        gc.collect()
        assert bytes(uc.mem_read(dev.base_address + 0x018, 4)) == dev.read(0x018).to_bytes(4, "little")
