"""Locality arbitration through ACCESS writes (spec 1.6, 10.1, 0.3).

The three sequences of QEMU's own tpm-tis-test (check_access_reg,
check_access_reg_seize, check_access_reg_release) and the extra cases the
oracle was probed with. Every read is compared with tpmdev; the values the
spec states are asserted too (on QEMU's reading).
"""

from __future__ import annotations

import pytest

from .conftest import Pair

pytestmark = pytest.mark.oracle

VALID, ACTIVE, SEIZED, SEIZE, PENDING, REQUEST, EST = 0x80, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01


def acc(loc: int) -> int:
    return loc << 12


def test_localities(pair: Pair) -> None:
    for loc in range(5):
        assert pair.readb(acc(loc)) == 0x81
        pair.readl(loc << 12 | 0x014)
        pair.readl(loc << 12 | 0x030)
        pair.readl(loc << 12 | 0xF00)
        pair.readl(loc << 12 | 0xF04)


def test_check_access_reg(pair: Pair) -> None:
    for loc in range(4):
        assert pair.readb(acc(loc)) == 0x81
        pair.writeb(acc(loc), REQUEST)
        assert pair.readb(acc(loc)) == 0xA1
        pair.writeb(acc(loc), ACTIVE)
        assert pair.readb(acc(loc)) == 0x81


def test_check_access_reg_seize(pair: Pair) -> None:
    pending = 0
    for first in range(4):
        assert pair.readb(acc(first)) == 0x81
        pair.writeb(acc(first), REQUEST)
        assert pair.readb(acc(first)) == 0xA1
        for low in range(first):
            assert pair.readb(acc(low)) == 0x81 | pending
            pair.writeb(acc(low), REQUEST)
            assert pair.readb(acc(low)) == 0x83 | pending
            assert pair.readb(acc(first)) == 0xA5
            pair.writeb(acc(low), SEIZE)
            assert pair.readb(acc(low)) == 0x83 | pending
            assert pair.readb(acc(first)) == 0xA5
            pending = PENDING
        for high in range(first + 1, 4):
            pair.writeb(acc(high), REQUEST)
            assert pair.readb(acc(high)) == 0x83 | pending
            assert pair.readb(acc(high - 1)) == 0xA5
            pair.writeb(acc(high), SEIZE)
            assert pair.readb(acc(high)) == 0xA1 | pending
            assert pair.readb(acc(high - 1)) == 0x91 | pending
            pair.writeb(acc(high - 1), SEIZED)
            assert pair.readb(acc(high - 1)) == 0x81 | pending
        if first <= 1:
            pending = 0
        pair.writeb(acc(3), ACTIVE)
        assert pair.readb(acc(3)) == 0x81 | pending
        for low in range(first - 1, -1, -1):
            assert pair.readb(acc(low)) == 0xA1 | pending
            pair.writeb(acc(low), ACTIVE)
            if low == 1:
                pending = 0
        for loc in range(4):
            assert pair.readb(acc(loc)) == 0x81


def test_check_access_reg_release(pair: Pair) -> None:
    for first in range(3, -1, -1):
        pending = 0
        assert pair.readb(acc(first)) == 0x81
        pair.writeb(acc(first), REQUEST)
        assert pair.readb(acc(first)) == 0xA1
        for loc in range(4):
            if loc == first:
                continue
            pair.writeb(acc(loc), REQUEST)
            assert pair.readb(acc(loc)) == 0x83 | pending
            pending = PENDING
        pair.writeb(acc(first), ACTIVE)
        for loc in range(3, -1, -1):
            if loc == first:
                continue
            assert pair.readb(acc(loc)) == 0xA1 | pending
            pair.writeb(acc(loc), ACTIVE)
            if loc == 1 or (first <= 1 and loc == 2):
                pending = 0
            assert pair.readb(acc(loc)) == 0x81 | pending


def read_all_access(pair: Pair) -> list[int]:
    return [pair.readl(acc(loc)) for loc in range(5)]


# Each case: a list of (locality, value written to ACCESS as a byte) and the
# ACCESS values of localities 0..4 read afterwards (QEMU 7.2, spec 0.3).
CASES = {
    "pending_seen_from_locality_4": ([(0, REQUEST), (2, REQUEST)], [0xA5, 0x85, 0x83, 0x85, 0x85]),
    "non_active_relinquish_cancels_request": ([(0, REQUEST), (2, REQUEST), (2, ACTIVE)], [0xA1, 0x81, 0x81, 0x81, 0x81]),  # noqa: E501
    "request_by_active_changes_nothing": ([(1, REQUEST), (1, REQUEST)], [0x81, 0xA1, 0x81, 0x81, 0x81]),
    "seize_by_equal_changes_nothing": ([(1, REQUEST), (1, SEIZE)], [0x81, 0xA1, 0x81, 0x81, 0x81]),
    "seize_by_lower_changes_nothing": ([(2, REQUEST), (1, SEIZE)], [0x81, 0x81, 0xA1, 0x81, 0x81]),
    "seize_without_active_takes_tpm": ([(2, SEIZE)], [0x81, 0x81, 0xA1, 0x81, 0x81]),
    "seize_plus_request_is_seize": ([(0, REQUEST), (2, SEIZE | REQUEST)], [0x91, 0x81, 0xA1, 0x81, 0x81]),
    "request_by_active_with_pending": ([(0, REQUEST), (1, REQUEST), (0, REQUEST)], [0xA5, 0x83, 0x85, 0x85, 0x85]),  # noqa: E501
    "seize_with_waiting_requester": ([(1, REQUEST), (0, REQUEST), (3, SEIZE)], [0x83, 0x95, 0x85, 0xA5, 0x85]),  # noqa: E501
    "been_seized_survives_handover": ([(0, REQUEST), (1, SEIZE), (2, REQUEST), (1, ACTIVE), (2, ACTIVE)], [0x91, 0x81, 0x81, 0x81, 0x81]),  # noqa: E501
    "been_seized_cleared_by_0x10": ([(0, REQUEST), (1, SEIZE), (0, SEIZED)], [0x81, 0xA1, 0x81, 0x81, 0x81]),
    "locality_4_writes_dropped": ([(4, REQUEST), (4, SEIZE)], [0x81, 0x81, 0x81, 0x81, 0x81]),
    "relinquish_hands_to_highest": ([(0, REQUEST), (1, REQUEST), (3, REQUEST), (2, REQUEST), (0, ACTIVE)], [0x85, 0x87, 0x87, 0xA5, 0x85]),  # noqa: E501
    "relinquish_plus_request": ([(0, REQUEST), (0, ACTIVE | REQUEST)], [0x81, 0x81, 0x81, 0x81, 0x81]),
    "all_bits_is_seize": ([(1, REQUEST), (2, 0xFF)], [0x81, 0x91, 0xA1, 0x81, 0x81]),
    "lower_seize_while_higher_pending": ([(0, REQUEST), (3, REQUEST), (3, SEIZE), (2, SEIZE)], [0x91, 0x81, 0x81, 0xA1, 0x81]),  # noqa: E501
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_arbitration_case(pair: Pair, case: str) -> None:
    writes, expected = CASES[case]
    for loc, value in writes:
        pair.writeb(acc(loc), value)
        read_all_access(pair)
    got = read_all_access(pair)
    assert got == expected, f"QEMU gave {[hex(v) for v in got]}"


def test_write_at_access_plus_one_does_nothing(pair: Pair) -> None:
    for lane in (1, 2, 3):
        pair.writeb(acc(0) + lane, REQUEST)
        read_all_access(pair)
    pair.writew(acc(0) + 2, 0x0202)
    read_all_access(pair)
    assert pair.readb(acc(0)) == 0x81


def test_word_write_relinquishes(pair: Pair) -> None:
    pair.request(1)
    pair.writew(acc(1), 0x2020)
    assert read_all_access(pair) == [0x81] * 5
    pair.writel(acc(1), 0x02020202)
    read_all_access(pair)
    pair.writel(acc(1), 0x20)
    read_all_access(pair)


def test_reset_drops_pending_requests(pair: Pair) -> None:
    pair.request(0)
    for loc in (1, 2, 3):
        pair.writeb(acc(loc), REQUEST)
    pair.writeb(acc(3), SEIZE)
    read_all_access(pair)
    pair.reset()
    assert read_all_access(pair) == [0x81] * 5
