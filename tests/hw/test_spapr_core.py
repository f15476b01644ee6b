"""The sPAPR vTPM message model through its sans-IO boundary.

The test plays both the device layer (it sees the core's requests and
answers them) and the machine around the guest: guest memory reached through
an RTCE window (``Host.dma_read`` / ``dma_write``) and the guest's CRQ
(``Host.sent``). Expected entries are QEMU's (hw/tpm/tpm_spapr.c), with
zeros where QEMU sends uninitialised stack bytes. The core is pure Python
(never compiled), so these tests run once.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpmdev import AccessError, _device
from tpmdev.hw import spapr as S
from tpmdev.hw.spapr import H_BUSY, H_SUCCESS, REQUEST_COMMAND, SpaprCore, crq_entry, parse_crq

STARTUP = bytes.fromhex("8001 0000000c 00000144 0000")  # TPM2_Startup(SU_CLEAR)
RESPONSE = bytes.fromhex("8001 0000000a 00000000")
RANDOM_RSP = bytes.fromhex("8001 00000014 00000000 0008 0102030405060708")
BUF = 0x2000  # the guest's RTCE buffer (I/O bus address)


def tpm_command(addr: int = BUF, length: int = 12, reserved: int = 0) -> bytes:
    return crq_entry(0x80, 0x02, length, addr, reserved)


class Host:
    """Guest memory behind an RTCE window, the guest's CRQ, and the device layer."""

    def __init__(
        self,
        tpm_version: int = 2,
        bufsize: int = 4096,
        *,
        mapped: int = 0x10000,
        auto: Optional[bytes] = RESPONSE,
    ) -> None:
        self.ram = bytearray(0x10000)
        self.mapped = mapped  # I/O addresses [0, mapped) are translatable
        self.sent: list[bytes] = []
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, bytes]] = []
        self.requests: list[int] = []
        self.commands: list[tuple[int, bytes]] = []
        self.errors: list[tuple[str, Exception]] = []
        self.auto = auto  # complete at once with this, or leave the command in flight
        self.read_result: Any = None  # override what dma_read returns
        self.write_result: Any = None
        self.fail: set[str] = set()  # callables that raise
        self.core = SpaprCore(
            tpm_version,
            bufsize,
            self.on_request,
            self.dma_read,
            self.dma_write,
            self.send_crq,
            lambda what, exc: self.errors.append((what, exc)),
        )

    def dma_read(self, addr: int, n: int) -> Any:
        self.reads.append((addr, n))
        if "dma_read" in self.fail:
            raise OSError("TCE lookup failed")
        if self.read_result is not None:
            return self.read_result
        end = min(addr + n, self.mapped)
        return bytes(self.ram[addr:end]) if addr < end else b""

    def dma_write(self, addr: int, data: bytes) -> Any:
        self.writes.append((addr, data))
        if "dma_write" in self.fail:
            raise OSError("TCE lookup failed")
        if self.write_result is not None:
            return self.write_result
        if addr + len(data) > self.mapped:
            return False
        self.ram[addr : addr + len(data)] = data
        return None

    def send_crq(self, entry: bytes) -> None:
        if "send_crq" in self.fail:
            raise OSError("guest queue not registered")
        self.sent.append(entry)

    def on_request(self, kind: int) -> None:
        self.requests.append(kind)
        pending = self.core.pending_command
        assert pending is not None
        self.commands.append(pending)
        if self.auto is not None:
            self.core.complete(self.auto)

    def send(self, entry: bytes) -> int:
        status = self.core.receive_crq(entry)
        assert status in (H_SUCCESS, H_BUSY)
        return int(status)

    def put(self, data: bytes, addr: int = BUF) -> None:
        self.ram[addr : addr + len(data)] = data


# -- constants -------------------------------------------------------------------
def test_constants_are_papr_and_qemu_values() -> None:
    assert (S.H_SUCCESS, S.H_BUSY, S.H_DEST_PARM, S.H_SEND_CRQ) == (0, 1, -14, 0x108)
    assert S.REQUEST_COMMAND == _device.REQUEST_COMMAND == 1  # the shared vocabulary
    assert S.SPAPR_VTPM_BUFFER_MAX == 4096
    assert S.SPAPR_VTPM_DT_COMPATIBLE == {1: "IBM,vtpm", 2: "IBM,vtpm20"}


def test_entry_helpers_round_trip() -> None:
    entry = crq_entry(0x80, 0x82, 0x1234, 0xDEADBEEF, 0x0102030405060708)
    assert entry.hex() == "808212 34deadbeef0102030405060708".replace(" ", "")
    assert parse_crq(entry) == (0x80, 0x82, 0x1234, 0xDEADBEEF, 0x0102030405060708)
    assert parse_crq(entry).len == 0x1234
    with pytest.raises(AccessError):
        parse_crq(entry[:8])


# -- the message table ---------------------------------------------------------------
# (request entry, version, bufsize) -> answers sent; every answer H_SUCCESS.
GARBAGE = dict(length=0xABCD, data=0x12345678, reserved=0x1122334455667788)
MESSAGES = [
    ("init", crq_entry(0xC0, 0x01), 2, 4096, [crq_entry(0xC0, 0x01)]),
    ("init-garbage", crq_entry(0xC0, 0x01, **GARBAGE), 2, 4096, [crq_entry(0xC0, 0x01)]),
    ("init-complete", crq_entry(0xC0, 0x02), 2, 4096, [crq_entry(0xC0, 0x02)]),
    ("init-complete-garbage", crq_entry(0xC0, 0x02, **GARBAGE), 2, 4096, [crq_entry(0xC0, 0x02)]),
    ("init-unknown-0", crq_entry(0xC0, 0x00), 2, 4096, []),
    ("init-unknown-3", crq_entry(0xC0, 0x03), 2, 4096, []),
    ("init-unknown-ff", crq_entry(0xC0, 0xFF), 2, 4096, []),
    ("version-2", crq_entry(0x80, 0x01), 2, 4096, [crq_entry(0x80, 0x81, 0, 2)]),
    ("version-1", crq_entry(0x80, 0x01), 1, 4096, [crq_entry(0x80, 0x81, 0, 1)]),
    ("version-unknown", crq_entry(0x80, 0x01), 0, 4096, [crq_entry(0x80, 0x81, 0, 0)]),
    ("version-garbage", crq_entry(0x80, 0x01, **GARBAGE), 2, 4096, [crq_entry(0x80, 0x81, 0, 2)]),
    ("rtce-size", crq_entry(0x80, 0x03), 2, 4096, [crq_entry(0x80, 0x83, 4096)]),
    ("rtce-size-small", crq_entry(0x80, 0x03), 2, 3968, [crq_entry(0x80, 0x83, 3968)]),
    ("rtce-size-capped", crq_entry(0x80, 0x03), 2, 65536, [crq_entry(0x80, 0x83, 4096)]),
    ("rtce-size-garbage", crq_entry(0x80, 0x03, **GARBAGE), 2, 4096, [crq_entry(0x80, 0x83, 4096)]),
    ("suspend", crq_entry(0x80, 0x04), 2, 4096, [crq_entry(0x80, 0x84)]),
    ("suspend-garbage", crq_entry(0x80, 0x04, **GARBAGE), 2, 4096, [crq_entry(0x80, 0x84)]),
    ("cmd-unknown-0", crq_entry(0x80, 0x00), 2, 4096, []),
    ("cmd-unknown-5", crq_entry(0x80, 0x05), 2, 4096, []),
    ("cmd-unknown-81", crq_entry(0x80, 0x81), 2, 4096, []),
    ("cmd-unknown-ff", crq_entry(0x80, 0xFF), 2, 4096, []),
    ("valid-0", crq_entry(0x00, 0x01), 2, 4096, []),
    ("valid-81", crq_entry(0x81, 0x02), 2, 4096, []),
    ("valid-c1", crq_entry(0xC1, 0x01), 2, 4096, []),
    ("valid-40", crq_entry(0x40, 0x01), 2, 4096, []),
    ("valid-ff", crq_entry(0xFF, 0x02), 2, 4096, []),
    ("all-zero", bytes(16), 2, 4096, []),
]


@pytest.mark.parametrize(
    ("entry", "version", "bufsize", "answers"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES]
)
def test_message_table(entry: bytes, version: int, bufsize: int, answers: list[bytes]) -> None:
    host = Host(version, bufsize)
    assert host.send(entry) == H_SUCCESS
    assert host.sent == answers
    assert host.reads == host.writes == host.requests == host.errors == []
    assert host.core.state == S.SPAPR_VTPM_STATE_NONE


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_entry_types_accepted(kind: type) -> None:
    host = Host()
    assert host.core.receive_crq(kind(crq_entry(0xC0, 0x01))) == H_SUCCESS
    assert host.sent == [crq_entry(0xC0, 0x01)]


@pytest.mark.parametrize(
    "entry", [b"", bytes(8), bytes(15), bytes(17), "x" * 16, 0xC001000000000000, None, [0] * 16]
)
def test_host_misuse_raises_access_error(entry: Any) -> None:
    host = Host()
    with pytest.raises(AccessError, match="16"):
        host.core.receive_crq(entry)
    assert host.sent == []


# -- TPM_COMMAND -------------------------------------------------------------------
def test_command_round_trip() -> None:
    host = Host(auto=RANDOM_RSP)
    host.put(STARTUP + b"\xee" * 20)
    assert host.send(tpm_command(reserved=0x0102030405060708)) == H_SUCCESS
    # QUIRK: the whole buffer is read; the command is header-size bytes of it
    assert host.reads == [(BUF, 4096)]
    assert host.commands == [(0, STARTUP)]
    assert host.requests == [REQUEST_COMMAND]
    assert host.writes == [(BUF, RANDOM_RSP)]
    assert host.ram[BUF : BUF + len(RANDOM_RSP)] == RANDOM_RSP
    # the request entry, turned into the answer: data and reserved echoed
    assert host.sent == [crq_entry(0x80, 0x82, len(RANDOM_RSP), BUF, 0x0102030405060708)]
    assert host.core.state == S.SPAPR_VTPM_STATE_COMPLETION
    assert host.core.pending_command is None
    assert host.errors == []


@pytest.mark.parametrize("length", [0, 1, 12, 4096, 0xFFFF])
def test_len_is_ignored(length: int) -> None:
    host = Host()
    host.put(STARTUP)
    host.send(tpm_command(length=length))
    assert host.reads == [(BUF, 4096)]
    assert host.commands == [(0, STARTUP)]
    assert host.sent == [crq_entry(0x80, 0x82, 10, BUF)]


def test_read_covers_bufsize_in_force() -> None:
    host = Host(bufsize=1024)
    host.put(STARTUP)
    host.send(tpm_command())
    assert host.reads == [(BUF, 1024)]


@pytest.mark.parametrize(
    ("size", "expected"),
    [(5000, 4096), (0xFFFFFFFF, 4096), (4096, 4096), (12, 12), (11, 11), (6, 6), (1, 1), (0, 0)],
)
def test_command_length_from_header_capped(size: int, expected: int) -> None:
    host = Host()
    command = bytes.fromhex("8001") + size.to_bytes(4, "big") + bytes(range(256)) * 20
    host.put(command)
    host.send(tpm_command())
    assert host.commands == [(0, command[:expected])]


def test_command_length_capped_at_smaller_bufsize() -> None:
    host = Host(bufsize=100)
    host.put(bytes.fromhex("8001 00001000 00000144") + bytes(range(200)))
    host.send(tpm_command())
    assert len(host.commands[0][1]) == 100


def test_response_length_from_header_sends_stale_bytes() -> None:
    # QUIRK: a response whose header claims more than it has takes the
    # command's tail along
    host = Host(auto=bytes.fromhex("8001 00000010 00000000"))
    host.put(STARTUP + b"\xaa\xbb\xcc\xdd")
    host.send(tpm_command())
    assert host.writes == [(BUF, bytes.fromhex("8001 00000010 00000000 0000 aabb cc dd")[:16])]
    assert host.sent == [crq_entry(0x80, 0x82, 16, BUF)]


def test_response_longer_than_buffer_is_cut() -> None:
    big = bytes.fromhex("8001 00002000 00000000") + bytes(0x2000 - 10)
    host = Host(bufsize=256, auto=big)
    host.put(STARTUP)
    host.send(tpm_command())
    assert host.writes == [(BUF, big[:256])]
    assert host.sent == [crq_entry(0x80, 0x82, 256, BUF)]


@pytest.mark.parametrize("response", [bytes.fromhex("8001 00000000 00000000"), b"", b"\x80"])
def test_empty_response_length_writes_nothing(response: bytes) -> None:
    host = Host(auto=response)
    host.put(bytes(16))  # header size 0 in the buffer
    host.mapped = 0  # a zero-length DMA write succeeds whatever the address
    host.send(tpm_command())
    assert host.writes == []
    assert host.sent[-1] == crq_entry(0x80, 0x82, 0, BUF)


def test_busy_while_executing() -> None:
    host = Host(auto=None)
    host.put(STARTUP)
    assert host.send(tpm_command(reserved=7)) == H_SUCCESS
    assert host.core.executing and host.core.state == S.SPAPR_VTPM_STATE_EXECUTION
    assert host.send(tpm_command(addr=0x3000, reserved=9)) == H_BUSY
    assert host.send(tpm_command(addr=0x3000)) == H_BUSY
    assert host.reads == [(BUF, 4096)] and host.sent == []
    # other messages are answered meanwhile
    assert host.send(crq_entry(0x80, 0x01)) == H_SUCCESS
    assert host.sent == [crq_entry(0x80, 0x81, 0, 2)]
    host.core.complete(RESPONSE)
    # the answer belongs to the first request (its address and reserved bytes)
    assert host.writes == [(BUF, RESPONSE)]
    assert host.sent[-1] == crq_entry(0x80, 0x82, 10, BUF, 7)
    assert host.send(tpm_command(addr=0x3000)) == H_SUCCESS
    assert host.reads[-1] == (0x3000, 4096)


def test_command_accepted_in_completion() -> None:
    host = Host()
    host.put(STARTUP)
    for _ in range(3):
        assert host.send(tpm_command()) == H_SUCCESS
    assert len(host.commands) == 3 and len(host.sent) == 3


def test_complete_without_command_does_nothing() -> None:
    host = Host()
    host.core.complete(RESPONSE)
    host.core.complete(RESPONSE, failed=True)
    assert host.sent == host.writes == []
    assert host.core.state == S.SPAPR_VTPM_STATE_NONE
    host.put(STARTUP)
    host.send(tpm_command())
    host.core.complete(RESPONSE)  # a second completion of the same command
    assert len(host.sent) == 1 and len(host.writes) == 1


def test_failed_and_selftest_flags_change_nothing() -> None:
    fatal = bytes.fromhex("00c4 0000000a 00000009")
    host = Host(auto=None)
    host.put(STARTUP)
    host.send(tpm_command())
    host.core.complete(fatal, selftest_done=True, failed=True)
    assert host.writes == [(BUF, fatal)]
    assert host.sent == [crq_entry(0x80, 0x82, 10, BUF)]


# -- DMA failures --------------------------------------------------------------------
COPY_IN_FAILED = crq_entry(0x80, 0xFF, 0, 3)


def test_dma_read_unmapped_address() -> None:
    host = Host(auto=None, mapped=0x1000)
    host.put(STARTUP, addr=0x800)
    host.send(tpm_command())  # BUF is outside the mapped window
    assert host.reads == [(BUF, 4096)]
    assert host.sent == [COPY_IN_FAILED]
    # QUIRK: the command still goes to the TPM: the buffer as QEMU's memory
    # core leaves it, zeros where nothing could be read: an empty command
    assert host.commands == [(0, b"")]
    assert host.core.executing
    assert bytes(host.core.buffer[:4096]) == bytes(4096)
    assert host.errors == []  # an unmapped guest address is not a host failure
    host.core.complete(RESPONSE)  # the response cannot be written back either
    assert host.sent == [COPY_IN_FAILED, crq_entry(0x80, 0xFF, 0, 4)]


def test_dma_read_partly_mapped_keeps_what_was_read() -> None:
    # the window ends 12 bytes after the buffer start: the whole command was
    # readable, the rest of the buffer was not
    host = Host(auto=None, mapped=BUF + 12)
    host.put(STARTUP)
    host.core.buffer[:4096] = b"\x55" * 4096  # stale content is overwritten with zeros
    host.send(tpm_command())
    assert host.sent == [COPY_IN_FAILED]
    assert host.commands == [(0, STARTUP)]
    assert bytes(host.core.buffer[:4096]) == STARTUP + bytes(4096 - 12)


def test_dma_read_failure_answer_comes_before_the_response() -> None:
    host = Host(mapped=0)  # synchronous completion inside the request
    host.send(tpm_command())
    assert host.sent == [COPY_IN_FAILED, crq_entry(0x80, 0xFF, 0, 4)]


@pytest.mark.parametrize(
    ("fault", "result", "reported"),
    [
        ("raise", None, True),
        ("empty", b"", False),
        ("short", STARTUP, False),
        ("too-long", bytes(4097), True),
        ("not-bytes", 12345, True),
        ("str", "x" * 4096, True),
    ],
)
def test_dma_read_faults(fault: str, result: Any, reported: bool) -> None:
    host = Host(auto=None)
    host.core.buffer[:16] = b"\x77" * 16
    if fault == "raise":
        host.fail.add("dma_read")
    else:
        host.read_result = result
    assert host.send(tpm_command()) == H_SUCCESS
    assert host.sent == [COPY_IN_FAILED]
    assert host.core.executing
    expected = STARTUP if fault == "short" else b""
    assert host.commands == [(0, expected)]
    assert [what for what, _ in host.errors] == (["dma_read"] if reported else [])


COPY_OUT_FAILED_R = crq_entry(0x80, 0xFF, 0, 4, 0xA5A5A5A5A5A5A5A5)


@pytest.mark.parametrize(
    ("fault", "result", "reported"),
    [
        ("raise", None, True),
        ("false", False, False),
        ("short-count", 3, False),
        ("zero-count", 0, False),
        ("bad-type", "done", True),
    ],
)
def test_dma_write_faults(fault: str, result: Any, reported: bool) -> None:
    host = Host()
    host.put(STARTUP)
    if fault == "raise":
        host.fail.add("dma_write")
    else:
        host.write_result = result
    host.send(tpm_command(reserved=0xA5A5A5A5A5A5A5A5))
    # QUIRK: the stored request becomes the error: len 0, data 4, reserved echoed
    assert host.sent == [COPY_OUT_FAILED_R]
    assert host.core.state == S.SPAPR_VTPM_STATE_COMPLETION
    assert [what for what, _ in host.errors] == (["dma_write"] if reported else [])


@pytest.mark.parametrize("result", [None, True, 10, 11])
def test_dma_write_success_results(result: Any) -> None:
    host = Host()
    host.put(STARTUP)
    host.write_result = result
    host.send(tpm_command())
    assert host.sent == [crq_entry(0x80, 0x82, 10, BUF)]


def test_dma_write_failure_then_next_command_ok() -> None:
    host = Host()
    host.put(STARTUP)
    host.write_result = False
    host.send(tpm_command())
    assert host.sent == [crq_entry(0x80, 0xFF, 0, 4)]
    host.write_result = None
    host.send(tpm_command())
    # the stored entry is taken afresh from the new request
    assert host.sent[-1] == crq_entry(0x80, 0x82, 10, BUF)


def test_send_crq_failure_is_contained() -> None:
    host = Host()
    host.put(STARTUP)
    host.fail.add("send_crq")
    assert host.send(crq_entry(0xC0, 0x01)) == H_SUCCESS
    assert host.send(tpm_command()) == H_SUCCESS
    assert [what for what, _ in host.errors] == ["send_crq", "send_crq"]
    assert host.core.state == S.SPAPR_VTPM_STATE_COMPLETION
    assert host.ram[BUF : BUF + 10] == RESPONSE  # the DMA happened; only the answer was lost
    host.fail.clear()
    assert host.send(tpm_command()) == H_SUCCESS
    assert host.sent == [crq_entry(0x80, 0x82, 10, BUF)]


def test_failing_hooks_are_contained() -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("host bug")

    core = SpaprCore(2, 4096, boom, boom, boom, boom, boom)  # type: ignore[arg-type]
    assert core.receive_crq(crq_entry(0xC0, 0x01)) == H_SUCCESS
    assert core.receive_crq(tpm_command()) == H_SUCCESS
    assert core.executing
    core.complete(RESPONSE)
    assert core.state == S.SPAPR_VTPM_STATE_COMPLETION


def test_no_request_callable() -> None:
    sent: list[bytes] = []
    core = SpaprCore(2, 4096, None, lambda a, n: STARTUP + bytes(n - 12), lambda a, d: None, sent.append)
    assert core.receive_crq(tpm_command()) == H_SUCCESS
    assert core.pending_command == (0, STARTUP)
    core.complete(RESPONSE)
    assert sent == [crq_entry(0x80, 0x82, 10, BUF)]


# -- cross-thread completion, reset --------------------------------------------------
def test_post_applied_by_poll() -> None:
    host = Host(auto=None)
    host.put(STARTUP)
    host.send(tpm_command())
    assert host.core.poll() is False
    host.core.post(RESPONSE)
    assert host.sent == [] and host.core.executing
    assert host.core.poll() is True
    assert host.sent == [crq_entry(0x80, 0x82, 10, BUF)]
    assert host.core.poll() is False


def test_post_applied_before_the_next_entry() -> None:
    host = Host(auto=None)
    host.put(STARTUP)
    host.send(tpm_command())
    host.core.post(RESPONSE)
    # the completion lands first, so the next command is not busy
    assert host.send(tpm_command()) == H_SUCCESS
    assert host.sent == [crq_entry(0x80, 0x82, 10, BUF)]
    assert host.core.executing and len(host.commands) == 2


def test_reset() -> None:
    host = Host(auto=None)
    host.put(STARTUP)
    host.send(tpm_command())
    host.core.post(RESPONSE)
    host.core.reset(1, 8192)
    assert host.core.state == S.SPAPR_VTPM_STATE_NONE and not host.core.executing
    assert host.core.pending_command is None
    assert host.core.poll() is False  # the posted completion belonged to the old machine
    assert (host.core.tpm_version, host.core.bufsize) == (1, 4096)
    assert bytes(host.core.buffer[:12]) == STARTUP  # the buffer is kept
    host.core.complete(RESPONSE)  # a stale completion
    assert host.sent == []
    host.send(crq_entry(0x80, 0x01))
    host.send(crq_entry(0x80, 0x03))
    assert host.sent == [crq_entry(0x80, 0x81, 0, 1), crq_entry(0x80, 0x83, 4096)]
    host.core.reset(2, -5)
    assert host.core.bufsize == 0


def test_zero_bufsize() -> None:
    host = Host(bufsize=0)
    host.put(STARTUP)
    host.send(tpm_command())
    assert host.reads == [] and host.commands == [(0, b"")]
    assert host.sent == [crq_entry(0x80, 0x82, 0, BUF)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), max_size=30), st.integers(0, 4096))
def test_any_entries_never_raise(entries: list[bytes], mapped: int) -> None:
    host = Host(mapped=mapped)
    host.put(STARTUP)
    for entry in entries:
        status = host.core.receive_crq(entry)
        assert status in (H_SUCCESS, H_BUSY)
        for answer in host.sent:
            assert len(answer) == 16
    assert host.errors == []
