"""Builtin.get_state / set_state: round trips and bad blobs.

A restored TPM continues as if it never stopped: same PCRs, NV indices,
sequences, DRBG (seeded) and virtual clock; bad blobs raise StateError with
a message and leave the TPM untouched.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# -- impossible states, and every state the TPM writes ----------------------------------------
COUNTER_ATTRS = NV_ATTRS | 0x10
EXTEND_ATTRS = NV_ATTRS | 0x40


def _perm_with_index(**fields: object) -> dict[str, bytes]:
    """A busy TPM's state with its NV index's public fields replaced."""
    good = _busy_tpm().get_state()
    perm = json.loads(good["permanent"][16:-32])
    perm["nv"] = [{**perm["nv"][0], **fields}]
    return {**good, "permanent": _reseal(good["permanent"], {"nv": perm["nv"]})}


IMPOSSIBLE = [
    ("a 1-byte counter", {"attributes": COUNTER_ATTRS, "data_size": 1, "data": "00"}, "not 8"),
    ("a 0-byte extend index", {"attributes": EXTEND_ATTRS, "data_size": 0, "data": ""}, "extend index of 0"),
    ("NV type 15", {"attributes": NV_ATTRS | 0xF0}, r"TPM_NT 15"),
    ("a policy of the wrong size", {"auth_policy": "00" * 5}, "authPolicy is 5 bytes"),
    ("an authValue longer than nameAlg", {"auth": "01" * 33}, "authValue is 33 bytes"),
    (
        "a counter cleared at TPM Restart",
        {"attributes": COUNTER_ATTRS | 1 << 27, "data_size": 8, "data": "00" * 8},
        "CLEAR_STCLEAR",
    ),
    ("no way to read it", {"attributes": NV_ATTRS & ~0x00060000}, "no way to read"),
    ("policy delete without the platform", {"attributes": NV_ATTRS | 1 << 10}, "POLICY_DELETE"),
]


@pytest.mark.parametrize(("fields", "message"), [c[1:] for c in IMPOSSIBLE], ids=[c[0] for c in IMPOSSIBLE])
def test_impossible_nv_index_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(StateError, match=f"NV index 0x01000001 cannot exist: .*{message}"):
        Builtin().set_state(_perm_with_index(**fields))


def test_nv_indices_that_do_not_fit_are_refused() -> None:
    good = _busy_tpm().get_state()
    entry = json.loads(good["permanent"][16:-32])["nv"][0]
    big = [{**entry, "handle": 0x01000100 + i, "data_size": 2048, "data": "00" * 2048} for i in range(16)]
    with pytest.raises(StateError, match="more than the TPM's 32768 bytes of NV memory"):
        Builtin().set_state({"permanent": _reseal(good["permanent"], {"nv": big})})


def test_deeply_nested_payload_is_a_state_error() -> None:
    blob = _json_blob(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(StateError, match="nested too deeply"):
        Builtin().set_state({"permanent": blob})


def _nv_cmd(cc: int, index: int, params: bytes = b"") -> bytes:
    return cmd(0x8002, cc, struct.pack(">III", OWNER, index, len(PW)) + PW + params)


def _define(index: int, attributes: int, size: int, name_alg: int = 0x000B) -> bytes:
    public = struct.pack(">IHI", index, name_alg, attributes) + b2(b"") + struct.pack(">H", size)
    return cmd(0x8002, 0x12A, struct.pack(">II", OWNER, len(PW)) + PW + b2(b"") + b2(public))


def _operations() -> list[bytes]:
    """Commands that change what a TPM remembers, on indices 0x01000000..7."""
    ops = [STARTUP_CLEAR, STARTUP_STATE, SHUTDOWN_STATE, cmd(0x8001, 0x145, "0000"), GET_RANDOM, READ_CLOCK]
    for index in range(0x01000000, 0x01000008):
        for attributes, size in (
            (NV_ATTRS, 16),
            (COUNTER_ATTRS, 8),
            (NV_ATTRS | 0x20, 8),
            (EXTEND_ATTRS, 32),
            (NV_ATTRS | 1 << 26, 4),
            (COUNTER_ATTRS | 1 << 26, 8),
            (NV_ATTRS | 1 << 13, 8),
        ):
            ops.append(_define(index, attributes, size))
        ops += [
            _nv_cmd(0x137, index, b2(b"data") + b"\0\0"),  # NV_Write
            _nv_cmd(0x134, index),  # NV_Increment
            _nv_cmd(0x135, index, struct.pack(">Q", 0x81)),  # NV_SetBits
            _nv_cmd(0x136, index, b2(b"extend me")),  # NV_Extend
            _nv_cmd(0x138, index),  # NV_WriteLock
            _nv_cmd(0x14F, index),  # NV_ReadLock
            _nv_cmd(0x14E, index, struct.pack(">HH", 8, 0)),  # NV_Read
            cmd(0x8002, 0x122, struct.pack(">III", OWNER, index, len(PW)) + PW),  # NV_UndefineSpace
        ]
    for pcr in (0, 7, 16, 23):
        ops.append(extend(pcr, [("sha256", bytes([pcr]) * 32)]))
        ops.append(cmd(0x8002, 0x13D, struct.pack(">II", pcr, len(PW)) + PW))  # PCR_Reset
    ops += [
        cmd(0x8001, 0x186, b2(b"") + b"\x00\x0b"),  # HashSequenceStart
        cmd(0x8001, 0x186, b2(b"") + b"\x00\x10"),  # an event sequence
        seq_update(0x80000000, b"more"),
        seq_complete(0x80000000),
        cmd(0x8002, 0x129, struct.pack(">II", OWNER, len(PW)) + PW + b2(b"new owner auth")),
        cmd(
            0x8002,
            0x12B,
            struct.pack(">II", 0x4000000C, len(PW))
            + PW
            + bytes.fromhex("00000002 000c 03 ffffff 000b 03 ffffff"),
        ),  # PCR_Allocate
    ]
    return ops


OPERATIONS = _operations()


def _power_cycle(t: Builtin) -> None:
    t.startup()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(OPERATIONS)), max_size=40))
def test_every_state_the_tpm_writes_loads_back(steps: list[int]) -> None:
    a = Builtin(seed=7)
    for step in steps:
        if step == len(OPERATIONS):
            _power_cycle(a)
        else:
            rc(a.execute(OPERATIONS[step]))
        state = a.get_state()
        b = Builtin(seed=8)
        b.set_state(state)
        assert _timeless(b.get_state()) == _timeless(state)  # the same TPM, read a moment later


def _timeless(state: dict[str, bytes]) -> dict[str, object]:
    """The payloads of *state* without the clock readings (time moves on between reads)."""
    out: dict[str, object] = {}
    for kind, blob in state.items():
        payload = json.loads(blob[16:-32]) if blob else None
        if isinstance(payload, dict):
            payload = {k: v for k, v in payload.items() if not k.endswith("_ms")}
        out[kind] = payload
    return out


def _mutations(rng: random.Random, value: object, depth: int = 0) -> object:
    """A random replacement somewhere inside a JSON *value*."""
    if isinstance(value, dict) and value and depth < 6 and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: _mutations(rng, value[key], depth + 1)}
    if isinstance(value, list) and value and depth < 6 and rng.random() < 0.8:
        at = rng.randrange(len(value))
        return [*value[:at], _mutations(rng, value[at], depth + 1), *value[at + 1 :]]
    return rng.choice(
        [
            None,
            True,
            False,
            -1,
            0,
            1,
            7,
            8,
            255,
            2**31,
            2**64,
            1.5,
            "",
            "00",
            "zz",
            "ff" * 33,
            "00" * 8,
            [],
            {},
            [0] * 24,
            {"11": []},
            {"4": 0},
            value,
        ]
    )


def _seal(blob: bytes, payload: object) -> bytes:
    """*blob*'s header with another *payload* (any JSON) and a valid digest."""
    body = json.dumps(payload).encode()
    head = blob[:12] + struct.pack(">I", len(body))
    return head + body + hashlib.sha256(head + body).digest()


def _battery(t: Builtin) -> None:
    """Every operation once, and a fresh power-on: no command may raise."""
    for command in OPERATIONS:
        rc(t.execute(command))
    t.startup()
    rc(t.execute(STARTUP_STATE))
    rc(t.execute(STARTUP_CLEAR))
    for command in OPERATIONS[:40]:
        rc(t.execute(command))


def test_mutated_states_are_refused_or_consistent() -> None:
    rng = random.Random(910)
    sources = []
    for seed, steps in ((1, 60), (2, 120), (3, 200)):
        t = Builtin(seed=seed)
        for _ in range(steps):
            rc(t.execute(rng.choice(OPERATIONS)))
        sources.append(t.get_state())
    loaded = refused = 0
    for _ in range(400):
        good = rng.choice(sources)
        kind = rng.choice([k for k in STATE_KEYS if good[k]])
        payload = json.loads(good[kind][16:-32])
        state = {**good, kind: _seal(good[kind], _mutations(rng, payload))}
        if rng.random() < 0.1:  # and some bytes that break the seal
            raw = bytearray(state[kind])
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            state[kind] = bytes(raw)
        t = Builtin(seed=5)
        try:
            t.set_state(state)
        except StateError:
            refused += 1
            continue
        loaded += 1
        again = t.get_state()  # what loaded is a state the TPM itself can save ...
        Builtin(seed=6).set_state(again)  # ... and load
        _battery(t)  # and run
        Builtin(seed=6).set_state(t.get_state())
    assert refused > 100 and loaded > 50
