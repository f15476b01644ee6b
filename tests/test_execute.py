"""Batch execution: ``dev.execute(ops)`` equals the same accesses one by one.

Every memory-mapped frontend (TIS, TIS on sysbus, CRB), both variants. A
batch mixes random accesses anywhere in the region (any size the frontend
takes, aligned or not) with a real command exchange, so commands run
mid-batch (tpmGo, START); two devices over identically seeded built-in TPMs,
one run by ``execute`` and one by single ``read`` / ``write`` calls, must
agree on every value, the register image and the backend's commands.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.hw import regs as R

Row = tuple[int, int, int, int]  # kind, offset, size, value
R_, W_ = tpmdev.OP_READ, tpmdev.OP_WRITE


def _tis_exchange(command: bytes, response_len: int) -> list[Row]:
    rows: list[Row] = [
        (W_, R.TPM_ACCESS, 1, R.TPM_ACCESS_REQUEST_USE),
        (W_, R.TPM_STS, 4, R.TPM_STS_COMMAND_READY),
    ]
    rows += [(W_, R.TPM_DATA_FIFO, 1, b) for b in command]
    rows += [(R_, R.TPM_STS, 4, 0), (W_, R.TPM_STS, 4, R.TPM_STS_GO), (R_, R.TPM_STS, 4, 0)]
    rows += [(R_, R.TPM_DATA_FIFO, 1, 0)] * response_len
    return rows


def _crb_exchange(command: bytes, response_len: int) -> list[Row]:
    rows: list[Row] = [(W_, R.TPM_LOC_CTRL, 4, 1), (W_, R.TPM_CRB_CTRL_REQ, 4, 1)]
    padded = command + bytes(-len(command) % 4)
    rows += [
        (W_, R.TPM_CRB_DATA_BUFFER + i, 4, int.from_bytes(padded[i : i + 4], "little"))
        for i in range(0, len(padded), 4)
    ]
    rows += [(W_, R.TPM_CRB_CTRL_START, 4, 1), (R_, R.TPM_CRB_CTRL_START, 4, 0)]
    rows += [(R_, R.TPM_CRB_DATA_BUFFER + i, 8, 0) for i in range(0, response_len, 8)]
    return rows


def _noise(
    rng: random.Random, count: int, region: int, sizes: tuple[int, ...], interesting: list[int]
) -> list[Row]:
    rows: list[Row] = []
    for _ in range(count):
        size = rng.choice(sizes)
        if rng.random() < 0.7:
            offset = (rng.randrange(region) & ~0xFFF) | rng.choice(interesting)
            offset += rng.randrange(4) if rng.random() < 0.2 else 0
        else:
            offset = rng.randrange(region)
        offset = min(offset, region - size)
        kind = rng.choice((R_, W_))
        value = rng.getrandbits(8 * size) if kind == W_ else 0
        rows.append((kind, offset, size, value))
    return rows


TIS_REGS = [0x00, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1A, 0x24, 0x30, 0x80, 0xF00]
CRB_REGS = [0x00, 0x08, 0x0C, 0x30, 0x40, 0x44, 0x48, 0x4C, 0x58, 0x68, 0x80, 0x84]


def _batch(rng: random.Random, frontend: str, region: int, sizes: tuple[int, ...]) -> list[Row]:
    exchange = _tis_exchange if frontend != "crb" else _crb_exchange
    interesting = TIS_REGS if frontend != "crb" else CRB_REGS
    rows = [
        row for row in _noise(rng, 200, region, sizes, interesting) if row[0] == R_
    ]  # leaves the TPM usable
    rows += exchange(C.tpm2_startup(), 10) + exchange(C.tpm2_get_random(8), 20)
    mixed = _noise(rng, 200, region, sizes, interesting)
    rows += mixed + exchange(C.tpm2_get_random(12), 24)
    return rows


class _Counting(tpmdev.backends.Builtin):
    """The built-in TPM, counting the commands it ran."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.commands: list[bytes] = []

    def _execute(self, command: bytes, locality: int) -> bytes:
        self.commands.append(bytes(command))
        response: bytes = super()._execute(command, locality)
        return response


def _frontend(name: str, tis_class: Any, tis_sysbus_class: Any, crb_class: Any) -> Any:
    return {"tis": tis_class, "tis_sysbus": tis_sysbus_class, "crb": crb_class}[name]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("frontend", ["tis", "tis_sysbus", "crb"])
def test_execute_equals_one_by_one(
    tis_class: Any, tis_sysbus_class: Any, crb_class: Any, frontend: str, seed: int
) -> None:
    cls = _frontend(frontend, tis_class, tis_sysbus_class, crb_class)
    kwargs = {"localities": 5} if frontend == "crb" and seed % 2 else {}
    batched, single = _Counting(seed), _Counting(seed)
    with cls(batched, **kwargs) as a, cls(single, **kwargs) as b:
        rows = _batch(random.Random(seed), frontend, a.region_size, a.core.access_sizes)
        ops = tpmdev.make_ops(rows)
        got = a.execute(ops)
        want = []
        for kind, offset, size, value in rows:
            if kind == R_:
                want.append(b.read(offset, size))
            else:
                b.write(offset, value, size)
                want.append(value)
        assert got.dtype == np.uint64 and got.shape == (len(rows),)
        assert got.tolist() == want
        assert np.array_equal(a.mmio, b.mmio)
        assert batched.commands == single.commands
        assert len(batched.commands) >= 2  # the exchanges ran mid-batch


def test_execute_matches_the_pieces_of_single_accesses(recording_core_class: type) -> None:
    """Unaligned and 8-byte rows are split exactly as read/write split them."""
    a, b = recording_core_class(), recording_core_class()
    rows = [(R_, 0x19, 4, 0), (W_, 0x1A, 8, 0x1122334455667788), (R_, 0x68, 8, 0), (W_, 0x81, 2, 0xBEEF)]
    got = a.execute(tpmdev.make_ops(rows))
    for kind, offset, size, value in rows:
        b.read(offset, size) if kind == R_ else b.write(offset, value, size)
    assert a.log == b.log
    assert got[0] == b.read(0x19, 4) and got[1] == 0x1122334455667788


BAD_ROWS = [
    ((2, 0x18, 4, 0), "kind"),
    ((R_, 0x18, 3, 0), "size 3"),
    ((R_, 0x18, 0, 0), "size 0"),
    ((R_, 0x5000, 1, 0), "offset past the region"),
    ((R_, 0x4FFE, 4, 0), "access past the region"),
    ((W_, 0x18, 1, 0x100), "value too wide"),
    ((R_, 0xFFFFFFFF, 4, 0), "offset 2**32-1"),
]


@pytest.mark.parametrize(("row", "what"), BAD_ROWS, ids=[w for _, w in BAD_ROWS])
def test_bad_row_rejected_before_anything_runs(tis_class: type[tpmdev.TIS], row: Row, what: str) -> None:
    requests: list[int] = []
    with tis_class(tpmdev.backends.Builtin()) as dev:
        before = dev.mmio.copy()
        rows = [(W_, R.TPM_ACCESS, 1, R.TPM_ACCESS_REQUEST_USE), (R_, R.TPM_STS, 4, 0), row]
        with pytest.raises(tpmdev.AccessError, match=r"TIS execute: row 2 .*nothing in the batch was run"):
            dev.execute(tpmdev.make_ops(rows))
        assert np.array_equal(dev.mmio, before) and dev.active_locality is None and not requests


def test_size_8_is_refused_by_tis_taken_by_crb(
    tis_class: type[tpmdev.TIS], crb_class: type[tpmdev.CRB]
) -> None:
    row = [(R_, 0x68, 8, 0)]
    with tis_class(tpmdev.backends.Builtin()) as dev, pytest.raises(tpmdev.AccessError, match="row 0"):
        dev.execute(tpmdev.make_ops(row))
    with crb_class(tpmdev.backends.Builtin()) as crb:
        assert crb.execute(tpmdev.make_ops(row)).tolist() == [crb.read(0x68, 8)]


@pytest.mark.parametrize(
    "ops",
    [
        [(0, 0x18, 4, 0)],
        np.zeros(3, np.uint64),
        np.zeros((2, 2), tpmdev.OP_DTYPE),
        np.zeros(2, np.dtype([("kind", "u1"), ("size", "u1"), ("offset", "<u4"), ("value", "<u8")])),
    ],
    ids=["list", "uint64", "2-D", "packed"],
)
def test_ops_must_be_an_op_array(tis_class: type[tpmdev.TIS], ops: object) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev, pytest.raises(tpmdev.AccessError, match="OP_DTYPE"):
        dev.execute(ops)


def test_out_is_reused_and_checked(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin()) as dev:
        ops = tpmdev.make_ops(
            [
                tpmdev.Op(R_, offset=0x30, size=4),
                tpmdev.Op(W_, offset=0x80, size=2, value=0xABCD),
                tpmdev.Op(R_, offset=0x80, size=4),
            ]
        )
        out = np.full(3, 7, np.uint64)
        assert dev.execute(ops, out) is out
        assert out.tolist() == [dev.read(0x30), 0xABCD, 0xABCD]
        for bad in (np.zeros(2, np.uint64), np.zeros(3, np.int64), [0, 0, 0]):
            with pytest.raises(tpmdev.AccessError, match="out must be"):
                dev.execute(ops, bad)


def test_make_ops_places_fields_by_name() -> None:
    """Rows are (kind, offset, size, value), the dtype is (kind, size, offset, value)."""
    ops = tpmdev.make_ops([tpmdev.Op(W_, offset=0x24, size=1, value=0x40), (R_, 0x30, 4, 0), (R_, 0x18, 2)])
    assert ops.dtype == tpmdev.OP_DTYPE
    assert ops["kind"].tolist() == [W_, R_, R_]
    assert ops["offset"].tolist() == [0x24, 0x30, 0x18]
    assert ops["size"].tolist() == [1, 4, 2]
    assert ops["value"].tolist() == [0x40, 0, 0]


def test_empty_and_strided_batches(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        assert dev.execute(np.zeros(0, tpmdev.OP_DTYPE)).shape == (0,)
        ops = tpmdev.make_ops([(R_, R.TPM_DID_VID, 4, 0), (R_, R.TPM_RID, 1, 0)] * 3)
        assert dev.execute(ops[::-1]).tolist() == [dev.read(R.TPM_RID, 1), dev.read(R.TPM_DID_VID)] * 3
        assert dev.execute(ops[1::2]).tolist() == [dev.read(R.TPM_RID, 1)] * 3
        ops.flags.writeable = False  # a read-only batch is fine
        assert dev.execute(ops).shape == (6,)


def test_command_runs_at_its_row(crb_class: type[tpmdev.CRB]) -> None:
    """The command runs at the START row: the rows after it read the response."""
    backend = _Counting(1)
    with crb_class(backend) as dev:
        rows = _crb_exchange(C.tpm2_startup(), 16)
        out = dev.execute(tpmdev.make_ops(rows)).tolist()
        assert backend.commands == [C.tpm2_startup()]
        start = rows.index((W_, R.TPM_CRB_CTRL_START, 4, 1))
        assert out[start + 1] == 0  # START already clear: the response is in
        response = b"".join(v.to_bytes(8, "little") for v in out[start + 2 :])
        assert response[:10] == bytes.fromhex("80010000000a00000000")


def test_asynchronous_completion_applied_before_the_next_row(tis_class: type[tpmdev.TIS]) -> None:
    """As single accesses do, each row first applies a completion the worker posted."""
    ready = threading.Event()
    with tis_class(tpmdev.backends.Builtin(), asynchronous=True, on_complete=ready.set) as dev:
        rows = _tis_exchange(C.tpm2_startup(), 0)
        dev.execute(tpmdev.make_ops(rows[:-1]))  # up to tpmGo
        assert ready.wait(30)
        sts = dev.execute(tpmdev.make_ops([(R_, R.TPM_STS, 4, 0)]))[0]
        assert sts & (R.TPM_STS_VALID | R.TPM_STS_DATA_AVAIL) == R.TPM_STS_VALID | R.TPM_STS_DATA_AVAIL
        assert not dev.busy
