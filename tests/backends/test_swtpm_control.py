"""The swtpm control channel: message structs, framing, and real swtpm answers."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tpmdev.backends import swtpm as s
from tpmdev.backends.swtpm import Control, ControlError
from tpmdev.errors import AccessError, BackendError

pytestmark = pytest.mark.usefixtures("no_leaked_swtpm")

TPM2_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
TPM12_STARTUP_CLEAR = bytes.fromhex("00c10000000c000000990001")

# -- message structs: exact bytes, both ways ---------------------------------
STRUCTS = [
    (s.Empty(), ""),
    (s.ResultResponse(0x3D), "0000003d"),
    (s.GetCapabilityResponse(0, 0xFFFF), "00000000 0000ffff"),
    (s.GetCapabilityResponse(0, 0x1_7FFF), "00000000 00017fff"),
    (s.InitRequest(), "00000000"),
    (s.InitRequest(s.PTM_INIT_FLAG_DELETE_VOLATILE), "00000001"),
    (s.GetEstablishedResponse(0, 1), "00000000 01 000000"),
    (s.GetEstablishedResponse(0, 0), "00000000 00 000000"),
    (s.LocalityRequest(3), "03 000000"),
    (s.LocalityRequest(0xFF), "ff 000000"),
    (s.SetBufferSizeRequest(), "00000000"),
    (s.SetBufferSizeRequest(4096), "00001000"),
    (s.SetBufferSizeResponse(0, 4096, 0xAF8, 4096), "00000000 00001000 00000af8 00001000"),
    (s.GetConfigResponse(0, 3), "00000000 00000003"),
    (s.HashDataRequest(b"abc"), "00000003 616263"),
    (s.HashDataRequest(), "00000000"),
    (s.GetStateBlobRequest(1, 2, 0x100), "00000001 00000002 00000100"),
    (s.GetStateBlobResponse(0x800, 2, 9000, 9000), "00000800 00000002 00002328 00002328"),
    (s.SetStateBlobRequest(2, 3, 0x10), "00000002 00000003 00000010"),
    (s.GetInfoRequest(1 << 40 | 3, 7), "0000010000000003 00000007 00000000"),
    (s.GetInfoResponse(0, 0x3F, 0x35), "00000000 0000003f 00000035"),
    (s.LockStorageRequest(), "0000012c"),
]


@pytest.mark.parametrize(
    ("msg", "wire"), STRUCTS, ids=lambda v: type(v).__name__ if not isinstance(v, str) else v
)
def test_struct_round_trip(msg: s.Message, wire: str) -> None:
    raw = bytes.fromhex(wire.replace(" ", ""))
    assert msg.pack() == raw
    if not isinstance(msg, s.HashDataRequest):  # variable length
        assert type(msg).size() == len(raw)
    assert type(msg).unpack(raw) == msg


@pytest.mark.parametrize(
    "cls", [s.ResultResponse, s.GetCapabilityResponse, s.LocalityRequest, s.SetBufferSizeResponse]
)
def test_struct_unpack_wrong_length(cls: type[s.Message]) -> None:
    with pytest.raises(ValueError, match=cls.__name__):
        cls.unpack(bytes(cls.size() + 1))
    with pytest.raises(ValueError):
        cls.unpack(bytes(cls.size() - 1))


@pytest.mark.parametrize("msg", [s.LocalityRequest(256), s.LocalityRequest(-1), s.InitRequest(1 << 32)])
def test_struct_pack_out_of_range(msg: s.Message) -> None:
    with pytest.raises(ValueError, match="out of range"):
        msg.pack()


def test_padding_is_ignored_on_unpack() -> None:
    # swtpm leaves the padding alone; only the first byte matters.
    assert s.GetEstablishedResponse.unpack(bytes.fromhex("00000000 01 abcdef")).bit == 1
    assert s.LocalityRequest.unpack(bytes.fromhex("04 aabbcc")).locality == 4


def test_command_table_and_names() -> None:
    assert s.COMMAND_NAMES[s.CMD_SET_LOCALITY] == "SET_LOCALITY"
    assert s.COMMAND_NAMES[s.CMD_LOCK_STORAGE] == "LOCK_STORAGE"
    assert sorted(s.COMMAND_NAMES) == list(range(0x01, 0x14))
    assert s.COMMANDS[s.CMD_SET_BUFFERSIZE].name == "SET_BUFFERSIZE"
    assert s.COMMANDS[s.CMD_SET_BUFFERSIZE].response is s.SetBufferSizeResponse
    assert [1 << i for i in range(17)] == sorted(s.CAPABILITY_NAMES)
    assert s.capability_names(0x348F) == [
        "INIT", "SHUTDOWN", "GET_TPMESTABLISHED", "SET_LOCALITY", "RESET_TPMESTABLISHED",
        "STOP", "SET_DATAFD", "SET_BUFFERSIZE",
    ]  # fmt: skip
    assert (s.PTM_BLOB_TYPE_PERMANENT, s.PTM_BLOB_TYPE_VOLATILE, s.PTM_BLOB_TYPE_SAVESTATE) == (1, 2, 3)
    assert (s.PTM_STATE_FLAG_DECRYPTED, s.PTM_STATE_FLAG_ENCRYPTED) == (1, 2)


def test_control_error() -> None:
    err = ControlError("SET_LOCALITY", 5, 0x3D)
    assert isinstance(err, BackendError)
    assert (err.command, err.code, err.result) == ("SET_LOCALITY", 5, 0x3D)
    assert "SET_LOCALITY" in str(err) and "0x3D" in str(err) and "bad locality" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.command, again.code, again.result) == ("SET_LOCALITY", 5, 0x3D)


# -- framing against a scripted peer ------------------------------------------
ALL_CAPS = (1 << 17) - 1


class Peer:
    """The swtpm side of a socketpair, played from a script by a thread.

    Each step reads exactly ``n`` request bytes (and any descriptors), then
    sends ``reply``; ``close`` hangs up afterwards. Answers are sent only
    after the request came, as swtpm does.
    """

    def __init__(self, caps: int | None = ALL_CAPS) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.theirs.settimeout(5)
        self.ctrl = Control(self.ours, timeout=0.3, caps=caps)
        self.requests: list[bytes] = []
        self.fds: list[int] = []
        self._thread: threading.Thread | None = None

    def play(self, *steps: tuple[int, str | bytes] | tuple[int, str | bytes, bool]) -> None:
        def run() -> None:
            try:
                for step in steps:
                    n, reply = step[0], step[1]
                    got = b""
                    while len(got) < n:
                        msg, fds, _, _ = socket.recv_fds(self.theirs, n - len(got), 4)
                        if not msg:
                            return
                        got += msg
                        self.fds += fds
                    self.requests.append(got)
                    raw = bytes.fromhex(reply.replace(" ", "")) if isinstance(reply, str) else reply
                    if raw:
                        self.theirs.sendall(raw)
                    if len(step) > 2 and step[2]:
                        self.theirs.shutdown(socket.SHUT_WR)
            except OSError:
                return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> list[bytes]:
        if self._thread is not None:
            self._thread.join(5)
            assert not self._thread.is_alive()
        return self.requests

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()
        self.join()
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def _h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


METHOD_WIRE = [
    ("get_capability", (), "00000001", "00000000 00007fff", 0x7FFF),
    ("init", (), "00000002 00000000", "00000000", None),
    ("init", (1,), "00000002 00000001", "00000000", None),
    ("shutdown", (), "00000003", "00000000", None),
    ("get_tpm_established", (), "00000004", "00000000 01 000000", True),
    ("set_locality", (3,), "00000005 03000000", "00000000", None),
    ("hash_start", (), "00000006", "00000000", None),
    ("hash_data", (b"abcd",), "00000007 00000004 61626364", "00000000", None),
    ("hash_end", (), "00000008", "00000000", None),
    ("cancel_tpm_cmd", (), "00000009", "00000000", None),
    ("store_volatile", (), "0000000a", "00000000", None),
    ("reset_tpm_established", (4,), "0000000b 04000000", "00000000", None),
    (
        "get_stateblob",
        (s.PTM_BLOB_TYPE_VOLATILE,),
        "0000000c 00000001 00000002 00000000",
        "00000000 00000000 00000003 00000003 aabbcc",
        s.StateBlob(2, 0, b"\xaa\xbb\xcc"),
    ),
    (
        "get_stateblob",
        (s.PTM_BLOB_TYPE_PERMANENT, 0),
        "0000000c 00000000 00000001 00000000",
        "00000000 00000002 00000002 00000002 0102",
        s.StateBlob(1, s.PTM_STATE_FLAG_ENCRYPTED, b"\x01\x02"),
    ),
    (
        "get_stateblob",
        (s.PTM_BLOB_TYPE_SAVESTATE,),
        "0000000c 00000001 00000003 00000000",
        "00000800 00000000 00000000 00000000",
        s.StateBlob(3, 0, b"", 0x800),
    ),
    ("set_stateblob", (1, b"xyz"), "0000000d 00000000 00000001 00000003 78797a", "00000000", None),
    ("set_stateblob", (2, b"", 2), "0000000d 00000002 00000002 00000000", "00000000", None),
    ("stop", (), "0000000e", "00000000", None),
    ("get_config", (), "0000000f", "00000000 00000003", 3),
    ("set_buffersize", (), "00000011 00000000", "00000000 00001000 00000c00 00001000", (4096, 0xC00, 4096)),
    (
        "set_buffersize",
        (3000,),
        "00000011 00000bb8",
        "00000000 00000bb8 00000af8 00001000",
        (3000, 0xAF8, 4096),
    ),
    (
        "get_info",
        (3,),
        "00000012 0000000000000003 00000000 00000000",
        "00000000 0000000a 0000000a" + b'{"a":[1]}\0'.hex(),
        {"a": [1]},
    ),
    ("lock_storage", (), "00000013 0000012c", "00000000", None),
    ("lock_storage", (10,), "00000013 0000000a", "00000000", None),
]


@pytest.mark.parametrize(
    ("method", "args", "request_hex", "answer", "expected"),
    METHOD_WIRE,
    ids=[f"{m}-{i}" for i, (m, *_) in enumerate(METHOD_WIRE)],
)
def test_method_wire_format(
    peer: Peer, method: str, args: tuple[Any, ...], request_hex: str, answer: str, expected: object
) -> None:
    request = _h(request_hex)
    peer.play((len(request), answer))
    assert getattr(peer.ctrl, method)(*args) == expected
    assert peer.join() == [request]
    assert peer.ctrl.broken is None


def test_every_command_has_a_method_and_a_capability() -> None:
    for code, spec in s.COMMANDS.items():
        assert spec.code == code
        if code != s.CMD_GET_CAPABILITY:
            assert spec.capability in s.CAPABILITY_NAMES
        method = spec.name.lower().replace("tpmestablished", "tpm_established")
        assert hasattr(Control, method), spec.name
    assert sorted(s.COMMANDS) == list(range(0x01, 0x14))


def test_set_datafd_passes_the_descriptor(peer: Peer) -> None:
    a, b = socket.socketpair()
    with a, b:
        peer.play((4, "00000000"))
        peer.ctrl.set_datafd(b.fileno())
        assert peer.join() == [_h("00000010")]
        (fd,) = peer.fds
        peer.fds.clear()
        with socket.socket(fileno=fd) as received:
            received.sendall(b"hello")
            assert a.recv(5) == b"hello"


def test_capabilities_learned_once_and_unsupported_refused() -> None:
    p = Peer(caps=None)
    try:
        p.play((4, "00000000 0000ffff"), (8, "00000000"), (4, "00000000"))
        t0 = time.monotonic()
        with pytest.raises(s.UnsupportedError) as info:
            p.ctrl.lock_storage()  # swtpm 0.7.1 reports 0xFFFF: no bit 16
        assert (info.value.command, info.value.capability, info.value.caps) == (
            "LOCK_STORAGE", "LOCK_STORAGE", 0xFFFF)  # fmt: skip
        assert "PTM_CAP_LOCK_STORAGE" in str(info.value)
        assert isinstance(info.value, BackendError)
        assert p.ctrl.caps == 0xFFFF
        p.ctrl.init()
        p.ctrl.stop()  # no second GET_CAPABILITY
        assert p.join() == [_h("00000001"), _h("00000002 00000000"), _h("0000000e")]
        assert time.monotonic() - t0 < 1
        again = pickle.loads(pickle.dumps(info.value))
        assert (again.command, again.capability, again.caps) == ("LOCK_STORAGE", "LOCK_STORAGE", 0xFFFF)
    finally:
        p.close()


@pytest.mark.parametrize(
    ("method", "args", "cap"),
    [
        ("init", (), "INIT"),
        ("hash_start", (), "HASHING"),
        ("hash_data", (b"x",), "HASHING"),
        ("hash_end", (), "HASHING"),
        ("store_volatile", (), "STORE_VOLATILE"),
        ("get_stateblob", (1,), "GET_STATEBLOB"),
        ("set_stateblob", (1, b"x"), "SET_STATEBLOB"),
        ("get_config", (), "GET_CONFIG"),
        ("get_info", (), "GET_INFO"),
        ("set_datafd", (0,), "SET_DATAFD"),
        ("cancel_tpm_cmd", (), "CANCEL_TPM_CMD"),
    ],
)
def test_refused_before_sending(method: str, args: tuple[Any, ...], cap: str) -> None:
    bit = next(b for b, n in s.CAPABILITY_NAMES.items() if n == cap)
    p = Peer(caps=ALL_CAPS & ~bit)
    try:
        with pytest.raises(s.UnsupportedError, match=f"PTM_CAP_{cap}"):
            getattr(p.ctrl, method)(*args)
        assert _drain(p.theirs) == b""
        assert p.ctrl.broken is None
    finally:
        p.close()


def test_set_datafd_before_caps_are_known() -> None:
    # QEMU sends SET_DATAFD before GET_CAPABILITY; keep that order.
    p = Peer(caps=None)
    try:
        a, b = socket.socketpair()
        with a, b:
            p.play((4, "00000000"))
            p.ctrl.set_datafd(b.fileno())
            assert p.join() == [_h("00000010")]
    finally:
        p.close()


def _drain(sock: socket.socket) -> bytes:
    sock.settimeout(0.05)
    out = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    return out


def test_hash_data_is_chunked(peer: Peer) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes: 4092 + 4092 + 2056
    sizes = [4092, 4092, 2056]
    peer.play(*[(8 + n, "00000000") for n in sizes])
    peer.ctrl.hash_data(data)
    sent = peer.join()
    assert [struct.unpack(">II", r[:8]) for r in sent] == [(7, n) for n in sizes]
    assert b"".join(r[8:] for r in sent) == data
    peer.ctrl.hash_data(b"")  # nothing to send
    assert s.HashDataRequest.unpack(_h("00000002 6162")) == s.HashDataRequest(b"ab")
    with pytest.raises(ValueError):
        s.HashDataRequest.unpack(_h("00000003 6162"))


def test_get_stateblob_asks_again_at_the_next_offset(peer: Peer) -> None:
    # An answer with totlength > length (the ioctl form's chunks): continue
    # at offset + length until the whole blob came.
    peer.play(
        (16, "00000000 00000000 00000006 00000002 0102"),
        (16, "00000000 00000000 00000004 00000003 030405"),
        (16, "00000000 00000000 00000001 00000001 06"),
    )
    blob = peer.ctrl.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT)
    assert blob == s.StateBlob(1, 0, bytes([1, 2, 3, 4, 5, 6]))
    offsets = [struct.unpack(">IIII", r)[3] for r in peer.join()]
    assert offsets == [0, 2, 5]
    assert "permanent" in repr(blob) and "6 bytes" in repr(blob)


@pytest.mark.parametrize(
    ("answers", "match"),
    [
        (["00000000 00000000 00000004 00000002 0102", "00000000 00000000 00000002 00000000"], "no more"),
        (["00000000 00000000 00000002 00000003 010203"], "garbled"),  # length > totlength
        (["00000000 00000000 7fffffff 7fffffff"], "garbled"),  # absurd length
        (["00000000 00000000 00000004 00000002 0102", "00000800 00000000 00000000 00000000"], "part of"),
    ],
)
def test_get_stateblob_bad_transfers(peer: Peer, answers: list[str], match: str) -> None:
    peer.play(*[(16, a) for a in answers])
    with pytest.raises(BackendError, match=match):
        peer.ctrl.get_stateblob(s.PTM_BLOB_TYPE_VOLATILE)


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        ("0000000a", s.TPM_BAD_ORDINAL),  # TPM not running: the result alone
        ("00000003", s.TPM_BAD_PARAMETER),
        ("00000021 00000000 00000000 00000000", s.TPM_DECRYPT_ERROR),  # whole header
    ],
)
def test_get_stateblob_errors_keep_the_channel(peer: Peer, answer: str, result: int) -> None:
    peer.play((16, answer), (4, "00000000"))
    with pytest.raises(ControlError) as info:
        peer.ctrl.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT)
    assert (info.value.command, info.value.result) == ("GET_STATEBLOB", result)
    peer.ctrl.stop()  # still in step
    assert peer.ctrl.broken is None


def test_set_stateblob_error(peer: Peer) -> None:
    peer.play((12 + 4, "0000000a"))
    with pytest.raises(ControlError) as info:
        peer.ctrl.set_stateblob(s.PTM_BLOB_TYPE_PERMANENT, b"blob")
    assert (info.value.command, info.value.result) == ("SET_STATEBLOB", 0x0A)
    assert peer.ctrl.broken is None


def test_get_info_in_parts_and_errors(peer: Peer) -> None:
    doc = b'{"TPMSpecification":{"family":"2.0"}}\0'
    peer.play(
        (20, "00000000" + struct.pack(">II", len(doc), 10).hex() + doc[:10].hex()),
        (20, "00000000" + struct.pack(">II", len(doc), len(doc) - 10).hex() + doc[10:].hex()),
    )
    assert peer.ctrl.get_info(1) == {"TPMSpecification": {"family": "2.0"}}
    assert [struct.unpack(">IQII", r)[2] for r in peer.join()] == [0, 10]
    p2 = Peer()
    try:
        p2.play((20, "00000003"), (20, "00000000 00000003 00000003 7b7d00"))
        with pytest.raises(ControlError) as info:
            p2.ctrl.get_info(1)
        assert info.value.result == s.TPM_BAD_PARAMETER
        assert p2.ctrl.get_info(0) == {}
    finally:
        p2.close()


@pytest.mark.parametrize(
    ("body", "match", "broken"),
    [
        (b"not json\0", "invalid JSON", False),
        (b"[1]\0", "not an object", False),
        (b"{}", "NUL", False),
        (None, "garbled", True),
    ],
)
def test_get_info_garbled(peer: Peer, body: bytes | None, match: str, broken: bool) -> None:
    if body is None:
        answer = "00000000 00000004 00000009 7b7d00"  # length > totlength
    else:
        answer = "00000000" + struct.pack(">II", len(body), len(body)).hex() + body.hex()
    peer.play((20, answer))
    with pytest.raises(BackendError, match=match):
        peer.ctrl.get_info(1)
    assert (peer.ctrl.broken is not None) == broken


def test_error_result_reads_only_four_bytes(peer: Peer) -> None:
    # A failing GET_TPMESTABLISHED answers 4 bytes; waiting for 8 would stall.
    peer.play((4, "0000000a"), (4, "00000000 0000ffff"))
    t0 = time.monotonic()
    with pytest.raises(ControlError) as info:
        peer.ctrl.get_tpm_established()
    assert time.monotonic() - t0 < 0.2
    assert (info.value.command, info.value.code, info.value.result) == ("GET_TPMESTABLISHED", 4, 0x0A)
    assert peer.ctrl.broken is None  # a refusal leaves the channel usable
    assert peer.ctrl.get_capability() == 0xFFFF


def test_timeout_breaks_the_channel(peer: Peer) -> None:
    ctrl = peer.ctrl
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"GET_CAPABILITY.*within 0.3 s"):
        ctrl.get_capability()
    assert 0.25 <= time.monotonic() - t0 < 1.0
    assert ctrl.broken is not None
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="unusable"):
        ctrl.stop()
    assert time.monotonic() - t0 < 0.05


def test_short_answer_then_close(peer: Peer) -> None:
    peer.play((4, "00000000 0000", True))  # result 0, caps cut short
    with pytest.raises(BackendError, match=r"closed the connection.*2 of 4"):
        peer.ctrl.get_capability()
    assert peer.ctrl.broken is not None


def test_stall_in_second_pass(peer: Peer) -> None:
    peer.play((8, "00000000 00001000"))  # 8 of 16 bytes
    with pytest.raises(BackendError, match="within"):
        peer.ctrl.set_buffersize(0)


@pytest.mark.parametrize(
    ("answer", "method"),
    [
        ("00000000 00000000", "stop"),  # 4 bytes too many
        ("0000000a 00000000", "stop"),  # an error result, then more
        ("00000000 0000ffff 00000000", "get_capability"),
    ],
)
def test_long_answer_breaks_the_channel(peer: Peer, answer: str, method: str) -> None:
    n = {"stop": 4, "get_capability": 4}[method]
    peer.play((n, answer))
    time.sleep(0.05)  # let the whole answer arrive
    with pytest.raises(BackendError, match="unexpected bytes") as info:
        getattr(peer.ctrl, method)()
    assert not isinstance(info.value, ControlError)
    assert peer.ctrl.broken is not None


def test_unsolicited_bytes_break_the_channel(peer: Peer) -> None:
    peer.theirs.sendall(b"\0\0\0\0")  # nobody asked
    time.sleep(0.02)
    with pytest.raises(BackendError, match="unexpected bytes before the request"):
        peer.ctrl.stop()
    assert _drain(peer.theirs) == b""  # nothing was sent
    assert peer.ctrl.broken is not None


def test_call_checks_request_type(peer: Peer) -> None:
    ctrl = peer.ctrl
    with pytest.raises(AccessError, match="LocalityRequest"):
        ctrl.call(s.CMD_SET_LOCALITY, s.InitRequest(0))
    with pytest.raises(ValueError):
        ctrl.set_locality(300)
    assert ctrl.broken is None


def test_bad_timeout() -> None:
    a, b = socket.socketpair()
    with a, b, pytest.raises(ValueError):
        Control(a, timeout=0)


# -- real swtpm ---------------------------------------------------------------
ControlFor = Callable[..., "tuple[Control, Any]"]


@pytest.mark.swtpm
@pytest.mark.parametrize(("version", "caps", "minsize"), [(2, 0xFFFF, 0xAF8), (1, 0x7FFF, 0xC00)])
def test_real_capabilities_and_buffer_size(
    control_for: ControlFor, version: int, caps: int, minsize: int
) -> None:
    ctrl, _ = control_for(version)
    assert ctrl.get_capability() == caps  # swtpm 0.7.1: no LOCK_STORAGE
    ctrl.stop()
    assert ctrl.set_buffersize(0) == (4096, minsize, 4096)
    # Wanted sizes are clamped into [min, max].
    assert ctrl.set_buffersize(100) == (minsize, minsize, 4096)
    assert ctrl.set_buffersize(100000) == (4096, minsize, 4096)
    assert ctrl.set_buffersize(3500) == (3500, minsize, 4096)
    ctrl.init()
    # Setting needs a stopped TPM; asking does not.
    with pytest.raises(ControlError) as info:
        ctrl.set_buffersize(4096)
    assert info.value.result == s.TPM_BAD_ORDINAL
    assert ctrl.set_buffersize(0) == (3500, minsize, 4096)


@pytest.mark.swtpm
def test_real_error_results(control_for: ControlFor) -> None:
    ctrl, _ = control_for(2)
    with pytest.raises(ControlError) as info:
        ctrl.set_locality(5)
    assert (info.value.command, info.value.result) == ("SET_LOCALITY", s.TPM_BAD_LOCALITY)
    with pytest.raises(ControlError) as info:
        ctrl.exchange(0x55, b"", 4)
    assert info.value.result == s.TPM_BAD_ORDINAL and info.value.command == "0x55"
    # Before CMD_INIT: no established flag, nothing to cancel.
    for call in (ctrl.get_tpm_established, ctrl.cancel_tpm_cmd):
        with pytest.raises(ControlError) as info:
            call()
        assert info.value.result == s.TPM_BAD_ORDINAL
    ctrl.set_locality(4)  # accepted before INIT
    ctrl.init()
    assert ctrl.get_tpm_established() is False
    with pytest.raises(ControlError) as info:
        ctrl.reset_tpm_established(0)
    assert info.value.result == s.TPM_BAD_LOCALITY
    ctrl.reset_tpm_established(3)
    assert ctrl.broken is None
    ctrl.stop()
    with pytest.raises(ControlError):
        ctrl.get_tpm_established()


@pytest.mark.swtpm
def test_real_changes_count_what_may_change_the_tpm(control_for: ControlFor) -> None:
    ctrl, _ = control_for(2)
    assert ctrl.changes == 0
    ctrl.get_capability()
    ctrl.set_locality(4)
    ctrl.init()
    assert ctrl.changes == 1  # INIT
    ctrl.get_tpm_established()
    ctrl.get_config()
    ctrl.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT)
    ctrl.store_volatile()
    ctrl.cancel_tpm_cmd()
    ctrl.set_buffersize(0)
    assert ctrl.changes == 1  # none of these changes the TPM
    ctrl.hash_start()
    ctrl.hash_data(b"abc")
    ctrl.exchange(s.CMD_HASH_END, b"", 4)  # counted however it is sent
    assert ctrl.changes == 4
    with pytest.raises(ControlError):
        ctrl.reset_tpm_established(0)  # refused: nothing changed
    assert ctrl.changes == 4
    ctrl.reset_tpm_established(4)
    ctrl.stop()
    assert ctrl.changes == 6
    assert all(code in s.COMMANDS for code in s.STATE_PRESERVING_COMMANDS)


@pytest.mark.swtpm
def test_real_cancel_idle_differs_by_family(control_for: ControlFor) -> None:
    ctrl2, _ = control_for(2)
    ctrl1, _ = control_for(1)
    ctrl2.init()
    ctrl1.init()
    ctrl2.cancel_tpm_cmd()
    with pytest.raises(ControlError) as info:
        ctrl1.cancel_tpm_cmd()  # TPM 1.2 with nothing running: TPM_FAIL
    assert info.value.result == s.TPM_FAIL


@pytest.mark.swtpm
def test_real_datafd_and_established_flag(control_for: ControlFor) -> None:
    ctrl, _ = control_for(2)
    ours, theirs = socket.socketpair()
    with ours:
        ctrl.set_datafd(theirs.fileno())
        theirs.close()
        ctrl.init()
        ours.settimeout(5)
        ours.sendall(TPM2_STARTUP_CLEAR)
        assert ours.recv(100) == bytes.fromhex("80010000000a00000000")
        # A locality-4 hash sequence (_TPM_Hash_Start/Data/End) sets the flag.
        ctrl.set_locality(4)
        ctrl.exchange(s.CMD_HASH_START, b"", 4)
        ctrl.exchange(s.CMD_HASH_DATA, struct.pack(">I", 4) + b"abcd", 4)
        ctrl.exchange(s.CMD_HASH_END, b"", 4)
        assert ctrl.get_tpm_established() is True
        # Only the first byte is the locality: 0 is refused whatever the
        # padding, 3 is accepted with garbage padding (QEMU 7.2 sends garbage)
        # as with the zeros we send.
        with pytest.raises(ControlError) as info:
            ctrl.exchange(s.CMD_RESET_TPMESTABLISHED, bytes.fromhex("00 a5a5a5"), 4)
        assert info.value.result == s.TPM_BAD_LOCALITY
        assert ctrl.get_tpm_established() is True
        ctrl.exchange(s.CMD_RESET_TPMESTABLISHED, bytes.fromhex("03 a5a5a5"), 4)
        assert ctrl.get_tpm_established() is False
        ctrl.exchange(s.CMD_HASH_START, b"", 4)
        ctrl.exchange(s.CMD_HASH_END, b"", 4)
        assert ctrl.get_tpm_established() is True
        ctrl.reset_tpm_established(4)
        assert ctrl.get_tpm_established() is False


@pytest.mark.swtpm
def test_real_shutdown_ends_the_process(control_for: ControlFor) -> None:
    ctrl, sp = control_for(1)
    ctrl.init()
    ctrl.shutdown()
    assert sp.process.wait(5) == 0
    with pytest.raises(BackendError):
        ctrl.get_capability()
    assert ctrl.broken is not None


@pytest.mark.swtpm
@pytest.mark.parametrize("version", [2, 1])
def test_real_every_command(control_for: ControlFor, version: int) -> None:
    ctrl, sp = control_for(version)
    # Before CMD_INIT: information yes, state no.
    info = ctrl.get_info(s.SWTPM_INFO_TPMSPECIFICATION)
    family = "2.0" if version == 2 else "1.2"
    assert info["TPMSpecification"]["family"] == family
    assert ctrl.get_config() == 0
    for call in (ctrl.store_volatile, lambda: ctrl.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT), ctrl.hash_start):
        with pytest.raises(ControlError) as err:
            call()
        assert err.value.result == s.TPM_BAD_ORDINAL
    with pytest.raises(s.UnsupportedError, match="LOCK_STORAGE"):
        ctrl.lock_storage()  # 0.7.1: bit 16 not set, nothing sent
    assert ctrl.caps == (0xFFFF if version == 2 else 0x7FFF)
    ctrl.init()
    ours, theirs = socket.socketpair()
    with ours:
        ctrl.set_datafd(theirs.fileno())
        theirs.close()
        ours.settimeout(5)
        ours.sendall(TPM2_STARTUP_CLEAR if version == 2 else TPM12_STARTUP_CLEAR)
        assert ours.recv(100)[6:10] == bytes(4)
    # STORE_VOLATILE writes the volatile state file.
    ctrl.store_volatile()
    assert any("volatilestate" in name for name in os.listdir(sp.state_dir))
    # State blobs: permanent and volatile exist, savestate answers 0x800.
    perm = ctrl.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT)
    vol = ctrl.get_stateblob(s.PTM_BLOB_TYPE_VOLATILE)
    save = ctrl.get_stateblob(s.PTM_BLOB_TYPE_SAVESTATE)
    assert perm.result == vol.result == 0 and len(perm.data) > 1000 and len(vol.data) > 1000
    assert perm.state_flags == vol.state_flags == 0
    assert (save.result, save.data) == (s.RESULT_NON_FATAL, b"")
    # Loading needs a stopped TPM.
    with pytest.raises(ControlError) as err:
        ctrl.set_stateblob(s.PTM_BLOB_TYPE_PERMANENT, perm.data)
    assert (err.value.command, err.value.result) == ("SET_STATEBLOB", s.TPM_BAD_ORDINAL)
    # The DRTM sequence at locality 4 sets the established flag.
    ctrl.set_locality(4)
    ctrl.hash_start()
    ctrl.hash_data(b"x" * 10000)  # three chunks
    ctrl.hash_end()
    assert ctrl.get_tpm_established() is True
    ctrl.stop()
    ctrl.set_stateblob(s.PTM_BLOB_TYPE_PERMANENT, perm.data)
    ctrl.set_stateblob(s.PTM_BLOB_TYPE_VOLATILE, vol.data)
    ctrl.init(s.PTM_INIT_FLAG_DELETE_VOLATILE)
    assert ctrl.get_tpm_established() is False  # back to the saved state
    assert ctrl.broken is None


@pytest.mark.swtpm
def test_real_get_info_documents(control_for: ControlFor) -> None:
    ctrl, _ = control_for(2)
    assert ctrl.get_info(0) == {}
    assert ctrl.get_info(s.SWTPM_INFO_TPMSPECIFICATION) == {
        "TPMSpecification": {"family": "2.0", "level": 0, "revision": 164}
    }
    info = ctrl.get_info(
        s.SWTPM_INFO_TPMSPECIFICATION | s.SWTPM_INFO_TPMATTRIBUTES | s.SWTPM_INFO_TPMFEATURES
    )
    assert info["TPMAttributes"] == {
        "manufacturer": "id:00001014",
        "version": "id:20191023",
        "model": "swtpm",
    }
    assert 2048 in info["TPMFeatures"]["RSAKeySizes"]  # bit 2 is known to 0.7.1 already
    assert ctrl.get_info(0xFF) == info  # unknown bits are ignored
    # An offset past the end is a bad parameter (4-byte answer).
    with pytest.raises(ControlError) as err:
        ctrl.exchange(s.CMD_GET_INFO, s.GetInfoRequest(1, 4096).pack(), 12)
    assert err.value.result == s.TPM_BAD_PARAMETER
    # At offset 10, totlength stays the whole document (63 bytes with its NUL).
    part = ctrl.transact(s.CMD_GET_INFO, s.GetInfoRequest(1, 10).pack(), lambda recv: recv(12 + 53))
    assert s.GetInfoResponse.unpack(part[:12]) == s.GetInfoResponse(0, 63, 53)
    assert part[12:] == b'fication":{"family":"2.0","level":0,"revision":164}}\0'
    assert ctrl.broken is None


@pytest.mark.swtpm
def test_real_get_config_flags(control_for: ControlFor, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("00112233445566778899aabbccddeeff")
    ctrl_file, _ = control_for(2, "--key", f"file={key},mode=aes-cbc")
    ctrl_mig, _ = control_for(2, "--migration-key", f"file={key},mode=aes-cbc")
    assert ctrl_file.get_config() == s.PTM_CONFIG_FLAG_FILE_KEY
    assert ctrl_mig.get_config() == s.PTM_CONFIG_FLAG_MIGRATION_KEY
    # With --key, a blob asked for without DECRYPTED stays encrypted and says so.
    ctrl_file.init()
    enc = ctrl_file.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT, 0)
    plain = ctrl_file.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT)
    assert enc.encrypted and enc.state_flags == s.PTM_STATE_FLAG_ENCRYPTED
    assert not plain.encrypted and len(enc.data) > len(plain.data)
    # With --migration-key the blob is encrypted, but the flag is not set.
    ctrl_mig.init()
    mig = ctrl_mig.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT)
    assert mig.state_flags == 0 and len(mig.data) > len(plain.data)
