"""The compiled and the pure-Python TIS models agree on any access sequence.

Both variants come from one source, but C integer types, unsigned wrap and
disabled bounds checks could make them drift apart; Hypothesis drives both
with the same random guest behaviour (including commands left in flight and
completed later) and compares every value read, the IRQ line and the whole
register image. None of it may raise.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpmdev.hw
from tpmdev.hw.tis import REQUEST_COMMAND, REQUEST_ESTABLISHED

RESPONSES = [
    bytes.fromhex("8001 0000000a 00000101"),
    bytes.fromhex("8001 0000000a 00000000"),
    bytes.fromhex("8001 00000014 00000000 0008") + bytes(8),
    bytes.fromhex("00c4 0000000a 00000009"),
    bytes.fromhex("8001 00002000 00000000") + bytes(0x1FF6),  # longer than the buffer
    bytes.fromhex("8001 00000003"),  # a lying, short header
]

# Offsets that matter most, plus anything in the region.
HOT = [0x00, 0x01, 0x08, 0x0B, 0x10, 0x18, 0x19, 0x1A, 0x1B, 0x24, 0x25, 0x26, 0x27, 0x30, 0x32, 0x80, 0xBF]
offsets = st.one_of(
    st.builds(lambda locality, reg: (locality << 12) + reg, st.integers(0, 4), st.sampled_from(HOT)),
    st.integers(0, 0x4FFF),
)
values = st.one_of(
    st.sampled_from([0x02, 0x20, 0x08, 0x10, 0x40, 0x01, 0x00, 0x8000008F, 0x01000000, 0x02000000, 0x80]),
    st.integers(0, 0xFFFFFFFF),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("r"), offsets, st.sampled_from([1, 2, 4]), st.just(0)),
        st.tuples(st.just("w"), offsets, st.sampled_from([1, 2, 4]), values),
        st.tuples(st.just("complete"), st.just(0), st.just(0), st.integers(0, len(RESPONSES) - 1)),
        st.tuples(st.just("reset"), st.just(0), st.just(0), st.sampled_from([1, 2])),
    ),
    max_size=200,
)


class Driver:
    def __init__(self, core_class: type, hold: bool) -> None:
        self.trace: list[object] = []
        self.hold = hold
        self.core = core_class(2, 4096, 5, lambda level: self.trace.append(("irq", level)), self.on_request)

    def on_request(self, kind: int) -> None:
        self.trace.append(("request", kind))
        if kind == REQUEST_COMMAND:
            self.trace.append(self.core.pending_command)
            if not self.hold:
                self.core.complete(RESPONSES[0])
        elif kind == REQUEST_ESTABLISHED:
            self.core.set_established(False)

    def run(self, op: tuple[str, int, int, int]) -> None:
        name, off, size, value = op
        off = min(off, 0x5000 - size)  # stay inside the region: this is guest behaviour
        if name == "r":
            self.trace.append(self.core.read(off, size))
        elif name == "w":
            self.core.write(off, value & ((1 << (8 * size)) - 1), size)
        elif name == "complete":
            self.core.complete(RESPONSES[value])
        else:
            self.core.reset(value, 4096)


@pytest.mark.parametrize("hold", [False, True], ids=["sync", "held"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops)
def test_compiled_and_pure_agree(
    compiled_core_class: type, hold: bool, sequence: list[tuple[str, int, int, int]]
) -> None:
    c = Driver(compiled_core_class, hold)
    py = Driver(tpmdev.hw.pure("tis").TisCore, hold)
    for step, op in enumerate(sequence):
        c.run(op)
        py.run(op)
        assert c.trace == py.trace, f"step {step}: {op}"
    assert bytes(c.core.mmio) == bytes(py.core.mmio)
    assert bytes(c.core.buffer) == bytes(py.core.buffer)
