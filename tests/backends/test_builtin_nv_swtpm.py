"""Builtin against swtpm: NV storage, hash sequences, PCR allocation, handles.

Same harness as test_builtin_swtpm.py (a raw client of swtpm 0.7.1's data
socket; both TPMs get the same commands and must answer the same bytes).
Allowed differences, each masked where it occurs:

* the HMAC of a hash ticket for a real hierarchy (keyed with the TPM's own
  proof): only tag, hierarchy and digest are compared;
* limits and counts that describe each TPM's memory: TPM_PT_NV_COUNTERS_AVAIL,
  the NV space left, the object/session capacities of GetCapability.

Everything else -- NV Names, unwritten bytes (0xFF), error codes and their
handle/parameter/session numbers, dictionary-attack behaviour (including
libtpms 0.9's TPM_RC_RETRY on the first DA-protected authorization after
Startup), PCR_Allocate's four output fields, the allocation after the next
power-on -- must agree exactly.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import pytest
from test_builtin_swtpm import Pair, RawSwtpm, _allocate_sha1_sha256, _pair, cmd, sess, swtpm2  # noqa: F401

from tpmdev.backends.builtin import Builtin

pytestmark = pytest.mark.swtpm

OWNER, PLATFORM, NULL = 0x40000001, 0x4000000C, 0x40000007
STARTUP_CLEAR = cmd(0x8001, 0x144, "0000")

# TPMA_NV bits used below (Part 2 13.4)
PPWRITE, OWNERWRITE, AUTHWRITE = 0x1, 0x2, 0x4
POLICY_DELETE, WRITEALL, WRITEDEFINE, WRITE_STCLEAR = 0x400, 0x1000, 0x2000, 0x4000
PPREAD, OWNERREAD, AUTHREAD = 0x10000, 0x20000, 0x40000
NO_DA, ORDERLY, CLEAR_STCLEAR = 0x02000000, 0x04000000, 0x08000000
WRITTEN, PLATFORMCREATE, READ_STCLEAR = 0x20000000, 0x40000000, 0x80000000
COUNTER, BITS, EXTEND, PIN_FAIL, PIN_PASS = 0x10, 0x20, 0x40, 0x80, 0x90
RW = OWNERWRITE | OWNERREAD | AUTHWRITE | AUTHREAD


def pw(password: bytes = b"") -> bytes:
    """A password session (TPM_RS_PW) with *password*."""
    return struct.pack(">IHBH", 0x40000009, 0, 0, len(password)) + password


def b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def nv_public(index: int, alg: int, attrs: int, size: int, policy: bytes = b"") -> bytes:
    return struct.pack(">IHI", index, alg, attrs) + b2(policy) + struct.pack(">H", size)


def define(auth_handle: int, index: int, alg: int, attrs: int, size: int, **kw: bytes) -> bytes:
    body = struct.pack(">I", auth_handle) + sess(pw(kw.get("password", b""))) + b2(kw.get("auth", b""))
    return cmd(0x8002, 0x12A, body + b2(nv_public(index, alg, attrs, size, kw.get("policy", b""))))


def nv_cmd(cc: int, auth_handle: int, index: int, params: bytes = b"", password: bytes = b"") -> bytes:
    return cmd(0x8002, cc, struct.pack(">II", auth_handle, index) + sess(pw(password)) + params)


def nv_write(auth_handle: int, index: int, data: bytes, offset: int = 0, password: bytes = b"") -> bytes:
    return nv_cmd(0x137, auth_handle, index, b2(data) + struct.pack(">H", offset), password)


def nv_read(auth_handle: int, index: int, size: int, offset: int = 0, password: bytes = b"") -> bytes:
    return nv_cmd(0x14E, auth_handle, index, struct.pack(">HH", size, offset), password)


def read_public(index: int) -> bytes:
    return cmd(0x8001, 0x169, struct.pack(">I", index))


def undefine(auth_handle: int, index: int) -> bytes:
    return nv_cmd(0x122, auth_handle, index)


@pytest.fixture
def tpms(swtpm2: RawSwtpm) -> Iterator[tuple[Builtin, RawSwtpm, Pair]]:
    ours = Builtin(2, seed=11)
    both = _pair(ours, swtpm2)
    both(STARTUP_CLEAR)
    yield ours, swtpm2, both


def power_cycle(ours: Builtin, theirs: RawSwtpm, both: Pair, shutdown: str | None, startup: str) -> None:
    if shutdown is not None:
        both(cmd(0x8001, 0x145, shutdown))
    ours.startup()
    theirs.power_cycle()
    both(cmd(0x8001, 0x144, startup))


# -------------------------------------------------------------------- NV --

DEFINE_CASES = [
    # (what, command): every consistency check of TPM2_NV_DefineSpace, in order
    ("ordinary", define(OWNER, 0x01000001, 0x000B, RW, 32, auth=b"pw")),
    ("already defined", define(OWNER, 0x01000001, 0x000B, RW, 32)),
    ("ordinary too big", define(OWNER, 0x01000002, 0x000B, RW, 2049)),
    ("ordinary largest", define(OWNER, 0x01000002, 0x000B, RW, 2048)),
    ("WRITEALL over the NV buffer", define(OWNER, 0x01000003, 0x000B, RW | WRITEALL, 1025)),
    ("WRITEALL", define(OWNER, 0x01000003, 0x000B, RW | WRITEALL, 16)),
    ("counter", define(OWNER, 0x01000004, 0x000B, OWNERWRITE | OWNERREAD | COUNTER, 8)),
    ("counter of 4 bytes", define(OWNER, 0x01000005, 0x000B, OWNERWRITE | OWNERREAD | COUNTER, 4)),
    ("counter CLEAR_STCLEAR", define(OWNER, 0x01000005, 0x000B, RW | COUNTER | CLEAR_STCLEAR, 8)),
    ("bits", define(OWNER, 0x01000006, 0x0004, OWNERWRITE | OWNERREAD | BITS, 8)),
    ("extend", define(OWNER, 0x01000007, 0x000B, OWNERWRITE | OWNERREAD | EXTEND, 32)),
    ("extend of the wrong size", define(OWNER, 0x01000008, 0x000B, OWNERWRITE | OWNERREAD | EXTEND, 20)),
    ("type 3", define(OWNER, 0x01000008, 0x000B, OWNERWRITE | OWNERREAD | 0x30, 8)),
    ("PIN fail", define(OWNER, 0x01000008, 0x000B, OWNERWRITE | OWNERREAD | PIN_FAIL | NO_DA, 8)),
    ("PIN pass", define(OWNER, 0x01000009, 0x000B, OWNERWRITE | OWNERREAD | PIN_PASS | AUTHREAD, 8)),
    ("PIN fail without NO_DA", define(OWNER, 0x0100000A, 0x000B, OWNERWRITE | OWNERREAD | PIN_FAIL, 8)),
    ("PIN pass AUTHWRITE", define(OWNER, 0x0100000A, 0x000B, RW | PIN_PASS, 8)),
    ("no way to read", define(OWNER, 0x0100000A, 0x000B, OWNERWRITE, 8)),
    ("no way to write", define(OWNER, 0x0100000A, 0x000B, OWNERREAD, 8)),
    ("WRITTEN set", define(OWNER, 0x0100000A, 0x000B, RW | WRITTEN, 8)),
    ("PLATFORMCREATE by the owner", define(OWNER, 0x0100000A, 0x000B, RW | PLATFORMCREATE, 8)),
    ("no PLATFORMCREATE by the platform", define(PLATFORM, 0x0100000A, 0x000B, RW, 8)),
    ("platform index", define(PLATFORM, 0x0100000A, 0x000B, RW | PLATFORMCREATE | PPWRITE | PPREAD, 8)),
    ("POLICY_DELETE by the owner", define(OWNER, 0x0100000B, 0x000B, RW | POLICY_DELETE, 8)),
    (
        "CLEAR_STCLEAR with WRITEDEFINE",
        define(OWNER, 0x0100000B, 0x000B, RW | CLEAR_STCLEAR | WRITEDEFINE, 8),
    ),
    ("reserved attribute", define(OWNER, 0x0100000B, 0x000B, RW | 0x100, 8)),
    ("policy of the wrong size", define(OWNER, 0x0100000B, 0x000B, RW, 8, policy=bytes(20))),
    ("policy", define(OWNER, 0x0100000B, 0x000B, RW, 8, policy=b"\x01" * 32)),
    ("authValue too big", define(OWNER, 0x0100000C, 0x0004, RW, 8, auth=b"a" * 21)),
    ("authValue trailing zeros", define(OWNER, 0x0100000C, 0x0004, RW, 8, auth=b"a" * 20 + bytes(5))),
    ("unknown nameAlg", define(OWNER, 0x0100000D, 0x0099, RW, 8)),
    ("not an NV handle", define(OWNER, 0x0200000D, 0x000B, RW, 8)),
    ("endorsement", define(0x4000000B, 0x0100000D, 0x000B, RW, 8)),
    ("wrong owner password", define(OWNER, 0x0100000D, 0x000B, RW, 8, password=b"x")),
    ("empty public", cmd(0x8002, 0x12A, struct.pack(">I", OWNER) + sess(pw()) + bytes.fromhex("0000 0000"))),
    (
        "public size too big",
        cmd(
            0x8002,
            0x12A,
            struct.pack(">I", OWNER)
            + sess(pw())
            + b2(b"")
            + b"\x00\x10"
            + nv_public(0x01000010, 0x0B, RW, 8),
        ),
    ),
    ("trailing byte", define(OWNER, 0x0100000D, 0x000B, RW, 8) + b"\0"),
    (
        "no session",
        cmd(0x8001, 0x12A, struct.pack(">I", OWNER) + b2(b"") + b2(nv_public(0x0100000D, 0x0B, RW, 8))),
    ),
]


def test_nv_define_space(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    for _what, command in DEFINE_CASES:
        both(command)
    for index in (0x01000001, 0x01000002, 0x01000004, 0x01000006, 0x01000007, 0x0100000A, 0x0100000B):
        both(read_public(index))
    # every defined index, in pages
    both(cmd(0x8001, 0x17A, struct.pack(">III", 1, 0x01000000, 20)))
    both(cmd(0x8001, 0x17A, struct.pack(">III", 1, 0x01000003, 2)))


def test_nv_name_is_name_alg_and_digest_of_public(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    both(define(OWNER, 0x01000020, 0x000B, RW, 16))
    for phase in ("unwritten", "written"):
        rsp = both(read_public(0x01000020))
        size = int.from_bytes(rsp[10:12], "big")
        public = rsp[12 : 12 + size]
        name = rsp[14 + size :]
        assert name == b"\x00\x0b" + hashlib.sha256(public).digest(), phase
        both(nv_write(OWNER, 0x01000020, b"data"))
    # the name changed with TPMA_NV_WRITTEN
    assert int.from_bytes(public[6:10], "big") & WRITTEN


def test_nv_write_read(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    both(define(OWNER, 0x01000001, 0x000B, RW, 32, auth=b"pw"))
    both(define(OWNER, 0x01000003, 0x000B, RW | WRITEALL, 16))
    for command in [
        nv_read(OWNER, 0x01000001, 8),  # TPM_RC_NV_UNINITIALIZED
        nv_write(OWNER, 0x01000001, b"hello", 3),
        nv_read(OWNER, 0x01000001, 8),  # unwritten bytes read as 0xFF
        nv_read(OWNER, 0x01000001, 32),
        nv_read(OWNER, 0x01000001, 33),  # NV_RANGE
        nv_read(OWNER, 0x01000001, 8, 30),
        nv_read(OWNER, 0x01000001, 0, 32),
        nv_read(OWNER, 0x01000001, 8, 33),  # VALUE + P2
        nv_read(OWNER, 0x01000001, 1025),  # VALUE + P1
        nv_read(PLATFORM, 0x01000001, 8),  # NV_AUTHORIZATION (no PPREAD)
        nv_read(0x01000001, 0x01000001, 8, password=b"pw"),  # TPM_RC_RETRY: first DA use
        nv_read(0x01000001, 0x01000001, 8, password=b"pw"),
        nv_read(0x01000001, 0x01000001, 8, password=b"pw\0\0"),
        nv_read(0x01000042, 0x01000042, 8),  # HANDLE + H1
        nv_read(OWNER, 0x01000042, 8),  # HANDLE + H2
        nv_read(0x01000001, 0x01000003, 8),  # NV_AUTHORIZATION: another index's auth
        nv_write(OWNER, 0x01000001, b"x" * 33),
        nv_write(OWNER, 0x01000001, b"x" * 2, 31),
        nv_write(OWNER, 0x01000001, b"x", 33),
        nv_write(OWNER, 0x01000001, b"", 32),
        nv_write(OWNER, 0x01000001, b"x" * 1025),
        nv_write(PLATFORM, 0x01000001, b"x"),
        nv_write(0x01000001, 0x01000001, b"zz", password=b"pw"),
        nv_read(OWNER, 0x01000001, 32),
        nv_write(OWNER, 0x01000003, b"x" * 8),  # WRITEALL: NV_RANGE
        nv_write(OWNER, 0x01000003, b"x" * 16),
        nv_read(OWNER, 0x01000003, 16),
        nv_write(0x40000007, 0x01000001, b"x"),  # TPM_RH_NULL is no NV auth: VALUE + H1
        nv_cmd(0x137, OWNER, 0x01000001, b2(b"x")),  # offset missing
        cmd(0x8001, 0x137, struct.pack(">II", OWNER, 0x01000001) + b2(b"x") + b"\0\0"),  # no session
    ]:
        both(command)


def test_nv_counter_bits_extend_pin(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    both(define(OWNER, 0x01000001, 0x000B, RW, 8))
    both(define(OWNER, 0x01000004, 0x000B, OWNERWRITE | OWNERREAD | COUNTER, 8))
    both(define(OWNER, 0x01000006, 0x0004, OWNERWRITE | OWNERREAD | BITS, 8))
    both(define(OWNER, 0x01000007, 0x000C, OWNERWRITE | OWNERREAD | EXTEND, 48))
    both(define(OWNER, 0x01000009, 0x000B, OWNERWRITE | OWNERREAD | PIN_PASS | AUTHREAD | NO_DA, 8))
    both(
        define(OWNER, 0x01000008, 0x000B, OWNERWRITE | OWNERREAD | PIN_FAIL | AUTHREAD | NO_DA, 8, auth=b"p")
    )
    for command in [
        nv_cmd(0x134, OWNER, 0x01000004),
        nv_cmd(0x134, OWNER, 0x01000004),
        nv_read(OWNER, 0x01000004, 8),
        nv_cmd(0x134, OWNER, 0x01000001),  # not a counter: ATTRIBUTES + H2
        nv_write(OWNER, 0x01000004, b"x" * 8),  # ATTRIBUTES
        nv_cmd(0x134, 0x01000004, 0x01000004),  # no AUTHWRITE: AUTH_UNAVAILABLE
        nv_cmd(0x135, OWNER, 0x01000006, struct.pack(">Q", 0x10)),
        nv_cmd(0x135, OWNER, 0x01000006, struct.pack(">Q", 0x8000000000000003)),
        nv_read(OWNER, 0x01000006, 8),
        nv_cmd(0x135, OWNER, 0x01000006, b"\0" * 7),
        nv_cmd(0x136, OWNER, 0x01000007, b2(b"abc")),
        nv_cmd(0x136, OWNER, 0x01000007, b2(b"def")),
        nv_read(OWNER, 0x01000007, 48),
        nv_cmd(0x136, OWNER, 0x01000006, b2(b"abc")),  # not an extend index
        nv_write(OWNER, 0x01000009, struct.pack(">II", 0, 2)),
        nv_read(0x01000009, 0x01000009, 8),  # pinCount 0 -> 1
        nv_read(0x01000009, 0x01000009, 8),  # 1 -> 2
        nv_read(0x01000009, 0x01000009, 8),  # limit reached: AUTH_UNAVAILABLE
        nv_read(OWNER, 0x01000009, 8),
        nv_write(OWNER, 0x01000008, struct.pack(">II", 0, 5)),
        nv_read(0x01000008, 0x01000008, 8, password=b"wrong"),  # BAD_AUTH, pinCount 1
        nv_read(0x01000008, 0x01000008, 8, password=b"wrong"),
        nv_read(OWNER, 0x01000008, 8),
        nv_read(0x01000008, 0x01000008, 8, password=b"p"),  # success resets pinCount
        undefine(OWNER, 0x01000004),
        define(OWNER, 0x01000004, 0x000B, OWNERWRITE | OWNERREAD | COUNTER, 8),
        nv_cmd(0x134, OWNER, 0x01000004),  # starts above the deleted counter
        nv_read(OWNER, 0x01000004, 8),
    ]:
        both(command)


def test_nv_undefine_and_platform_indices(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    both(define(PLATFORM, 0x01400001, 0x000B, PPWRITE | PPREAD | PLATFORMCREATE, 8))
    both(define(PLATFORM, 0x01400002, 0x000B, PPWRITE | PPREAD | PLATFORMCREATE | POLICY_DELETE, 8))
    both(define(OWNER, 0x01000001, 0x000B, RW, 8))
    for command in [
        undefine(OWNER, 0x01400001),  # NV_AUTHORIZATION
        undefine(PLATFORM, 0x01400002),  # POLICY_DELETE: ATTRIBUTES + H2
        undefine(OWNER, 0x01000042),
        undefine(0x4000000B, 0x01000001),
        nv_write(OWNER, 0x01400001, b"x"),  # no OWNERWRITE
        nv_write(PLATFORM, 0x01400001, b"x"),
        nv_read(PLATFORM, 0x01400001, 1),
        undefine(PLATFORM, 0x01400001),
        undefine(PLATFORM, 0x01000001),  # the platform may delete an owner index
        read_public(0x01000001),
        cmd(0x8001, 0x17A, struct.pack(">III", 1, 0x01000000, 20)),
    ]:
        both(command)


def test_nv_locks_across_startups(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    ours, theirs, both = tpms
    lockable = OWNERWRITE | OWNERREAD | WRITEDEFINE | WRITE_STCLEAR | READ_STCLEAR
    both(define(OWNER, 0x01000010, 0x000B, lockable, 8))
    both(define(OWNER, 0x01000001, 0x000B, RW, 8))
    for command in [
        nv_cmd(0x138, OWNER, 0x01000001),  # neither WRITEDEFINE nor WRITE_STCLEAR
        nv_cmd(0x14F, OWNER, 0x01000001),  # no READ_STCLEAR
        nv_cmd(0x138, OWNER, 0x01000010),
        nv_write(OWNER, 0x01000010, b"12345678"),  # NV_LOCKED
        nv_cmd(0x138, OWNER, 0x01000010),  # locked already: success
        read_public(0x01000010),
        nv_cmd(0x14F, OWNER, 0x01000010),  # unwritten may be read-locked
        nv_read(OWNER, 0x01000010, 8),
        nv_cmd(0x14F, OWNER, 0x01000010),
        read_public(0x01000010),
    ]:
        both(command)
    power_cycle(ours, theirs, both, "0000", "0000")  # an unwritten index is unlocked
    both(read_public(0x01000010))
    both(nv_write(OWNER, 0x01000010, b"12345678"))
    both(nv_cmd(0x138, OWNER, 0x01000010))
    power_cycle(ours, theirs, both, "0000", "0000")  # written + WRITEDEFINE: stays locked
    both(read_public(0x01000010))
    both(nv_write(OWNER, 0x01000010, b"12345678"))
    both(define(OWNER, 0x01000011, 0x000B, OWNERWRITE | OWNERREAD | CLEAR_STCLEAR, 8))
    both(nv_write(OWNER, 0x01000011, b"12345678"))
    both(define(OWNER, 0x01000012, 0x000B, OWNERWRITE | OWNERREAD | ORDERLY | COUNTER, 8))
    both(nv_cmd(0x134, OWNER, 0x01000012))
    both(define(OWNER, 0x01000013, 0x000B, OWNERWRITE | OWNERREAD | ORDERLY, 8))
    both(nv_write(OWNER, 0x01000013, b"12345678"))
    power_cycle(ours, theirs, both, "0001", "0000")  # TPM Restart
    for index in (0x01000011, 0x01000012, 0x01000013):
        both(read_public(index))
        both(nv_read(OWNER, index, 8))
    power_cycle(ours, theirs, both, None, "0000")  # disorderly TPM Reset
    for index in (0x01000011, 0x01000012, 0x01000013):
        both(read_public(index))
        both(nv_read(OWNER, index, 8))  # the orderly counter skipped ahead
    # ReadClock: after the disorderly shutdown the clock is not "safe"
    both(bytes.fromhex("80010000000a00000181"), mask=lambda r: r[:10] + r[30:])


def test_dictionary_attack(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    both(define(OWNER, 0x01000002, 0x000B, RW, 8, auth=b"ix"))
    both(define(OWNER, 0x01000003, 0x000B, RW | NO_DA, 8, auth=b"ix"))
    both(nv_write(OWNER, 0x01000002, b"12345678"))
    for _ in range(5):  # RETRY, then AUTH_FAIL + S1 until TPM_RC_LOCKOUT
        both(nv_read(0x01000002, 0x01000002, 8, password=b"wrong"))
    both(nv_read(0x01000002, 0x01000002, 8, password=b"ix"))  # locked out
    both(nv_write(0x01000003, 0x01000003, b"12345678", password=b"nope"))  # NO_DA: BAD_AUTH
    both(nv_write(0x01000003, 0x01000003, b"12345678", password=b"ix"))
    both(nv_read(OWNER, 0x01000002, 8))  # the owner hierarchy is DA-exempt
    both(cmd(0x8001, 0x17A, struct.pack(">III", 6, 0x20E, 4)))  # lockout counter and parameters


def test_hierarchy_change_auth(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms

    def change(handle: int, new: bytes, password: bytes = b"") -> bytes:
        return cmd(0x8002, 0x129, struct.pack(">I", handle) + sess(pw(password)) + b2(new))

    for command in [
        change(OWNER, b"own"),
        define(OWNER, 0x01000001, 0x000B, RW, 8),  # BAD_AUTH + S1
        define(OWNER, 0x01000001, 0x000B, RW, 8, password=b"own\0"),
        change(0x4000000A, b"lck"),
        change(0x4000000A, b"lck"),  # lockout is DA-protected: AUTH_FAIL
        change(0x4000000A, b"", password=b"lck"),  # now locked out
        change(NULL, b""),
        change(PLATFORM, b"a" * 65),
        change(PLATFORM, b"plt"),
        cmd(0x8002, 0x12B, struct.pack(">I", PLATFORM) + sess(pw(b"plt")) + bytes.fromhex("00000000")),
    ]:
        both(command)


# -------------------------------------------------------- hash sequences --


def seq_start(auth: bytes = b"", alg: int = 0x000B) -> bytes:
    return cmd(0x8001, 0x186, b2(auth) + struct.pack(">H", alg))


def seq_update(handle: int, data: bytes, password: bytes = b"") -> bytes:
    return cmd(0x8002, 0x15C, struct.pack(">I", handle) + sess(pw(password)) + b2(data))


def seq_complete(handle: int, data: bytes, hierarchy: int = NULL, password: bytes = b"") -> bytes:
    body = struct.pack(">I", handle) + sess(pw(password)) + b2(data) + struct.pack(">I", hierarchy)
    return cmd(0x8002, 0x13E, body)


def event_complete(pcr: int, handle: int, data: bytes, password: bytes = b"", sessions: int = 2) -> bytes:
    area = [pw(), pw(password)][:sessions]
    return cmd(0x8002, 0x185, struct.pack(">II", pcr, handle) + sess(*area) + b2(data))


def _ticket_mask(rsp: bytes) -> bytes:
    """Everything but a real hierarchy's ticket HMAC (and the sizes around it)."""
    if rsp[6:10] != bytes(4):
        return rsp
    digest_size = int.from_bytes(rsp[14:16], "big")
    return rsp[6:10] + rsp[14 : 16 + digest_size + 6]


def test_hash_sequences(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    for command in [
        seq_start(b"sq"),  # 0x80000000
        seq_start(b"", 0x0004),  # 0x80000001
        seq_start(b"", 0x0010),  # 0x80000002: an event sequence
        seq_start(b"", 0x000C),  # no slot left: TPM_RC_OBJECT_MEMORY
        seq_start(b"", 0x0099),
        seq_start(b"a" * 65),
        cmd(0x8002, 0x186, sess(pw()) + b2(b"") + b"\x00\x0b"),  # a session without a handle
        cmd(0x8001, 0x17A, struct.pack(">III", 1, 0x80000000, 20)),
        cmd(0x8001, 0x17A, struct.pack(">III", 1, 0x80000001, 1)),
        cmd(0x8001, 0x17A, struct.pack(">III", 6, 0x207, 1)),  # TPM_PT_HR_TRANSIENT_AVAIL
        seq_update(0x80000000, b"abc", b"sq"),
        seq_update(0x80000000, b"abc", b"no"),  # sequences are DA-exempt: BAD_AUTH
        seq_update(0x80000000, b"abc", b"sq\0\0"),
        cmd(0x8001, 0x15C, struct.pack(">I", 0x80000000) + b2(b"a")),
        seq_update(0x80000003, b"abc"),  # VALUE + H1
        seq_update(0x81000000, b"abc"),  # slots full: OBJECT_MEMORY
        seq_update(0x80000001, b"x" * 1025),
        seq_update(0x80000002, b"event data "),
        cmd(0x8001, 0x173, struct.pack(">I", 0x80000000)),  # ReadPublic: TPM_RC_SEQUENCE
        seq_complete(0x80000002, b""),  # an event sequence: MODE + H1
        seq_complete(0x80000001, b"", 0x40000005),  # VALUE + P2
        event_complete(10, 0x80000001, b""),  # not an event sequence: MODE + H2
        event_complete(10, 0x80000002, b"x", sessions=1),  # AUTH_MISSING
        event_complete(17, 0x80000002, b"x"),  # LOCALITY
        event_complete(10, 0x80000002, b"xyz"),
        cmd(0x8001, 0x17E, "00000002 0004 03 000400 000b 03 000400"),
        event_complete(10, 0x80000002, b"xyz"),  # flushed: REFERENCE_H1
        seq_complete(0x80000001, b"\xff\x54\x43\x47zz", 0x40000001),  # NULL ticket
        seq_start(b"", 0x0010),
        event_complete(NULL, 0x80000001, b""),
        seq_start(b"", 0x000D),
        cmd(0x8001, 0x165, struct.pack(">I", 0x80000001)),  # FlushContext
        cmd(0x8001, 0x165, struct.pack(">I", 0x80000001)),  # HANDLE + P1
        cmd(0x8001, 0x165, struct.pack(">I", 0x80000003)),  # VALUE + P1
        cmd(0x8001, 0x165, struct.pack(">I", 0x02000000)),
        cmd(0x8001, 0x165, struct.pack(">I", 0x02000040)),
        cmd(0x8001, 0x165, struct.pack(">I", 0x81000000)),
        seq_start(b"", 0x000D),
        seq_complete(0x80000001, b""),  # empty SHA-512, NULL hierarchy
        seq_start(),
        seq_update(0x80000001, b"\xff\x54\x43\x47"),
        seq_complete(0x80000001, b"rest", 0x40000001),  # first block TPM_GENERATED: NULL ticket
        seq_start(),
        seq_update(0x80000001, b"ab"),
        seq_complete(0x80000001, b"cdef", 0x4000000B),  # first block short: NULL ticket too
    ]:
        both(command)
    # a real ticket: digest and hierarchy agree, the HMAC is each TPM's own
    both(seq_complete(0x80000000, b"def", OWNER, b"sq"), mask=_ticket_mask)
    both(seq_start())
    both(seq_update(0x80000000, b"abcd" * 256))
    rsp = both(seq_complete(0x80000000, b"efgh", PLATFORM), mask=_ticket_mask)
    assert rsp[16:48] == hashlib.sha256(b"abcd" * 256 + b"efgh").digest()
    both(cmd(0x8001, 0x17A, struct.pack(">III", 1, 0x80000000, 20)))  # all slots free again


def test_read_public_without_objects(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    for handle in (0x80000000, 0x80000002, 0x80000003, 0x81000000, 0x81000001, OWNER, 0x01000000):
        both(cmd(0x8001, 0x173, struct.pack(">I", handle)))


# ---------------------------------------------------- PCR allocation --


def allocate(selection: str, password: bytes = b"", handle: int = PLATFORM) -> bytes:
    return cmd(0x8002, 0x12B, struct.pack(">I", handle) + sess(pw(password)) + bytes.fromhex(selection))


def test_pcr_allocate(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    ours, theirs, both = tpms
    for command in [
        allocate("00000001 000d 03 010000"),  # sizeNeeded counts every bank after the change
        allocate("00000004 0004 03 000000 000b 03 000000 000c 03 000000 000d 03 000000"),  # TPM_RC_PCR
        allocate("00000001 000b 03 fefffd"),  # PCR 0 and 17 are still in the SHA-1 bank
        allocate("00000002 000d 03 ffffff 000d 03 000000"),  # the last selection of a bank wins
        allocate("00000001 0010 03 ffffff"),
        allocate("00000001 000c 02 ffff"),
        allocate("00000000", password=b"x"),
        allocate("00000000", handle=OWNER),
        allocate("00000003 000c 03 ffffff 0004 03 000000 000b 03 ffffff"),  # SHA-256 + SHA-384
        cmd(0x8001, 0x17A, "00000005 00000000 00000001"),  # not in effect yet
        cmd(0x8001, 0x145, "0001"),  # Shutdown(STATE) refused after an allocation: TYPE + P1
    ]:
        both(command)
    power_cycle(ours, theirs, both, "0000", "0000")
    both(cmd(0x8001, 0x17A, "00000005 00000000 00000001"))
    for selection in ("000c 03 ffffff", "000c 03 0000ff", "0004 03 ffffff", "000b 03 010400"):
        both(cmd(0x8001, 0x17E, "00000001 " + selection))
    digests = "00000002 000c" + "11" * 48 + " 0004" + "22" * 20
    both(cmd(0x8002, 0x182, bytes.fromhex("0000000a") + sess(pw()) + bytes.fromhex(digests)))
    both(cmd(0x8002, 0x13C, bytes.fromhex("0000000b") + sess(pw()) + b2(b"abc")))
    rsp = both(cmd(0x8001, 0x17E, "00000002 000c 03 000c00 000b 03 000c00"))
    # the digests: SHA-384 PCR 10 and 11, then SHA-256 PCR 10 and 11, each a TPM2B
    pcr10_sha384 = rsp[-(50 + 50 + 34 + 34) + 2 :][:48]
    assert pcr10_sha384 == hashlib.sha384(bytes(48) + b"\x11" * 48).digest()
    power_cycle(ours, theirs, both, "0001", "0001")  # Shutdown(STATE) is allowed again
    both(cmd(0x8001, 0x17E, "00000002 000c 03 000c00 000b 03 000c00"))


# ------------------------------------------------------------ capabilities --


def test_capability_handles(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    for prop, count in [
        (0x40000000, 20),
        (0x40000000, 2),
        (0x40000008, 20),
        (0x4000000E, 20),
        (0x00000000, 30),
        (0x00000005, 20),
        (0x00000005, 3),
        (0x00000018, 3),
        (0x01000000, 20),
        (0x02000000, 20),
        (0x03000000, 20),
        (0x80000000, 20),
        (0x81000000, 20),
        (0x04000000, 20),  # not a handle type: HANDLE + P2
        (0xFF000000, 1),
    ]:
        both(cmd(0x8001, 0x17A, struct.pack(">III", 1, prop, count)))


NEW_COMMANDS = [0x122, 0x129, 0x12A, 0x12B, 0x134, 0x135, 0x136, 0x137, 0x138, 0x13E, 0x14E, 0x14F]
NEW_COMMANDS += [0x15C, 0x165, 0x169, 0x173, 0x185, 0x186]


@pytest.mark.parametrize("cc", NEW_COMMANDS, ids=hex)
def test_command_attributes(tpms: tuple[Builtin, RawSwtpm, Pair], cc: int) -> None:
    """TPMA_CC (handles, nv, flushed, rHandle) as swtpm reports it."""
    ours, theirs, _both = tpms
    command = cmd(0x8001, 0x17A, struct.pack(">III", 2, cc, 1))
    assert ours.execute(command)[15:23] == theirs.execute(command)[15:23]
