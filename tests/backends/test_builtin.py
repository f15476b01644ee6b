"""The builtin software TPM on its own: lifecycle, wire formats, error codes.

Expected digests are recomputed with hashlib from the extend chain; expected
response codes are the ones TCG TPM 2.0 Part 2 section 6.6 / TPM 1.2 Part 2
section 16 define (and test_builtin_swtpm.py checks the same inputs against
swtpm).
"""

from __future__ import annotations

import hashlib
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpmdev.backends import Backend
from tpmdev.backends.builtin import Builtin
from tpmdev.errors import AccessError, StateError
from tpmdev.wire import TPM2_READCLOCK_PROBE, TPM12_GETTICKS_PROBE, version_from_probe

PW = bytes.fromhex("40000009 0000 00 0000")
STARTUP_CLEAR = bytes.fromhex("8001 0000000c 00000144 0000")
ALGS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}


def cmd(tag: int, cc: int, body: bytes | str = b"") -> bytes:
    raw = bytes.fromhex(body) if isinstance(body, str) else body
    return struct.pack(">HII", tag, 10 + len(raw), cc) + raw


def rc(response: bytes) -> int:
    assert len(response) >= 10 and int.from_bytes(response[2:6], "big") == len(response)
    return int.from_bytes(response[6:10], "big")


def extend(pcr: int, digests: list[tuple[str, bytes]]) -> bytes:
    body = struct.pack(">II", pcr, len(PW)) + PW + struct.pack(">I", len(digests))
    body += b"".join(struct.pack(">H", ALGS[name]) + d for name, d in digests)
    return cmd(0x8002, 0x182, body)


def pcr_read(name: str, pcrs: list[int]) -> bytes:
    mask = sum(1 << p for p in pcrs).to_bytes(3, "little")
    return cmd(0x8001, 0x17E, struct.pack(">IHB", 1, ALGS[name], 3) + mask)


def read_digests(response: bytes) -> list[bytes]:
    """Parse a PCR_Read response: pcrUpdateCounter, TPML_PCR_SELECTION, TPML_DIGEST."""
    pos = 14
    (count,) = struct.unpack_from(">I", response, pos)
    pos += 4
    for _ in range(count):
        pos += 3 + response[pos + 2]
    (n,) = struct.unpack_from(">I", response, pos)
    pos += 4
    out = []
    for _ in range(n):
        (size,) = struct.unpack_from(">H", response, pos)
        out.append(response[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return out


@pytest.fixture
def tpm() -> Builtin:
    t = Builtin(seed=1)
    assert rc(t.execute(STARTUP_CLEAR)) == 0
    return t


# -- construction and lifecycle ---------------------------------------------


@pytest.mark.parametrize("version", [0, 3, "2", True, None])
def test_bad_version(version: object) -> None:
    with pytest.raises(ValueError, match="tpm_version must be 1"):
        Builtin(version)  # type: ignore[arg-type]


def test_bad_banks() -> None:
    with pytest.raises(ValueError, match="pcr_banks"):
        Builtin(pcr_banks=("md5",))
    with pytest.raises(ValueError, match="pcr_banks"):
        Builtin(pcr_banks=())


@pytest.mark.parametrize("version", [1, 2])
def test_is_a_backend(version: int) -> None:
    with Builtin(version) as t:
        assert isinstance(t, Backend)
        assert t.tpm_version == version
        assert t.get_buffer_size() == 4096
        assert not t.get_established_flag()
    assert t.closed
    with pytest.raises(StateError, match="closed"):
        t.execute(STARTUP_CLEAR)
    t.close()  # idempotent


def test_version_probes_as_qemu_sends_them() -> None:
    t2, t1 = Builtin(2), Builtin(1)
    # before Startup: the TPM 2.0 probe answers TPM_RC_INITIALIZE with tag 0x8001
    r = t2.execute(TPM2_READCLOCK_PROBE)
    assert r == bytes.fromhex("8001 0000000a 00000100")
    assert version_from_probe(r, TPM2_READCLOCK_PROBE) == 2
    assert version_from_probe(t1.execute(TPM2_READCLOCK_PROBE), TPM2_READCLOCK_PROBE) == 0
    r = t1.execute(TPM12_GETTICKS_PROBE)
    assert r == bytes.fromhex("00c4 0000000a 00000026")  # TPM_INVALID_POSTINIT
    assert version_from_probe(r, TPM12_GETTICKS_PROBE) == 1
    # after Startup both answer successfully
    assert rc(t2.execute(STARTUP_CLEAR)) == 0
    assert version_from_probe(t2.execute(TPM2_READCLOCK_PROBE), TPM2_READCLOCK_PROBE) == 2
    assert rc(t1.execute(cmd(0x00C1, 0x99, "0001"))) == 0
    r = t1.execute(TPM12_GETTICKS_PROBE)
    assert rc(r) == 0 and len(r) == 42 and r[10:12] == b"\x00\x14"


def test_startup_is_power_on() -> None:
    t = Builtin(seed=2)
    assert rc(t.execute(STARTUP_CLEAR)) == 0
    assert rc(t.execute(STARTUP_CLEAR)) == 0x100  # TPM_RC_INITIALIZE: already started
    t.startup(4096)
    assert rc(t.execute(cmd(0x8001, 0x17B, "0008"))) == 0x100
    assert rc(t.execute(STARTUP_CLEAR)) == 0


def test_cancel_from_another_thread_is_harmless(tpm: Builtin) -> None:
    stop = threading.Event()

    def canceller() -> None:
        while not stop.is_set():
            tpm.cancel()

    th = threading.Thread(target=canceller)
    th.start()
    try:
        for _ in range(200):
            assert rc(tpm.execute(cmd(0x8001, 0x17B, "0010"))) == 0
    finally:
        stop.set()
        th.join()
    tpm.reset()


def test_cancel_has_nothing_to_stop() -> None:
    # Commands run synchronously to their end: a cancel leaves no trace in
    # the backend (no flag for a later command to find) and changes no response.
    a, b = Builtin(seed=4), Builtin(seed=4)
    before = dict(vars(a))
    a.cancel()
    assert vars(a) == before
    for t in (a, b):
        assert rc(t.execute(STARTUP_CLEAR)) == 0
    a.cancel()
    assert a.execute(cmd(0x8001, 0x17B, "0010")) == b.execute(cmd(0x8001, 0x17B, "0010"))
    a.close()
    a.cancel()  # after close too: nothing, no error


def test_seed_makes_it_deterministic() -> None:
    def run(seed: int | None) -> list[bytes]:
        t = Builtin(seed=seed)
        cmds = [STARTUP_CLEAR, cmd(0x8001, 0x17B, "0020"), cmd(0x8001, 0x181), cmd(0x8001, 0x17B, "0040")]
        return [t.execute(c) for c in cmds]

    assert run(5) == run(5)
    assert run(5) != run(6)
    assert run(None)[1] != run(None)[1]


# -- TPM 2.0 -------------------------------------------------------------------


def test_extend_chain_both_banks(tpm: Builtin) -> None:
    d1, d256 = hashlib.sha1(b"one").digest(), hashlib.sha256(b"one").digest()
    exp1, exp256 = bytes(20), bytes(32)
    for _ in range(3):
        r = tpm.execute(extend(10, [("sha1", d1), ("sha256", d256)]))
        assert r == bytes.fromhex("8002 00000013 00000000 00000000 0000 01 0000")
        exp1 = hashlib.sha1(exp1 + d1).digest()
        exp256 = hashlib.sha256(exp256 + d256).digest()
    assert read_digests(tpm.execute(pcr_read("sha1", [10]))) == [exp1]
    assert read_digests(tpm.execute(pcr_read("sha256", [10]))) == [exp256]


def test_qemu_swtpm_test_sequence() -> None:
    """QEMU's tpm-*-swtpm-test: extend PCR 10 with "test" and read it back."""
    t = Builtin()
    assert t.execute(STARTUP_CLEAR) == bytes.fromhex("8001 0000000a 00000000")
    digest = b"test" + bytes(28)
    assert t.execute(extend(10, [("sha256", digest)])) == bytes.fromhex(
        "8002 00000013 00000000 00000000 0000 01 0000"
    )
    r = t.execute(bytes.fromhex("8001 00000014 0000017e 00000001 000b 03 000400"))
    assert r[:10] == bytes.fromhex("8001 0000003e 00000000")
    assert r[14:30] == bytes.fromhex("00000001 000b 03 000400 00000001 0020")
    assert r[30:] == hashlib.sha256(bytes(32) + digest).digest()


def test_pcr_event_returns_all_digests(tpm: Builtin) -> None:
    data = b"event data"
    body = struct.pack(">II", 7, len(PW)) + PW + struct.pack(">H", len(data)) + data
    r = tpm.execute(cmd(0x8002, 0x13C, body))
    assert rc(r) == 0
    params = r[14 : 14 + int.from_bytes(r[10:14], "big")]
    assert int.from_bytes(params[:4], "big") == 4
    pos, got = 4, {}
    for name in ("sha1", "sha256", "sha384", "sha512"):
        alg = int.from_bytes(params[pos : pos + 2], "big")
        size = hashlib.new(name).digest_size
        got[alg] = params[pos + 2 : pos + 2 + size]
        pos += 2 + size
        assert got[alg] == hashlib.new(name, data).digest()
    expected = hashlib.sha256(bytes(32) + hashlib.sha256(data).digest()).digest()
    assert read_digests(tpm.execute(pcr_read("sha256", [7]))) == [expected]


def test_pcr_read_limits_to_eight_digests(tpm: Builtin) -> None:
    r = tpm.execute(pcr_read("sha1", list(range(24))))
    assert len(read_digests(r)) == 8
    assert r[14:24] == bytes.fromhex("00000001 0004 03 ff0000")


def test_update_counter(tpm: Builtin) -> None:
    def counter() -> int:
        return int.from_bytes(tpm.execute(pcr_read("sha1", []))[10:14], "big")

    start = counter()
    assert start == 20  # Startup changed PCRs 0-23 but 16, 21, 22 and 23
    tpm.execute(extend(1, [("sha1", bytes(20)), ("sha256", bytes(32))]))
    assert counter() == start + 2  # once per bank
    tpm.execute(extend(16, [("sha1", bytes(20))]))
    tpm.execute(extend(23, [("sha1", bytes(20))]))
    assert counter() == start + 2
    tpm.execute(extend(2, [("sha384", bytes(48))]))  # bank not allocated: no change
    assert counter() == start + 2


def test_startup_locality_3_marks_pcr0() -> None:
    t = Builtin()
    assert rc(t.execute(STARTUP_CLEAR, locality=3)) == 0
    assert read_digests(t.execute(pcr_read("sha256", [0, 17])))[0] == bytes(31) + b"\x03"
    assert read_digests(t.execute(pcr_read("sha256", [17])))[0] == b"\xff" * 32


@pytest.mark.parametrize(
    "pcr,reset_ok,extend_ok",
    [
        # (PCR, localities allowed to reset, localities allowed to extend): PC Client PTP
        (0, set(), {0, 1, 2, 3, 4}),
        (16, {0, 1, 2, 3}, {0, 1, 2, 3, 4}),
        (17, set(), {2, 3, 4}),
        (19, set(), {2, 3}),
        (20, {2}, {1, 2, 3}),
        (21, {2}, {2}),
        (23, {0, 1, 2, 3}, {0, 1, 2, 3, 4}),
    ],
)
def test_locality_rules(tpm: Builtin, pcr: int, reset_ok: set[int], extend_ok: set[int]) -> None:
    reset = cmd(0x8002, 0x13D, struct.pack(">II", pcr, len(PW)) + PW)
    for loc in range(5):
        assert rc(tpm.execute(reset, loc)) == (0 if loc in reset_ok else 0x907)
        assert rc(tpm.execute(extend(pcr, [("sha1", bytes(20))]), loc)) == (0 if loc in extend_ok else 0x907)
    # The engine answers a locality it does not know as a TPM would; the
    # backend contract stops a host asking for one (localities are 0..4).
    assert rc(tpm.engine.execute(cmd(0x8001, 0x181), 5)) == 0x907
    with pytest.raises(AccessError, match="locality"):
        tpm.execute(cmd(0x8001, 0x181), 5)


ERRORS = [
    # (what, command, TPM_RC from Part 2 6.6 with RC_H/RC_P/RC_S + N)
    ("size field too big", bytes.fromhex("8001 0000000b 00000181"), 0x142),
    ("trailing byte", bytes.fromhex("8001 0000000a 00000181 00"), 0x142),
    ("tag TPM_ST_RSP_COMMAND", cmd(0x00C4, 0x181), 0x01E),
    ("tag not a TPM_ST", cmd(0x0000, 0x181), 0x084),
    ("unknown command", cmd(0x8001, 0x0999), 0x143),
    ("PCR handle 24", extend(24, [("sha1", bytes(20))]), 0x184),  # VALUE + H1
    ("no session", cmd(0x8001, 0x182, "0000000a 00000000"), 0x125),  # AUTH_MISSING
    ("authSize 8", cmd(0x8002, 0x182, "0000000a 00000008" + "00" * 12), 0x095),
    ("HMAC session", cmd(0x8002, 0x182, "0000000a 00000009 02000000 0000 00 0000 00000000"), 0x918),
    ("bad password", cmd(0x8002, 0x182, "0000000a 0000000a 40000009 0000 00 000178 00000000"), 0x9A2),
    ("nonce", cmd(0x8002, 0x182, "0000000a 0000000a 40000009 000178 00 0000 00000000"), 0x98F),
    ("reserved bits", cmd(0x8002, 0x182, "0000000a 00000009 40000009 0000 18 0000 00000000"), 0x9A1),
    ("audit", cmd(0x8002, 0x182, "0000000a 00000009 40000009 0000 80 0000 00000000"), 0x982),
    ("session without handle", cmd(0x8002, 0x17B, "00000009 40000009 0000 00 0000 0008"), 0x98B),
    ("PCR_Read bad hash", cmd(0x8001, 0x17E, "00000001 0099 03 000000"), 0x1C3),  # HASH + P1
    ("Hash bad hierarchy", cmd(0x8001, 0x17D, "0000 000b 40000005"), 0x3C4),  # VALUE + P3
    ("Hash truncated", cmd(0x8001, 0x17D, "0000 000b"), 0x3DA),  # INSUFFICIENT + P3
    ("GetCapability bad", cmd(0x8001, 0x17A, "000000ff 00000000 00000001"), 0x1C4),
    ("GetRandom extra", cmd(0x8001, 0x17B, "0001 00"), 0x095),
    ("Startup again", STARTUP_CLEAR, 0x100),
]


@pytest.mark.parametrize("what,command,code", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_codes(tpm: Builtin, what: str, command: bytes, code: int) -> None:
    r = tpm.execute(command)
    assert r == struct.pack(">HII", 0x8001, 10, code)


@pytest.mark.parametrize("length", range(10))
def test_short_commands(length: int) -> None:
    # swtpm answers TPM_RC_INSUFFICIENT itself: libtpms never sees them
    assert Builtin(2).execute(STARTUP_CLEAR[:length]) == bytes.fromhex("8001 0000000a 0000009a")
    assert Builtin(1).execute(STARTUP_CLEAR[:length]) == bytes.fromhex("00c4 0000000a 00000019")


def test_get_random_caps_at_largest_digest(tpm: Builtin) -> None:
    r = tpm.execute(cmd(0x8001, 0x17B, "ffff"))
    assert rc(r) == 0 and r[10:12] == b"\x00\x40" and len(r) == 12 + 64


def test_hash_matches_hashlib(tpm: Builtin) -> None:
    for name, alg in ALGS.items():
        r = tpm.execute(
            cmd(0x8001, 0x17D, struct.pack(">H", 3) + b"abc" + struct.pack(">HI", alg, 0x40000007))
        )
        digest = hashlib.new(name, b"abc").digest()
        assert r[10:] == struct.pack(">H", len(digest)) + digest + bytes.fromhex("8024 40000007 0000")


def test_capabilities(tpm: Builtin) -> None:
    r = tpm.execute(cmd(0x8001, 0x17A, "00000006 0000011e 00000002"))
    assert r[10:] == bytes.fromhex("01 00000006 00000002 0000011e 00001000 0000011f 00001000")
    r = tpm.execute(cmd(0x8001, 0x17A, "00000006 00000100 00000001"))
    assert r[19:27] == bytes.fromhex("00000100") + b"2.0\0"
    r = tpm.execute(cmd(0x8001, 0x17A, "00000005 00000000 00000001"))
    assert r[10:] == bytes.fromhex(
        "00 00000005 00000004 0004 03 ffffff 000b 03 ffffff 000c 03 000000 000d 03 000000"
    )
    r = tpm.execute(cmd(0x8001, 0x17A, "00000002 00000000 000000ff"))
    ccs = [
        int.from_bytes(r[19 + 4 * i : 23 + 4 * i], "big") & 0xFFFF
        for i in range(int.from_bytes(r[15:19], "big"))
    ]
    total = tpm.execute(cmd(0x8001, 0x17A, "00000006 00000129 00000001"))
    assert int.from_bytes(total[23:27], "big") == len(ccs) == 35
    assert ccs == sorted(ccs)


def test_nv_space_runs_out(tpm: Builtin) -> None:
    """Builtin's own NV limit (free to differ from libtpms'): TPM_RC_NV_SPACE."""
    codes = []
    for i in range(40):
        public = struct.pack(">IHI", 0x01000100 + i, 0x000B, 0x00060006) + bytes.fromhex("0000 0800")
        body = (
            bytes.fromhex("40000001 00000009") + PW + bytes.fromhex("0000") + struct.pack(">H", 14) + public
        )
        codes.append(rc(tpm.execute(cmd(0x8002, 0x12A, body))))
    assert 0x14B in codes and codes[0] == 0
    assert codes[codes.index(0x14B) :] == [0x14B] * (40 - codes.index(0x14B))
    r = tpm.execute(cmd(0x8001, 0x17A, "00000006 00000202 00000001"))  # TPM_PT_HR_NV_INDEX
    assert int.from_bytes(r[-4:], "big") == codes.index(0x14B)


def test_sequence_slots_and_event_sequence(tpm: Builtin) -> None:
    handles = [tpm.execute(cmd(0x8001, 0x186, "0000 0010"))[10:14] for _ in range(3)]
    assert handles == [bytes.fromhex(h) for h in ("80000000", "80000001", "80000002")]
    assert rc(tpm.execute(cmd(0x8001, 0x186, "0000 0010"))) == 0x902  # TPM_RC_OBJECT_MEMORY
    r = tpm.execute(cmd(0x8001, 0x17A, "00000006 00000207 00000001"))  # TPM_PT_HR_TRANSIENT_AVAIL
    assert int.from_bytes(r[-4:], "big") == 0
    body = bytes.fromhex("00000007 80000001 00000012") + PW + PW + bytes.fromhex("0003") + b"abc"
    r = tpm.execute(cmd(0x8002, 0x185, body))
    assert rc(r) == 0
    params = r[14 : 14 + int.from_bytes(r[10:14], "big")]
    assert params[:6] == bytes.fromhex("00000004 0004") and params[6:26] == hashlib.sha1(b"abc").digest()
    expected = hashlib.sha256(bytes(32) + hashlib.sha256(b"abc").digest()).digest()
    assert read_digests(tpm.execute(pcr_read("sha256", [7]))) == [expected]
    tpm.startup()  # objects do not survive a power cycle
    tpm.execute(STARTUP_CLEAR)
    assert tpm.execute(cmd(0x8001, 0x17A, "00000001 80000000 00000008"))[15:19] == bytes(4)


def test_shutdown_state_resume() -> None:
    t = Builtin(seed=4)
    t.execute(STARTUP_CLEAR)
    t.execute(extend(4, [("sha256", b"\x01" * 32)]))
    t.execute(extend(16, [("sha256", b"\x01" * 32)]))
    expected = hashlib.sha256(bytes(32) + b"\x01" * 32).digest()
    assert rc(t.execute(cmd(0x8001, 0x145, "0001"))) == 0
    t.startup()
    assert rc(t.execute(cmd(0x8001, 0x144, "0001"))) == 0
    assert read_digests(t.execute(pcr_read("sha256", [4, 16]))) == [expected, bytes(32)]
    clock = t.execute(cmd(0x8001, 0x181))
    assert struct.unpack(">II", clock[26:34]) == (1, 1)  # resetCount 1, restartCount 1
    t.startup()  # no orderly shutdown this time: Startup(STATE) is refused
    assert rc(t.execute(cmd(0x8001, 0x144, "0001"))) == 0x1C4


# -- TPM 1.2 -------------------------------------------------------------------


def test_tpm12_extend_and_read() -> None:
    t = Builtin(1)
    assert rc(t.execute(cmd(0x00C1, 0x99, "0001"))) == 0
    value = bytes(20)
    for i in range(3):
        d = hashlib.sha1(bytes([i])).digest()
        value = hashlib.sha1(value + d).digest()
        assert t.execute(cmd(0x00C1, 0x14, struct.pack(">I", 8) + d))[10:] == value
    assert t.execute(cmd(0x00C1, 0x15, "00000008"))[10:] == value
    assert t.execute(cmd(0x00C1, 0x15, "00000011"))[10:] == b"\xff" * 20
    assert rc(t.execute(cmd(0x00C1, 0x15, "00000018"))) == 0x02  # TPM_BADINDEX
    assert rc(t.execute(cmd(0x00C1, 0x14, "00000011" + "00" * 20))) == 0x3D  # TPM_BAD_LOCALITY
    assert rc(t.execute(cmd(0x00C1, 0x9999))) == 0x0A  # TPM_BAD_ORDINAL
    assert rc(t.execute(cmd(0x00C1, 0x15, "000000"))) == 0x19  # TPM_BAD_PARAM_SIZE
    assert rc(t.execute(cmd(0x00C2, 0x15, "00000000"))) == 0x1E  # TPM_BADTAG


def test_tpm12_capabilities() -> None:
    t = Builtin(1)
    t.execute(cmd(0x00C1, 0x99, "0001"))
    r = t.execute(cmd(0x00C1, 0x65, "00000005 00000004 00000124"))
    assert r == bytes.fromhex("00c4 00000012 00000000 00000004 00001000")
    r = t.execute(cmd(0x00C1, 0x65, "00000005 00000004 00000101"))
    assert r[10:] == bytes.fromhex("00000004 00000018")
    r = t.execute(cmd(0x00C1, 0x65, "0000001a 00000000"))
    assert r[14:16] == b"\x00\x30" and r[16:18] == b"\x01\x02"
    assert rc(t.execute(cmd(0x00C1, 0x53))) == 0


# -- robustness ----------------------------------------------------------------


def _well_formed(response: bytes) -> None:
    assert len(response) >= 10
    assert int.from_bytes(response[2:6], "big") == len(response)


_HEADERS = st.sampled_from(
    [b"", bytes.fromhex("8001"), bytes.fromhex("8002"), bytes.fromhex("00c1"), bytes.fromhex("80010000")]
)


#: Every command code either engine implements (TPM 2.0 and TPM 1.2 ordinals).
_CODES = [0x122, 0x129, 0x12A, 0x12B, 0x134, 0x135, 0x136, 0x137, 0x138, 0x13C, 0x13D, 0x13E]
_CODES += [0x142, 0x143, 0x144, 0x145, 0x146, 0x14E, 0x14F, 0x15C, 0x165, 0x169, 0x173, 0x17A]
_CODES += [0x17B, 0x17C, 0x17D, 0x17E, 0x181, 0x182, 0x185, 0x186, 0x14, 0x15, 0x46, 0x53, 0x65, 0x99, 0xF1]
#: Handles that exist in a prepared TPM, so garbage after them reaches the
#: authorization and parameter checks.
_HANDLES = st.sampled_from(
    [
        b"",
        bytes.fromhex("40000001"),
        bytes.fromhex("4000000c"),
        bytes.fromhex("01000001"),
        bytes.fromhex("4000000101000001"),
        bytes.fromhex("0100000101000001"),
        bytes.fromhex("80000000"),
        bytes.fromhex("0000000a80000001"),
        bytes.fromhex("0000000a"),
    ]
)
_SESSIONS = st.sampled_from([b"", bytes.fromhex("00000009") + PW, bytes.fromhex("00000012") + PW + PW])


def _prepared(version: int, started: bool) -> Builtin:
    """A seeded TPM with an NV index (0x01000001) and two sequences open."""
    t = Builtin(version, seed=0)
    if started and version == 2:
        t.execute(STARTUP_CLEAR)
        public = bytes.fromhex("01000001 000b 00060006 0000 0010")
        body = bytes.fromhex("40000001 00000009") + PW + bytes.fromhex("0000 000e") + public
        assert rc(t.execute(cmd(0x8002, 0x12A, body))) == 0
        assert rc(t.execute(cmd(0x8001, 0x186, "0000 000b"))) == 0
        assert rc(t.execute(cmd(0x8001, 0x186, "0000 0010"))) == 0
    elif started:
        t.execute(cmd(0x00C1, 0x99, "0001"))
    return t


@settings(max_examples=600, deadline=None)
@given(
    version=st.sampled_from([1, 2]),
    started=st.booleans(),
    locality=st.integers(0, 4),
    prefix=_HEADERS,
    handles=_HANDLES,
    sessions=_SESSIONS,
    body=st.binary(max_size=80),
    cc=st.sampled_from(_CODES),
    fix_size=st.booleans(),
)
def test_garbage_never_raises(
    version: int,
    started: bool,
    locality: int,
    prefix: bytes,
    handles: bytes,
    sessions: bytes,
    body: bytes,
    cc: int,
    fix_size: bool,
) -> None:
    t = _prepared(version, started)
    if fix_size:  # a consistent header, so the garbage reaches the parameter parsers
        tag = int.from_bytes((prefix + b"\x80\x02")[:2], "big")
        rest = handles + (sessions if tag == 0x8002 else b"") + body
        command = struct.pack(">HII", tag, 10 + len(rest), cc) + rest
    else:
        command = prefix + body
    _well_formed(t.execute(command, locality))
    # and the TPM still works, and its state still round-trips
    if version == 2 and started:
        assert rc(t.execute(cmd(0x8001, 0x17B, "0008"))) == 0
    copy = Builtin(version, seed=0)
    copy.set_state(t.get_state())
