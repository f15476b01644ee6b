"""State capture in the register cores: ``capture()`` / ``restore()``.

A core captured at any point of a random guest exchange and restored into a
fresh core -- of the same variant or of the other one -- goes on exactly as
the original: every value read, the IRQ line, and the next capture agree.
The compiled and the pure-Python cores capture the same tuple.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpmdev.hw
from tpmdev.hw.core import REQUEST_COMMAND

RESPONSE = bytes.fromhex("8001 00000010 00000000") + b"resp"
COMMAND = bytes.fromhex("8001 0000000c 00000144 0000")

TIS_HOT = [0x00, 0x08, 0x10, 0x18, 0x24, 0x2000, 0x2018, 0x2024, 0x3000, 0x3018]
CRB_HOT = [0x00, 0x08, 0x0C, 0x40, 0x44, 0x48, 0x4C, 0x80, 0x84, 0x1008, 0x104C, 0x1080]
VALUES = [0x01, 0x02, 0x08, 0x20, 0x40, 0x80000087, 0x0C, 0x80, 0x01000000]


def ops(hot: list[int], region: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    offset = st.one_of(st.sampled_from(hot), st.integers(0, region - 4).map(lambda x: x & ~3))
    return st.lists(
        st.one_of(
            st.tuples(st.just("r"), offset, st.sampled_from([1, 4])),
            st.tuples(st.just("w"), offset, st.sampled_from([1, 4]), st.sampled_from(VALUES)),
            st.tuples(st.just("cmd"), st.sampled_from(hot)),
            st.tuples(st.just("complete")),
        ),
        max_size=60,
    )


class Owner:
    """Answers commands later (``complete`` ops), records the IRQ line."""

    def __init__(self) -> None:
        self.core: Any = None
        self.irq: list[int] = []

    def request(self, kind: int) -> None:
        del kind  # (commands wait for a "complete" op; other requests need no answer)


def make(kind: str, variant: str) -> tuple[Any, Owner]:
    source = tpmdev.hw if variant == "c" else tpmdev.hw.pure
    owner = Owner()
    if kind == "tis":
        module = source.tis if variant == "c" else source("tis")  # type: ignore[operator]
        owner.core = module.TisCore(2, 4096, 5, owner.irq.append, owner.request)
    else:
        module = source.crb if variant == "c" else source("crb")  # type: ignore[operator]
        owner.core = module.CrbCore(2, 3968, owner.request, 5)
    return owner.core, owner


def play(core: Any, op: tuple[Any, ...]) -> object:
    if op[0] == "r":
        return core.read(op[1], op[2])
    if op[0] == "w":
        return core.write(op[1], op[3] & ((1 << (8 * op[2])) - 1), op[2])
    if op[0] == "cmd":
        # a command written where the op points (a FIFO, or a CRB buffer and START)
        for i, byte in enumerate(COMMAND):
            core.write(op[1] + (i if op[1] & 0xFFF >= 0x80 and op[1] & 0xFFF != 0x24 else 0), byte, 1)
        return None
    return core.complete(RESPONSE)


def check(
    kind: str, variants: tuple[str, str], before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]
) -> None:
    a, _ = make(kind, variants[0])
    for op in before:
        play(a, op)
    state = a.capture()
    b, owner_b = make(kind, variants[1])
    b.restore(state, 2, 4096 if kind == "tis" else 3968)
    assert b.capture() == state
    for op in after:
        assert play(a, op) == play(b, op), op
        if kind == "tis":
            assert a.irq_level == b.irq_level
    assert a.capture() == b.capture()
    if kind == "tis" and state[8]:
        assert owner_b.irq[0] == 1  # the restore raised the fresh core's line


@pytest.mark.parametrize("kind", ["tis", "crb"])
def test_restore_continues_as_the_original(kind: str, impl: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        ops(TIS_HOT if kind == "tis" else CRB_HOT, 0x5000), ops(TIS_HOT if kind == "tis" else CRB_HOT, 0x5000)
    )
    def run(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> None:
        check(kind, (impl, impl), before, after)

    run()


@pytest.mark.parametrize("kind", ["tis", "crb"])
def test_variants_capture_the_same_and_take_each_others(kind: str, compiled_core_class: type) -> None:
    del compiled_core_class  # (needs the compiled models)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        ops(TIS_HOT if kind == "tis" else CRB_HOT, 0x5000), ops(TIS_HOT if kind == "tis" else CRB_HOT, 0x5000)
    )
    def run(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> None:
        c, _ = make(kind, "c")
        py, _ = make(kind, "py")
        for op in before:
            assert play(c, op) == play(py, op)
        assert c.capture() == py.capture()
        check(kind, ("c", "py"), before, after)
        check(kind, ("py", "c"), before, after)

    run()


def test_restore_tells_the_irq_line(impl: str) -> None:
    core, owner = make("tis", impl)
    quiet = core.capture()
    core.write(0x000, 0x02, 1)
    core.write(0x008, 0x80000080)
    core.write(0x018, 0x40)  # commandReady raises the line
    assert owner.irq == [1]
    raised = core.capture()
    core.restore(quiet, 2, 4096)
    core.restore(quiet, 2, 4096)
    assert owner.irq == [1, 0] and core.irq_level == 0
    core.restore(raised, 2, 4096)
    assert owner.irq == [1, 0, 1]


def test_restore_drops_nothing_posted(impl: str) -> None:
    """A completion posted but not applied is part of the state."""
    core, _ = make("tis", impl)
    core.write(0x000, 0x02, 1)
    core.write(0x018, 0x40)
    for byte in COMMAND:
        core.write(0x024, byte, 1)
    core.write(0x018, 0x20)
    core.post(RESPONSE)
    state = core.capture()
    assert state[9] == (RESPONSE, False, False)
    other, _ = make("tis", impl)
    other.restore(state, 2, 4096)
    assert other.read_many(0x024, len(RESPONSE)) == RESPONSE


def test_request_command_is_what_the_owner_sees() -> None:
    assert REQUEST_COMMAND == 1
