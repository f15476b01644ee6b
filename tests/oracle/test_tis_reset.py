"""Reset values: every register slot of every locality, every byte lane.

QEMU 7.2 (spec 0.3, 1.2): ACCESS 0x81, INT_ENABLE 0x08, INT_VECTOR = irq,
INTF_CAPABILITY 0x30000697 / 0x20000697, INTERFACE_ID 0x00002100 /
0xFFFFFFFF, DID_VID 0x00011014, RID 1, STS and FIFO 0xFFFFFFFF unless the
locality is active, everything else 0xFFFFFFFF.
"""

from __future__ import annotations

import pytest

from .conftest import Pair

pytestmark = pytest.mark.oracle

#: Slots with a register behind them, plus reserved neighbours and the
#: last slot of the window.
LANE_SLOTS = (
    0x000, 0x004, 0x008, 0x00C, 0x010, 0x014, 0x018, 0x01C, 0x020, 0x024, 0x028,
    0x02C, 0x030, 0x034, 0x07C, 0x080, 0x0A0, 0x0BC, 0x0C0, 0xF00, 0xF04, 0xF08,
    0xF8C, 0xF90, 0xF94, 0xFFC,
)  # fmt: skip


def read_all_slots(pair: Pair) -> None:
    for loc in range(5):
        for off in range(0, 0x1000, 4):
            pair.readl(loc << 12 | off)


def read_all_lanes(pair: Pair, localities: range = range(5)) -> None:
    for loc in localities:
        for slot in LANE_SLOTS:
            for lane in range(4):
                for size in (1, 2, 4):
                    addr = loc << 12 | slot | lane
                    if addr + size <= 0x5000:  # past the window is PPI, not TIS
                        pair.read(addr, size)


def test_reset_values_no_locality(pair: Pair) -> None:
    read_all_slots(pair)
    assert pair.readl(0x000) == 0x81
    assert pair.readl(0x014) == (0x30000697 if pair.tpm2 else 0x20000697)
    assert pair.readl(0x030) == (0x00002100 if pair.tpm2 else 0xFFFFFFFF)
    assert pair.readl(0x018) == 0xFFFFFFFF


@pytest.mark.parametrize("active", range(4))
def test_reset_values_active_locality(pair: Pair, active: int) -> None:
    pair.request(active)
    read_all_slots(pair)
    assert pair.readl(active << 12 | 0x018) == (0x04100000 if pair.tpm2 else 0x00100000)


def test_byte_lanes_no_locality(pair: Pair) -> None:
    read_all_lanes(pair)


def test_byte_lanes_active_locality(pair: Pair) -> None:
    pair.request(2)
    read_all_lanes(pair)
    # Spec 0.2: the one-byte clamp of the burst count applies to every lane.
    assert pair.readb(0x2019) == 0xFF
    assert pair.readb(0x201A) == 0x00
    assert pair.readl(0x2019) == (0xFF0410FF if pair.tpm2 else 0xFF0010FF)


def test_system_reset_restores_reset_values(pair: Pair) -> None:
    """Reset after activity in every register family conforms."""
    pair.request(1)
    pair.writel(0x1008, 0x8000008F)
    pair.request(3)  # pending
    pair.writeb(0x1032, 0x08)  # INTERFACE_ID bit 19
    pair.writel(0x1018, 0x40)
    pair.writeb(0x1024, 0x80)
    pair.reset()
    read_all_slots(pair)
    read_all_lanes(pair, range(0, 5, 2))
    pair.request(0)
    read_all_slots(pair)


@pytest.mark.parametrize("irq_num", [11, 15])
def test_int_vector_follows_irq_property(make_pair, tpm2: bool, irq_num: int) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(tpm2, irq_num=irq_num)
    for loc in range(5):
        for size in (1, 2, 4):
            assert pair.read(loc << 12 | 0x00C, size) == irq_num
