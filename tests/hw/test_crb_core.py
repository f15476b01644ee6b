"""The CRB register model through its sans-IO boundary, on both variants.

The test plays the device layer (``Harness``): it answers the core's
requests itself, so every transition, including a command held in flight,
is driven deterministically. Expected values are QEMU 7.2's (spec sections
4 and 0.3, and QEMU's own tpm-crb-test, section 10.2).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pytest

from tpmdev import AccessError, ConfigurationError
from tpmdev.hw import regs as R
from tpmdev.hw.core import REQUEST_CANCEL, REQUEST_COMMAND, REQUEST_ESTABLISHED, REQUEST_RESET_ESTABLISHED

STARTUP = bytes.fromhex("8001 0000000c 00000144 0000")  # TPM2_Startup(SU_CLEAR)
RC_FAILURE = bytes.fromhex("8001 0000000a 00000101")
RC_SUCCESS = bytes.fromhex("8001 0000000a 00000000")
FATAL = bytes.fromhex("00c4 0000000a 00000009")
BUF = R.TPM_CRB_DATA_BUFFER

LOC_STATE = R.TPM_LOC_STATE
LOC_CTRL = R.TPM_LOC_CTRL
LOC_STS = R.TPM_LOC_STS
CTRL_REQ = R.TPM_CRB_CTRL_REQ
CTRL_STS = R.TPM_CRB_CTRL_STS
CTRL_CANCEL = R.TPM_CRB_CTRL_CANCEL
CTRL_START = R.TPM_CRB_CTRL_START

#: QEMU 7.2's reset value of every 4-byte slot of the register block.
RESET_VALUES = {
    0x00: 0x00000081,  # LOC_STATE: tpmRegValidSts, tpmEstablished (a fresh TPM: not established)
    0x30: 0x00025811,  # INTF_ID
    0x34: 0x00001014,  # INTF_ID high: VID
    0x44: 0x00000002,  # CTRL_STS: tpmIdle
    0x58: 0x00000F80,  # CMD_SIZE
    0x5C: 0xFED40080,  # CMD_LADDR
    0x64: 0x00000F80,  # RSP_SIZE
    0x68: 0xFED40080,  # RSP_ADDR
}


def loc(locality: int, reg: int) -> int:
    return (locality << R.CRB_LOCALITY_SHIFT) + reg


class Harness:
    """Plays the device layer around a core: records what it asks for."""

    def __init__(
        self,
        core_class: type,
        *,
        auto: Optional[bytes] = RC_SUCCESS,
        established: Optional[bool] = False,
        bufsize: int = 4096,
        localities: int = 1,
        failed: bool = False,
        **kwargs: Any,
    ) -> None:
        self.requests: list[int] = []
        self.commands: list[tuple[int, bytes]] = []
        self.auto = auto  # respond at once with this, or leave the command in flight
        self.failed = failed
        self.established = established  # None: never answer
        self.core = core_class(2, bufsize, self.on_request, localities, **kwargs)

    def on_request(self, kind: int) -> None:
        self.requests.append(kind)
        if kind == REQUEST_COMMAND:
            pending = self.core.pending_command
            assert pending is not None and self.core.executing
            self.commands.append(pending)
            if self.auto is not None:
                self.core.complete(self.auto, failed=self.failed)
        elif kind == REQUEST_ESTABLISHED:
            if self.established is not None:
                self.core.set_established(self.established)

    def r(self, off: int, size: int = 4) -> int:
        return int(self.core.read(off, size))

    def w(self, off: int, value: int, size: int = 4) -> None:
        self.core.write(off, value, size)

    def put(self, data: bytes, locality: int = 0) -> None:
        """Write *data* into the data buffer, byte by byte as EDK2 does."""
        self.core.write_many(loc(locality, BUF), b"", 1)
        for i, byte in enumerate(data):
            self.w(loc(locality, BUF) + i, byte, 1)

    def get(self, n: int, locality: int = 0) -> bytes:
        return bytes(self.r(loc(locality, BUF) + i, 1) for i in range(n))

    def regs(self) -> bytes:
        return bytes(self.core.mmio[:BUF])

    def request_access(self, locality: int = 0) -> None:
        self.w(loc(locality, LOC_CTRL), R.TPM_LOC_CTRL_REQUEST_ACCESS, 1)


@pytest.fixture
def h(crb_core_class: type) -> Harness:
    return Harness(crb_core_class)


# ---------------------------------------------------------------------------
# Reset values and reads
# ---------------------------------------------------------------------------


def test_reset_value_of_every_register(h: Harness) -> None:
    for slot in range(0, BUF, 4):
        assert h.r(slot) == RESET_VALUES.get(slot, 0), hex(slot)


@pytest.mark.parametrize("tpm_version", [1, 2, 0])
def test_reset_values_do_not_depend_on_the_tpm_version(crb_core_class: type, tpm_version: int) -> None:
    core = crb_core_class(tpm_version)
    assert core.tpm_version == tpm_version
    for slot in range(4, BUF, 4):
        assert core.read(slot) == RESET_VALUES.get(slot, 0), hex(slot)
    assert core.read(0) == 0x81  # nobody answers: not established


def test_reads_follow_the_lane_shift(h: Harness) -> None:
    assert h.r(0x30, 8) == 0x0000101400025811
    assert h.r(0x5C, 8) == 0x00000000FED40080
    assert h.r(0x68, 8) == 0x00000000FED40080
    assert h.r(0x31, 1) == 0x58 and h.r(0x32, 2) == 0x0002 and h.r(0x33, 1) == 0x00
    assert h.r(0x5D, 2) == 0xD400  # unaligned: 0x5D (1 byte) + 0x5E (1 byte)
    assert h.r(0x5E, 2) == 0xFED4
    assert h.r(0x2E, 4) == 0x58110000  # 0x2E (2) + 0x30 (2)
    assert h.r(0x7C, 8) == 0  # last register + first buffer bytes (fresh buffer: zero)


def test_tpm_established_is_computed_only_at_address_zero(crb_core_class: type) -> None:
    for established, bit in ((False, 1), (True, 0), (None, 1)):
        h = Harness(crb_core_class, established=established)
        assert h.r(0, 1) == 0x80 | bit
        assert h.r(0, 2) == 0x80 | bit
        assert h.r(0, 4) == 0x80 | bit
        assert h.r(0, 8) == 0x80 | bit
        assert h.core.read_many(0, 2) == bytes([0x80 | bit]) * 2
        assert h.requests == [REQUEST_ESTABLISHED] * 6  # asked at every read: nothing cached
        assert h.r(1, 1) == 0 and h.r(1, 2) == 0 and h.r(1, 4) == 0
        assert h.requests == [REQUEST_ESTABLISHED] * 6
        assert h.core.mmio[0] == 0x80  # the stored register has no bit 0


def test_established_flag_changes_are_seen_at_once(h: Harness) -> None:
    assert h.r(0, 1) == 0x81
    h.established = True
    assert h.r(0, 1) == 0x80
    h.established = False
    assert h.r(0, 1) == 0x81


# ---------------------------------------------------------------------------
# Writes: exact address, exact value, nothing stored
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "value", "size", "acts"),
    [
        (0x08, 1, 1, True),
        (0x08, 1, 2, True),
        (0x08, 1, 4, True),
        (0x08, 1, 8, True),  # split: 1 at 0x08, 0 at 0x0C
        (0x09, 1, 1, False),  # wrong lane
        (0x08, 0x101, 2, False),  # value not exactly 1
        (0x08, 0x101, 4, False),
        (0x08, 3, 4, False),  # two actions at once
        (0x08, 0x100, 2, False),
        (0x07, 0x100, 2, True),  # split: 1 byte at 0x07, then 1 byte at 0x08 = 1
        (0x07, 0x0100, 4, True),  # split: 0x07 (1 byte 0x00), 0x08 (2 bytes 0x0001), 0x0A (1 byte)
        (0x04, 0x0000000100000000, 8, True),  # the high half lands on 0x08
    ],
)
def test_request_access_dispatch(h: Harness, offset: int, value: int, size: int, acts: bool) -> None:
    h.w(offset, value, size)
    granted = 0x83 if acts else 0x81
    assert h.r(LOC_STATE, 1) == granted
    assert h.r(LOC_STS) == (1 if acts else 0)


def test_locality_request_and_relinquish(h: Harness) -> None:
    h.request_access()
    assert h.r(LOC_STATE) == 0x83 and h.r(LOC_STS) == R.TPM_LOC_STS_GRANTED
    assert h.core.active_locality == 0
    h.request_access()  # again: unchanged
    assert h.r(LOC_STATE) == 0x83 and h.r(LOC_STS) == 1
    h.w(LOC_CTRL, R.TPM_LOC_CTRL_RELINQUISH, 2)  # writew 0x08 = 2 acts
    assert h.r(LOC_STATE) == 0x81 and h.r(LOC_STS) == 0
    assert h.core.active_locality is None
    h.w(LOC_CTRL, R.TPM_LOC_CTRL_RELINQUISH, 1)  # relinquish when not assigned: nothing
    assert h.r(LOC_STATE) == 0x81 and h.r(LOC_STS) == 0


@pytest.mark.parametrize(
    "value", [R.TPM_LOC_CTRL_SEIZE, R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT, 0, 0xFF, 0x10]
)
def test_seize_and_reset_establishment_are_ignored(h: Harness, value: int) -> None:
    before = h.regs()
    h.w(LOC_CTRL, value, 1)
    h.request_access()
    after_grant = h.regs()
    h.w(LOC_CTRL, value, 1)
    assert h.regs() == after_grant and before != after_grant
    assert h.requests == []


def test_cmd_ready_and_go_idle(h: Harness) -> None:
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_CMD_READY)  # no locality needed
    assert h.r(CTRL_STS) == 0 and h.r(CTRL_REQ) == 0  # the request bit reads 0 at once
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_CMD_READY, 1)
    assert h.r(CTRL_STS) == 0
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_GO_IDLE, 2)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE
    h.w(CTRL_REQ, 3)  # both: nothing
    h.w(CTRL_REQ + 1, 1, 1)  # wrong lane: nothing
    h.w(CTRL_REQ, 0x101, 4)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE


def test_read_only_registers_keep_their_values(h: Harness) -> None:
    h.request_access()
    before = h.regs()
    for slot in range(0, BUF, 4):
        if slot in (LOC_CTRL, CTRL_REQ, CTRL_CANCEL, CTRL_START):
            continue
        for size in (1, 2, 4, 8):
            if slot + size <= BUF and slot + size <= 0x1000:
                for value in (0, (1 << (8 * size)) - 1, 0x5A5A5A5A5A5A5A5A & ((1 << (8 * size)) - 1)):
                    if size == 8 and (slot + 4) in (LOC_CTRL, CTRL_REQ, CTRL_CANCEL, CTRL_START):
                        continue
                    h.w(slot, value, size)
    assert h.regs() == before
    assert h.requests.count(REQUEST_COMMAND) == 0


def test_edk2_writes_to_the_address_registers_are_ignored(h: Harness) -> None:
    # EDK2 writes CMD_HADDR, CMD_LADDR, CMD_SIZE, a 64-bit RSP_ADDR and RSP_SIZE
    before = h.regs()
    h.w(R.TPM_CRB_CTRL_CMD_HADDR, 0)
    h.w(R.TPM_CRB_CTRL_CMD_LADDR, 0x12345678)
    h.w(R.TPM_CRB_CTRL_CMD_SIZE, 0x100)
    h.w(R.TPM_CRB_CTRL_RSP_ADDR, 0x1_12345678, 8)
    h.w(R.TPM_CRB_CTRL_RSP_SIZE, 0x100)
    assert h.regs() == before


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def test_full_command_as_qemus_crb_test(h: Harness) -> None:
    h.request_access()
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_CMD_READY)
    h.put(STARTUP + b"\x00")  # with a trailing NUL, as the test sends it
    h.w(CTRL_START, R.TPM_CRB_CTRL_START_INVOKE)
    assert h.commands == [(0, STARTUP)]  # the header size, not what was written
    assert h.r(CTRL_START) == 0 and h.r(CTRL_STS) == 0
    assert h.get(11) == RC_SUCCESS + b"\x00"  # the trailing byte stays in the buffer
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_GO_IDLE)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE
    h.w(LOC_CTRL, R.TPM_LOC_CTRL_RELINQUISH)
    assert h.r(LOC_STATE) == 0x81 and h.r(LOC_STS) == 0


def test_start_works_while_idle(h: Harness) -> None:
    h.request_access()
    h.put(STARTUP)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE
    h.w(CTRL_START, 1, 1)
    assert h.commands == [(0, STARTUP)]


def test_start_without_locality_is_ignored(h: Harness) -> None:
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    assert h.r(CTRL_START) == 0 and h.requests == []
    h.request_access()
    h.w(LOC_CTRL, R.TPM_LOC_CTRL_RELINQUISH)
    h.w(CTRL_START, 1)
    assert h.requests == []


@pytest.mark.parametrize(
    ("offset", "value", "size"), [(0x4C, 3, 4), (0x4C, 0x101, 2), (0x4D, 1, 1), (0x4C, 2, 1)]
)
def test_start_needs_exactly_one_at_the_register(h: Harness, offset: int, value: int, size: int) -> None:
    h.request_access()
    h.put(STARTUP)
    h.w(offset, value, size)
    assert h.requests == [] and h.r(CTRL_START) == 0


@pytest.mark.parametrize(
    ("offset", "value", "size"), [(0x4C, 1, 1), (0x4C, 1, 2), (0x4C, 1, 8), (0x4B, 0x100, 4)]
)
def test_start_every_way_it_acts(h: Harness, offset: int, value: int, size: int) -> None:
    h.request_access()
    h.put(STARTUP)
    h.w(offset, value, size)
    assert h.commands == [(0, STARTUP)]


def test_start_while_started_is_ignored(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    assert h.r(CTRL_START) == 1 and h.core.executing
    h.w(CTRL_START, 1)
    assert h.requests == [REQUEST_COMMAND]
    h.core.complete(RC_FAILURE)
    assert h.r(CTRL_START) == 0 and not h.core.executing
    assert h.get(10) == RC_FAILURE
    assert h.core.pending_command is None


def test_relinquish_during_a_command_does_not_stop_it(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    h.w(LOC_CTRL, R.TPM_LOC_CTRL_RELINQUISH)
    assert h.r(CTRL_START) == 1 and h.r(LOC_STATE) == 0x81
    h.core.complete(RC_SUCCESS)
    assert h.r(CTRL_START) == 0 and h.get(10) == RC_SUCCESS


def test_cancel_only_while_started(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.w(CTRL_CANCEL, 1)
    assert h.requests == []
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    h.w(CTRL_CANCEL, 2)
    h.w(CTRL_CANCEL + 1, 1, 1)
    h.w(CTRL_CANCEL, 0x101)
    assert h.requests == [REQUEST_COMMAND]
    h.w(CTRL_CANCEL, 1, 1)
    assert h.requests == [REQUEST_COMMAND, REQUEST_CANCEL]
    assert h.r(CTRL_CANCEL) == 0  # never reads back 1
    h.core.complete(bytes.fromhex("8001 0000000a 00000909"))  # TPM_RC_CANCELED
    h.w(CTRL_CANCEL, 1)
    assert h.requests == [REQUEST_COMMAND, REQUEST_CANCEL]


def test_linux_clears_cancel_before_start(h: Harness) -> None:
    h.request_access()
    h.w(CTRL_CANCEL, 0)
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    assert h.requests == [REQUEST_COMMAND]


def test_a_quadword_cancel_and_start_run_low_half_first(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_CANCEL, 0x00000001_00000001, 8)  # cancel (nothing running), then start
    assert h.requests == [REQUEST_COMMAND]
    h.w(CTRL_CANCEL, 0x00000001_00000001, 8)  # cancel (running), start (already set)
    assert h.requests == [REQUEST_COMMAND, REQUEST_CANCEL]


@pytest.mark.parametrize(
    ("header_size", "bufsize", "sent"),
    [
        (12, 4096, 12),
        (0, 4096, 0),  # QUIRK: no minimum; QEMU sends nothing useful
        (5, 4096, 5),
        (0x1000, 4096, 0xF80),  # capped at the buffer
        (0xFFFFFFFF, 4096, 0xF80),
        (0x500, 1024, 1024),  # capped at the backend's buffer size
        (12, 0, 0),
    ],
)
def test_command_length_is_header_size_capped(
    crb_core_class: type, header_size: int, bufsize: int, sent: int
) -> None:
    h = Harness(crb_core_class, bufsize=bufsize, auto=None)
    command = bytes.fromhex("8001") + header_size.to_bytes(4, "big") + bytes(range(6, 256)) * 16
    h.core.mmio[BUF:0x1000] = np.frombuffer(command[: 0x1000 - BUF], dtype=np.uint8)
    h.request_access()
    h.w(CTRL_START, 1)
    assert h.commands == [(0, command[:sent])]
    assert h.core.bufsize == min(bufsize, 0xF80)


def test_response_longer_than_the_buffer_is_cut(crb_core_class: type) -> None:
    h = Harness(crb_core_class, bufsize=1024, auto=bytes(range(256)) * 8)
    h.core.mmio[BUF:0x1000] = 0xEE
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    assert bytes(h.core.mmio[BUF : BUF + 1024]) == (bytes(range(256)) * 8)[:1024]
    assert h.r(BUF + 1024, 1) == 0xEE


def test_backend_failure_sets_tpm_sts_until_reset(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=FATAL, failed=True)
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_STS | R.TPM_CRB_CTRL_STS_TPM_IDLE  # 0x3, as QEMU
    assert h.get(10) == FATAL and h.r(CTRL_START) == 0
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_CMD_READY)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_STS
    h.w(CTRL_REQ, R.TPM_CRB_CTRL_REQ_GO_IDLE)
    assert h.r(CTRL_STS) == 0x3
    h.failed = False
    h.w(CTRL_START, 1)  # a later success does not clear it
    assert h.r(CTRL_STS) == 0x3
    h.core.reset(2, 4096)
    assert h.r(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE


def test_selftest_done_changes_nothing(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    before = h.regs()
    h.core.complete(RC_SUCCESS, selftest_done=True)
    after = bytearray(before)
    after[CTRL_START] = 0
    assert h.regs() == bytes(after)


def test_complete_without_a_command_does_nothing(h: Harness) -> None:
    before = bytes(h.core.mmio)
    h.core.complete(RC_FAILURE, failed=True)
    h.core.post(RC_FAILURE, failed=True)
    assert h.core.poll() is True
    assert bytes(h.core.mmio) == before


def test_posted_completion_applies_at_the_next_access(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.request_access()
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    h.core.post(RC_FAILURE)
    assert h.core.mmio[CTRL_START] == 1  # not yet
    assert h.r(CTRL_START) == 0
    assert h.get(10) == RC_FAILURE


def test_buffer_is_plain_memory_at_every_size(h: Harness) -> None:
    for off in range(BUF, 0x1000, 0x1F3):
        for size in (1, 2, 4, 8):
            if off + size <= 0x1000:
                value = (0x1122334455667788 * (off + 1)) & ((1 << (8 * size)) - 1)
                h.w(off, value, size)
                assert h.r(off, size) == value
                assert int.from_bytes(bytes(h.core.mmio[off : off + size]), "little") == value
    assert h.requests == []


def test_buffer_view_is_live(h: Harness) -> None:
    assert h.core.buffer.shape == (0xF80,) and h.core.buffer.dtype == np.uint8
    h.core.buffer[:4] = [1, 2, 3, 4]
    assert h.r(BUF) == 0x04030201
    h.w(BUF + 4, 0xAABBCCDD)
    assert bytes(h.core.buffer[4:8]) == bytes.fromhex("ddccbbaa")
    assert h.core.locality_buffer(0).base is not None


def test_reset_keeps_the_buffer_and_forgets_the_command(crb_core_class: type) -> None:
    h = Harness(crb_core_class, auto=None)
    h.request_access()
    h.w(CTRL_REQ, 1)
    h.put(STARTUP)
    h.w(CTRL_START, 1)
    h.core.post(RC_FAILURE, failed=True)
    h.core.reset(2, 2048)
    assert not h.core.executing and h.core.pending_command is None
    for slot in range(0, BUF, 4):
        assert h.r(slot) == RESET_VALUES.get(slot, 0), hex(slot)
    assert h.get(12) == STARTUP  # the posted completion was dropped too
    assert h.core.bufsize == 2048
    h.core.complete(RC_SUCCESS)  # late: nothing in flight
    assert h.get(12) == STARTUP


def test_address_registers_follow_the_address(crb_core_class: type) -> None:
    h = Harness(crb_core_class, address=0x1_2345_6000)
    assert h.core.address == 0x1_2345_6000
    assert h.r(R.TPM_CRB_CTRL_CMD_LADDR) == 0x2345_6080 and h.r(R.TPM_CRB_CTRL_CMD_HADDR) == 1
    assert h.r(R.TPM_CRB_CTRL_RSP_ADDR, 8) == 0x1_2345_6080


@pytest.mark.parametrize(
    "kwargs",
    [
        {"localities": 2},
        {"localities": 0},
        {"localities": True},
        {"localities": "1"},
        {"address": 0xFED40001},
        {"address": -0x1000},
        {"address": 2**64 - 0x1000 + 0x1000},
        {"address": 1.0},
        {"address": True},
    ],
    ids=repr,
)
def test_bad_configuration(crb_core_class: type, kwargs: dict[str, Any]) -> None:
    options = dict(kwargs)
    localities = options.pop("localities", 1)
    with pytest.raises(ConfigurationError):
        crb_core_class(2, 4096, None, localities, **options)


def test_highest_address_is_accepted(crb_core_class: type) -> None:
    core = crb_core_class(2, 4096, None, 1, 2**64 - 0x1000)
    assert core.read(R.TPM_CRB_CTRL_CMD_LADDR, 8) == 0xFFFFFFFF_FFFFF080


# ---------------------------------------------------------------------------
# Host misuse and guest input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        ("read", (0x1000,)),
        ("read", (0xFFC, 8)),
        ("read", (0xFFF, 2)),
        ("read", (-1,)),
        ("read", (0, 3)),
        ("read", (True,)),
        ("write", (0x1000, 0)),
        ("write", (0, 2**64, 8)),
        ("write", (0, 0x100, 1)),
        ("write", (0, -1, 4)),
        ("write", (0, 1.0)),
        ("locality_buffer", (1,)),
    ],
    ids=repr,
)
def test_host_misuse(h: Harness, call: tuple[str, tuple[Any, ...]]) -> None:
    name, args = call
    with pytest.raises((AccessError, ConfigurationError), match=r"CRB|locality"):
        getattr(h.core, name)(*args)


def test_region_size(crb_core_class: type) -> None:
    assert crb_core_class().region_size == 0x1000 and crb_core_class().access_sizes == (1, 2, 4, 8)
    assert crb_core_class(2, 4096, None, 5).region_size == 0x5000


def test_every_value_everywhere_is_handled(crb_core_class: type) -> None:
    h = Harness(crb_core_class)
    h.request_access()
    for off in range(0, 0x1000, 3):
        for size in (1, 2, 4, 8):
            if off + size <= 0x1000:
                h.core.read(off, size)
                h.core.write(off, (0xA5A5A5A5A5A5A5A5 ^ off) & ((1 << (8 * size)) - 1), size)
    for off in range(0, BUF, 1):
        for value in (1, 2, 3, 4, 8, 0xFF):
            h.core.write(off, value, 1)


# ---------------------------------------------------------------------------
# Five localities (the PTP layout; not in QEMU)
# ---------------------------------------------------------------------------


@pytest.fixture
def h5(crb_core_class: type) -> Harness:
    return Harness(crb_core_class, localities=5, auto=None)


def loc_state(h: Harness, locality: int = 0) -> int:
    return h.r(loc(locality, LOC_STATE), 1) & ~R.TPM_LOC_STATE_TPM_ESTABLISHED


def test_five_localities_reset_values(h5: Harness) -> None:
    for locality in range(5):
        base = locality << 12
        for slot in range(0, BUF, 4):
            want = RESET_VALUES.get(slot, 0)
            if slot == 0x30:
                want |= R.TPM_CRB_INTF_CAP_LOCALITY
            if slot in (0x5C, 0x68):
                want += base
            assert h5.r(base + slot) == want, (locality, hex(slot))
    assert h5.core.region_size == 0x5000 and h5.core.localities == 5


def test_five_localities_request_and_relinquish(h5: Harness) -> None:
    h5.request_access(2)
    assert h5.core.active_locality == 2
    for locality in range(5):
        assert loc_state(h5, locality) == 0x80 | 0x02 | (2 << 2)  # the same in every window
        assert h5.r(loc(locality, LOC_STS)) == (1 if locality == 2 else 0)
    h5.request_access(1)  # waits
    h5.request_access(3)  # waits
    assert h5.core.active_locality == 2 and h5.r(loc(3, LOC_STS)) == 0
    h5.w(loc(2, LOC_CTRL), R.TPM_LOC_CTRL_RELINQUISH)  # highest waiting wins
    assert h5.core.active_locality == 3 and loc_state(h5) == 0x80 | 0x02 | (3 << 2)
    assert h5.r(loc(2, LOC_STS)) == 0 and h5.r(loc(3, LOC_STS)) == 1
    h5.w(loc(1, LOC_CTRL), R.TPM_LOC_CTRL_RELINQUISH)  # a waiting locality withdraws
    h5.w(loc(3, LOC_CTRL), R.TPM_LOC_CTRL_RELINQUISH)
    assert h5.core.active_locality is None
    assert loc_state(h5) == 0x80 | (3 << 2)  # activeLocality keeps the last owner
    assert all(h5.r(loc(n, LOC_STS)) == 0 for n in range(5))


def test_five_localities_seize(h5: Harness) -> None:
    h5.w(loc(3, LOC_CTRL), R.TPM_LOC_CTRL_SEIZE)  # nobody active: ignored
    assert h5.core.active_locality is None
    h5.request_access(1)
    h5.w(loc(0, LOC_CTRL), R.TPM_LOC_CTRL_SEIZE)  # lower: ignored
    h5.w(loc(1, LOC_CTRL), R.TPM_LOC_CTRL_SEIZE)  # equal: ignored
    assert h5.core.active_locality == 1 and h5.r(loc(1, LOC_STS)) == 1
    h5.w(loc(4, LOC_CTRL), R.TPM_LOC_CTRL_SEIZE)
    assert h5.core.active_locality == 4
    assert h5.r(loc(1, LOC_STS)) == R.TPM_LOC_STS_BEEN_SEIZED
    assert h5.r(loc(4, LOC_STS)) == R.TPM_LOC_STS_GRANTED
    h5.request_access(1)  # waits, and clears its beenSeized
    assert h5.r(loc(1, LOC_STS)) == 0
    h5.w(loc(4, LOC_CTRL), R.TPM_LOC_CTRL_RELINQUISH)
    assert h5.core.active_locality == 1


def test_five_localities_reset_establishment(h5: Harness) -> None:
    for locality in (0, 1, 2):
        h5.request_access(locality)
        h5.w(loc(locality, LOC_CTRL), R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT)
        h5.w(loc(locality, LOC_CTRL), R.TPM_LOC_CTRL_RELINQUISH)
    h5.w(loc(3, LOC_CTRL), R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT)  # not active
    assert h5.requests == []
    h5.request_access(3)
    h5.w(loc(3, LOC_CTRL), R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT)
    assert h5.requests == [REQUEST_RESET_ESTABLISHED]
    h5.w(loc(3, LOC_CTRL), R.TPM_LOC_CTRL_SEIZE | R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT)  # exact value only
    assert h5.requests == [REQUEST_RESET_ESTABLISHED]


def test_five_localities_commands_use_their_own_buffer(h5: Harness) -> None:
    h5.request_access(2)
    h5.put(STARTUP, 2)
    h5.w(loc(1, CTRL_START), 1)  # not the active locality
    h5.w(loc(0, CTRL_START), 1)
    assert h5.requests == []
    h5.w(loc(2, CTRL_START), 1)
    assert h5.commands == [(2, STARTUP)]
    assert h5.r(loc(2, CTRL_START)) == 1 and h5.r(loc(0, CTRL_START)) == 0
    h5.w(loc(0, CTRL_CANCEL), 1)  # another locality's cancel: not its command
    assert h5.requests == [REQUEST_COMMAND]
    h5.w(loc(2, CTRL_CANCEL), 1)
    assert h5.requests == [REQUEST_COMMAND, REQUEST_CANCEL]
    # hand-over while running: the response still lands in locality 2's buffer
    h5.request_access(4)
    h5.w(loc(2, LOC_CTRL), R.TPM_LOC_CTRL_RELINQUISH)
    assert h5.core.active_locality == 4
    h5.put(STARTUP, 4)
    h5.w(loc(4, CTRL_START), 1)  # one command at a time
    assert h5.requests == [REQUEST_COMMAND, REQUEST_CANCEL] and h5.r(loc(4, CTRL_START)) == 0
    h5.core.complete(RC_FAILURE)
    assert h5.get(10, 2) == RC_FAILURE and h5.get(12, 4) == STARTUP
    assert h5.r(loc(2, CTRL_START)) == 0
    h5.w(loc(4, CTRL_START), 1)
    assert h5.commands[-1] == (4, STARTUP)
    h5.core.complete(RC_SUCCESS, failed=True)
    for locality in range(5):  # tpmSts and tpmIdle are the TPM's
        assert h5.r(loc(locality, CTRL_STS)) == 0x3
    assert bytes(h5.core.locality_buffer(4)[:10]) == RC_SUCCESS


def test_five_localities_cmd_ready_is_the_tpms(h5: Harness) -> None:
    h5.w(loc(3, CTRL_REQ), R.TPM_CRB_CTRL_REQ_CMD_READY)
    assert all(h5.r(loc(n, CTRL_STS)) == 0 for n in range(5))
    h5.w(loc(1, CTRL_REQ), R.TPM_CRB_CTRL_REQ_GO_IDLE)
    assert all(h5.r(loc(n, CTRL_STS)) == 2 for n in range(5))


def test_five_localities_established_bit_in_every_window(crb_core_class: type) -> None:
    h = Harness(crb_core_class, localities=5, established=False)
    assert [h.r(loc(n, 0), 1) for n in range(5)] == [0x81] * 5
    assert [h.r(loc(n, 1), 1) for n in range(5)] == [0] * 5
