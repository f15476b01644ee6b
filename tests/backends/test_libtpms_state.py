"""Libtpms.set_state checks a TPM 2.0 permanent blob before libtpms sees it.

A corrupted blob that libtpms accepts can crash the process at a later
command, so everything that could load one runs in a subprocess: a crash
there fails the test instead of ending the run. The checker itself
(:func:`tpmdev.backends._libtpms_state.check_tpm2_permanent`) is pure and is
exercised in process on blobs nothing loads.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tpmdev.backends import _libtpms_state as checker
from tpmdev.backends.libtpms import Libtpms, unwrap_state_blob
from tpmdev.errors import StateError
from tpmdev.wire import response_code

from test_builtin import PW, STARTUP_CLEAR, cmd, extend

REPO = Path(__file__).resolve().parents[2]
OWNER = 0x40000001
NV_INDEX_MAGIC = bytes.fromhex("2547265a")

ORDINARY = 0x00060006  # OWNERWRITE AUTHWRITE OWNERREAD AUTHREAD
COUNTER = ORDINARY | 0x10
BITS = ORDINARY | 0x20
EXTEND = ORDINARY | 0x40
ORDERLY = 1 << 26


def b2(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def nv_define(index: int, attributes: int, size: int, policy: bytes = b"") -> bytes:
    public = struct.pack(">IHI", index, 0x000B, attributes) + b2(policy) + struct.pack(">H", size)
    return cmd(0x8002, 0x12A, struct.pack(">II", OWNER, len(PW)) + PW + b2(b"") + b2(public))


def nv_op(cc: int, index: int, params: bytes = b"") -> bytes:
    return cmd(0x8002, cc, struct.pack(">III", OWNER, index, len(PW)) + PW + params)


def audit_status(alg: int, cc: int | None = None) -> bytes:
    """TPM2_SetCommandCodeAuditStatus(owner, auditAlg, setList=[cc] or [], clearList=[]).

    A TPM takes either a new algorithm or list changes in one command.
    """
    listed = struct.pack(">II", 1, cc) if cc is not None else struct.pack(">I", 0)
    params = struct.pack(">H", alg) + listed + struct.pack(">I", 0)
    return cmd(0x8002, 0x140, struct.pack(">II", OWNER, len(PW)) + PW + params)


def audit(cc: int) -> list[bytes]:
    """Audit command *cc* with SHA-256."""
    return [audit_status(0x000B), audit_status(0x0010, cc)]


def ok(tpm: Libtpms, command: bytes) -> bytes:
    response = tpm.execute(command)
    if response_code(response) == 0x922:  # TPM_RC_RETRY while the TPM records daUsed
        response = tpm.execute(command)
    assert response_code(response) == 0, f"0x{response_code(response):X}"
    return response


# -- the checker accepts what libtpms writes ---------------------------------------------------
@pytest.fixture
def tpm() -> Iterator[Libtpms]:
    with Libtpms(2) as t:
        yield t


def permanent(tpm: Libtpms) -> bytes:
    return unwrap_state_blob(tpm.get_state()["permanent"])


def walk_to_end(raw: bytes) -> None:
    walker = checker._Walker(raw)
    walker.persistent_all()
    assert walker.pos == len(raw)


def busy_states(tpm: Libtpms) -> Iterator[tuple[str, bytes]]:
    """Permanent blobs of one TPM through a life that touches every checked field."""
    yield "fresh", permanent(tpm)
    ok(tpm, STARTUP_CLEAR)
    yield "started", permanent(tpm)
    for i, (attributes, size) in enumerate(
        [(ORDINARY, 16), (ORDINARY, 0), (COUNTER, 8), (BITS, 8), (EXTEND, 32),
         (ORDINARY | ORDERLY, 24), (COUNTER | ORDERLY, 8), (ORDINARY, 1024)]
    ):  # fmt: skip
        ok(tpm, nv_define(0x01000010 + i, attributes, size, policy=bytes(32) if i == 3 else b""))
    yield "nv indices", permanent(tpm)
    ok(tpm, nv_op(0x137, 0x01000010, b2(b"0123456789abcdef") + b"\0\0"))
    ok(tpm, nv_op(0x134, 0x01000012))
    ok(tpm, nv_op(0x135, 0x01000013, struct.pack(">Q", 5)))
    ok(tpm, nv_op(0x136, 0x01000014, b2(b"event")))
    ok(tpm, nv_op(0x137, 0x01000015, b2(b"orderly") + b"\0\0"))
    ok(tpm, nv_op(0x134, 0x01000016))
    yield "nv written", permanent(tpm)
    for command in audit(0x182):  # PCR_Extend audited with SHA-256
        ok(tpm, command)
    ok(tpm, extend(16, [("sha256", bytes(32))]))
    yield "audit", permanent(tpm)
    ok(tpm, cmd(0x8001, 0x145, "0001"))  # Shutdown(STATE): STATE_RESET / STATE_CLEAR follow
    yield "shut down with state", permanent(tpm)
    tpm.startup(0)
    ok(tpm, cmd(0x8001, 0x144, "0001"))
    ok(tpm, cmd(0x8002, 0x122, struct.pack(">III", OWNER, 0x01000011, len(PW)) + PW))  # NV_UndefineSpace
    yield "resumed, index undefined", permanent(tpm)


def test_every_state_libtpms_writes_passes(tpm: Libtpms) -> None:
    seen = set()
    for name, raw in busy_states(tpm):
        checker.check_tpm2_permanent(raw)
        walk_to_end(raw)
        seen.add(name)
    assert len(seen) == 7


def test_checked_states_load_back(tpm: Libtpms) -> None:
    ok(tpm, STARTUP_CLEAR)
    ok(tpm, nv_define(0x01000001, COUNTER | ORDERLY, 8))
    ok(tpm, nv_op(0x134, 0x01000001))
    for command in audit(0x182):
        ok(tpm, command)
    state = tpm.get_state()
    tpm.set_state(state)
    assert tpm.get_state()["permanent"] == state["permanent"]


def test_mutated_blobs_never_break_the_checker(tpm: Libtpms) -> None:
    # Whatever the bytes, the checker either passes or raises StateError.
    blobs = [raw for _name, raw in busy_states(tpm)]
    rng = random.Random(93)
    outcomes = {"passed": 0, "refused": 0}
    for _ in range(3000):
        raw = bytearray(rng.choice(blobs))
        for _ in range(rng.choice((1, 1, 2, 4))):
            at = rng.randrange(len(raw))
            width = rng.choice((1, 2, 4))
            raw[at : at + width] = rng.choice(
                (b"\xff", b"\x00", b"\x7f\xff\xff\xff", bytes([rng.randrange(256)]))
            )
        if rng.random() < 0.1:
            raw = raw[: rng.randrange(len(raw))]
        try:
            checker.check_tpm2_permanent(bytes(raw))
        except StateError:
            outcomes["refused"] += 1
        else:
            outcomes["passed"] += 1
    assert outcomes["refused"] > 500 and outcomes["passed"] > 100


def test_newer_sections_are_left_to_libtpms(tpm: Libtpms) -> None:
    ok(tpm, STARTUP_CLEAR)
    raw = bytearray(permanent(tpm))
    raw[6:8] = b"\x00\x09"  # PERSISTENT_ALL minimum version 9: a libtpms from the future
    checker.check_tpm2_permanent(bytes(raw))  # not ours to judge


# -- the crash of the issue, and the other corruptions, in a subprocess ------------------------------
_SCRIPT = r"""
import json, struct, sys
sys.path.insert(0, sys.argv[1])
from test_libtpms_state import *  # the command builders
from tpmdev.backends.libtpms import Libtpms, unwrap_state_blob, wrap_state_blob
from tpmdev.errors import StateError

results = {}
tpm = Libtpms(2)
ok(tpm, STARTUP_CLEAR)
ok(tpm, nv_define(0x01000001, ORDINARY, 16))
good = tpm.get_state()

def nv_public(raw, index):
    # offset of TPMS_NV_PUBLIC in the NV entry of *index*
    at = raw.find(NV_INDEX_MAGIC + b"\x00\x01" + struct.pack(">I", index))
    assert at > 0
    return at + 6

def attempt(name, blob):
    try:
        tpm.set_state({"permanent": blob, "volatile": good["volatile"]})
    except StateError as exc:
        results[name] = "refused: " + str(exc)
    else:
        results[name] = "loaded"
    # the previous state is running either way; a command must not crash
    r = tpm.execute(extend(0, [("sha256", b"\x01" * 32)]))
    results[name] += " | extend 0x%X" % int.from_bytes(r[6:10], "big")
    tpm.set_state(good)

case = sys.argv[2]
if case == "issue":
    # Four bytes 7fffffff at offset 1056 of the permanent blob, after an NV index was defined.
    blob = bytearray(good["permanent"])
    assert len(blob) > 1060
    blob[1056:1060] = bytes.fromhex("7fffffff")
    attempt("issue", bytes(blob))
else:
    ok(tpm, nv_define(0x01000002, COUNTER, 8))
    ok(tpm, nv_define(0x01000003, ORDINARY, 0))
    ok(tpm, nv_define(0x01000004, ORDINARY | ORDERLY, 8))
    ok(tpm, nv_define(0x01000005, ORDINARY, 8, policy=bytes(32)))
    good = tpm.get_state()
    raw = unwrap_state_blob(good["permanent"])
    def mutate(at, value):
        out = bytearray(raw)
        out[at : at + len(value)] = value
        return wrap_state_blob(bytes(out))
    counter = nv_public(raw, 0x01000002)
    empty = nv_public(raw, 0x01000003)
    ordinary = nv_public(raw, 0x01000001)
    with_policy = nv_public(raw, 0x01000005)
    attempt("counter of 1 byte", mutate(counter + 12, b"\x00\x01"))
    attempt("NV type 15", mutate(counter + 6, struct.pack(">I", COUNTER | 0xF0)))
    attempt("index larger than its space", mutate(ordinary + 12, b"\x08\x00"))
    # entry size, handle, NV_INDEX version and magic precede the public area
    attempt("entry size of an empty index", mutate(empty - 16, b"\x7f\xff\xff\xff"))
    ram = raw.find(b"\x01\x00\x00\x04", raw.find(bytes.fromhex("5346feab")))
    attempt("orderly index without its RAM copy", mutate(ram, b"\x01\x00\x00\x77"))
    attempt("policy of the wrong size", mutate(with_policy + 4, b"\x00\x04"))  # nameAlg SHA-1
print(json.dumps(results))
"""


def run_case(case: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(Path(__file__).parent), case],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO),
    )  # fmt: skip
    assert proc.returncode == 0, f"the host died (status {proc.returncode}): {proc.stderr[-2000:]}"
    results: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def test_issue_corruption_is_refused_and_the_host_survives() -> None:
    # Before the check, libtpms took this blob and the next PCR_Extend crashed the process.
    results = run_case("issue")
    assert results["issue"].startswith("refused: TPM 2.0 permanent state blob: PERSISTENT_DATA.auditHashAlg")
    assert results["issue"].endswith("| extend 0x0")


EXPECTED: dict[str, str] = {
    "counter of 1 byte": "is a counter index of 1 bytes, not 8",
    "NV type 15": "has NV type 15, which no TPM 2.0 defines",
    "index larger than its space": "of 2048 bytes has 16 bytes of NV space",
    "entry size of an empty index": "has NV entry size 2147483647, not 152",
    "orderly index without its RAM copy": "no bytes of RAM copy",
    "policy of the wrong size": "has a 32-byte authPolicy for a 20-byte hash",
}


def test_nv_corruptions_are_refused_and_the_host_survives() -> None:
    results = run_case("nv")
    assert set(results) == set(EXPECTED)
    for name, fragment in EXPECTED.items():
        assert results[name].startswith("refused: ") and fragment in results[name], (name, results[name])
        assert results[name].endswith("| extend 0x0")


def test_the_trust_is_documented() -> None:
    import tpmdev.backends.libtpms as module

    doc = " ".join((module.__doc__ or "").split())
    assert "the TPM trusts its state" in doc and "use :class:`~tpmdev.backends.Emulator`" in doc
    set_state_doc = " ".join((Libtpms._set_state.__doc__ or "").split())
    assert "Load untrusted state into an :class:`~tpmdev.backends.Emulator`" in set_state_doc
