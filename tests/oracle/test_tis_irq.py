"""Interrupts: INT_ENABLE, INT_STATUS and the IRQ line (spec 1.10, 0.1, 0.3).

The pair compares the line level after every step (QEMU's through
``irq_intercept_in ioapic``, tpmdev's through its ``irq`` callback); the
tests read INT_ENABLE / INT_STATUS of every locality between steps.
"""

from __future__ import annotations

import pytest

from .commands import TPM2, TPM12
from .conftest import Pair

pytestmark = pytest.mark.oracle

INTE, INTS, STS, FIFO = 0x008, 0x010, 0x018, 0x024
ALL = 0x8000008F


def status(pair: Pair) -> None:
    for loc in range(5):
        pair.readl(loc << 12 | INTE)
        pair.readl(loc << 12 | INTS)


def test_int_enable_only_from_active_locality(pair: Pair) -> None:
    """QEMU 7.2 drops INT_ENABLE writes of a non-active locality (spec 0.1 row 1,
    which the later sections of the spec, written for upstream, contradict)."""
    pair.writel(INTE, ALL)
    assert pair.readl(INTE) == 0x08
    pair.request(0)
    pair.writel(0x2000 | INTE, ALL)
    assert pair.readl(0x2000 | INTE) == 0x08
    pair.writel(INTE, ALL)
    assert pair.readl(INTE) == ALL
    pair.relinquish(0)
    pair.writel(INTE, 0)
    assert pair.readl(INTE) == ALL
    status(pair)


def test_int_enable_byte_lanes(pair: Pair) -> None:
    pair.request(1)
    base = 0x1000 | INTE
    for lane in range(4):
        for value in (0xFF, 0x00, 0x9F, 0x80):
            pair.writeb(base + lane, value)
            pair.readl(base)
    for lane in range(4):
        pair.writew(base + lane, 0xFFFF)
        pair.readl(base)
        pair.writew(base + lane, 0)
        pair.readl(base)
    pair.writel(base + 1, 0xFFFFFFFF)
    pair.readl(base)
    pair.writel(base + 3, 0x0)
    pair.readl(base)


def test_locality_change_and_status_clear(pair: Pair) -> None:
    """Spec 0.1 row 2: INT_STATUS clears only from the active locality."""
    pair.request(1)
    pair.writel(0x1000 | INTE, ALL)
    pair.writel(0x1000 | STS, 0x40)  # commandReady interrupt
    status(pair)
    pair.relinquish(1)
    pair.request(2)
    pair.writel(0x1000 | INTS, 0x80)  # dropped: locality 1 is not active
    status(pair)
    pair.relinquish(2)
    pair.request(1)  # localityChange
    status(pair)
    pair.writel(0x1000 | INTS, 0x84)
    status(pair)


def test_full_command_interrupts(pair: Pair) -> None:
    cmd = (TPM2 if pair.tpm2 else TPM12)["startup"]
    pair.request(0)
    pair.writel(INTE, ALL)
    status(pair)
    pair.writel(STS, 0x40)
    status(pair)
    pair.writel(INTS, 0xFF)
    for byte in cmd:
        pair.writeb(FIFO, byte)
        pair.readl(INTS)
    pair.writeb(STS, 0x20)
    status(pair)
    for _ in range(10):
        pair.readb(FIFO)
        pair.readl(INTS)
    status(pair)
    pair.writel(INTS, 0x03)
    pair.writeb(STS, 0x02)  # responseRetry: no interrupt
    status(pair)
    pair.writel(STS, 0x40)  # COMPLETION -> READY
    status(pair)
    pair.writel(STS, 0x40)  # READY -> READY: none
    status(pair)
    pair.writel(INTS, 0x87)
    status(pair)
    pair.relinquish(0)  # nobody waiting: none
    status(pair)


@pytest.mark.parametrize("enable", [0x80000001, 0x80000002, 0x80000004, 0x80000080, 0x0000008F, 0x80000000])
def test_single_enables(pair: Pair, enable: int) -> None:
    cmd = (TPM2 if pair.tpm2 else TPM12)["startup"]
    pair.request(0)
    pair.writel(INTE, enable)
    pair.relinquish(0)
    pair.request(0)
    status(pair)
    pair.writel(STS, 0x40)
    for byte in cmd:
        pair.writeb(FIFO, byte)
    pair.writeb(STS, 0x20)
    status(pair)
    for _ in range(10):
        pair.readb(FIFO)
    status(pair)
    pair.writel(STS, 0x40)
    status(pair)
    pair.writel(INTS, 0x87)
    status(pair)


def test_two_localities_pending(pair: Pair) -> None:
    """Clearing one locality to zero lowers the shared line (QUIRK)."""
    for loc in (0, 1):
        pair.request(loc)
        pair.writel(loc << 12 | INTE, ALL)
        pair.writel(loc << 12 | STS, 0x40)
        pair.relinquish(loc)
    status(pair)
    pair.request(1)
    pair.writel(0x1000 | INTS, 0x84)
    status(pair)
    pair.relinquish(1)
    pair.request(0)
    pair.writel(INTS, 0x01)  # a bit that is not pending
    status(pair)
    pair.writel(INTS, 0x80)
    status(pair)


def test_reset_keeps_line_raised(pair: Pair) -> None:
    """Reset clears INT_STATUS but does not lower the line (QUIRK)."""
    pair.request(2)
    pair.writel(0x2000 | INTE, ALL)
    pair.writel(0x2000 | STS, 0x40)
    status(pair)
    pair.reset()
    status(pair)
    pair.request(2)
    pair.writel(0x2000 | INTE, ALL)
    pair.relinquish(2)
    pair.request(2)
    pair.writel(0x2000 | INTS, 0x04)
    status(pair)


def test_interface_id_bit_19(pair: Pair) -> None:
    pair.writeb(0x4032, 0x08)  # locality 4: dropped
    for loc in range(5):
        pair.readl(loc << 12 | 0x030)
    pair.writeb(0x1032, 0x08)  # non-active locality 1, byte at 0x32
    for loc in range(5):
        pair.readl(loc << 12 | 0x030)
    pair.writel(0x2030, 0xFFFFFFFF)
    for loc in range(5):
        pair.readl(loc << 12 | 0x030)
    pair.reset()
    for loc in range(5):
        pair.readl(loc << 12 | 0x030)
