"""Mutated event logs: each one either parses (and then writes back the same
bytes, replays and prints) or raises EventLogError naming where -- never an
IndexError, struct.error or anything else from deep inside.

Deterministic: truncation at every length, every single-bit flip of the
logs' first records, seeded random byte mutations, and Hypothesis with a
derandomised search.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_eventlog_format import legacy_log, linux_log

from tpmdev._cli_eventlog import describe, describe_replay
from tpmdev.errors import EventLogError
from tpmdev.firmware import eventlog as E

SEEDS = {"crypto-agile": linux_log(), "legacy": legacy_log()}


def check_one(data: bytes) -> bool:
    """Parse *data*; True if it parsed. Anything but a well-formed
    EventLogError fails the test."""
    try:
        log = E.parse(data)
    except EventLogError as err:
        assert err.index is not None and err.index >= 0
        assert err.record_offset is not None and 0 <= err.record_offset <= len(data)
        assert err.offset is not None and err.record_offset <= err.offset <= len(data)
        assert err.field and f"byte offset {err.offset}" in str(err)
        return False
    assert log.to_bytes() == data
    E.replay(log)
    assert describe(log) and describe_replay(log)
    return True


@pytest.mark.parametrize("name", SEEDS)
def test_every_truncation(name: str) -> None:
    data = SEEDS[name]
    parsed = [n for n in range(len(data) + 1) if check_one(data[:n])]
    # a cut on a record boundary is a shorter, valid log
    assert parsed[0] == 0 and parsed[-1] == len(data)
    assert len(parsed) == len(E.parse(data).events) + 1


@pytest.mark.parametrize("name", SEEDS)
def test_every_bit_flip(name: str) -> None:
    data = SEEDS[name]
    span = min(len(data), 160)  # the header and the first records: every field kind
    outcomes = set()
    for bit in range(span * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        outcomes.add(check_one(bytes(flipped)))
    assert outcomes == {True, False}


@pytest.mark.parametrize("name", SEEDS)
def test_random_mutations(name: str) -> None:
    data = SEEDS[name]
    rng = random.Random(0x7E57)
    outcomes = []
    for _ in range(2000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(4)
            pos = rng.randrange(len(mutated) + 1)
            if kind == 0 and pos < len(mutated):
                mutated[pos] = rng.randrange(256)
            elif kind == 1:
                mutated[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif kind == 2:
                del mutated[pos : pos + rng.randint(1, 8)]
            else:  # a size or count field set to something big, small or boundary
                value = rng.choice([0, 1, 0xFF, 0x100, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, len(mutated)])
                mutated[pos : pos + 4] = value.to_bytes(4, "little")
        outcomes.append(check_one(bytes(mutated)))
    assert True in outcomes and False in outcomes


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    check_one(data)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SEEDS)),
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=6)), min_size=1, max_size=4),
)
def test_overwritten_fields(name: str, patches: list[tuple[int, bytes]]) -> None:
    mutated = bytearray(SEEDS[name])
    for pos, value in patches:
        at = pos % len(mutated)
        mutated[at : at + len(value)] = value
    check_one(bytes(mutated))
