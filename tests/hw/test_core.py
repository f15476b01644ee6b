"""The shared access layer (``tpmdev.hw.core.MmioCore``), on both variants.

``RecordingCore`` has no registers: it logs every aligned piece that
reaches a subclass, so these tests see exactly what the door lets through
and how it cuts an access. The expected pieces follow QEMU's memory core:
naturally aligned, at most four bytes, lowest address first.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import pytest

from tpmdev import AccessError, ConfigurationError, TpmDevError
from tpmdev.hw import regs as R
from tpmdev.hw.core import (
    ACCESS_SIZES,
    REQUEST_CANCEL,
    REQUEST_COMMAND,
    REQUEST_ESTABLISHED,
    REQUEST_RESET_ESTABLISHED,
)

MAX_SSIZE = 2**63 - 1


def expected_pieces(addr: int, size: int) -> list[tuple[int, int]]:
    """QEMU's cut, written independently: the largest power of two that fits
    the rest (at most 4) and divides the address."""
    out = []
    while size:
        piece = next(p for p in (4, 2, 1) if p <= size and addr % p == 0)
        out.append((addr, piece))
        addr += piece
        size -= piece
    return out


def pattern(addr: int, size: int) -> int:
    """What RecordingCore returns for an access: each byte is its piece's offset."""
    value = 0
    for i, (a, p) in enumerate(expected_pieces(addr, size)):
        del i
        for k in range(p):
            value |= (a & 0xFF) << (8 * (a + k - addr))
    return value


class Colour(enum.IntEnum):
    RED = 0x18


def test_request_vocabulary_numbers() -> None:
    # The numbers every core and the device layer share.
    assert (REQUEST_COMMAND, REQUEST_CANCEL, REQUEST_RESET_ESTABLISHED, REQUEST_ESTABLISHED) == (1, 2, 3, 4)
    assert ACCESS_SIZES == (1, 2, 4, 8)


# ---------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_reads_are_cut_as_qemu_cuts_them(recording_core_class: type, size: int) -> None:
    core = recording_core_class()
    for addr in range(0x10, 0x20):
        core.log.clear()
        value = core.read(addr, size)
        assert [(op, a, s) for op, a, s, _ in core.log] == [
            ("r", a, s) for a, s in expected_pieces(addr, size)
        ]
        assert value == pattern(addr, size), hex(addr)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_writes_are_cut_as_qemu_cuts_them(recording_core_class: type, size: int) -> None:
    core = recording_core_class()
    value = 0x8877665544332211 & ((1 << (8 * size)) - 1)
    for addr in range(0x10, 0x20):
        core.log.clear()
        core.write(addr, value, size)
        want = [
            ("w", a, p, (value >> (8 * (a - addr))) & ((1 << (8 * p)) - 1))
            for a, p in expected_pieces(addr, size)
        ]
        assert core.log == want, hex(addr)


def test_split_examples(recording_core_class: type) -> None:
    core = recording_core_class()
    core.read(0x19, 4)
    assert core.log == [("r", 0x19, 1, 0x19), ("r", 0x1A, 2, 0x1A1A), ("r", 0x1C, 1, 0x1C)]
    core.log.clear()
    core.write(0x68, 0x00000000FED40080, 8)  # EDK2's 64-bit RSP_ADDR store: low half first
    assert core.log == [("w", 0x68, 4, 0xFED40080), ("w", 0x6C, 4, 0)]
    core.log.clear()
    assert core.read(0x5C, 8) == 0x6060606000000000 | 0x5C5C5C5C
    core.log.clear()
    core.write(0x19, 0x0807060504030201, 8)
    assert core.log == [
        ("w", 0x19, 1, 0x01),
        ("w", 0x1A, 2, 0x0302),
        ("w", 0x1C, 4, 0x07060504),
        ("w", 0x20, 1, 0x08),
    ]


def test_aligned_accesses_are_not_cut(recording_core_class: type) -> None:
    core = recording_core_class()
    core.read(0x18, 4)
    core.read(0x1A, 2)
    core.write(0x1B, 0xAB, 1)
    assert core.log == [("r", 0x18, 4, 0x18181818), ("r", 0x1A, 2, 0x1A1A), ("w", 0x1B, 1, 0xAB)]


# ---------------------------------------------------------------------------
# The check at the door
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [0x18, np.int64(0x18), np.uint64(0x18), np.int8(0x18), np.uint16(0x18), Colour.RED],
    ids=repr,
)
def test_integers_of_any_kind_are_offsets(recording_core_class: type, offset: Any) -> None:
    core = recording_core_class()
    assert core.read(offset, np.int32(4)) == 0x18181818
    core.write(offset, np.uint8(0x5A), 1)
    core.write(offset, np.uint64(2**64 - 1), 8)
    core.write_many(offset, b"\x01\x02", np.int64(1))
    assert core.read_many(offset, np.int64(1), 1) == b"\x18"
    assert core.log[1] == ("w", 0x18, 1, 0x5A)


@pytest.mark.parametrize(
    "args",
    [
        (True,),
        (False,),
        (np.True_,),
        (1.0,),
        (np.float64(0),),
        (None,),
        ("0",),
        (b"\x00",),
        (0, True),
        (0, 4.0),
        (0, None),
        (0, "4"),
    ],
    ids=repr,
)
def test_non_integers_are_refused(recording_core_class: type, args: tuple[Any, ...]) -> None:
    core = recording_core_class()
    for call in (lambda: core.read(*args), lambda: core.write(args[0], 0, *args[1:])):
        with pytest.raises(AccessError) as info:
            call()
        assert isinstance(info.value, TpmDevError) and isinstance(info.value, ValueError)
        assert "RecordingCore" in str(info.value) and "must be" in str(info.value)
    assert core.log == []


@pytest.mark.parametrize("value", [True, 1.0, None, "1", b"\x01", np.float32(1)], ids=repr)
def test_non_integer_values_are_refused(recording_core_class: type, value: Any) -> None:
    core = recording_core_class()
    with pytest.raises(AccessError, match="value must be an int"):
        core.write(0, value, 1)
    assert core.log == []


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_values_must_fit_the_size(recording_core_class: type, size: int) -> None:
    core = recording_core_class()
    top = (1 << (8 * size)) - 1
    core.write(0x20, 0, size)
    core.write(0x20, top, size)
    for bad in (-1, top + 1, -(2**70), 2**70, 2**64, 2**64 + 1):
        with pytest.raises(AccessError, match="does not fit"):
            core.write(0x20, bad, size)
    assert len(core.log) == 2 * (2 if size == 8 else 1)


def test_sizes_are_the_cores_own(recording_core_class: type) -> None:
    core = recording_core_class(0x1000, (1, 2, 4))
    for size in (1, 2, 4):
        core.read(0, size)
    for size in (0, 3, 5, 6, 7, 8, 9, 16, -1, 2**70):
        with pytest.raises(AccessError, match=r"size must be one of 1, 2, 4 and"):
            core.read(0, size)
        with pytest.raises(AccessError):
            core.write(0, 0, size)
        with pytest.raises(AccessError):
            core.read_many(0, 1, size)
        with pytest.raises(AccessError):
            core.write_many(0, b"", size)
    assert core.access_sizes == (1, 2, 4)


def test_unknown_sizes_cannot_be_configured(recording_core_class: type) -> None:
    with pytest.raises(ValueError):
        recording_core_class(0x1000, (1, 3))
    with pytest.raises(ValueError):
        recording_core_class(0, (1,))


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_region_edges(recording_core_class: type, size: int) -> None:
    core = recording_core_class(0x5000)
    core.read(0x5000 - size, size)
    core.write(0x5000 - size, 0, size)
    for off in (0x5000 - size + 1, 0x5000, -1, -size, 2**62, 2**63 - 1, 2**63, 2**64, 2**70, -(2**70)):
        with pytest.raises(AccessError, match=r"within 0x0\.\.0x4FFF"):
            core.read(off, size)
        with pytest.raises(AccessError):
            core.write(off, 0, size)
    assert core.region_size == 0x5000


def test_no_overflow_at_the_top_of_the_offset_range(recording_core_class: type) -> None:
    # offset + size would overflow a C Py_ssize_t; the check never adds.
    core = recording_core_class(MAX_SSIZE)
    core.read(MAX_SSIZE - 1, 1)
    core.read(MAX_SSIZE - 7, 4)  # 2**63 - 8: aligned
    for off, size in ((MAX_SSIZE - 1, 2), (MAX_SSIZE - 1, 8), (MAX_SSIZE - 3, 4), (MAX_SSIZE, 1)):
        with pytest.raises(AccessError):
            core.read(off, size)
        with pytest.raises(AccessError):
            core.write(off, 0, size)
    assert [entry[1] for entry in core.log] == [MAX_SSIZE - 1, MAX_SSIZE - 7]


# ---------------------------------------------------------------------------
# Repeated accesses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 4, 8])
@pytest.mark.parametrize("offset", [0x24, 0x25, 0x26, 0x80])
def test_many_equals_single_accesses(recording_core_class: type, size: int, offset: int) -> None:
    many, single = recording_core_class(), recording_core_class()
    data = bytes(range(1, 1 + 4 * size))
    many.write_many(offset, data, size)
    for i in range(0, len(data), size):
        single.write(offset, int.from_bytes(data[i : i + size], "little"), size)
    assert many.log == single.log
    got = many.read_many(offset, 5, size)
    want = b"".join(single.read(offset, size).to_bytes(size, "little") for _ in range(5))
    assert got == want and many.log == single.log


@pytest.mark.parametrize(
    "call",
    [
        ("write_many", (0x24, [1, 2])),
        ("write_many", (0x24, "ab")),
        ("write_many", (0x24, b"\x01\x02\x03", 2)),
        ("write_many", (0x1000, b"\x01")),
        ("write_many", (0x24, b"\x01", 3)),
        ("read_many", (0x24, -1)),
        ("read_many", (0x24, 0x1000001)),
        ("read_many", (0x24, 1.0)),
        ("read_many", (0x24, True)),
        ("read_many", ("0x24", 1)),
        ("read_many", (0xFFF, 1, 2)),
    ],
    ids=repr,
)
def test_many_host_misuse(recording_core_class: type, call: tuple[str, tuple[Any, ...]]) -> None:
    core = recording_core_class()
    name, args = call
    with pytest.raises(AccessError, match="RecordingCore"):
        getattr(core, name)(*args)
    assert core.log == []


def test_many_accept_every_bytes_like(recording_core_class: type) -> None:
    core = recording_core_class()
    for data in (b"\x01\x02", bytearray(b"\x01\x02"), memoryview(b"\x01\x02")):
        core.write_many(0x24, data, 2)
    assert core.log == [("w", 0x24, 2, 0x0201)] * 3
    assert core.read_many(0x24, 0) == b""


# ---------------------------------------------------------------------------
# Completion: direct, posted, polled
# ---------------------------------------------------------------------------


def test_complete_reaches_the_subclass(recording_core_class: type) -> None:
    core = recording_core_class()
    core.complete(b"\x80\x01", True)
    core.complete(bytearray(b"\x00\xc4"), failed=1)
    assert core.log == [("complete", b"\x80\x01", True, False), ("complete", b"\x00\xc4", False, True)]
    for bad in (5, "x", None):
        with pytest.raises(AccessError, match="bytes-like"):
            core.complete(bad)
        with pytest.raises(AccessError, match="bytes-like"):
            core.post(bad)


@pytest.mark.parametrize(
    "access",
    [
        lambda c: c.read(0x10, 1),
        lambda c: c.write(0x10, 1, 1),
        lambda c: c.read_many(0x10, 1),
        lambda c: c.write_many(0x10, b"\x01"),
    ],
    ids=["read", "write", "read_many", "write_many"],
)
def test_posted_completion_is_applied_before_the_next_access(recording_core_class: type, access: Any) -> None:
    core = recording_core_class()
    response = bytearray(b"\x80\x01\x00\x00\x00\x0a")
    core.post(response, failed=True)
    response[0] = 0  # post copies
    assert core.log == []
    access(core)
    assert core.log[0] == ("complete", b"\x80\x01\x00\x00\x00\x0a", False, True)
    assert core.log[1][:2] in (("r", 0x10), ("w", 0x10))
    assert core.poll() is False


def test_poll(recording_core_class: type) -> None:
    core = recording_core_class()
    assert core.poll() is False
    core.post(b"\x01", selftest_done=True)
    assert core.poll() is True
    assert core.poll() is False
    assert core.log == [("complete", b"\x01", True, False)]


def test_a_refused_access_does_not_apply_a_posted_completion(recording_core_class: type) -> None:
    core = recording_core_class()
    core.post(b"\x01")
    with pytest.raises(AccessError):
        core.read(0x1000)
    with pytest.raises(AccessError):
        core.write(0, 0x100, 1)
    assert core.log == []
    assert core.poll() is True


# ---------------------------------------------------------------------------
# Every register core goes through this one door
# ---------------------------------------------------------------------------

ENTRY_POINTS = ("read", "write", "read_many", "write_many", "complete", "post", "poll", "set_established")


def test_cores_inherit_every_entry_point(impl: str, core_class: type, crb_core_class: type) -> None:
    import tpmdev.hw

    base = (tpmdev.hw.core if impl == "c" else tpmdev.hw.pure("core")).MmioCore
    for cls in (core_class, crb_core_class):
        assert issubclass(cls, base)
        assert [name for name in ENTRY_POINTS if name in vars(cls)] == []


MISUSE = [
    ("read", (True, 1)),
    ("read", (np.float64(0), 1)),
    ("read", (None, 4)),
    ("read", (0x10, 3)),
    ("read", (0x10, True)),
    ("read", (-1, 1)),
    ("read", (2**64, 4)),
    ("read", (np.uint64(2**64 - 1), 1)),
    ("write", (0x10, -1, 1)),
    ("write", (0x10, 1.0, 1)),
    ("write", (0x10, np.int8(-1), 1)),
    ("write", (0x10, 0x100, 1)),
    ("write", (0x10, 2**64, 4)),
    ("read_many", (0x24, True)),
    ("read_many", (0x24, -1)),
    ("read_many", (0x24, 2**64)),
    ("write_many", (0x24, [1])),
    ("write_many", (0x24, b"\x01\x02\x03", 2)),
    ("complete", ("x",)),
    ("post", (5,)),
]


@pytest.mark.parametrize("call", MISUSE, ids=repr)
def test_cores_refuse_as_the_door_does(
    recording_core_class: type, core_class: type, crb_core_class: type, call: tuple[str, tuple[Any, ...]]
) -> None:
    # Word for word the base's refusal, with the core's name, region and sizes.
    name, args = call
    for core, door, label in (
        (core_class(2, 4096), recording_core_class(0x5000, (1, 2, 4)), "TIS"),
        (crb_core_class(2, 3968), recording_core_class(0x1000, (1, 2, 4, 8)), "CRB"),
    ):
        with pytest.raises(AccessError) as want:
            getattr(door, name)(*args)
        with pytest.raises(AccessError) as got:
            getattr(core, name)(*args)
        assert str(got.value) == str(want.value).replace("RecordingCore", label)
        assert str(got.value).startswith(f"{label} ")


# ---------------------------------------------------------------------------
# The established flag from a source: one call per read, nothing cached
# ---------------------------------------------------------------------------


@pytest.fixture(params=["TIS", "CRB"])
def flag_core(request: pytest.FixtureRequest, core_class: type, crb_core_class: type) -> Any:
    """(core, name, register showing the flag in bit 0 as "not established", another register, requests)."""
    asked: list[int] = []
    if request.param == "TIS":
        core = core_class(2, 4096, 5, None, asked.append)
        return core, "TIS", R.TPM_ACCESS, R.TPM_STS, asked
    core = crb_core_class(2, 3968, asked.append)
    return core, "CRB", R.TPM_LOC_STATE, R.TPM_LOC_STS, asked


def test_established_source_answers_every_read(flag_core: Any) -> None:
    core, _, reg, other, asked = flag_core
    answers: list[object] = [True, False, 1, 0, None, "yes", np.True_]
    calls: list[object] = []

    def source() -> object:
        calls.append(answers[len(calls)] if len(calls) < len(answers) else False)
        return calls[-1]

    core.set_established_source(source)
    assert [core.read(reg, 1) & 1 for _ in answers] == [0, 1, 0, 1, 1, 0, 0]  # bit 0: NOT established
    assert calls == answers and asked == []  # one call per read, no request round trip
    core.read(other)
    core.read(other, 1)
    assert len(calls) == len(answers)  # only the register showing the flag asks
    core.reset(2, 3968)
    assert core.read(reg, 1) & 1 == 1 and len(calls) == len(answers) + 1  # kept across a reset
    core.set_established_source(None)  # back to the request
    assert core.read(reg, 1) & 1 == 1 and asked == [REQUEST_ESTABLISHED]


def test_established_source_must_be_callable(flag_core: Any) -> None:
    core, name, reg, _, asked = flag_core
    for bad in (True, 5, "source"):
        with pytest.raises(ConfigurationError, match=f"^{name} set_established_source"):
            core.set_established_source(bad)
    assert core.read(reg, 1) & 1 == 1 and asked == [REQUEST_ESTABLISHED]
