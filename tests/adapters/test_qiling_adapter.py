"""tpmdev.adapters.qiling: guest machine code run by Qiling reads and writes the TPM.

The x86-64 blobs are assembled bytes (the assembly beside each line). Qiling
runs them as shellcode; the TPM is mapped with Qiling's own
``ql.mem.map_mmio`` through the adapter. Each test checks the registers the
guest loaded against the device model driven the same way directly, and a
few values the specification fixes. Both register-model variants.
"""

from __future__ import annotations

from typing import Any

import pytest
from qiling import Qiling
from qiling.const import QL_ARCH, QL_OS, QL_VERBOSE

import tpmdev
from tpmdev.adapters.qiling import attach, detach
from tpmdev.backends import Builtin

TIS_BLOB = bytes.fromhex(
    "48bb0000d4fe00000000"  # mov rbx, 0xFED40000
    "440fb603"  # movzx r8d, byte ptr [rbx]           ; TPM_ACCESS_0
    "c60302"  # mov byte ptr [rbx], 2                 ; requestUse
    "440fb60b"  # movzx r9d, byte ptr [rbx]           ; TPM_ACCESS_0 again
    "448b5318"  # mov r10d, dword ptr [rbx+0x18]      ; TPM_STS_0
    "c6431840"  # mov byte ptr [rbx+0x18], 0x40       ; commandReady
    "448b5b18"  # mov r11d, dword ptr [rbx+0x18]      ; TPM_STS_0 again
    "4c8b6314"  # mov r12, qword ptr [rbx+0x14]       ; 8 bytes: INTF_CAPABILITY and STS
    "448bab000f0000"  # mov r13d, dword ptr [rbx+0xF00]  ; TPM_DID_VID_0
)

CRB_BLOB = bytes.fromhex(
    "48bb0000d4fe00000000"  # mov rbx, 0xFED40000
    "c7430801000000"  # mov dword ptr [rbx+8], 1      ; LOC_CTRL: requestAccess
    "448b03"  # mov r8d, dword ptr [rbx]              ; LOC_STATE
    "4c8b4b68"  # mov r9, qword ptr [rbx+0x68]        ; CTRL_RSP_ADDR (64 bits)
    "448b5330"  # mov r10d, dword ptr [rbx+0x30]      ; INTF_ID
    "c7434001000000"  # mov dword ptr [rbx+0x40], 1   ; CTRL_REQ: cmdReady
    "448b5b44"  # mov r11d, dword ptr [rbx+0x44]      ; CTRL_STS
)


def run(code: bytes, dev: Any) -> Any:
    ql = Qiling(code=code, archtype=QL_ARCH.X8664, ostype=QL_OS.LINUX, verbose=QL_VERBOSE.DISABLED)
    assert attach(ql, dev) == (0xFED40000, dev.region_size)
    ql.run()
    return ql


def test_tis_locality_request_from_guest_code(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(seed=0)) as dev, tis_class(Builtin(seed=0)) as ref:
        regs = run(TIS_BLOB, dev).arch.regs
        access0 = ref.read(0x00, 1)
        ref.write(0x00, 0x02, 1)
        access1 = ref.read(0x00, 1)
        sts0 = ref.read(0x18)
        ref.write(0x18, 0x40, 1)
        sts1 = ref.read(0x18)
        wide = ref.read(0x14) | (ref.read(0x18) << 32)  # QEMU's memory core: two 4-byte halves
        did_vid = ref.read(0xF00)
        assert (regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13) == (
            access0,
            access1,
            sts0,
            sts1,
            wide,
            did_vid,
        )
        assert regs.r8 & 0x80 and not regs.r8 & 0x20  # tpmRegValidSts, no activeLocality yet
        assert regs.r9 & 0xA0 == 0xA0  # locality 0 is active
        assert regs.r11 & 0x40  # commandReady
        assert dev.active_locality == 0
        assert dev.read(0x18) == sts1


def test_tis_sysbus_at_a_chosen_base(tis_sysbus_class: type[tpmdev.TISSysbus]) -> None:
    with tis_sysbus_class(Builtin(seed=0)) as dev:
        ql = Qiling(code=TIS_BLOB, archtype=QL_ARCH.X8664, ostype=QL_OS.LINUX, verbose=QL_VERBOSE.DISABLED)
        base, size = attach(ql, dev, 0xFED40000)
        ql.run()
        assert ql.arch.regs.r9 & 0xA0 == 0xA0 and dev.active_locality == 0
        assert [start for start, *_ in ql.mem.get_mapinfo() if start == base]
        detach(ql, base, size)
        assert not [start for start, *_ in ql.mem.get_mapinfo() if start == base]


def test_crb_from_guest_code(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(Builtin(seed=0)) as dev, crb_class(Builtin(seed=0)) as ref:
        regs = run(CRB_BLOB, dev).arch.regs
        ref.write(0x08, 1)
        expected = (ref.read(0x00), ref.read(0x68, 8), ref.read(0x30))
        ref.write(0x40, 1)
        assert (regs.r8, regs.r9, regs.r10, regs.r11) == (*expected, ref.read(0x44))
        assert regs.r8 & 0x02  # LOC_STATE.locAssigned
        assert regs.r9 == 0xFED40080  # the response buffer's address
        assert dev.active_locality == 0


def test_attach_refuses_what_is_not_memory_mapped() -> None:
    ql = Qiling(code=TIS_BLOB, archtype=QL_ARCH.X8664, ostype=QL_OS.LINUX, verbose=QL_VERBOSE.DISABLED)
    with (
        tpmdev.TISI2C(Builtin(seed=0)) as i2c,
        pytest.raises(tpmdev.ConfigurationError, match="memory-mapped"),
    ):
        attach(ql, i2c)
    with tpmdev.TIS(Builtin(seed=0)) as dev:
        with pytest.raises(tpmdev.ConfigurationError, match="page-aligned"):
            attach(ql, dev, 0xFED40010)
        with pytest.raises(tpmdev.ConfigurationError, match="map_mmio"):
            attach(object(), dev)


def test_handler_style_map_mmio(tis_class: type[tpmdev.TIS]) -> None:
    """Qiling versions after 1.4 take one handler object; the installed one takes two callbacks."""

    class Mem:
        mapped: list[Any] = []

        def map_mmio(self, addr: int, size: int, handler: Any, info: str = "[mmio]") -> None:
            self.mapped.append((addr, size, handler, info))

    class Ql:
        mem = Mem()

    ql = Ql()
    with tis_class(Builtin(seed=0)) as dev:
        assert attach(ql, dev) == (0xFED40000, 0x5000)
        (addr, size, handler, info) = ql.mem.mapped[0]
        assert (addr, size, info) == (0xFED40000, 0x5000, "[tpmdev TIS]")
        handler.write(ql, 0x00, 1, 0x02)
        assert handler.read(ql, 0x00, 1) == dev.read(0x00, 1) == 0xA1
        assert handler.read(ql, 0x14, 8) == dev.read(0x14) | (dev.read(0x18) << 32)
