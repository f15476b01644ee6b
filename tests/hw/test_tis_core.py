"""The TIS register model through its sans-IO boundary, on both variants.

The test plays the device layer: it sees the core's requests and answers
them itself (``Harness``), so every transition, including the ones that need
a command to stay in EXECUTION, is driven deterministically. Expected values
are QEMU's, as recorded from the live QEMU 7.2 oracle and its qtest suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from tpmdev import AccessError, TpmDevError
from tpmdev.hw import regs as R
from tpmdev.hw.tis import REQUEST_CANCEL, REQUEST_COMMAND, REQUEST_ESTABLISHED, REQUEST_RESET_ESTABLISHED

STARTUP = bytes.fromhex("8001 0000000c 00000144 0000")  # TPM2_Startup(SU_CLEAR)
RC_FAILURE = bytes.fromhex("8001 0000000a 00000101")
GETRANDOM = bytes.fromhex("8001 0000000c 0000017b 0008")


def loc(locality: int, reg: int) -> int:
    return (locality << R.TIS_LOCALITY_SHIFT) + reg


class Harness:
    """Plays the device layer around a core: records what it asks for."""

    def __init__(
        self,
        core_class: type,
        tpm_version: int = 2,
        *,
        auto: bytes | None = RC_FAILURE,
        established: bool = False,
        int_any_locality: bool = False,
    ) -> None:
        self.requests: list[int] = []
        self.irq_levels: list[int] = []
        self.commands: list[tuple[int, bytes]] = []
        self.auto = auto  # respond at once with this, or leave the command in flight
        self.established = established
        options = {"int_any_locality": True} if int_any_locality else {}
        self.core = core_class(tpm_version, 4096, 5, self.irq_levels.append, self.on_request, **options)

    def on_request(self, kind: int) -> None:
        self.requests.append(kind)
        if kind == REQUEST_COMMAND:
            pending = self.core.pending_command
            assert pending is not None
            self.commands.append(pending)
            if self.auto is not None:
                self.core.complete(self.auto)
        elif kind == REQUEST_ESTABLISHED:
            self.core.set_established(self.established)

    def r(self, off: int, size: int = 4) -> int:
        return int(self.core.read(off, size))

    def w(self, off: int, value: int, size: int = 4) -> None:
        self.core.write(off, value, size)

    def access(self, locality: int) -> int:
        return self.r(loc(locality, R.TPM_ACCESS), 1)

    def sts(self, locality: int) -> int:
        return self.r(loc(locality, R.TPM_STS))

    def request_use(self, locality: int) -> None:
        self.w(loc(locality, R.TPM_ACCESS), R.TPM_ACCESS_REQUEST_USE, 1)

    def send(self, locality: int, command: bytes) -> None:
        for byte in command:
            self.w(loc(locality, R.TPM_DATA_FIFO), byte, 1)

    def go(self, locality: int) -> None:
        self.w(loc(locality, R.TPM_STS), R.TPM_STS_GO, 1)

    def ready(self, locality: int) -> None:
        self.w(loc(locality, R.TPM_STS), R.TPM_STS_COMMAND_READY, 1)

    def drain(self, locality: int, n: int) -> bytes:
        return bytes(self.r(loc(locality, R.TPM_DATA_FIFO), 1) for _ in range(n))


@pytest.fixture
def h(core_class: type) -> Harness:
    return Harness(core_class)


# ---------------------------------------------------------------------------
# Reset values
# ---------------------------------------------------------------------------


def expected_reset_slot(version: int, slot: int, active: bool) -> int:
    fixed = {
        R.TPM_ACCESS: 0xA1 if active else 0x81,
        R.TPM_INT_ENABLE: 0x08,
        R.TPM_INT_VECTOR: 5,
        R.TPM_INT_STATUS: 0,
        R.TPM_INTF_CAPABILITY: 0x30000697 if version == 2 else 0x20000697,
        R.TPM_INTERFACE_ID: 0x00002100 if version == 2 else 0xFFFFFFFF,
        R.TPM_DID_VID: 0x00011014,
        R.TPM_RID: 0x00000001,
    }
    if slot == R.TPM_STS and active:
        return 0x04100000 if version == 2 else 0x00100000
    return fixed.get(slot, 0xFFFFFFFF)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("active", [False, True], ids=["none-active", "active"])
def test_reset_value_of_every_slot(core_class: type, version: int, active: bool) -> None:
    h = Harness(core_class, version)
    for locality in range(5):
        if active:
            h.core.reset(version, 4096)
            h.request_use(locality) if locality < 4 else None
        for slot in range(0, 0x1000, 4):
            want = expected_reset_slot(version, slot, active and locality < 4)
            assert h.r(loc(locality, slot)) == want, f"locality {locality} slot {slot:#05x}"


def test_established_flag_asked_at_every_access_read(core_class: type) -> None:
    h = Harness(core_class, established=True)
    assert h.access(0) == 0x80
    assert h.requests.count(REQUEST_ESTABLISHED) == 1
    h.established = False  # the backend's flag changed (state load, hash sequence)
    assert h.access(1) == 0x81  # the core kept no stale copy
    assert h.requests.count(REQUEST_ESTABLISHED) == 2
    h.established = True
    h.core.reset(2, 4096)
    assert h.access(2) == 0x80 and h.requests.count(REQUEST_ESTABLISHED) == 3
    h.core.invalidate_established()  # harmless: nothing to forget
    assert h.access(0) == 0x80


def test_established_flag_without_an_answer_reads_not_established(core_class: type) -> None:
    # QEMU shows a failed query as "not established" (ACCESS bit 0 set).
    asked: list[int] = []
    core = core_class(2, 4096, 5, None, asked.append)  # an owner that never answers
    core.set_established(True)  # an answer outside a request does not count
    assert core.read(R.TPM_ACCESS, 1) == 0x81 and asked == [REQUEST_ESTABLISHED]
    assert core_class(2, 4096).read(R.TPM_ACCESS, 1) == 0x81  # no owner at all


def test_established_answer_counts_only_for_the_read_that_asked(core_class: type) -> None:
    answers = iter([True, None])

    def owner(kind: int) -> None:
        if kind == REQUEST_ESTABLISHED:
            flag = next(answers)
            if flag is not None:
                core.set_established(flag)

    core = core_class(2, 4096, 5, None, owner)
    assert core.read(R.TPM_ACCESS, 1) == 0x80
    assert core.read(R.TPM_ACCESS, 1) == 0x81  # the owner failed this time


def test_reset_keeps_buffer_and_irq_line(h: Harness) -> None:
    h.request_use(0)
    h.w(loc(0, R.TPM_INT_ENABLE), 0x80000087)
    h.ready(0)  # commandReady interrupt
    assert h.irq_levels == [1]
    h.core.reset(2, 4096)
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0
    assert h.core.irq_level == 1 and h.irq_levels == [1]  # QUIRK: not lowered by reset


# ---------------------------------------------------------------------------
# Host misuse: clear tpmdev errors, never for guest values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        ("read", (0x5000,)),
        ("read", (-1,)),
        ("read", (0x4FFF, 2)),
        ("read", (0x4FFD, 4)),
        ("read", (0, 3)),
        ("read", (0, 8)),
        ("read", (0, 0)),
        ("read", ("0",)),
        ("read", (1.0,)),
        ("read", (0, None)),
        ("read", (2**70,)),
        ("write", (0x5000, 0)),
        ("write", (0, 0x100, 1)),
        ("write", (0, 0x10000, 2)),
        ("write", (0, 2**32, 4)),
        ("write", (0, -1, 1)),
        ("write", (0, 2**80, 4)),
        ("write", (0, 1.5, 1)),
        ("write", (0, b"\x01", 1)),
        ("write", (0, 1, 5)),
        ("write", (None, 1, 1)),
    ],
    ids=repr,
)
def test_host_misuse_raises_access_error(h: Harness, call: tuple[str, tuple[Any, ...]]) -> None:
    name, args = call
    with pytest.raises(AccessError) as info:
        getattr(h.core, name)(*args)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TpmDevError)
    assert "TIS" in str(info.value)


def test_last_bytes_of_region_are_valid(h: Harness) -> None:
    assert h.r(0x4FFF, 1) == 0xFF
    assert h.r(0x4FFE, 2) == 0xFFFF
    assert h.r(0x4FFC, 4) == 0xFFFFFFFF
    h.w(0x4FFF, 0xFF, 1)


# ---------------------------------------------------------------------------
# Access sizes and lanes (QEMU splits unaligned accesses)
# ---------------------------------------------------------------------------


def test_sts_lanes_and_byte_clamp(h: Harness) -> None:
    h.request_use(0)
    assert h.r(0x18) == 0x04100000
    assert h.r(0x18, 1) == 0x00
    assert h.r(0x19, 1) == 0xFF  # QUIRK: byte reads clamp the burst count to 0xFF
    assert h.r(0x1A, 1) == 0x00  # ... in every lane
    assert h.r(0x1B, 1) == 0x04
    assert h.r(0x1A, 2) == 0x0410  # no clamp for 2-byte reads
    assert h.r(0x19, 4) == 0xFF0410FF  # split: readb 0x19, readw 0x1A, readb 0x1C
    assert h.r(0x19, 2) == 0x00FF  # split: readb 0x19, readb 0x1A
    assert h.r(0x01, 4) == 0xFF000000  # ACCESS upper bytes read 0, then reserved 0x04
    assert h.r(0x17, 2) == 0x0030  # byte 0x17 of INTF_CAPABILITY, byte 0x18 of STS


def test_burst_unclamped_when_data_available(h: Harness) -> None:
    h.auto = bytes.fromhex("8001 000001fa 00000000") + bytes(496)  # 506-byte response
    h.request_use(0)
    h.ready(0)
    h.send(0, GETRANDOM)
    h.go(0)
    assert h.r(0x19, 1) == 0xFA and h.r(0x1A, 1) == 0x01


def test_register_lanes_shift_right(h: Harness) -> None:
    assert h.r(0x15, 1) == 0x06 and h.r(0x16, 2) == 0x3000 and h.r(0x17, 1) == 0x30
    assert h.r(0xF02, 2) == 0x0001 and h.r(0xF01, 1) == 0x10
    assert h.r(0x31, 1) == 0x21


def test_access_write_in_upper_lanes_does_nothing(h: Harness) -> None:
    h.w(0x01, 0x02, 1)
    assert h.access(0) == 0x81
    h.request_use(0)
    h.w(0x00, 0x2020, 2)  # a 16-bit write still relinquishes
    assert h.access(0) == 0x81


def test_unaligned_fifo_write_stores_three_bytes(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    h.w(0x25, 0x44332211)  # pieces: byte 0x25, word 0x26, byte 0x28 (reserved)
    assert bytes(h.core.buffer[:3]) == b"\x11\x22\x33"
    assert h.r(0x18) & 0x00FFFF00 == (4096 - 3) << 8


def test_locality4_writes_are_dropped(h: Harness) -> None:
    h.w(loc(4, R.TPM_ACCESS), 0x02, 1)
    assert h.access(4) == 0x81 and h.core.active_locality is None
    h.w(loc(4, R.TPM_INTERFACE_ID), R.TPM_INTERFACE_ID_INT_SEL_LOCK)
    assert h.r(loc(4, R.TPM_INTERFACE_ID)) == 0x2100
    h.request_use(0)
    h.w(loc(0, R.TPM_ACCESS), 0x02, 1)
    assert h.access(4) == 0x81  # locality 4 sees no request from itself
    h.w(loc(1, R.TPM_ACCESS), 0x02, 1)
    assert h.access(4) == 0x85  # but sees the pending request of another


def test_read_only_registers_ignore_writes(h: Harness) -> None:
    h.request_use(0)
    for reg in (
        R.TPM_INT_VECTOR,
        R.TPM_INTF_CAPABILITY,
        R.TPM_DID_VID,
        R.TPM_RID,
        R.TPM_DEBUG,
        0x04,
        0x40,
        0xFFC,
    ):
        before = h.r(reg)
        h.w(reg, 0x12345678)
        assert h.r(reg) == before, hex(reg)


def test_interface_id_lock_bit_is_sticky_everywhere(h: Harness) -> None:
    h.w(loc(2, 0x32), 0x08, 1)  # byte write of bit 19, inactive locality
    for locality in range(5):
        assert h.r(loc(locality, R.TPM_INTERFACE_ID)) == 0x00082100
    h.core.reset(2, 4096)
    assert h.r(R.TPM_INTERFACE_ID) == 0x2100


# ---------------------------------------------------------------------------
# Arbitration: QEMU's qtest sequences
# ---------------------------------------------------------------------------


def test_check_access_reg(h: Harness) -> None:
    for locality in range(4):
        assert h.access(locality) == 0x81
        h.request_use(locality)
        assert h.access(locality) == 0xA1
        h.w(loc(locality, R.TPM_ACCESS), 0x20, 1)
        assert h.access(locality) == 0x81


def test_check_access_reg_seize(h: Harness) -> None:
    for L in range(4):
        pending = 0
        assert h.access(L) == 0x81
        h.request_use(L)
        assert h.access(L) == 0xA1
        for lower in range(L):
            assert h.access(lower) == 0x81 | pending
            h.request_use(lower)
            assert h.access(lower) == 0x83 | pending
            assert h.access(L) == 0xA5
            h.w(loc(lower, R.TPM_ACCESS), 0x08, 1)  # seize from lower: ignored
            assert h.access(lower) == 0x83 | pending
            assert h.access(L) == 0xA5
            pending = 0x04
        for higher in range(L + 1, 4):
            h.request_use(higher)
            assert h.access(higher) == 0x83 | pending
            assert h.access(higher - 1) == 0xA5
            h.w(loc(higher, R.TPM_ACCESS), 0x08, 1)
            assert h.access(higher) == 0xA1 | pending
            assert h.access(higher - 1) == 0x91 | pending
            h.w(loc(higher - 1, R.TPM_ACCESS), 0x10, 1)
            assert h.access(higher - 1) == 0x81 | pending
        if L <= 1:
            pending = 0
        h.w(loc(3, R.TPM_ACCESS), 0x20, 1)
        assert h.access(3) == 0x81 | pending
        for lower in range(L - 1, -1, -1):
            assert h.access(lower) == 0xA1 | pending
            h.w(loc(lower, R.TPM_ACCESS), 0x20, 1)
            if lower == 1:
                pending = 0
        for locality in range(4):
            assert h.access(locality) == 0x81


def test_check_access_reg_release(h: Harness) -> None:
    for L in range(3, -1, -1):
        pending = 0
        assert h.access(L) == 0x81
        h.request_use(L)
        assert h.access(L) == 0xA1
        for other in range(4):
            if other == L:
                continue
            h.request_use(other)
            assert h.access(other) == 0x83 | pending
            pending = 0x04
        h.w(loc(L, R.TPM_ACCESS), 0x20, 1)
        for other in range(3, -1, -1):
            if other == L:
                continue
            assert h.access(other) == 0xA1 | pending
            h.w(loc(other, R.TPM_ACCESS), 0x20, 1)
            if other == 1 or (L <= 1 and other == 2):
                pending = 0
            assert h.access(other) == 0x81 | pending


@pytest.mark.parametrize(
    "steps, want",
    [
        # (locality, value written to ACCESS) ..., then ACCESS of localities 0..3
        ([(1, 0x02), (0, 0x20)], [0x81, 0xA1, 0x81, 0x81]),  # 0x20 by a non-owner: nothing to cancel
        ([(1, 0x02), (0, 0x02)], [0x83, 0xA5, 0x85, 0x85]),  # queued request shows as pending
        ([(1, 0x02), (0, 0x02), (0, 0x20)], [0x81, 0xA1, 0x81, 0x81]),  # 0x20 withdraws it
        ([(1, 0x02), (1, 0x02)], [0x81, 0xA1, 0x81, 0x81]),  # requestUse by the owner: ignored
        ([(0, 0x08)], [0xA1, 0x81, 0x81, 0x81]),  # seize with none active takes it
        ([(0, 0x02), (2, 0x0A)], [0x91, 0x81, 0xA1, 0x81]),  # seize+requestUse acts as seize
        ([(2, 0x02), (2, 0x08)], [0x81, 0x81, 0xA1, 0x81]),  # seize by the owner: nothing
        ([(1, 0x02), (0, 0x02), (2, 0x08)], [0x83, 0x95, 0xA5, 0x85]),  # queued request survives
        ([(1, 0x02), (2, 0x08), (3, 0x08), (2, 0x20)], [0x81, 0x91, 0x91, 0xA1]),  # beenSeized stays
    ],
)
def test_arbitration_table(h: Harness, steps: list[tuple[int, int]], want: list[int]) -> None:
    for locality, value in steps:
        h.w(loc(locality, R.TPM_ACCESS), value, 1)
    assert [h.access(i) for i in range(4)] == want


# ---------------------------------------------------------------------------
# Command state machine
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version, family", [(2, 0x04000000), (1, 0)])
def test_transmit_sts_after_every_byte(core_class: type, version: int, family: int) -> None:
    h = Harness(core_class, version, auto=RC_FAILURE)
    h.request_use(0)
    assert h.sts(0) == family | 0x00100000
    h.ready(0)
    assert h.sts(0) == family | 0x00100040
    for n, byte in enumerate(STARTUP, 1):
        h.w(R.TPM_DATA_FIFO, byte, 1)
        want = (4096 - n) << 8 | (0x80 if n == 12 else 0x88)
        assert h.sts(0) == family | want, n
    h.go(0)
    assert h.commands == [(0, STARTUP)]
    assert h.sts(0) == family | 0x00000A90
    out = []
    for n in range(10):
        out.append(h.r(R.TPM_DATA_FIFO, 1))
        if n < 9:
            assert h.sts(0) == family | (9 - n) << 8 | 0x90
    assert bytes(out) == RC_FAILURE
    assert h.sts(0) == family | 0x000FF680  # rw_offset stays at 10
    assert h.r(R.TPM_DATA_FIFO, 1) == 0xFF
    h.w(R.TPM_STS, R.TPM_STS_RESPONSE_RETRY, 1)
    assert h.sts(0) == family | 0x00000A90
    h.ready(0)
    assert h.sts(0) == family | 0x00100040


def test_fifo_ignored_outside_reception(h: Harness) -> None:
    h.request_use(0)
    h.w(R.TPM_DATA_FIFO, 0x80, 1)  # IDLE: dropped
    assert h.sts(0) == 0x04100000
    assert h.r(R.TPM_DATA_FIFO) == 0xFFFFFFFF
    assert h.r(loc(1, R.TPM_DATA_FIFO)) == 0xFFFFFFFF  # non-active locality


def test_fifo_from_non_active_locality_is_dropped(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    h.w(loc(1, R.TPM_DATA_FIFO), 0x80, 1)
    assert h.sts(0) == 0x04100040
    assert h.sts(1) == 0xFFFFFFFF


def test_xdata_fifo_is_a_fifo(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    for i in range(0, 12, 4):
        h.w(R.TPM_XDATA_FIFO + i, int.from_bytes(STARTUP[i : i + 4], "little"))
    assert h.sts(0) == 0x040FF480
    h.go(0)
    assert h.r(R.TPM_XDATA_FIFO_END, 2) == 0x0180 and h.r(R.TPM_XDATA_FIFO + 5, 1) == 0x00


def test_two_action_bits_are_ignored(h: Harness) -> None:
    h.request_use(0)
    h.w(R.TPM_STS, R.TPM_STS_COMMAND_READY | R.TPM_STS_GO, 1)
    assert h.sts(0) == 0x04100000


def test_tpmgo_with_expect_set_is_ignored(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    h.send(0, STARTUP[:8])
    h.go(0)
    assert h.commands == [] and h.sts(0) & 0xFF == 0x88


def test_command_ready_in_reception_returns_to_ready(h: Harness) -> None:
    h.request_use(0)
    h.w(loc(0, R.TPM_INT_ENABLE), 0x80000080)
    h.ready(0)
    h.w(loc(0, R.TPM_INT_STATUS), 0x80)
    h.send(0, STARTUP[:4])
    h.ready(0)
    assert h.sts(0) == 0x04100040
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x80  # the abort raises commandReady


def test_header_size_compared_in_16_bits(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    h.send(0, bytes.fromhex("8001 00010006"))  # 0x10006 truncates to 6: complete after 6 bytes
    assert h.sts(0) & 0xFF == 0x80


def test_over_long_command_drops_expect(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    h.send(0, bytes.fromhex("8001 0000ffff 00000144"))
    for _ in range(4096 - 10):
        h.w(R.TPM_DATA_FIFO, 0, 1)
    assert h.sts(0) == 0x04000088  # full buffer, still expecting
    h.w(R.TPM_DATA_FIFO, 0, 1)  # the 4097th byte
    assert h.sts(0) == 0x04000080
    h.w(R.TPM_DATA_FIFO, 0, 1)  # later bytes are ignored
    assert h.sts(0) == 0x04000080


def test_dword_write_of_ten_byte_command_sends_twelve(h: Harness) -> None:
    command = bytes.fromhex("8001 0000000a 0000017b") + b"\xaa\xbb"
    h.request_use(0)
    h.ready(0)
    for i in range(0, 12, 4):
        h.w(R.TPM_DATA_FIFO, int.from_bytes(command[i : i + 4], "little"))
    h.go(0)
    assert h.commands == [(0, command)]


def test_stale_rw_offset_after_relinquish_in_completion(h: Harness) -> None:
    h.request_use(0)
    h.ready(0)
    h.send(0, STARTUP)
    h.go(0)
    h.drain(0, 5)
    h.w(loc(0, R.TPM_ACCESS), 0x20, 1)  # nobody waiting: no abort, rw_offset stays 5
    h.request_use(1)
    h.ready(1)
    assert h.sts(1) == 0x040FFB40  # QUIRK: IDLE->READY keeps the stale offset
    h.w(loc(1, R.TPM_DATA_FIFO), 0x80, 1)
    assert h.core.buffer[5] == 0x80
    assert h.sts(1) == 0x040FFA88
    h.ready(1)  # commandReady in RECEPTION aborts: back to READY at offset 0
    assert h.sts(1) == 0x04100040


def test_selftest_done_set_in_all_localities(core_class: type) -> None:
    h = Harness(core_class, 1, auto=None)
    h.request_use(0)
    h.ready(0)
    h.send(0, bytes.fromhex("00c1 0000000a 00000053"))  # TPM_ContinueSelfTest
    h.go(0)
    h.core.complete(bytes.fromhex("00c4 0000000a 00000000"), True)
    for locality in range(5):  # the register image holds every locality's stored STS
        stored = int.from_bytes(bytes(h.core.mmio[loc(locality, R.TPM_STS) :][:4]), "little")
        assert stored & R.TPM_STS_SELFTEST_DONE, locality
    h.ready(0)
    h.ready(0)
    assert h.sts(0) == 0x00100044
    h.core.reset(1, 4096)
    h.request_use(0)
    assert h.sts(0) == 0x00100000


def test_reset_establishment_only_tpm2_locality3(core_class: type) -> None:
    for version, locality, asked in [(2, 3, True), (2, 2, False), (1, 3, False)]:
        h = Harness(core_class, version)
        h.request_use(locality)
        h.w(loc(locality, R.TPM_STS), R.TPM_STS_RESET_ESTABLISHMENT)
        assert (REQUEST_RESET_ESTABLISHED in h.requests) == asked


# ---------------------------------------------------------------------------
# Commands in flight: cancel, deferred hand-over, the double-delivery quirk
# ---------------------------------------------------------------------------


def start_command(h: Harness, locality: int, command: bytes = GETRANDOM) -> None:
    h.request_use(locality) if h.core.active_locality is None else None
    h.ready(locality)
    h.send(locality, command)
    h.go(locality)


def test_execution_state_until_complete(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    assert h.sts(0) == 0x040FF480
    assert h.r(R.TPM_DATA_FIFO, 1) == 0xFF
    h.w(R.TPM_DATA_FIFO, 0x12, 1)  # dropped in EXECUTION
    assert h.core.executing
    h.core.complete(RC_FAILURE)
    assert h.sts(0) == 0x04000A90


def test_command_cancel_asks_backend_only_in_execution(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    h.request_use(0)
    h.w(R.TPM_STS, R.TPM_STS_COMMAND_CANCEL)
    assert REQUEST_CANCEL not in h.requests
    start_command(h, 0)
    h.w(R.TPM_STS, R.TPM_STS_COMMAND_CANCEL)
    assert h.requests.count(REQUEST_CANCEL) == 1
    assert h.sts(0) == 0x040FF480  # no state change


def test_command_ready_during_execution_discards_response(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.w(loc(0, R.TPM_INT_ENABLE), 0x80000087)
    h.ready(0)
    assert REQUEST_CANCEL in h.requests
    assert h.sts(0) == 0x040FF480  # still executing until the response
    h.core.complete(RC_FAILURE)
    assert h.sts(0) == 0x04100040
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x83


def test_relinquish_during_execution_is_deferred(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.request_use(1)
    h.w(loc(0, R.TPM_ACCESS), 0x20, 1)
    assert h.access(0) == 0xA5 and h.access(1) == 0x83
    h.core.complete(RC_FAILURE)
    assert h.access(0) == 0x81 and h.access(1) == 0xA1


def test_seize_during_execution_is_deferred(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.w(loc(2, R.TPM_ACCESS), 0x08, 1)
    h.w(loc(1, R.TPM_ACCESS), 0x08, 1)  # lower seize while a higher one is pending: ignored
    assert h.access(0) == 0xA1 and h.access(2) == 0x81
    h.core.complete(RC_FAILURE)
    assert h.access(0) == 0x91 and h.access(2) == 0xA1 and h.access(1) == 0x81


def test_relinquish_without_waiter_during_execution_keeps_response(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.w(loc(0, R.TPM_ACCESS), 0x20, 1)
    h.core.complete(RC_FAILURE)
    h.request_use(0)
    assert h.sts(0) == 0x04000A90
    assert h.drain(0, 10) == RC_FAILURE


def test_second_tpmgo_steals_the_response(core_class: type) -> None:
    # QEMU: the second locality becomes the command's locality, so it gets
    # the first command's response and the first stays in EXECUTION.
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.w(loc(0, R.TPM_ACCESS), 0x20, 1)
    h.request_use(1)
    h.ready(1)
    h.ready(1)
    h.send(1, STARTUP)
    h.go(1)
    h.core.complete(bytes.fromhex("8001 0000001c 00000000 0010") + bytes(16))
    assert h.sts(1) == 0x04001C90
    h.w(loc(1, R.TPM_ACCESS), 0x20, 1)
    h.request_use(0)
    assert h.sts(0) == 0x04100080 and h.r(R.TPM_DATA_FIFO, 1) == 0xFF


def test_response_longer_than_buffer_is_cut(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    h.core.reset(2, 64)
    start_command(h, 0)
    h.core.complete(bytes.fromhex("8001 00000100 00000000") + bytes(246))
    assert h.sts(0) == 0x04004090


def test_complete_without_command_is_ignored(h: Harness) -> None:
    h.core.complete(RC_FAILURE)
    h.request_use(0)
    assert h.sts(0) == 0x04100000


def test_posted_completion_applies_at_next_access(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.core.post(RC_FAILURE)
    assert h.sts(0) == 0x04000A90


RC_OTHER = bytes.fromhex("8001 0000000e 00000000 12345678")  # a different, longer response


def test_second_complete_is_ignored(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    assert h.core.pending_command == (0, GETRANDOM)
    h.core.complete(RC_FAILURE)
    assert h.core.pending_command is None and not h.core.executing
    h.core.complete(RC_OTHER)  # stray: the command was already answered
    assert h.sts(0) == 0x04000A90 and h.drain(0, 10) == RC_FAILURE
    h.ready(0)
    h.core.complete(RC_OTHER)  # stray, with the locality READY
    assert h.sts(0) == 0x04100040 and h.core.locality_state(0) == R.TIS_STATE_READY
    assert h.core.pending_command is None


def test_stray_posted_completion_is_ignored(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.core.post(RC_FAILURE)
    h.core.post(RC_FAILURE)  # the second replaces the first: one completion
    assert h.core.poll() and not h.core.poll()
    h.ready(0)
    h.core.post(RC_OTHER)
    assert h.core.poll()  # applied, and ignored: nothing in flight
    assert h.sts(0) == 0x04100040 and h.core.locality_state(0) == R.TIS_STATE_READY


def test_complete_after_reset_is_ignored(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.core.reset(2, 4096)
    assert h.core.pending_command is None
    h.core.complete(RC_FAILURE)
    h.request_use(0)
    assert h.sts(0) == 0x04100000 and h.core.locality_state(0) == R.TIS_STATE_IDLE


def test_stray_complete_after_second_tpmgo_leaves_first_locality_executing(core_class: type) -> None:
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.w(loc(0, R.TPM_ACCESS), 0x20, 1)
    h.request_use(1)
    h.ready(1)
    h.ready(1)
    h.send(1, STARTUP)
    h.go(1)
    assert h.core.pending_command == (1, STARTUP)
    h.core.complete(RC_FAILURE)  # the first command's response: lands at locality 1 (QUIRK)
    h.core.complete(RC_OTHER)  # stray
    assert h.sts(1) == 0x04000A90 and h.drain(1, 10) == RC_FAILURE
    assert h.core.locality_state(0) == R.TIS_STATE_EXECUTION and not h.core.executing


@pytest.mark.parametrize("failed", [False, True], ids=["ok", "failed"])
def test_failed_flag_is_accepted_and_ignored(core_class: type, failed: bool) -> None:
    fatal = bytes.fromhex("00c4 0000000a 00000009")
    h = Harness(core_class, auto=None)
    start_command(h, 0)
    h.core.complete(fatal, False, failed)
    assert h.sts(0) == 0x04000A90 and h.drain(0, 10) == fatal
    h.ready(0)
    h.send(0, GETRANDOM)
    h.go(0)
    h.core.post(fatal, selftest_done=False, failed=failed)
    assert h.sts(0) == 0x04000A90 and h.drain(0, 10) == fatal


# ---------------------------------------------------------------------------
# Reads past the buffer (QEMU reads its own state there)
# ---------------------------------------------------------------------------

FILL = bytes.fromhex("8001 00001000") + bytes(5000)  # header: 4096 bytes; 5006 bytes in all


def leave_response(h: Harness, locality: int, command: bytes) -> None:
    """*locality* runs *command* and relinquishes with the response unread."""
    h.request_use(locality)
    h.w(loc(locality, R.TPM_INT_ENABLE), 0x80000002)  # stsValid interrupt
    h.ready(locality)
    h.ready(locality)
    h.send(locality, command)
    h.go(locality)
    assert h.sts(locality) & 0xFF == 0x90
    h.w(loc(locality, R.TPM_ACCESS), 0x20, 1)


def fill_buffer(h: Harness, locality: int = 1) -> None:
    h.request_use(locality)
    h.ready(locality)
    h.send(locality, FILL)  # rw_offset stops at 4096, Expect drops
    assert h.sts(locality) == 0x04000080
    h.w(loc(locality, R.TPM_ACCESS), 0x20, 1)


def test_fifo_read_past_the_buffer_reads_qemus_rw_offset(h: Harness) -> None:
    # The sequence, values from the QEMU 7.2 oracle.
    leave_response(h, 0, STARTUP)
    fill_buffer(h)
    h.request_use(0)
    h.w(loc(0, R.TPM_INT_STATUS), 0xFF)
    assert h.sts(0) == 0x04000090  # dataAvail, burst count 0
    assert [h.r(R.TPM_STS + i, 1) for i in range(4)] == [0x90, 0x00, 0x00, 0x04]
    assert h.r(R.TPM_DATA_FIFO, 1) == 0x01  # buffer[4096]: low byte of rw_offset 4097
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x02  # dataAvail dropped: stsValid
    assert h.sts(0) == 0xFFFFFF80  # the burst count wraps (unsigned, as QEMU's)
    assert [h.r(R.TPM_STS + i, 1) for i in range(4)] == [0x80, 0xFF, 0x00, 0x04]  # clamped byte
    assert h.r(R.TPM_STS, 2) == 0xFF80 and h.r(R.TPM_STS + 2, 2) == 0xFFFF
    assert h.r(R.TPM_DATA_FIFO, 1) == 0xFF
    h.w(R.TPM_STS, R.TPM_STS_RESPONSE_RETRY, 1)
    assert h.sts(0) == 0x04100090 and h.r(R.TPM_DATA_FIFO) == 0x00000180


def test_dword_fifo_read_past_the_buffer(h: Harness) -> None:
    leave_response(h, 0, STARTUP)
    fill_buffer(h)
    h.request_use(0)
    assert h.r(R.TPM_DATA_FIFO) == 0xFFFFFF01


@pytest.mark.parametrize(
    "readers, want",
    [([0, 2, 3], [0x01, 0x10, 0x03]), ([3, 2, 0], [0x01, 0x10, 0x00])],
    ids=["0-2-3", "3-2-0"],
)
def test_three_readers_past_the_buffer(core_class: type, readers: list[int], want: list[int]) -> None:
    # Values from the QEMU 7.2 oracle: rw_offset's two bytes, then active_locty.
    h = Harness(core_class)
    for locality in readers:
        leave_response(h, locality, STARTUP)
    fill_buffer(h)
    got = []
    for n, locality in enumerate(readers):
        h.request_use(locality)
        assert h.sts(locality) == [0x04000090, 0xFFFFFF90, 0xFFFFFE90][n]
        got.append(h.r(loc(locality, R.TPM_DATA_FIFO), 1))
        assert h.sts(locality) == [0xFFFFFF80, 0xFFFFFE80, 0xFFFFFD80][n]
        h.w(loc(locality, R.TPM_ACCESS), 0x20, 1)
    assert got == want


@pytest.mark.parametrize("readers, tail", [([0], "01"), ([0, 2, 3], "031001")], ids=["one", "three"])
def test_command_sent_after_reads_past_the_buffer(core_class: type, readers: list[int], tail: str) -> None:
    # QEMU sends rw_offset bytes: the ones past the buffer come from its state.
    h = Harness(core_class)
    for locality in readers:
        leave_response(h, locality, STARTUP)
    fill_buffer(h)
    for locality in readers:
        h.request_use(locality)
        h.r(loc(locality, R.TPM_DATA_FIFO), 1)
        h.w(loc(locality, R.TPM_ACCESS), 0x20, 1)
    h.request_use(1)
    h.go(1)  # the filler is still in RECEPTION with Expect clear
    assert h.commands[-1] == (1, FILL[:4096] + bytes.fromhex(tail))


# ---------------------------------------------------------------------------
# Interrupts
# ---------------------------------------------------------------------------


def test_int_any_locality_defaults_to_qemu_7_2(core_class: type) -> None:
    assert core_class(2, 4096).int_any_locality is False
    assert core_class(2, 4096, int_any_locality=True).int_any_locality is True


@pytest.mark.parametrize("any_locality", [False, True], ids=["qemu-7.2", "qemu-8.0"])
@pytest.mark.parametrize(
    "active, writer",
    [(None, 0), (None, 3), (0, 0), (0, 2), (2, 2), (2, 0), (3, 1), (0, 4)],
    ids=lambda v: "none" if v is None else str(v),
)
def test_int_enable_write_by_locality(
    core_class: type, any_locality: bool, active: int | None, writer: int
) -> None:
    h = Harness(core_class, int_any_locality=any_locality)
    if active is not None:
        h.request_use(active)
    h.w(loc(writer, R.TPM_INT_ENABLE), 0x8000008F)
    taken = writer != 4 and (any_locality or writer == active)  # locality 4: never
    assert h.r(loc(writer, R.TPM_INT_ENABLE)) == (0x8000008F if taken else 0x08)
    for other in range(5):
        if other != writer:
            assert h.r(loc(other, R.TPM_INT_ENABLE)) == 0x08


@pytest.mark.parametrize(
    "any_locality, status, levels",
    [(False, 0x80, [1]), (True, 0x00, [1, 0])],
    ids=["qemu-7.2", "qemu-8.0"],
)
def test_int_status_clear_by_inactive_locality(
    core_class: type, any_locality: bool, status: int, levels: list[int]
) -> None:
    h = Harness(core_class, int_any_locality=any_locality)
    h.request_use(1)
    h.w(loc(1, R.TPM_INT_ENABLE), 0x8000008F)
    h.ready(1)  # commandReady interrupt at locality 1
    h.request_use(2)
    h.w(loc(1, R.TPM_ACCESS), 0x20, 1)  # locality 2 takes over
    h.w(loc(1, R.TPM_INT_STATUS), 0x80)  # written by the locality that lost the TPM
    assert h.r(loc(1, R.TPM_INT_STATUS)) == status and h.irq_levels == levels
    h.w(loc(4, R.TPM_INT_STATUS), 0x80)  # locality 4 writes are dropped either way
    assert h.irq_levels == levels


@pytest.mark.parametrize("any_locality", [False, True], ids=["qemu-7.2", "qemu-8.0"])
def test_interrupts_enabled_while_inactive_fire_later(core_class: type, any_locality: bool) -> None:
    # QEMU 8.0: a driver may set INT_ENABLE before it requests the locality.
    h = Harness(core_class, int_any_locality=any_locality)
    h.w(loc(1, R.TPM_INT_ENABLE), 0x80000004)  # localityChange
    h.request_use(1)
    assert h.r(loc(1, R.TPM_INT_STATUS)) == (0x04 if any_locality else 0)
    assert h.irq_levels == ([1] if any_locality else [])


def test_int_enable_writes_only_from_active_locality(h: Harness) -> None:
    h.w(loc(0, R.TPM_INT_ENABLE), 0x8000008F)
    assert h.r(loc(0, R.TPM_INT_ENABLE)) == 0x08  # QEMU 7.2: dropped, none active
    h.request_use(0)
    h.w(loc(2, R.TPM_INT_ENABLE), 0x8000008F)
    assert h.r(loc(2, R.TPM_INT_ENABLE)) == 0x08
    h.w(loc(0, R.TPM_INT_ENABLE), 0xFFFFFFFF)
    assert h.r(loc(0, R.TPM_INT_ENABLE)) == 0x8000009F
    h.w(loc(0, R.TPM_INT_ENABLE + 3), 0x00, 1)  # byte write replaces only its byte
    assert h.r(loc(0, R.TPM_INT_ENABLE)) == 0x0000009F


def test_interrupt_events_and_line(h: Harness) -> None:
    h.request_use(0)
    h.w(loc(0, R.TPM_INT_ENABLE), 0x80000087)
    assert h.irq_levels == []
    h.ready(0)
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x80 and h.irq_levels == [1]
    h.ready(0)  # READY->READY: no interrupt
    h.w(loc(0, R.TPM_INT_STATUS), 0x80)
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0 and h.irq_levels == [1, 0]
    h.send(0, STARTUP)
    assert h.irq_levels == [1, 0]  # no interrupt for FIFO writes
    h.go(0)
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x03 and h.irq_levels == [1, 0, 1]
    h.w(loc(0, R.TPM_INT_STATUS), 0x03)
    h.drain(0, 10)
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x02  # last byte read: stsValid


def test_data_avail_alone_still_latches_both_bits(h: Harness) -> None:
    h.request_use(0)
    h.w(loc(0, R.TPM_INT_ENABLE), 0x80000001)
    start_command(h, 0, STARTUP)
    assert h.r(loc(0, R.TPM_INT_STATUS)) == 0x03


def test_locality_change_interrupt_on_new_locality(h: Harness) -> None:
    h.request_use(1)
    h.w(loc(1, R.TPM_INT_ENABLE), 0x80000004)
    h.w(loc(1, R.TPM_ACCESS), 0x20, 1)  # relinquish with nobody waiting: no event
    assert h.irq_levels == []
    h.request_use(1)
    assert h.r(loc(1, R.TPM_INT_STATUS)) == 0x04 and h.irq_levels == [1]


def test_int_status_clear_needs_active_locality_and_lowers_shared_line(h: Harness) -> None:
    h.request_use(1)
    h.w(loc(1, R.TPM_INT_ENABLE), 0x8000008F)
    h.ready(1)
    assert h.r(loc(1, R.TPM_INT_STATUS)) == 0x80
    h.request_use(2)
    h.w(loc(1, R.TPM_ACCESS), 0x20, 1)  # locality 2 takes over
    h.w(loc(1, R.TPM_INT_STATUS), 0x80)
    assert h.r(loc(1, R.TPM_INT_STATUS)) == 0x80 and h.irq_levels == [1]
    h.w(loc(2, R.TPM_INT_ENABLE), 0x80000080)
    h.ready(2)
    h.w(loc(2, R.TPM_INT_STATUS), 0x80)  # QUIRK: lowers the line though locality 1 is pending
    assert h.irq_levels == [1, 0]
    assert h.r(loc(1, R.TPM_INT_STATUS)) == 0x80


def test_irq_callback_only_on_change(h: Harness) -> None:
    h.request_use(0)
    h.w(loc(0, R.TPM_INT_ENABLE), 0x80000087)
    h.ready(0)
    start_command(h, 0, STARTUP)
    assert h.irq_levels == [1]


# ---------------------------------------------------------------------------
# Guest input never raises
# ---------------------------------------------------------------------------


def test_every_byte_value_everywhere_is_handled(h: Harness) -> None:
    h.request_use(0)
    for off in range(0, 0x5000, 0x3):
        for size in (1, 2, 4):
            if off + size <= 0x5000:
                h.core.read(off, size)
                h.core.write(off, (0xA5A5A5A5 ^ off) & ((1 << (8 * size)) - 1), size)


# ---------------------------------------------------------------------------
# Repeated accesses: write_many / read_many are that many single accesses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize(
    "offset", [R.TPM_DATA_FIFO, R.TPM_DATA_FIFO + 1, R.TPM_XDATA_FIFO, R.TPM_STS, 0x1024]
)
def test_many_equals_single_accesses(core_class: type, size: int, offset: int) -> None:
    many, single = Harness(core_class), Harness(core_class)
    data = bytes.fromhex("8001 0000001c 0000017b 0010") + bytes(range(16))
    data = data[: len(data) // size * size]
    for h in (many, single):
        h.request_use(0)
        h.ready(0)
    many.core.write_many(offset, data, size)
    for i in range(0, len(data), size):
        single.w(offset, int.from_bytes(data[i : i + size], "little"), size)
    assert bytes(many.core.mmio) == bytes(single.core.mmio)
    assert bytes(many.core.buffer) == bytes(single.core.buffer)
    assert many.commands == single.commands
    got = many.core.read_many(offset, 12, size)
    want = b"".join(single.r(offset, size).to_bytes(size, "little") for _ in range(12))
    assert got == want and many.irq_levels == single.irq_levels


@pytest.mark.parametrize(
    "call",
    [
        ("write_many", (0x24, [1, 2])),
        ("write_many", (0x24, b"\x01\x02\x03", 2)),
        ("write_many", (0x5000, b"\x01")),
        ("write_many", (0x24, b"\x01", 3)),
        ("read_many", (0x24, -1)),
        ("read_many", (0x24, 1, 8)),
        ("read_many", ("0x24", 1)),
    ],
    ids=repr,
)
def test_many_host_misuse(h: Harness, call: tuple[str, tuple[Any, ...]]) -> None:
    name, args = call
    with pytest.raises(AccessError):
        getattr(h.core, name)(*args)
