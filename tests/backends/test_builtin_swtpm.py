"""Builtin against swtpm: the same commands must give the same bytes.

swtpm (0.7.1 with libtpms 0.9.2 here) is driven directly over its data socket
-- one command per write, 10-byte header then the rest, every read with a
timeout -- so these tests do not depend on :mod:`tpmdev.backends.emulator`.

Allowed differences, each named where it is masked:

* random bytes (GetRandom, TPM 1.2 tickNonce);
* clocks and counters of power cycles (ReadClock time/clock/resetCount,
  GetTicks currentTicks): swtpm was power-cycled once more to allocate banks;
* vendor data (manufacturer, vendor strings, firmware version, spec date);
* implementation limits that describe what each TPM has (object slots,
  sessions, NV, algorithms beyond the four hashes, commands beyond ours);
* hash tickets for a real hierarchy (an HMAC keyed with the TPM's secret
  proof); IncrementalSelfTest's toDoList (which tests are still pending).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from tpmdev.backends.builtin import Builtin

pytestmark = pytest.mark.swtpm

TIMEOUT = 5.0
PW = bytes.fromhex("40000009 0000 00 0000")  # TPM_RS_PW, empty nonce, attrs, empty password
CTRL_INIT = 0x02
CTRL_SET_LOCALITY = 0x05
TPM2_SEND_COMMAND = 8


def cmd(tag: int, cc: int, body: str | bytes = b"") -> bytes:
    raw = bytes.fromhex(body) if isinstance(body, str) else body
    return struct.pack(">HII", tag, 10 + len(raw), cc) + raw


def sess(*sessions: bytes) -> bytes:
    area = b"".join(sessions)
    return struct.pack(">I", len(area)) + area


class RawSwtpm:
    """A swtpm process and a raw client of its data and control sockets."""

    def __init__(self, version: int) -> None:
        binary = shutil.which("swtpm")
        assert binary, "swtpm is not installed (CI installs it; these tests must not be skipped)"
        self.dir = tempfile.mkdtemp(prefix="tpmdev-bt-")
        data, ctrl = os.path.join(self.dir, "data.sock"), os.path.join(self.dir, "ctrl.sock")
        args = [
            binary,
            "socket",
            "--tpmstate",
            f"dir={self.dir}",
            "--server",
            f"type=unixio,path={data}",
            "--ctrl",
            f"type=unixio,path={ctrl}",
            "--flags",
            "not-need-init",
        ]
        if version == 2:
            args.append("--tpm2")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ctrl_path = ctrl
        self.locality = 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(TIMEOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while True:  # the socket file appears before swtpm listens on it
                assert self.proc.poll() is None, "swtpm exited at start"
                try:
                    self.sock.connect(data)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    assert time.monotonic() < deadline, "swtpm did not open its data socket"
                    time.sleep(0.01)
        except BaseException:
            self.close()
            raise

    def _recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "swtpm closed the data socket"
            out += chunk
        return out

    def execute(self, command: bytes, locality: int = 0) -> bytes:
        if locality != self.locality:
            assert self.ctrl(CTRL_SET_LOCALITY, bytes((locality,))) == bytes(4)
            self.locality = locality
        self.sock.sendall(command)
        head = self._recv(10)
        return head + self._recv(int.from_bytes(head[2:6], "big") - 10)

    def execute_prefixed(self, command: bytes) -> bytes:
        """TPM 2 only: the TCG simulator framing lets swtpm pass on commands
        shorter than 10 bytes (it waits for 10 bytes otherwise)."""
        self.sock.sendall(struct.pack(">IBI", TPM2_SEND_COMMAND, self.locality, len(command)) + command)
        size = int.from_bytes(self._recv(4), "big")
        response = self._recv(size)
        assert self._recv(4) == bytes(4)
        return response

    def ctrl(self, code: int, payload: bytes = b"") -> bytes:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(TIMEOUT)
            c.connect(self.ctrl_path)
            c.sendall(struct.pack(">I", code) + payload)
            return c.recv(4096)

    def power_cycle(self) -> None:
        """CMD_INIT: a new _TPM_Init; Startup must be sent again."""
        assert self.ctrl(CTRL_INIT, bytes(4)) == bytes(4)

    def close(self) -> None:
        self.sock.close()
        self.proc.kill()
        self.proc.wait(TIMEOUT)
        shutil.rmtree(self.dir, ignore_errors=True)


def _allocate_sha1_sha256(tpm: RawSwtpm) -> None:
    """Give swtpm the builtin's default banks (a fresh libtpms allocates all
    four): TPM2_PCR_Allocate, then a power cycle to apply it."""
    assert tpm.execute(cmd(0x8001, 0x144, "0000"))[6:10] == bytes(4)
    selection = "00000004 0004 03 ffffff 000b 03 ffffff 000c 03 000000 000d 03 000000"
    rsp = tpm.execute(cmd(0x8002, 0x12B, bytes.fromhex("4000000c") + sess(PW) + bytes.fromhex(selection)))
    assert rsp[6:10] == bytes(4), rsp.hex()
    assert tpm.execute(cmd(0x8001, 0x145, "0000"))[6:10] == bytes(4)
    tpm.power_cycle()


@pytest.fixture
def swtpm2() -> Iterator[RawSwtpm]:
    tpm = RawSwtpm(2)
    try:
        _allocate_sha1_sha256(tpm)
        yield tpm
    finally:
        tpm.close()


@pytest.fixture
def swtpm12() -> Iterator[RawSwtpm]:
    tpm = RawSwtpm(1)
    try:
        yield tpm
    finally:
        tpm.close()


Pair = Callable[..., bytes]


def _pair(ours: Builtin, theirs: RawSwtpm) -> Pair:
    def both(command: bytes, locality: int = 0, mask: Callable[[bytes], bytes] = lambda r: r) -> bytes:
        a, b = ours.execute(command, locality), theirs.execute(command, locality)
        assert mask(a) == mask(b), (
            f"command {command.hex()} at locality {locality}: builtin {a.hex()} swtpm {b.hex()}"
        )
        return a

    return both


@pytest.fixture
def both2(swtpm2: RawSwtpm) -> Pair:
    return _pair(Builtin(2, seed=7), swtpm2)


@pytest.fixture
def both12(swtpm12: RawSwtpm) -> Pair:
    return _pair(Builtin(1, seed=7), swtpm12)


STARTUP_CLEAR = cmd(0x8001, 0x144, "0000")

# ---------------------------------------------------------------- TPM 2.0 --

PRE_STARTUP = [
    bytes.fromhex("80010000000a00000181"),  # QEMU's probe: TPM_RC_INITIALIZE, tag 0x8001
    cmd(0x8001, 0x17E, "00000001 000b 03 000400"),
    cmd(0x8001, 0x17B, "0008"),
    cmd(0x8001, 0x9999),  # TPM_RC_COMMAND_CODE wins over TPM_RC_INITIALIZE
    cmd(0x8003, 0x17E),  # not a TPM_ST: TPM_RC_VALUE
    cmd(0x8002, 0x182),  # TPM_RC_INITIALIZE before any handle/session parsing
    cmd(0x8001, 0x144, "0001"),  # Startup(STATE) after Shutdown(CLEAR): VALUE + P1
    cmd(0x8001, 0x144, "0005"),
    cmd(0x8001, 0x144, ""),
]


def test_before_startup(both2: Pair) -> None:
    for c in PRE_STARTUP:
        both2(c)


def _ext(pcr: int, digests: str, session: bytes = PW, tag: int = 0x8002) -> bytes:
    area = sess(session) if tag == 0x8002 else b""
    return cmd(tag, 0x182, struct.pack(">I", pcr) + area + bytes.fromhex(digests))


D1, D256 = "aa" * 20, "bb" * 32
ONE256 = "00000001 000b" + D256

MALFORMED = {
    "size field too big": bytes.fromhex("8001 0000000b 00000181"),
    "size field too small": bytes.fromhex("8001 00000009 00000144 0000"),
    "trailing byte": bytes.fromhex("8001 0000000a 00000181 ff"),
    "bad tag TPM_ST_RSP_COMMAND": cmd(0x00C4, 0x181),
    "bad tag TPM_ST_HASHCHECK": cmd(0x8024, 0x181),
    "bad tag not a TPM_ST": cmd(0x1234, 0x181),
    "bad tag TPM 1.2": cmd(0x00C1, 0x181),
    "unknown command code": cmd(0x8001, 0x999),
    "vendor command code": cmd(0x8001, 0x20000000),
    "Startup again": STARTUP_CLEAR,
    "missing handle": cmd(0x8002, 0x182, "0000"),
    "PCR handle 24": _ext(24, ONE256),
    "owner handle as PCR": _ext(0x40000001, ONE256),
    "missing authSize": cmd(0x8002, 0x182, "0000000a"),
    "authSize 0": cmd(0x8002, 0x182, "0000000a 00000000" + ONE256),
    "authSize 8": cmd(0x8002, 0x182, "0000000a 00000008 40000009 0000 00 00" + ONE256),
    "authSize past the end": cmd(0x8002, 0x182, "0000000a 000000ff 40000009 0000 00 0000" + ONE256),
    "authSize one too many": cmd(0x8002, 0x182, "0000000a 0000000a 40000009 0000 00 0000" + ONE256),
    "no sessions for an authorized handle": _ext(10, ONE256, tag=0x8001),
    "session handle not a session": _ext(10, ONE256, bytes.fromhex("40000001 0000 00 0000")),
    "HMAC session not loaded": _ext(10, ONE256, bytes.fromhex("02000000 0000 00 0000")),
    "policy session not loaded": _ext(10, ONE256, bytes.fromhex("03000000 0000 00 0000")),
    "wrong password": _ext(10, ONE256, bytes.fromhex("40000009 0000 00 000141")),
    "password session with nonce": _ext(10, ONE256, bytes.fromhex("40000009 000141 00 0000")),
    "nonce too big": _ext(10, ONE256, bytes.fromhex("40000009 0041" + "00" * 65 + "00 0000")),
    "password too big": _ext(10, ONE256, bytes.fromhex("40000009 0000 00 0041" + "00" * 65)),
    "continueSession": _ext(10, ONE256, bytes.fromhex("40000009 0000 01 0000")),
    "auditExclusive": _ext(10, ONE256, bytes.fromhex("40000009 0000 02 0000")),
    "reserved attribute bit": _ext(10, ONE256, bytes.fromhex("40000009 0000 08 0000")),
    "decrypt": _ext(10, ONE256, bytes.fromhex("40000009 0000 20 0000")),
    "audit": _ext(10, ONE256, bytes.fromhex("40000009 0000 80 0000")),
    "two sessions one handle": cmd(
        0x8002, 0x182, bytes.fromhex("0000000a") + sess(PW, PW) + bytes.fromhex(ONE256)
    ),
    "four sessions": cmd(
        0x8002, 0x182, bytes.fromhex("0000000a") + sess(PW, PW, PW, PW) + bytes.fromhex(ONE256)
    ),
    "session on a command without handles": cmd(0x8002, 0x17B, sess(PW) + bytes.fromhex("0008")),
    "TPM_ST_SESSIONS without a session": cmd(0x8002, 0x17B, "00000000 0008"),
    "session truncated": cmd(0x8002, 0x182, "0000000a 00000009 4000"),
    "extend: short digest": _ext(10, ONE256[:-2]),
    "extend: no parameters": _ext(10, ""),
    "extend: five digests": _ext(10, "00000005"),
    "extend: TPM_ALG_NULL": _ext(10, "00000001 0010"),
    "extend: unknown hash": _ext(10, "00000001 0099" + D256),
    "extend: trailing byte": _ext(10, ONE256 + "00"),
    "extend PCR 17 at locality 0": _ext(17, ONE256),
    "PCR_Read: sizeofSelect 0": cmd(0x8001, 0x17E, "00000001 000b 00"),
    "PCR_Read: sizeofSelect 2": cmd(0x8001, 0x17E, "00000001 0004 02 0100"),
    "PCR_Read: sizeofSelect 4": cmd(0x8001, 0x17E, "00000001 000b 04 01000000"),
    "PCR_Read: unknown hash": cmd(0x8001, 0x17E, "00000001 0099 03 010000"),
    "PCR_Read: 17 selections": cmd(0x8001, 0x17E, "00000011"),
    "PCR_Read: truncated": cmd(0x8001, 0x17E, "00000001 000b 03 01"),
    "Hash: data too big": cmd(0x8001, 0x17D, "0401" + "00" * 0x401 + "000b 40000007"),
    "Hash: TPM_ALG_NULL": cmd(0x8001, 0x17D, "0000 0010 40000007"),
    "Hash: unknown hash": cmd(0x8001, 0x17D, "0003 616263 0099 40000007"),
    "Hash: bad hierarchy": cmd(0x8001, 0x17D, "0003 616263 000b 40000005"),
    "Hash: truncated": cmd(0x8001, 0x17D, "0003 6162"),
    "GetCapability: unknown capability": cmd(0x8001, 0x17A, "0000000c 00000000 00000001"),
    "GetCapability: PCRS property 1": cmd(0x8001, 0x17A, "00000005 00000001 00000001"),
    "GetCapability: truncated": cmd(0x8001, 0x17A, "00000006 00000100"),
    "GetRandom: trailing byte": cmd(0x8001, 0x17B, "0008 00"),
    "GetRandom: truncated": cmd(0x8001, 0x17B, "00"),
    "StirRandom: too big": cmd(0x8001, 0x146, "0081" + "00" * 0x81),
    "SelfTest: fullTest 2": cmd(0x8001, 0x143, "02"),
    "SelfTest: missing": cmd(0x8001, 0x143),
    "IncrementalSelfTest: unknown algorithm": cmd(0x8001, 0x142, "00000001 0099"),
    "Shutdown: bad type": cmd(0x8001, 0x145, "0005"),
    "PCR_Event: data too big": cmd(
        0x8002, 0x13C, bytes.fromhex("00000010") + sess(PW) + b"\x04\x01" + bytes(0x401)
    ),
    "PCR_Event: PCR 24": cmd(0x8002, 0x13C, bytes.fromhex("00000018") + sess(PW) + bytes.fromhex("000100")),
    "PCR_Event: no session": cmd(0x8001, 0x13C, "00000010 000100"),
    "PCR_Reset: PCR 24": cmd(0x8002, 0x13D, bytes.fromhex("00000018") + sess(PW)),
    "PCR_Reset: trailing byte": cmd(0x8002, 0x13D, bytes.fromhex("00000010") + sess(PW) + b"\0"),
    "PCR_Reset: PCR 0": cmd(0x8002, 0x13D, bytes.fromhex("00000000") + sess(PW)),
    "ReadClock with a session": cmd(0x8002, 0x181, sess(PW)),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_same_error(both2: Pair, name: str) -> None:
    both2(STARTUP_CLEAR)
    rsp = both2(MALFORMED[name])
    if name != "continueSession":
        assert len(rsp) == 10 and rsp[:2] == b"\x80\x01", (
            "an error response is a bare TPM_ST_NO_SESSIONS header"
        )


@pytest.mark.parametrize("length", range(1, 10))  # 0 bytes + the 9-byte framing: swtpm waits
def test_short_commands(swtpm2: RawSwtpm, length: int) -> None:
    command = bytes.fromhex("8001 0000000c 00000144 0000")[:length]
    assert Builtin(2).execute(command) == swtpm2.execute_prefixed(command)


def test_pcr_values_and_counter(both2: Pair) -> None:
    both2(STARTUP_CLEAR)
    # every PCR of both banks, in 8-digest slices, after Startup
    for alg in ("0004", "000b"):
        for sel in ("ff0000", "00ff00", "0000ff", "ffffff"):
            both2(cmd(0x8001, 0x17E, f"00000001 {alg} 03 {sel}"))
    for pcr, digests in [
        (10, f"00000002 0004{D1} 000b{D256}"),
        (10, ONE256),
        (16, ONE256),
        (23, ONE256),
        (0, f"00000001 0004{D1}"),
        (7, f"00000002 000b{D256} 000b{'cc' * 32}"),
        (5, "00000000"),
        (3, f"00000001 000c{'dd' * 48}"),
        (0x40000007, ONE256),
    ]:
        assert both2(_ext(pcr, digests)) == bytes.fromhex("8002 00000013 00000000 00000000 0000 01 0000")
    for event in (b"", b"abc", bytes(1024)):
        both2(
            cmd(0x8002, 0x13C, bytes.fromhex("00000004") + sess(PW) + struct.pack(">H", len(event)) + event)
        )
        both2(
            cmd(0x8002, 0x13C, bytes.fromhex("40000007") + sess(PW) + struct.pack(">H", len(event)) + event)
        )
    both2(cmd(0x8002, 0x13D, bytes.fromhex("00000010") + sess(PW)))
    # selections: two banks, the 8-digest cut, unallocated and repeated banks
    for sel in [
        "00000002 000b 03 ffffff 0004 03 ffffff",
        "00000002 000b 03 030000 0004 03 ffffff",
        "00000001 000c 03 ffffff",
        "00000002 000b 03 010000 000b 03 010000",
        "00000000",
        "00000004 0004 03 000001 000b 03 000001 000c 03 000001 000d 03 000001",
    ]:
        both2(cmd(0x8001, 0x17E, sel))
    # and an independent check of PCR 10, SHA-1 bank: the extend chain
    expected = hashlib.sha1(bytes(20) + bytes.fromhex(D1)).digest()
    rsp = both2(cmd(0x8001, 0x17E, "00000001 0004 03 000400"))
    assert rsp[-20:] == expected


LOCALITY_PCRS = [0, 15, 16, 17, 18, 19, 20, 21, 22, 23]


def test_locality_rules(swtpm2: RawSwtpm) -> None:
    ours = Builtin(2, seed=1)
    both = _pair(ours, swtpm2)
    both(STARTUP_CLEAR)
    for locality in range(5):
        for pcr in LOCALITY_PCRS:
            both(_ext(pcr, f"00000001 0004{locality:02x}{'00' * 19}"), locality)
            both(cmd(0x8002, 0x13D, struct.pack(">I", pcr) + sess(PW)), locality)
            both(cmd(0x8002, 0x13C, struct.pack(">I", pcr) + sess(PW) + b"\x00\x01\x41"), locality)
    for alg in ("0004", "000b"):
        for sel in ("ff0000", "00ff00", "0000ff"):
            both(cmd(0x8001, 0x17E, f"00000001 {alg} 03 {sel}"))


@pytest.mark.parametrize("locality", [0, 1, 2, 3, 4])
def test_startup_locality(swtpm2: RawSwtpm, locality: int) -> None:
    both = _pair(Builtin(2), swtpm2)
    both(STARTUP_CLEAR, locality)
    both(cmd(0x8001, 0x17E, "00000002 0004 03 010000 000b 03 010000"))


def _read_all(both: Pair) -> None:
    for alg in ("0004", "000b"):
        for sel in ("ff0000", "00ff00", "0000ff"):
            both(cmd(0x8001, 0x17E, f"00000001 {alg} 03 {sel}"))


@pytest.mark.parametrize(
    "shutdown,startup",
    [("0001", "0001"), ("0001", "0000"), ("0000", "0000"), ("0000", "0001"), (None, "0000"), (None, "0001")],
)
def test_shutdown_startup_cycles(swtpm2: RawSwtpm, shutdown: str | None, startup: str) -> None:
    ours = Builtin(2, seed=3)
    both = _pair(ours, swtpm2)
    both(STARTUP_CLEAR)
    for pcr in (0, 7, 16, 17, 23):
        both(_ext(pcr, ONE256), 3 if pcr == 17 else 0)
    if shutdown is not None:
        both(cmd(0x8001, 0x145, shutdown))
    ours.startup()
    swtpm2.power_cycle()
    both(cmd(0x8001, 0x144, startup))
    _read_all(both)


def test_state_saved_then_extended(swtpm2: RawSwtpm) -> None:
    ours = Builtin(2, seed=3)
    both = _pair(ours, swtpm2)
    both(STARTUP_CLEAR)
    both(cmd(0x8001, 0x145, "0001"))
    both(_ext(5, ONE256))  # after Shutdown(STATE): the saved state is no longer valid
    ours.startup()
    swtpm2.power_cycle()
    both(cmd(0x8001, 0x144, "0001"))
    both(STARTUP_CLEAR)
    _read_all(both)


def _props(rsp: bytes) -> dict[int, int]:
    n = int.from_bytes(rsp[15:19], "big")
    return {
        int.from_bytes(rsp[19 + 8 * i : 23 + 8 * i], "big"): int.from_bytes(
            rsp[23 + 8 * i : 27 + 8 * i], "big"
        )
        for i in range(n)
    }


#: TPM_PT_FIXED properties a TPM of this kind may not answer differently.
SAME_FIXED = {
    0x100: "TPM_PT_FAMILY_INDICATOR",
    0x101: "TPM_PT_LEVEL",
    0x10D: "TPM_PT_INPUT_BUFFER",
    0x112: "TPM_PT_PCR_COUNT",
    0x113: "TPM_PT_PCR_SELECT_MIN",
    0x11E: "TPM_PT_MAX_COMMAND_SIZE",
    0x11F: "TPM_PT_MAX_RESPONSE_SIZE",
    0x120: "TPM_PT_MAX_DIGEST",
    0x12E: "TPM_PT_MAX_CAP_BUFFER",
}
# Free to differ: 0x102-0x10C (spec revision/date, manufacturer, vendor strings,
# firmware version), and the limits on objects, sessions, NV and contexts.


def test_get_capability(swtpm2: RawSwtpm) -> None:
    ours = Builtin(2)
    both = _pair(ours, swtpm2)
    both(STARTUP_CLEAR)

    def get(t: Builtin | RawSwtpm, cap: int, prop: int, n: int) -> bytes:
        return t.execute(cmd(0x8001, 0x17A, struct.pack(">III", cap, prop, n)))

    a, b = _props(get(ours, 6, 0x100, 127)), _props(get(swtpm2, 6, 0x100, 127))
    assert list(a) == list(b)  # the same properties, in the same order
    for prop, name in SAME_FIXED.items():
        assert a[prop] == b[prop], name
    # paging: moreData and ranges are the same
    for prop, count in [
        (0x100, 3),
        (0x0FF, 2),
        (0x12E, 5),
        (0x130, 5),
        (0x3000, 1),
        (0x100, 0),
        (0x200, 0),
        (0x12D, 2),
    ]:
        ra, rb = get(ours, 6, prop, count), get(swtpm2, 6, prop, count)
        assert ra[10] == rb[10], f"moreData for {prop:#x}/{count}"
        assert list(_props(ra)) == list(_props(rb))
    # variable properties: the same set, and TPM_PT_STARTUP_CLEAR agrees
    va, vb = _props(get(ours, 6, 0x200, 127)), _props(get(swtpm2, 6, 0x200, 127))
    assert list(va) == list(vb)
    assert va[0x201] == vb[0x201]
    # PCR allocation is reported identically, unallocated banks included
    both(cmd(0x8001, 0x17A, "00000005 00000000 00000001"))
    # the four hash algorithms have the same attributes; swtpm lists more algorithms
    ra, rb = get(ours, 0, 4, 1), get(swtpm2, 0, 4, 1)
    assert ra == rb
    for alg in (0x0B, 0x0C, 0x0D):
        assert get(ours, 0, alg, 1)[15:] == get(swtpm2, 0, alg, 1)[15:]
    # TPMA_CC of every command we implement is the one swtpm reports
    for cc in [
        0x13C,
        0x13D,
        0x142,
        0x143,
        0x144,
        0x145,
        0x146,
        0x17A,
        0x17B,
        0x17C,
        0x17D,
        0x17E,
        0x181,
        0x182,
    ]:
        assert get(ours, 2, cc, 1)[15:] == get(swtpm2, 2, cc, 1)[15:], hex(cc)


def test_hash_random_clock(both2: Pair, swtpm2: RawSwtpm) -> None:
    both2(STARTUP_CLEAR)
    for alg in ("0004", "000b", "000c", "000d"):
        for data in ("", "616263", "ff544347 00", "00" * 1024):
            n = len(bytes.fromhex(data.replace(" ", "")))
            both2(cmd(0x8001, 0x17D, f"{n:04x} {data} {alg} 40000007"))
    # a real hierarchy: the digest and the ticket's tag/hierarchy agree, the HMAC is the TPM's own
    for hier in ("40000001", "4000000b", "4000000c"):
        rsp = both2(cmd(0x8001, 0x17D, f"0003 616263 000b {hier}"), mask=lambda r: r[10:50])
        assert rsp[10:12] == b"\x00\x20"
        assert rsp[12:44] == hashlib.sha256(b"abc").digest()
    both2(cmd(0x8001, 0x17D, "0004 ff544347 000b 40000001"))  # TPM_GENERATED_VALUE: a NULL ticket
    # GetRandom: capped at the largest digest (64); bytes differ
    for n in (0, 1, 32, 64, 65, 100, 0xFFFF):
        both2(cmd(0x8001, 0x17B, f"{n:04x}"), mask=lambda r: r[:12] + bytes(len(r) - 12))
    both2(cmd(0x8001, 0x146, "0003 616263"))
    # ReadClock: same layout; time, clock and resetCount differ (swtpm was power-cycled once more)
    both2(bytes.fromhex("80010000000a00000181"), mask=lambda r: r[:10] + r[30:])
    both2(cmd(0x8001, 0x143, "01"))
    both2(cmd(0x8001, 0x143, "00"))
    both2(cmd(0x8001, 0x17C))
    # IncrementalSelfTest: same layout; the toDoList is the TPM's own business
    both2(cmd(0x8001, 0x142, "00000001 000b"), mask=lambda r: r[:2] + r[6:10])
    both2(cmd(0x8001, 0x145, "0000"))


# ---------------------------------------------------------------- TPM 1.2 --

T12 = 0x00C1


def test_tpm12_before_startup(both12: Pair) -> None:
    both12(bytes.fromhex("00c1 0000000a 000000f1"))  # QEMU's probe before Startup
    both12(cmd(T12, 0x15, "00000000"))
    both12(cmd(0x00C5, 0x15, "00000000"))
    both12(bytes.fromhex("00c1 0000000f 00000015 00000000"))
    both12(bytes.fromhex("00c1 0000000f 00009999 00000000"))
    both12(cmd(0x00C5, 0x9999, "00000000"))
    both12(bytes.fromhex("80010000000a00000181"))  # the TPM 2 probe: TPM_BAD_ORDINAL
    both12(cmd(T12, 0x53))
    both12(cmd(T12, 0x65, "00000005 00000004 00000101"))


@pytest.mark.parametrize("startup_type", ["0001", "0002", "0003", "0007", "00"])
def test_tpm12_startup_types(both12: Pair, startup_type: str) -> None:
    both12(cmd(T12, 0x99, startup_type))
    both12(cmd(T12, 0x99, "0001"))  # the first Startup ended post-initialisation
    for index in (0, 10, 16, 17, 22, 23, 24):
        both12(cmd(T12, 0x15, struct.pack(">I", index)))
    both12(cmd(T12, 0x14, "0000000a" + D1))
    both12(cmd(T12, 0x53))
    both12(cmd(T12, 0x46, "00000004"), mask=lambda r: r[:14])
    both12(bytes.fromhex("00c1 0000000a 000000f1"), mask=lambda r: r[:12] + r[20:22])
    both12(cmd(T12, 0x65, "00000005 00000004 00000101"))
    both12(cmd(T12, 0x65, "0000001a 00000000"), mask=lambda r: r[:18] + r[20:23] + r[27:])
    both12(cmd(T12, 0x9999))
    both12(cmd(0x00C5, 0x15, "00000000"))


def test_tpm12_commands(swtpm12: RawSwtpm) -> None:
    ours = Builtin(1)
    both = _pair(ours, swtpm12)
    both(cmd(T12, 0x99, "0001"))
    for locality in range(5):
        for pcr in LOCALITY_PCRS:
            both(cmd(T12, 0x14, struct.pack(">I", pcr) + bytes((locality,)) * 20), locality)
    for index in range(25):
        both(cmd(T12, 0x15, struct.pack(">I", index)))
    expected = hashlib.sha1(bytes(20) + bytes((0,)) * 20).digest()
    for locality in range(1, 5):
        expected = hashlib.sha1(expected + bytes((locality,)) * 20).digest()
    assert ours.execute(cmd(T12, 0x15, "0000000f"))[10:] == expected
    for bad in ["0000000a" + D1[:-2], "0000000a" + D1 + "00", "00000018" + D1, "0000"]:
        both(cmd(T12, 0x14, bad))
    for bad in ["0000", "0000000000"]:
        both(cmd(T12, 0x15, bad))
    both(cmd(T12, 0x53, "00"))
    both(cmd(0x00C2, 0x15, "00000000"))
    for n in (0, 16, 5000):
        both(cmd(T12, 0x46, struct.pack(">I", n)), mask=lambda r: r[:14])
    # GetTicks: TPM_CURRENT_TICKS with tag 0x0014 and tickRate 1 us; ticks and nonce differ
    both(bytes.fromhex("00c1 0000000a 000000f1"), mask=lambda r: r[:12] + r[20:22])
    both(cmd(T12, 0x65, "00000005 00000004 00000101"))  # TPM_CAP_PROP_PCR
    both(cmd(T12, 0x65, "00000005 00000004 00000124"))  # TPM_CAP_PROP_INPUT_BUFFER
    both(cmd(T12, 0x65, "00000005 00000004 00000102"))  # TPM_CAP_PROP_DIR
    both(cmd(T12, 0x65, "00000005 00000004 00000103"), mask=lambda r: r[:14])  # manufacturer: vendor
    both(cmd(T12, 0x65, "00000006 00000000"))  # TPM_CAP_VERSION
    # TPM_CAP_VERSION_VAL: same layout and spec level; firmware revision and vendor id differ
    both(cmd(T12, 0x65, "0000001a 00000000"), mask=lambda r: r[:18] + r[20:23] + r[27:])
    for bad in [
        "00000005 00000004 00000999",
        "00000005 00000002 0101",
        "00000077 00000000",
        "00000005 00000009 00000101",
        "00000005",
    ]:
        both(cmd(T12, 0x65, bad))
