"""The PPI page against QEMU 7.2: RAM at 0xFED45000, kept across resets, and
the memory-overwrite request (movv bit 0) wiping guest RAM at every reset.

QEMU runs stopped (``-S``): no firmware touches the page or the RAM, so what
is read is what QEMU itself does. A RAM byte outside every ROM (2 MiB) shows
the wipe; tpmdev shows it as a call of ``memory_clear``. Resets are QMP's
``system_reset`` (the machine reset, which resets the TPM frontend).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
import pytest

import tpmdev
from tpmdev.backends.builtin import Builtin
from tpmdev.firmware.ppi import PPI_ADDRESS, PPI_SIZE

from .qtest import Qemu

pytestmark = pytest.mark.oracle

#: a guest RAM address no ROM is copied to at reset
RAM_PROBE = 0x200000
MOVV = PPI_ADDRESS + 0x15A
Dev = Union[tpmdev.TIS, tpmdev.CRB]


@pytest.fixture(params=["tpm-tis", "tpm-crb"])
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dev_class(device: str, tis_class: type[tpmdev.TIS], crb_class: type[tpmdev.CRB]) -> type[Dev]:
    return tis_class if device == "tpm-tis" else crb_class


def write_page(qemu: Qemu, data: bytes) -> None:
    qemu.command(f"write 0x{PPI_ADDRESS:x} 0x{len(data):x} 0x{data.hex()}")


def test_page_is_zeroed_ram_kept_across_resets(
    qemu_factory: Callable[..., Qemu], device: str, dev_class: type[Dev]
) -> None:
    qemu = qemu_factory(True, device=device)
    with dev_class(Builtin()) as dev:
        assert dev.ppi is not None and dev.ppi_address == PPI_ADDRESS
        assert qemu.read_bytes(PPI_ADDRESS, PPI_SIZE) == dev.ppi.memory.tobytes() == bytes(PPI_SIZE)
        pattern = bytes((i * 7 + 3) & 0xFE for i in range(PPI_SIZE))  # movv (even) stays 0
        write_page(qemu, pattern)
        dev.ppi.memory[:] = np.frombuffer(pattern, np.uint8)
        assert qemu.read_bytes(PPI_ADDRESS, PPI_SIZE) == pattern  # RAM: every byte sticks
        # 32-bit stores where the AML's TPP2 fields are (PPRQ, PPRM), as _DSM 7 does
        qemu.writemem(PPI_ADDRESS + 0x109, 23, 4)
        qemu.writemem(PPI_ADDRESS + 0x10D, 0x6, 4)
        dev.ppi.fields["pprq"] = 23
        dev.ppi.fields["pprm"] = 0x6
        for _ in range(2):
            qemu.system_reset()
            dev.reset()
            assert qemu.read_bytes(PPI_ADDRESS, PPI_SIZE) == dev.ppi.memory.tobytes()
        assert int(dev.ppi.fields["pprq"]) == 23 and int(dev.ppi.fields["pprm"]) == 6


@pytest.mark.parametrize("movv", [0x00, 0x01, 0x02, 0x03, 0x81])
def test_memory_clear_at_every_reset(
    qemu_factory: Callable[..., Qemu], device: str, dev_class: type[Dev], movv: int
) -> None:
    qemu = qemu_factory(True, device=device)
    calls: list[int] = []
    with dev_class(Builtin(), memory_clear=lambda: calls.append(1)) as dev:
        assert dev.ppi is not None
        qemu.writemem(MOVV, movv, 1)  # what the memory-clear _DSM function 1 stores
        qemu.writemem(PPI_ADDRESS + 0x109, 5, 4)
        dev.ppi.memory[0x15A] = movv
        dev.ppi.fields["pprq"] = 5
        for reset in (1, 2):
            qemu.writemem(RAM_PROBE, 0x5A5A5A5A, 4)
            qemu.system_reset()
            dev.reset()
            wiped = qemu.readmem(RAM_PROBE, 4) == 0
            assert wiped == bool(movv & 1), f"QEMU, reset {reset}"
            assert len(calls) == (reset if movv & 1 else 0), f"tpmdev, reset {reset}"
            # QEMU neither clears movv nor spares anything else of the page
            assert qemu.readmem(MOVV, 1) == movv == int(dev.ppi.fields["movv"])
            assert qemu.read_bytes(PPI_ADDRESS, PPI_SIZE) == dev.ppi.memory.tobytes()
        qemu.writemem(MOVV, 0, 1)  # cleared by the OS: the RAM survives again
        dev.ppi.fields["movv"] = 0
        qemu.writemem(RAM_PROBE, 0x5A5A5A5A, 4)
        qemu.system_reset()
        dev.reset()
        assert qemu.readmem(RAM_PROBE, 4) == 0x5A5A5A5A
        assert len(calls) == (2 if movv & 1 else 0)


def test_no_page_with_ppi_off(qemu_factory: Callable[..., Qemu], device: str, dev_class: type[Dev]) -> None:
    qemu = qemu_factory(True, device=device, ppi=False)
    calls: list[int] = []
    with dev_class(Builtin(), ppi=False, memory_clear=lambda: calls.append(1)) as dev:
        assert dev.ppi is None and dev.ppi_address is None
        qemu.writemem(PPI_ADDRESS + 0x109, 5, 4)
        assert qemu.readmem(PPI_ADDRESS + 0x109, 4) == 0  # nothing there
        qemu.writemem(MOVV, 1, 1)
        qemu.writemem(RAM_PROBE, 0x5A5A5A5A, 4)
        qemu.system_reset()
        dev.reset()
        assert qemu.readmem(RAM_PROBE, 4) == 0x5A5A5A5A
        assert calls == []
