"""Builtin.get_state / set_state: round trips and bad blobs.

A restored TPM continues as if it never stopped: same PCRs, NV indices,
sequences, DRBG (seeded) and virtual clock; bad blobs raise StateError with
a message and leave the TPM untouched.
"""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from test_builtin import PW, STARTUP_CLEAR, cmd, extend, pcr_read, rc, read_digests

from tpmdev.backends.base import STATE_KEYS
from tpmdev.backends.builtin import Builtin
from tpmdev.errors import StateError

OWNER = 0x40000001
NV_ATTRS = 0x00060006  # OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD


def b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def nv_define(index: int, size: int, auth: bytes = b"") -> bytes:
    public = struct.pack(">IHI", index, 0x000B, NV_ATTRS) + b2(b"") + struct.pack(">H", size)
    return cmd(0x8002, 0x12A, struct.pack(">II", OWNER, len(PW)) + PW + b2(auth) + b2(public))


def nv_write(index: int, data: bytes) -> bytes:
    return cmd(0x8002, 0x137, struct.pack(">III", OWNER, index, len(PW)) + PW + b2(data) + b"\0\0")


def nv_read(index: int, size: int) -> bytes:
    return cmd(0x8002, 0x14E, struct.pack(">III", OWNER, index, len(PW)) + PW + struct.pack(">HH", size, 0))


def nv_data(response: bytes, size: int) -> bytes:
    """The data of an NV_Read response (before the 5-byte response session)."""
    return response[-5 - size : -5]


def seq_update(handle: int, data: bytes) -> bytes:
    return cmd(0x8002, 0x15C, struct.pack(">II", handle, len(PW)) + PW + b2(data))


def seq_complete(handle: int) -> bytes:
    return cmd(
        0x8002, 0x13E, struct.pack(">II", handle, len(PW)) + PW + b2(b"") + struct.pack(">I", 0x40000007)
    )


SHUTDOWN_STATE = cmd(0x8001, 0x145, "0001")
STARTUP_STATE = cmd(0x8001, 0x144, "0001")
READ_CLOCK = cmd(0x8001, 0x181)
GET_RANDOM = cmd(0x8001, 0x17B, "0010")


def _busy_tpm(seed: int | None = 5) -> Builtin:
    t = Builtin(seed=seed, pcr_banks=("sha256", "sha384"))
    assert rc(t.execute(STARTUP_CLEAR)) == 0
    assert rc(t.execute(extend(7, [("sha256", b"\x01" * 32), ("sha384", b"\x02" * 48)]))) == 0
    assert rc(t.execute(nv_define(0x01000001, 16, b"secret"))) == 0
    assert rc(t.execute(nv_write(0x01000001, b"persist me"))) == 0
    rsp = t.execute(cmd(0x8001, 0x186, b2(b"") + b"\x00\x0b"))  # a SHA-256 sequence
    assert rsp[10:14] == b"\x80\x00\x00\x00"
    assert rc(t.execute(seq_update(0x80000000, b"first half "))) == 0
    return t


def test_round_trip_continues_without_startup() -> None:
    a = _busy_tpm()
    state = a.get_state()
    assert set(state) == set(STATE_KEYS)
    assert state["savestate"] == b""  # no Shutdown(STATE)
    b = Builtin(seed=99)  # another seed, default banks: all replaced by the state
    b.set_state(state)
    for command in [
        pcr_read("sha256", [0, 7]),
        pcr_read("sha384", [7, 17]),
        pcr_read("sha1", [7]),  # not allocated in the saved TPM
        nv_read(0x01000001, 16),
        cmd(0x8001, 0x169, "01000001"),  # NV_ReadPublic: the same Name
        cmd(0x8001, 0x17A, "00000005 00000000 00000001"),
        cmd(0x8001, 0x17A, "00000001 80000000 00000008"),
        seq_update(0x80000000, b"second half"),
        seq_complete(0x80000000),
        GET_RANDOM,  # seeded DRBG continues
        READ_CLOCK,  # virtual clock continues
    ]:
        assert b.execute(command) == a.execute(command), command.hex()
    assert nv_data(b.execute(nv_read(0x01000001, 10)), 10) == b"persist me"
    expected = hashlib.sha256(bytes(32) + b"\x01" * 32).digest()
    assert read_digests(b.execute(pcr_read("sha256", [7]))) == [expected]


def test_round_trip_unseeded_and_twice() -> None:
    a = _busy_tpm(seed=None)
    b = Builtin()
    b.set_state(a.get_state())
    c = Builtin()
    c.set_state(b.get_state())
    assert rc(c.execute(STARTUP_CLEAR)) == 0x100  # already started: no Startup needed
    assert nv_data(c.execute(nv_read(0x01000001, 10)), 10) == b"persist me"
    clock_a = struct.unpack(">QQ", a.execute(READ_CLOCK)[10:26])
    clock_c = struct.unpack(">QQ", c.execute(READ_CLOCK)[10:26])
    assert clock_c[1] >= clock_a[1] - 1000  # the TPM clock did not restart


def test_shutdown_state_savestate_and_resume() -> None:
    a = _busy_tpm()
    assert rc(a.execute(SHUTDOWN_STATE)) == 0
    state = a.get_state()
    assert state["savestate"][:8] == b"TPMDEVbi"
    b = Builtin(seed=1)
    b.set_state(state)
    b.startup()  # power-on, as after a migration of a suspended machine
    assert rc(b.execute(STARTUP_STATE)) == 0
    expected = hashlib.sha256(bytes(32) + b"\x01" * 32).digest()
    assert read_digests(b.execute(pcr_read("sha256", [7]))) == [expected]
    assert rc(b.execute(seq_update(0x80000000, b"x"))) == 0x910  # sequences died at power-on
    # without the savestate blob the resume is refused, as on swtpm
    c = Builtin()
    c.set_state({"permanent": state["permanent"], "volatile": state["volatile"], "savestate": b""})
    c.startup()
    assert rc(c.execute(STARTUP_STATE)) == 0x1C4
    assert rc(c.execute(STARTUP_CLEAR)) == 0


def test_permanent_only_is_a_power_loss() -> None:
    a = _busy_tpm()
    b = Builtin()
    b.set_state({"permanent": a.get_state()["permanent"]})
    assert rc(b.execute(GET_RANDOM)) == 0x100  # waits for TPM2_Startup
    assert rc(b.execute(STARTUP_CLEAR)) == 0
    assert nv_data(b.execute(nv_read(0x01000001, 10)), 10) == b"persist me"
    assert read_digests(b.execute(pcr_read("sha256", [7]))) == [bytes(32)]
    assert read_digests(b.execute(pcr_read("sha384", [7]))) == [bytes(48)]


def test_pcr_allocation_survives() -> None:
    a = Builtin()
    a.execute(STARTUP_CLEAR)
    selection = "00000002 000c 03 ffffff 0004 03 000000"
    rsp = a.execute(
        cmd(0x8002, 0x12B, struct.pack(">II", 0x4000000C, len(PW)) + PW + bytes.fromhex(selection))
    )
    assert rsp[-18:-5] == bytes.fromhex("01 00000018 00000780 00000f60")
    b = Builtin()
    b.set_state(a.get_state())
    b.startup()
    assert rc(b.execute(STARTUP_CLEAR)) == 0
    r = b.execute(cmd(0x8001, 0x17A, "00000005 00000000 00000001"))
    assert r[-24:] == bytes.fromhex("0004 03 000000 000b 03 ffffff 000c 03 ffffff 000d 03 000000")


def test_tpm12_round_trip() -> None:
    a = Builtin(1, seed=3)
    a.execute(cmd(0x00C1, 0x99, "0001"))
    a.execute(cmd(0x00C1, 0x14, "00000008" + "ab" * 20))
    state = a.get_state()
    assert state["savestate"] == b""
    b = Builtin(1, seed=0)
    b.set_state(state)
    for command in [
        cmd(0x00C1, 0x15, "00000008"),
        cmd(0x00C1, 0x15, "00000011"),
        cmd(0x00C1, 0x46, "00000008"),
    ]:
        assert b.execute(command) == a.execute(command)
    c = Builtin(1)
    c.set_state({"permanent": state["permanent"]})
    assert rc(c.execute(cmd(0x00C1, 0x15, "00000008"))) == 0x26  # TPM_INVALID_POSTINIT


# -- bad blobs -------------------------------------------------------------------


def _reseal(blob: bytes, edit: dict[str, object] | None = None, **header: int) -> bytes:
    """Rebuild *blob* with a changed payload or header and a valid digest."""
    magic, version, family, kind, size = struct.unpack_from(">8sHBBI", blob)
    payload = json.loads(blob[16 : 16 + size])
    if edit:
        payload.update(edit)
    body = json.dumps(payload).encode()
    head = struct.pack(
        ">8sHBBI",
        magic,
        header.get("version", version),
        header.get("family", family),
        header.get("kind", kind),
        len(body),
    )
    return head + body + hashlib.sha256(head + body).digest()


def _bad_states() -> list[tuple[str, object, str]]:
    good = _busy_tpm().get_state()
    perm, vol = good["permanent"], good["volatile"]
    tpm12 = Builtin(1).get_state()
    return [
        ("not a dict", [perm], "dict of blobs"),
        ("unknown key", {**good, "extra": b""}, "unknown state keys"),
        ("no permanent", {"volatile": vol}, "'permanent' state blob is missing"),
        ("garbage", {"permanent": b"\x00garbage" * 10}, "bad magic"),
        ("not bytes", {"permanent": "text"}, "must be bytes"),
        ("truncated", {"permanent": perm[:-1]}, "truncated"),
        ("truncated header", {"permanent": perm[:12]}, "bad magic|truncated"),
        ("trailing bytes", {"permanent": perm + b"\0"}, "truncated or has trailing"),
        ("corrupt", {"permanent": perm[:40] + bytes([perm[40] ^ 1]) + perm[41:]}, "integrity"),
        ("future version", {"permanent": _reseal(perm, version=2)}, "format version 2"),
        ("TPM 1.2 blob", {"permanent": tpm12["permanent"]}, "from a TPM 1.2"),
        ("keys mixed up", {"permanent": vol}, "mixed up"),
        ("missing field", {"permanent": _reseal(perm, {"nv": None})}, "describes no valid TPM"),
        ("bad PCR value", {"permanent": perm, "volatile": _reseal(vol, {"pcrs": {"11": ["00"] * 24}})}, "32"),
        ("PCRs vs allocation", {"permanent": perm, "volatile": _reseal(vol, {"pcrs": {}})}, "allocation"),
        (
            "bad object",
            {"permanent": perm, "volatile": _reseal(vol, {"objects": {"1": {}}})},
            "object handle",
        ),
        ("negative counter", {"permanent": _reseal(perm, {"reset_count": -1})}, "not an integer"),
        (
            "NV data size",
            {"permanent": _reseal(perm, {"nv": [{**json.loads(perm[16:-32])["nv"][0], "data": "00"}]})},
            "byte string",
        ),
        ("savestate without Shutdown(STATE)", {**good, "savestate": _reseal(vol, kind=3)}, "not shut down"),
        ("json not an object", {"permanent": _json_blob(b"[1, 2]")}, "not an object"),
        ("json broken", {"permanent": _json_blob(b"{nope")}, "unreadable payload"),
    ]


def _json_blob(body: bytes) -> bytes:
    head = struct.pack(">8sHBBI", b"TPMDEVbi", 1, 2, 1, len(body))
    return head + body + hashlib.sha256(head + body).digest()


@pytest.mark.parametrize("what,state,message", _bad_states(), ids=[c[0] for c in _bad_states()])
def test_bad_state_raises_and_changes_nothing(what: str, state: object, message: str) -> None:
    t = _busy_tpm()
    before = [t.execute(pcr_read("sha256", [7])), t.execute(nv_read(0x01000001, 16))]
    with pytest.raises(StateError, match=message):
        t.set_state(state)  # type: ignore[arg-type]
    assert [t.execute(pcr_read("sha256", [7])), t.execute(nv_read(0x01000001, 16))] == before


def test_wrong_family_either_way() -> None:
    with pytest.raises(StateError, match=r"from a TPM 2\.0, but this Builtin is a TPM 1\.2"):
        Builtin(1).set_state(Builtin(2).get_state())
    with pytest.raises(StateError, match="savestate' must be empty"):
        t12 = Builtin(1).get_state()
        Builtin(1).set_state({**t12, "savestate": _reseal(t12["volatile"], kind=3)})


def test_closed_backend_refuses_state() -> None:
    t = Builtin()
    t.close()
    with pytest.raises(StateError, match="closed"):
        t.get_state()
    with pytest.raises(StateError, match="closed"):
        t.set_state({})
