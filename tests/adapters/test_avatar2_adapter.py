"""tpmdev.adapters.avatar2: the TPM as an avatar2 peripheral, driven through avatar2's dispatch.

No QEMU build of avatar2 is needed: avatar2's own unicorn target runs A32
machine code (assembled bytes below, the assembly beside each line) and
forwards every access to the emulated range through avatar2's
remote-memory messages to the peripheral, as it does for its QEMU target.
Both register-model variants.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from avatar2 import ARM, Avatar
from avatar2.targets import UnicornTarget

import tpmdev
from tpmdev.adapters.avatar2 import TpmPeripheral, add_tpm
from tpmdev.backends import Builtin

CODE_BASE = 0x1000
ARM_BLOB = bytes.fromhex(
    "0343a0e3"  # mov r4, #0x0C000000       ; the TIS on Arm virt
    "0000d4e5"  # ldrb r0, [r4]             ; TPM_ACCESS_0
    "0250a0e3"  # mov r5, #2
    "0050c4e5"  # strb r5, [r4]             ; requestUse
    "0010d4e5"  # ldrb r1, [r4]             ; TPM_ACCESS_0 again
    "182094e5"  # ldr r2, [r4, #0x18]       ; TPM_STS_0
    "4050a0e3"  # mov r5, #0x40
    "1850c4e5"  # strb r5, [r4, #0x18]      ; commandReady
    "183094e5"  # ldr r3, [r4, #0x18]       ; TPM_STS_0 again
    "006f94e5"  # ldr r6, [r4, #0xF00]      ; TPM_DID_VID_0
    "feffffea"  # b .
)


@pytest.fixture
def avatar(tmp_path: Path) -> Iterator[Any]:
    logging.getLogger("avatar").setLevel(logging.WARNING)
    av = Avatar(arch=ARM, output_directory=str(tmp_path / "avatar"))
    yield av
    av.shutdown()


def test_guest_code_through_avatar2(avatar: Any, tis_sysbus_class: type[tpmdev.TISSysbus]) -> None:
    cpu = avatar.add_target(UnicornTarget)
    avatar.add_memory_range(CODE_BASE, 0x1000, name="rom", permissions="rwx")
    with tis_sysbus_class(Builtin(seed=0)) as dev, tis_sysbus_class(Builtin(seed=0)) as ref:
        mr = add_tpm(avatar, dev)
        assert (mr.address, mr.size) == (0x0C000000, 0x5000)
        assert isinstance(mr.forwarded_to, TpmPeripheral) and mr.forwarded_to.device is dev
        avatar.init_targets()
        cpu.wait()
        cpu.write_memory(CODE_BASE, 1, ARM_BLOB, len(ARM_BLOB), raw=True)
        cpu.regs.pc = CODE_BASE
        cpu.set_breakpoint(CODE_BASE + len(ARM_BLOB) - 4)
        cpu.cont()
        cpu.wait()
        got = [cpu.regs.r0, cpu.regs.r1, cpu.regs.r2, cpu.regs.r3, cpu.regs.r6]
        expected = [ref.read(0x00, 1)]
        ref.write(0x00, 0x02, 1)
        expected += [ref.read(0x00, 1), ref.read(0x18)]
        ref.write(0x18, 0x40, 1)
        expected += [ref.read(0x18), ref.read(0xF00)]
        assert got == expected
        assert got[1] & 0xA0 == 0xA0 and got[3] & 0x40  # locality 0 active, commandReady
        assert dev.active_locality == 0


def test_peripheral_read_write_memory(crb_class: type[tpmdev.CRB]) -> None:
    """avatar2's peripheral entry points (absolute addresses, sizes up to 8)."""
    with crb_class(Builtin(seed=0)) as dev:
        p = TpmPeripheral("crb", 0xFED40000, 0x1000, device=dev)
        assert p.write_memory(0xFED40008, 4, 1) is True  # LOC_CTRL: requestAccess
        assert p.read_memory(0xFED40000, 4) & 0x02  # locAssigned
        assert p.read_memory(0xFED40068, 8) == 0xFED40080  # CTRL_RSP_ADDR
        assert dev.active_locality == 0


def test_peripheral_refuses_a_wrong_range() -> None:
    with tpmdev.TIS(Builtin(seed=0)) as dev:
        with pytest.raises(tpmdev.ConfigurationError, match="0x1000 bytes"):
            TpmPeripheral("tis", 0xFED40000, 0x1000, device=dev)
        with pytest.raises(tpmdev.ConfigurationError, match="device=dev"):
            TpmPeripheral("tis", 0xFED40000, 0x5000)
