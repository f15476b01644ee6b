"""The compiled and the pure-Python CRB models agree on any access sequence.

Both variants come from one source, but C integer types, unsigned wrap and
disabled bounds checks could make them drift apart; Hypothesis drives both
with the same random guest behaviour (commands held in flight and completed
or posted later, backend failures, resets, 8-byte and unaligned accesses)
and compares every value read, every request and the whole array. None of it
may raise.

A second property holds between configurations: locality 0 of the
five-locality device behaves exactly as QEMU's one-locality device, but for
INTF_ID.CapLocality.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpmdev.hw
from tpmdev.hw import regs as R
from tpmdev.hw.core import REQUEST_COMMAND, REQUEST_ESTABLISHED

RESPONSES = [
    bytes.fromhex("8001 0000000a 00000101"),
    bytes.fromhex("8001 0000000a 00000000"),
    bytes.fromhex("00c4 0000000a 00000009"),
    bytes.fromhex("8001 00002000 00000000") + bytes(0x1FF6),  # longer than the buffer
    b"",
]

HOT = [0x00, 0x01, 0x04, 0x07, 0x08, 0x09, 0x0C, 0x30, 0x34, 0x40, 0x41, 0x44, 0x48, 0x4B, 0x4C, 0x5C]
HOT += [0x68, 0x7C, 0x80, 0x81, 0x82, 0x84, 0x85, 0xFFC, 0xFF8]
VALUES = [0, 1, 2, 3, 4, 8, 0x100, 0x101, 0xFF, 0x00000001_00000001, 0x0C000000_80018000]


def ops(localities: int) -> st.SearchStrategy[list[tuple[str, int, int, int]]]:
    region = 0x1000 * localities
    offsets = st.one_of(
        st.builds(lambda n, reg: (n << 12) + reg, st.integers(0, localities - 1), st.sampled_from(HOT)),
        st.integers(0, region - 1),
    )
    values = st.one_of(st.sampled_from(VALUES), st.integers(0, 2**64 - 1))
    sizes = st.sampled_from([1, 2, 4, 8])
    return st.lists(
        st.one_of(
            st.tuples(st.just("r"), offsets, sizes, st.just(0)),
            st.tuples(st.just("w"), offsets, sizes, values),
            st.tuples(st.just("w"), offsets, st.just(1), st.sampled_from([1, 2, 4, 8])),
            st.tuples(st.just("complete"), st.integers(0, 1), st.just(0), st.integers(0, len(RESPONSES) - 1)),
            st.tuples(st.just("post"), st.integers(0, 1), st.just(0), st.integers(0, len(RESPONSES) - 1)),
            st.tuples(st.just("reset"), st.just(0), st.just(0), st.sampled_from([0, 1024, 4096])),
            st.tuples(st.just("established"), st.integers(0, 1), st.just(0), st.just(0)),
        ),
        max_size=150,
    )


class Driver:
    def __init__(self, core_class: type, hold: bool, localities: int) -> None:
        self.trace: list[object] = []
        self.hold = hold
        self.established = False
        self.region = 0x1000 * localities
        self.core = core_class(2, 4096, self.on_request, localities)

    def on_request(self, kind: int) -> None:
        self.trace.append(("request", kind))
        if kind == REQUEST_COMMAND:
            self.trace.append(self.core.pending_command)
            if not self.hold:
                self.core.complete(RESPONSES[1])
        elif kind == REQUEST_ESTABLISHED:
            self.core.set_established(self.established)

    def run(self, op: tuple[str, int, int, int]) -> None:
        name, off, size, value = op
        off = min(off, self.region - size)  # stay inside the region: this is guest behaviour
        if name == "r":
            self.trace.append(self.core.read(off, size))
        elif name == "w":
            self.core.write(off, value & ((1 << (8 * size)) - 1), size)
        elif name == "complete":
            self.core.complete(RESPONSES[value], failed=bool(off))
        elif name == "post":
            self.core.post(RESPONSES[value], failed=bool(off))
        elif name == "established":
            self.established = bool(off)
        else:
            self.core.reset(2, value)
        self.trace.append(self.core.executing)


@pytest.mark.parametrize("localities", [1, 5])
@pytest.mark.parametrize("hold", [False, True], ids=["sync", "held"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_compiled_and_pure_agree(
    compiled_crb_core_class: type, hold: bool, localities: int, data: st.DataObject
) -> None:
    sequence = data.draw(ops(localities))
    c = Driver(compiled_crb_core_class, hold, localities)
    py = Driver(tpmdev.hw.pure("crb").CrbCore, hold, localities)
    for step, op in enumerate(sequence):
        c.run(op)
        py.run(op)
        assert c.trace == py.trace, f"step {step}: {op}"
    assert bytes(c.core.mmio) == bytes(py.core.mmio)
    assert c.core.active_locality == py.core.active_locality


def _without_cap_locality(value: int, off: int, size: int) -> int:
    byte = R.TPM_CRB_INTF_ID + 1  # CapLocality is bit 8 of INTF_ID
    if off <= byte < off + size:
        value &= ~(1 << (8 * (byte - off)))
    return value


@pytest.mark.parametrize("hold", [False, True], ids=["sync", "held"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops(1))
def test_locality_zero_of_five_is_qemus_device(
    crb_core_class: type, hold: bool, sequence: list[tuple[str, int, int, int]]
) -> None:
    one = Driver(crb_core_class, hold, 1)
    five = Driver(crb_core_class, hold, 5)
    five.region = 0x1000  # the guest stays in locality 0's window
    for step, op in enumerate(sequence):
        one.run(op)
        five.run(op)
        if op[0] == "r":
            _, off, size, _ = op
            off = min(off, 0x1000 - size)
            five.trace[-2] = _without_cap_locality(five.trace[-2], off, size)  # type: ignore[arg-type]
            one.trace[-2] = _without_cap_locality(one.trace[-2], off, size)  # type: ignore[arg-type]
        assert one.trace == five.trace, f"step {step}: {op}"
    image = bytearray(five.core.mmio[:0x1000])
    image[R.TPM_CRB_INTF_ID + 1] &= ~1
    assert bytes(one.core.mmio) == bytes(image)
