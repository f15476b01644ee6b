"""Builtin against swtpm: TPM2_Clear, TPM2_ClearControl and TPM2_ChangeEPS.

What firmware sends for a Physical Presence "clear" request (ClearControl(NO)
then Clear, both by the platform) and what TPM 2.0 Part 3 24.5 to 24.7 says
they do: owner NV indices go and platform ones stay, the owner, endorsement
and lockout authValues are emptied, the dictionary-attack state, the clock
and the reset / restart counts start again, the PCR update counter moves.
Same harness as test_builtin_nv_swtpm.py; both TPMs must answer the same bytes,
except the clock fields of ReadClock (compared by their relation, not value).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from test_builtin_nv_swtpm import (
    NO_DA,
    OWNER,
    OWNERREAD,
    OWNERWRITE,
    PLATFORM,
    PLATFORMCREATE,
    PPREAD,
    PPWRITE,
    RW,
    STARTUP_CLEAR,
    b2,
    define,
    nv_read,
    nv_write,
    pw,
    read_public,
)
from test_builtin_swtpm import Pair, RawSwtpm, _allocate_sha1_sha256, _pair, cmd, sess, swtpm2  # noqa: F401

from tpmdev.backends.builtin import Builtin

pytestmark = pytest.mark.swtpm

LOCKOUT, ENDORSEMENT = 0x4000000A, 0x4000000B


def clear(auth_handle: int = PLATFORM, password: bytes = b"") -> bytes:
    return cmd(0x8002, 0x126, struct.pack(">I", auth_handle) + sess(pw(password)))


def clear_control(auth_handle: int, disable: int, password: bytes = b"") -> bytes:
    return cmd(0x8002, 0x127, struct.pack(">I", auth_handle) + sess(pw(password)) + bytes((disable,)))


def change_eps(password: bytes = b"") -> bytes:
    return cmd(0x8002, 0x124, struct.pack(">I", PLATFORM) + sess(pw(password)))


def change_auth(handle: int, new: bytes, password: bytes = b"") -> bytes:
    return cmd(0x8002, 0x129, struct.pack(">I", handle) + sess(pw(password)) + b2(new))


def get_cap(cap: int, prop: int, count: int) -> bytes:
    return cmd(0x8001, 0x17A, struct.pack(">III", cap, prop, count))


READ_CLOCK = cmd(0x8001, 0x181)
PCR_READ_0 = cmd(0x8001, 0x17E, "00000001 000b 03 010000")
OWNER_INDEX, PLATFORM_INDEX, COUNTER_INDEX = 0x01000001, 0x01000002, 0x01000003


def _clock(rsp: bytes) -> tuple[int, int, bytes]:
    """(time, clock, resetCount + restartCount + safe) of a ReadClock response."""
    time, clock = struct.unpack_from(">QQ", rsp, 10)
    return time, clock, rsp[26:]


@pytest.fixture
def tpms(swtpm2: RawSwtpm) -> Iterator[tuple[Builtin, RawSwtpm, Pair]]:
    ours = Builtin(2, seed=13)
    both = _pair(ours, swtpm2)
    both(STARTUP_CLEAR)
    yield ours, swtpm2, both


def _provision(both: Pair) -> None:
    both(define(OWNER, OWNER_INDEX, 0x000B, RW, 8, auth=b"ix"))
    both(define(PLATFORM, PLATFORM_INDEX, 0x000B, RW | PLATFORMCREATE | PPWRITE | PPREAD, 8))
    both(define(OWNER, COUNTER_INDEX, 0x000B, OWNERWRITE | OWNERREAD | 0x10 | NO_DA, 8))
    both(nv_write(OWNER, OWNER_INDEX, b"ownerdat"))
    both(nv_write(PLATFORM, PLATFORM_INDEX, b"platform"))
    both(cmd(0x8002, 0x134, struct.pack(">II", OWNER, COUNTER_INDEX) + sess(pw())))  # NV_Increment
    both(change_auth(OWNER, b"own"))
    both(change_auth(ENDORSEMENT, b"end"))
    both(change_auth(LOCKOUT, b"lck"))
    both(get_cap(6, 0x200, 1))  # TPMA_PERMANENT: the three authValues are set


def test_clear_by_the_platform(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    ours, theirs, both = tpms
    _provision(both)
    # a DA failure, to see the counter reset
    both(nv_read(OWNER_INDEX, OWNER_INDEX, 8, password=b"no"))  # RETRY (first DA use)
    both(nv_read(OWNER_INDEX, OWNER_INDEX, 8, password=b"no"))  # AUTH_FAIL
    both(get_cap(6, 0x20E, 1))  # TPM_PT_LOCKOUT_COUNTER 1
    both(PCR_READ_0)
    both(clear_control(PLATFORM, 0))  # what firmware sends first
    both(clear())
    both(PCR_READ_0)  # pcrUpdateCounter moved
    both(read_public(OWNER_INDEX))  # gone
    both(read_public(COUNTER_INDEX))  # gone
    both(read_public(PLATFORM_INDEX))  # kept
    both(nv_read(PLATFORM, PLATFORM_INDEX, 8))
    both(get_cap(1, 0x01000000, 8))  # the NV handles left
    both(get_cap(6, 0x200, 1))  # TPMA_PERMANENT: no authValue set any more
    both(get_cap(6, 0x20E, 1))  # lockout counter back to 0
    both(define(OWNER, OWNER_INDEX, 0x000B, RW, 8))  # the owner's empty password works again
    both(change_auth(ENDORSEMENT, b"", password=b""))
    both(change_auth(LOCKOUT, b"", password=b""))  # (DA use: lockout authorized)
    for tpm in (ours, theirs):
        time, clock, counts = _clock(tpm.execute(READ_CLOCK))
        assert clock <= time, "the clock restarted at the Clear, after the last power-on"
        assert counts == bytes(8) + b"\x01", "resetCount and restartCount 0, clock safe"
    # the next TPM Reset counts from there
    both(cmd(0x8001, 0x145, "0000"))
    ours.startup()
    theirs.power_cycle()
    both(STARTUP_CLEAR)
    assert _clock(ours.execute(READ_CLOCK))[2] == _clock(theirs.execute(READ_CLOCK))[2]
    both(PCR_READ_0)


def test_clear_by_lockout_and_clear_control(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    _provision(both)
    for command in [
        clear(OWNER),  # not TPMI_RH_CLEAR: VALUE + H1
        clear(0x4000000B),
        clear_control(OWNER, 1),
        clear_control(PLATFORM, 2),  # TPMI_YES_NO: VALUE + P1
        cmd(0x8002, 0x127, struct.pack(">I", PLATFORM) + sess(pw())),  # no parameter
        cmd(0x8002, 0x126, struct.pack(">I", PLATFORM) + sess(pw()) + b"\x00"),  # trailing byte
        clear(PLATFORM, b"wrong"),  # BAD_AUTH + S1 (platform is DA-exempt)
        clear_control(LOCKOUT, 1, b"lck"),  # RETRY: first DA use
        clear_control(LOCKOUT, 1, b"lck"),  # disableClear
        get_cap(6, 0x200, 1),  # TPMA_PERMANENT.disableClear
        clear(),  # DISABLED
        clear(LOCKOUT, b"lck"),  # DISABLED
        clear_control(LOCKOUT, 0, b"lck"),  # only the platform may enable it: AUTH_FAIL
        get_cap(6, 0x200, 1),
        clear_control(PLATFORM, 0),
        clear(LOCKOUT, b"lck"),
        read_public(OWNER_INDEX),
        get_cap(6, 0x200, 1),
        clear(LOCKOUT),  # lockoutAuth is empty now
        clear(),
    ]:
        both(command)


def test_disable_clear_survives_power_cycles(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    ours, theirs, both = tpms
    both(clear_control(PLATFORM, 1))
    both(cmd(0x8001, 0x145, "0000"))
    ours.startup()
    theirs.power_cycle()
    both(STARTUP_CLEAR)
    both(get_cap(6, 0x200, 1))
    both(clear())  # still DISABLED


def test_change_eps(tpms: tuple[Builtin, RawSwtpm, Pair]) -> None:
    _ours, _theirs, both = tpms
    for command in [
        change_auth(ENDORSEMENT, b"end"),
        change_auth(OWNER, b"own"),
        change_eps(b"x"),  # BAD_AUTH + S1
        cmd(0x8002, 0x124, struct.pack(">I", OWNER) + sess(pw())),  # platform only: VALUE + H1
        change_eps(),
        get_cap(6, 0x200, 1),  # endorsementAuth emptied, ownerAuth kept
        change_auth(ENDORSEMENT, b"", password=b""),
        change_auth(OWNER, b"", password=b"own"),
        PCR_READ_0,
    ]:
        both(command)


def test_clear_state_round_trip() -> None:
    """disableClear is part of the saved permanent state."""
    disabled = (0x120).to_bytes(4, "big")  # TPM_RC_DISABLED
    tpm = Builtin(2, seed=3)
    tpm.startup()
    assert tpm.execute(STARTUP_CLEAR)[6:10] == bytes(4)
    assert tpm.execute(clear_control(PLATFORM, 1))[6:10] == bytes(4)
    copy = Builtin(2, seed=3)
    copy.set_state(tpm.get_state())
    assert copy.execute(clear())[6:10] == disabled
    copy.startup()  # and after a power cycle
    assert copy.execute(STARTUP_CLEAR)[6:10] == bytes(4)
    assert copy.execute(clear())[6:10] == disabled


@pytest.mark.parametrize("cc", [0x124, 0x126, 0x127], ids=hex)
def test_command_attributes(tpms: tuple[Builtin, RawSwtpm, Pair], cc: int) -> None:
    """TPMA_CC (handles, nv) as swtpm reports it."""
    ours, theirs, _both = tpms
    command = get_cap(2, cc, 1)
    assert ours.execute(command)[15:23] == theirs.execute(command)[15:23]
