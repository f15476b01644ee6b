"""Seeded random register traffic, and every size and lane of every register.

The random sequences mix ACCESS / STS / FIFO / XDATA_FIFO / INT_ENABLE /
INT_STATUS / INTERFACE_ID writes and reads at random sizes, byte lanes and
localities, complete well-formed commands and machine resets. FIFO data
always comes from a well-formed command (in order, so a tpmGo usually sends
a real command); the pair refuses any tpmGo whose buffered command would
leave swtpm waiting or answer non-reproducibly, and the sequence then just
skips that step.
"""

from __future__ import annotations

import random

import pytest

from .commands import TPM2, TPM12
from .conftest import Pair, UnsafeGo

pytestmark = pytest.mark.oracle

READ_SLOTS = (
    0x000,
    0x004,
    0x008,
    0x00C,
    0x010,
    0x014,
    0x018,
    0x01C,
    0x024,
    0x028,
    0x030,
    0x080,
    0x0A4,
    0x0BC,
    0xF00,
    0xF04,
)
FIFO_SLOTS = (0x024, 0x024, 0x024, 0x080, 0x09C, 0x0BC)
ACCESS_VALUES = (0x02, 0x02, 0x20, 0x20, 0x08, 0x10, 0x0A, 0x22, 0x01, 0x04)
STS_VALUES = (0x40, 0x40, 0x20, 0x20, 0x02, 0x60, 0x42, 0x01000000, 0x02000000, 0x00000040)
INTE_VALUES = (0x8000008F, 0x80000001, 0x80000080, 0x00000004, 0x8000009F, 0xFFFFFFFF, 0)


class Walk:
    def __init__(self, pair: Pair, seed: int) -> None:
        self.pair = pair
        self.rng = random.Random(seed)
        table = TPM2 if pair.tpm2 else TPM12
        self.commands = [c for name, c in table.items() if not name.startswith("get_random")]
        self.stream = b""
        self.cursor = 0
        self.skipped = 0

    def loc(self) -> int:
        return self.rng.choice((0, 0, 1, 2, 3, 3, 4))

    def size_lane(self) -> tuple[int, int]:
        size = self.rng.choice((1, 1, 1, 2, 4, 4))
        lane = self.rng.choice((0, 0, 0, 1, 2, 3))
        return size, lane

    def next_bytes(self, n: int) -> bytes:
        if self.cursor >= len(self.stream):
            self.stream = self.rng.choice(self.commands)
            self.cursor = 0
        out = self.stream[self.cursor : self.cursor + n]
        self.cursor += n
        return out + bytes(self.rng.randrange(256) for _ in range(n - len(out)))

    def step(self) -> None:
        p, rng = self.pair, self.rng
        op = rng.random()
        loc = self.loc()
        size, lane = self.size_lane()
        base = loc << 12
        if op < 0.30:
            slot = rng.choice(READ_SLOTS)
            p.read(base | slot | lane, size)
        elif op < 0.42:
            value = rng.choice(ACCESS_VALUES) if rng.random() < 0.9 else rng.randrange(256)
            if size == 1 or rng.random() < 0.5:
                p.write(base | lane, value, 1)
            else:
                p.write(base | lane, value * 0x01010101 & ((1 << 8 * size) - 1), size)
        elif op < 0.55:
            value = rng.choice(STS_VALUES)
            if rng.random() < 0.8:
                p.writel(base | 0x18, value)
            else:
                p.write(base | 0x18 | lane, value >> 8 * lane, size)
            if value == 0x40:
                self.cursor = len(self.stream)  # next FIFO bytes start a new command
        elif op < 0.75:
            slot = rng.choice(FIFO_SLOTS)
            addr = slot | (lane if slot != 0xBC else rng.choice((0, 1, 2, 3)))
            data = self.next_bytes(size)
            p.write(base | addr, int.from_bytes(data, "little"), size)
        elif op < 0.86:
            slot = rng.choice(FIFO_SLOTS)
            p.read(base | slot | lane, size)
            p.readl(base | 0x18)
        elif op < 0.91:
            reg = rng.choice((0x008, 0x010))
            value = (
                rng.choice(INTE_VALUES) if reg == 0x008 else rng.choice((0x87, 0x80, 0x04, 0x03, 0xFFFFFFFF))
            )
            p.write(base | reg | lane, value >> 8 * lane, size)
        elif op < 0.93:
            p.write(base | 0x030 | lane, rng.choice((0x00080000, 0xFFFFFFFF, 0)) >> 8 * lane, size)
        elif op < 0.995:
            self.complete_command(loc)
        else:
            p.reset()

    def complete_command(self, loc: int) -> None:
        """A whole well-formed command at *loc*, if it is the active locality."""
        p = self.pair
        base = loc << 12
        if loc == 4 or not p.readb(base) & 0x20:
            return
        p.writel(base | 0x18, 0x40)
        p.writel(base | 0x18, 0x40)
        command = self.rng.choice(self.commands)
        for i in range(0, len(command), 4):
            chunk = command[i : i + 4]
            p.write(base | 0x24, int.from_bytes(chunk, "little"), len(chunk) if len(chunk) != 3 else 4)
        p.readl(base | 0x18)
        p.writeb(base | 0x18, 0x20)
        p.readl(base | 0x18)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            try:
                self.step()
            except UnsafeGo:
                self.skipped += 1
        # Final comparison of every register family.
        for loc in range(5):
            for slot in READ_SLOTS:
                if slot not in (0x024, 0x080, 0x0A4, 0x0BC):
                    self.pair.readl(loc << 12 | slot)


@pytest.mark.parametrize("seed", range(20))
def test_random_sequence(pair: Pair, seed: int) -> None:
    Walk(pair, seed).run(300)


@pytest.mark.parametrize("seed", range(100, 104))
def test_random_sequence_asynchronous(async_pair: Pair, seed: int) -> None:
    Walk(async_pair, seed).run(300)


SLOTS = (0x000, 0x004, 0x008, 0x00C, 0x010, 0x014, 0x018, 0x01C, 0x030, 0xF00, 0xF04, 0xF90)
VALUES = (0xFFFFFFFF, 0x5A5A5A5A, 0x02020202, 0x20202020, 0x00080000, 0x40404040)


@pytest.mark.parametrize("writer", [0, 1, 4])
def test_every_size_and_lane(pair: Pair, writer: int) -> None:
    """Writes of 1, 2 and 4 bytes at every lane of every register, aligned or
    not, from the active locality (0), a non-active one (1) and locality 4;
    the register block of localities 0 and 1 is read back after each."""
    pair.request(0)
    base = writer << 12
    for slot in SLOTS:
        for lane in range(4):
            for size in (1, 2, 4):
                for value in VALUES:
                    try:
                        pair.write(base | slot | lane, value & ((1 << 8 * size) - 1), size)
                    except UnsafeGo:
                        continue
                    for loc in (0, 1):
                        for reg in (0x000, 0x008, 0x010, 0x018, 0x030):
                            pair.readl(loc << 12 | reg)
                if pair.readb(0) & 0x20 == 0:
                    pair.request(0)
