"""The compiled and the pure-Python TIS models agree on any access sequence.

Both variants come from one source, but C integer types, unsigned wrap and
disabled bounds checks could make them drift apart; Hypothesis drives both
with the same random guest behaviour (including commands left in flight and
completed later) and compares every value read, the IRQ line and the whole
register image. None of it may raise.
"""

from __future__ import annotations

from typing import Any

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

# Guest macros that random single accesses seldom compose: a locality takes
# the TPM and runs a command, fills the buffer or reads a FIFO byte, and maybe
# relinquishes. FILL announces the whole buffer and brings more bytes than fit.
# PRIMED leaves three localities with unread responses and the buffer filled
# by the fourth, from where reads go past the end of the buffer (QEMU reads
# its own state there); half of the sequences start from it.
STARTUP = bytes.fromhex("8001 0000000c 00000144 0000")
FILL = bytes.fromhex("8001 00001000") + bytes(4100)
PRIMED = [
    ("macro", 0, True, "run"),
    ("macro", 2, True, "run"),
    ("macro", 3, True, "run"),
    ("macro", 1, True, "fill"),
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
        st.tuples(st.just("complete"), st.just(0), st.booleans(), st.integers(0, len(RESPONSES) - 1)),
        st.tuples(
            st.just("macro"), st.integers(0, 3), st.booleans(), st.sampled_from(["run", "fill", "read"])
        ),
        st.tuples(st.just("reset"), st.just(0), st.just(0), st.sampled_from([1, 2])),
    ),
    max_size=200,
)


class Driver:
    def __init__(self, core_class: type, hold: bool, int_any_locality: bool) -> None:
        self.trace: list[object] = []
        self.hold = hold
        self.core = core_class(
            2,
            4096,
            5,
            lambda level: self.trace.append(("irq", level)),
            self.on_request,
            int_any_locality=int_any_locality,
        )

    def on_request(self, kind: int) -> None:
        self.trace.append(("request", kind))
        if kind == REQUEST_COMMAND:
            self.trace.append(self.core.pending_command)
            if not self.hold:
                self.core.complete(RESPONSES[0])
        elif kind == REQUEST_ESTABLISHED:
            self.core.set_established(False)

    def macro(self, locality: int, kind: str, relinquish: bool) -> None:
        base = locality << 12
        self.core.write(base, 0x02, 1)  # requestUse
        if kind == "read":
            self.trace.append(self.core.read(base + 0x24, 1))
        else:
            self.core.write(base + 0x18, 0x40, 1)
            self.core.write(base + 0x18, 0x40, 1)
            self.core.write_many(base + 0x24, FILL if kind == "fill" else STARTUP)
            if kind == "run":
                self.core.write(base + 0x18, 0x20, 1)  # tpmGo
        if relinquish:
            self.core.write(base, 0x20, 1)

    def run(self, op: tuple[str, int, Any, Any]) -> None:
        name, off, size, value = op
        if name == "r":
            off = min(off, 0x5000 - size)  # stay inside the region: this is guest behaviour
            self.trace.append(self.core.read(off, size))
        elif name == "w":
            off = min(off, 0x5000 - size)
            self.core.write(off, value & ((1 << (8 * size)) - 1), size)
        elif name == "complete":
            self.core.complete(RESPONSES[value], False, bool(size))  # (size: the failed flag)
        elif name == "macro":
            self.macro(off, value, size)
        else:
            self.core.reset(value, 4096)


@pytest.mark.parametrize("hold", [False, True], ids=["sync", "held"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops, int_any_locality=st.booleans(), primed=st.booleans())
def test_compiled_and_pure_agree(
    compiled_core_class: type,
    hold: bool,
    int_any_locality: bool,
    primed: bool,
    sequence: list[tuple[str, int, Any, Any]],
) -> None:
    c = Driver(compiled_core_class, hold, int_any_locality)
    py = Driver(tpmdev.hw.pure("tis").TisCore, hold, int_any_locality)
    if primed:
        sequence = PRIMED + sequence
    for step, op in enumerate(sequence):
        c.run(op)
        py.run(op)
        assert c.trace == py.trace, f"step {step}: {op}"
    assert bytes(c.core.mmio) == bytes(py.core.mmio)
    assert bytes(c.core.buffer) == bytes(py.core.buffer)
