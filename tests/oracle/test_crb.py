"""tpmdev's CRB against QEMU 7.2's ``tpm-crb``, every value read compared.

Each test drives a :class:`CrbPair` (QEMU with its own swtpm, tpmdev's
``CRB`` on another fresh swtpm) through the same steps. A write that STARTs a
command waits until both sides completed it (QEMU's CTRL_START polled to zero
within a time limit); a START that would leave swtpm waiting (header size
below 10 or beyond the buffer) or answer non-reproducibly is never sent.
Spec sections 4, 0.3, 10.2 and 10.4.
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from tpmdev.drivers.crb import CrbDriver, CrbError
from tpmdev.wire import FATAL_RESPONSE

from .commands import TPM2, TPM12
from .conftest import CrbPair, UnsafeStart
from .test_tis_inflight import frozen, trigger_and_resume

pytestmark = pytest.mark.oracle

LOC_STATE, LOC_CTRL, LOC_STS = 0x00, 0x08, 0x0C
CTRL_REQ, CTRL_STS, CTRL_CANCEL, CTRL_START = 0x40, 0x44, 0x48, 0x4C
BUF, END = 0x80, 0x1000
STATE_SLOTS = (LOC_STATE, LOC_STS, CTRL_STS, CTRL_START)


def table(pair: CrbPair) -> dict[str, bytes]:
    return TPM2 if pair.tpm2 else TPM12


def every_read(pair: CrbPair, start: int = 0, end: int = BUF) -> None:
    """Every size at every offset of [start, end): aligned, unaligned, 8 bytes split."""
    for size in (1, 2, 4, 8):
        for off in range(start, end - size + 1):
            pair.read(off, size)


def request(pair: CrbPair) -> None:
    pair.writeb(LOC_CTRL, 1)
    pair.readl(LOC_STATE)
    pair.readl(LOC_STS)


def run(pair: CrbPair, command: bytes, *, store: int = 1, load: int = 4, length: int = 1024) -> bytes:
    """Command into the buffer in *store*-byte writes, START, *length* bytes back in *load*-byte reads."""
    pair.put(command, store)
    pair.writel(CTRL_START, 1)
    for slot in STATE_SLOTS:
        pair.readl(slot)
    return pair.get(length, load)


# ---------------------------------------------------------------------------
# Reset state
# ---------------------------------------------------------------------------


def test_reset_state(crb_pair: CrbPair) -> None:
    assert crb_pair.readq(0x30) == 0x0000101400025811 and crb_pair.readq(0x5C) == 0xFED40080
    assert crb_pair.readb(LOC_STATE) == 0x81 and crb_pair.readl(CTRL_STS) == 0x2
    every_read(crb_pair)  # every register, every size and lane (10.2 step 1)
    for off in range(BUF, END, 8):  # the buffer: fresh RAM
        crb_pair.readq(off)
    request(crb_pair)
    crb_pair.writel(CTRL_REQ, 1)
    run(crb_pair, table(crb_pair)["startup"])
    crb_pair.reset()
    every_read(crb_pair)
    crb_pair.get(END - BUF, 8)  # reset keeps the buffer (RAM)


# ---------------------------------------------------------------------------
# Localities, cmdReady / goIdle, write dispatch
# ---------------------------------------------------------------------------

LOC_CTRL_WRITES = [
    (LOC_CTRL, 1, 1),  # requestAccess
    (LOC_CTRL, 1, 1),  # again
    (LOC_CTRL, 2, 2),  # relinquish (16-bit)
    (LOC_CTRL, 2, 1),  # relinquish while unassigned
    (LOC_CTRL, 1, 4),
    (LOC_CTRL, 4, 1),  # seize: ignored
    (LOC_CTRL, 8, 1),  # resetEstablishment: ignored
    (LOC_CTRL + 1, 2, 1),  # wrong lane
    (LOC_CTRL, 0x102, 2),  # not exactly 2
    (LOC_CTRL, 3, 4),  # two actions
    (LOC_CTRL, 0x00000000_00000002, 8),  # 8 bytes: relinquish, then 0 at LOC_STS
    (0x07, 0x0100, 2),  # split: 0 at 0x07, 1 at 0x08
    (0x04, 0x00000002_00000000, 8),  # the high half at 0x08
    (LOC_STS, 0xFFFFFFFF, 4),  # read-only
    (LOC_STATE, 0xFF, 1),
]


def test_locality_request_and_relinquish(crb_pair: CrbPair) -> None:
    for offset, value, size in LOC_CTRL_WRITES:
        crb_pair.write(offset, value, size)
        crb_pair.registers()
        crb_pair.read(LOC_STATE, 1)


def test_cmd_ready_and_go_idle(crb_pair: CrbPair) -> None:
    for locality_first in (False, True):
        if locality_first:
            request(crb_pair)
        for offset, value, size in [
            (CTRL_REQ, 1, 4),
            (CTRL_REQ, 1, 1),
            (CTRL_REQ, 2, 2),
            (CTRL_REQ, 1, 8),
            (CTRL_REQ, 3, 4),
            (CTRL_REQ + 1, 1, 1),
            (CTRL_REQ, 0x101, 2),
            (CTRL_REQ, 2, 1),
            (0x3C, 0x00000001_00000000, 8),
            (CTRL_STS, 0, 4),  # read-only
        ]:
            crb_pair.write(offset, value, size)
            for slot in (*STATE_SLOTS, CTRL_REQ):
                crb_pair.readl(slot)


# ---------------------------------------------------------------------------
# Whole commands through the buffer
# ---------------------------------------------------------------------------


def test_crb_swtpm_sequence(crb_pair: CrbPair) -> None:
    """10.4: commands with a trailing NUL, no CTRL_REQ (START while idle), 1024 bytes read back."""
    t = table(crb_pair)
    request(crb_pair)
    extend = "pcr_extend10" if crb_pair.tpm2 else "extend10"
    for name in ("startup", extend, "pcr_read10"):
        run(crb_pair, t[name] + b"\x00")


def test_qemu_crb_test_sequence(crb_pair: CrbPair) -> None:
    """10.2: request, cmdReady, START polled to zero, goIdle, relinquish, registers after each."""
    request(crb_pair)
    crb_pair.writel(CTRL_REQ, 1)
    crb_pair.registers()
    run(crb_pair, table(crb_pair)["startup"] + b"\x00", length=16)
    crb_pair.registers()
    crb_pair.writel(CTRL_REQ, 2)
    crb_pair.registers()
    crb_pair.writel(LOC_CTRL, 2)
    crb_pair.registers()


@pytest.mark.parametrize(("store", "load"), [(1, 8), (2, 4), (4, 1), (8, 2)])
def test_commands_at_every_access_size(crb_pair: CrbPair, store: int, load: int) -> None:
    t = table(crb_pair)
    request(crb_pair)
    crb_pair.writel(CTRL_REQ, 1)
    for name in ("startup", "pcr_read10", "get_cap_tpm_props" if crb_pair.tpm2 else "get_cap_version"):
        run(crb_pair, t[name], store=store, load=load, length=64)


def test_unaligned_stores_and_loads(crb_pair: CrbPair) -> None:
    command = table(crb_pair)["startup"]
    request(crb_pair)
    crb_pair.writeb(BUF, command[0])
    crb_pair.put(command[1:] + b"\xee", 4, offset=BUF + 1)  # split stores
    crb_pair.writew(0x4B, 0x0100)  # split: 0 at 0x4B, 1 at 0x4C: START
    for off in range(BUF - 3, BUF + 16):
        for size in (2, 4, 8):
            crb_pair.read(off, size)


@pytest.mark.parametrize("style", ["linux", "edk2"])
def test_commands_as_the_drivers_send_them(crb_pair: CrbPair, style: str) -> None:
    driver = CrbDriver(crb_pair, style=style, timeout=10)  # every access of the driver goes to both
    for name, command in table(crb_pair).items():
        if name.startswith("get_random"):
            continue
        if style == "edk2" and not crb_pair.tpm2:
            with pytest.raises(CrbError, match=r"TPM 1\.2"):  # EDK2 refuses a TPM 1.2
                driver.transmit(command)
        else:
            driver.transmit(command)
    crb_pair.registers()


def test_start_rules(crb_pair: CrbPair) -> None:
    t = table(crb_pair)
    crb_pair.put(t["startup"])
    crb_pair.writel(CTRL_START, 1)  # no locality: ignored
    crb_pair.registers()
    request(crb_pair)
    for offset, value, size in [(CTRL_START, 3, 4), (CTRL_START, 0x101, 2), (CTRL_START + 1, 1, 1)]:
        crb_pair.write(offset, value, size)  # not exactly 1 at 0x4C: ignored
        crb_pair.registers()
    crb_pair.writeq(CTRL_CANCEL, 0x00000001_00000001)  # cancel (nothing running), then START
    crb_pair.registers()
    crb_pair.get(32)
    crb_pair.put(t["pcr_read10"])
    crb_pair.writeb(CTRL_START, 1)
    crb_pair.get(64, 8)


def test_header_size_beyond_the_command_is_cut_to_the_header(crb_pair: CrbPair) -> None:
    # START sends min(header size, bufsize) bytes: trailing garbage is never sent
    t = table(crb_pair)
    request(crb_pair)
    crb_pair.put(bytes(range(256)) * 2)
    crb_pair.put(t["pcr_read10"])
    crb_pair.writel(CTRL_START, 1)
    crb_pair.get(512, 8)


def test_writes_to_every_register_at_every_size(crb_pair: CrbPair) -> None:
    """Every offset of the register block, sizes 1, 2, 4 and 8, odd values;
    without and with the locality assigned (START then runs a real command)."""
    command = table(crb_pair)["pcr_read10"]
    values = (0, 1, 2, 3, 4, 8, 0xFF, 0x101, 0x5A5A5A5A5A5A5A5A, 0xFFFFFFFFFFFFFFFF)
    for assigned in (False, True):
        crb_pair.put(command)
        for off in range(0, BUF):
            for size in (1, 2, 4, 8):
                if off + size > END:
                    continue
                for value in values:
                    if assigned and not crb_pair.q.read(LOC_STS) & 1:
                        request(crb_pair)
                    if off <= CTRL_START < off + size:
                        crb_pair.put(command)  # a command ready for START
                    crb_pair.write(off, value & ((1 << 8 * size) - 1), size)  # never UnsafeStart
                    for slot in sorted(set(STATE_SLOTS) | {off & ~3, (off + size - 1) & ~3}):
                        if slot < BUF:
                            crb_pair.readl(slot)
            crb_pair.registers()
        crb_pair.get(64, 8)


# ---------------------------------------------------------------------------
# Commands in flight: both swtpms frozen (asynchronous tpmdev, QEMU's mode)
# ---------------------------------------------------------------------------


def write_frozen(pair: CrbPair, offset: int, value: int, size: int = 4) -> None:
    """A write to both while frozen, without the pair's wait for completion."""
    pair._note(f"write {size} 0x{offset:x} 0x{value:x} (swtpm frozen)")
    pair.q.write(offset, value, size)
    pair.dev.write(offset, value, size)


def test_state_while_a_command_runs_and_cancel(async_crb_pair: CrbPair) -> None:
    pair = async_crb_pair
    t = table(pair)
    request(pair)
    run(pair, t["startup"])
    pair.put(t["pcr_read10"])
    with frozen(pair):
        write_frozen(pair, CTRL_START, 1)
        pair.registers()
        assert pair.readl(CTRL_START) == 1  # running
        write_frozen(pair, CTRL_START, 1)  # while START is set: ignored
        pair.writel(CTRL_REQ, 2)
        pair.writel(CTRL_REQ, 1)
        pair.writel(LOC_CTRL, 2)  # relinquish does not stop the command
        pair.registers()
        assert pair.readl(CTRL_START) == 1 and pair.readb(LOC_STATE) & 0x2 == 0
        pair.writel(LOC_CTRL, 1)
        pair.registers()
        trigger_and_resume(pair, CTRL_CANCEL, 1, 4)  # cancel blocks until swtpm answers
    pair.settle()
    pair.registers()
    assert pair.readl(CTRL_START) == 0
    pair.get(64)
    pair.writel(CTRL_CANCEL, 1)  # nothing running: nothing happens
    pair.registers()


# ---------------------------------------------------------------------------
# A dead backend: the fatal response and a sticky tpmSts
# ---------------------------------------------------------------------------


def test_dead_backend_sets_tpm_sts(crb_pair: CrbPair) -> None:
    request(crb_pair)
    crb_pair.writel(CTRL_REQ, 1)
    run(crb_pair, table(crb_pair)["startup"], length=16)
    crb_pair.qemu.swtpm.close()
    pid = crb_pair.dev.backend.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # (the backend reaps its own child)
    crb_pair.put(table(crb_pair)["pcr_read10"])
    crb_pair.writel(CTRL_START, 1)
    crb_pair.registers()
    assert crb_pair.readl(CTRL_STS) == 0x1  # tpmSts (cmdReady was written: not idle)
    assert crb_pair.get(16)[:10] == FATAL_RESPONSE
    crb_pair.writel(CTRL_REQ, 2)
    assert crb_pair.readl(CTRL_STS) == 0x3
    crb_pair.writel(CTRL_REQ, 1)
    assert crb_pair.readl(CTRL_STS) == 0x1  # tpmSts stays (no reset: QEMU would exit)
    crb_pair.registers()


# ---------------------------------------------------------------------------
# Seeded random sequences
# ---------------------------------------------------------------------------

READ_OFFSETS = (0x00, 0x01, 0x04, 0x08, 0x0C, 0x30, 0x34, 0x40, 0x44, 0x48, 0x4C, 0x58, 0x5C, 0x64, 0x68)
LOC_VALUES = (1, 1, 2, 2, 4, 8, 3, 0)


class Walk:
    """Random guest behaviour: register reads and writes at random sizes and
    lanes, buffer stores from a stream of well-formed commands, STARTs,
    cancels, whole commands and resets."""

    def __init__(self, pair: CrbPair, seed: int) -> None:
        self.pair = pair
        self.rng = random.Random(seed)
        self.commands = [c for name, c in table(pair).items() if not name.startswith("get_random")]
        self.command = self.rng.choice(self.commands)
        self.cursor = 0
        self.skipped = 0

    def size(self) -> int:
        return self.rng.choice((1, 1, 2, 4, 4, 8))

    def step(self) -> None:
        p, rng = self.pair, self.rng
        op = rng.random()
        size = self.size()
        if op < 0.25:
            off = rng.choice(READ_OFFSETS) + rng.choice((0, 0, 0, 1, 2, 3))
            p.read(min(off, END - size), size)
        elif op < 0.35:
            off = LOC_CTRL + (rng.choice((0, 0, 0, 1)) if size < 4 else 0)
            p.write(off, rng.choice(LOC_VALUES), size)
        elif op < 0.42:
            p.write(CTRL_REQ, rng.choice((1, 2, 2, 3)), size)
        elif op < 0.47:
            p.write(CTRL_CANCEL, rng.choice((1, 1, 0)), size)
        elif op < 0.57:
            p.write(CTRL_START - rng.choice((0, 0, 0, 4)) * (size == 8), rng.choice((1, 1, 1, 3)), size)
        elif op < 0.67:
            off = rng.randrange(0, BUF - size + 1)
            p.write(off, rng.randrange(1 << 8 * size), size)
        elif op < 0.85:
            if self.cursor >= len(self.command):
                self.command = rng.choice(self.commands)
                self.cursor = 0
            chunk = self.command[self.cursor : self.cursor + size]
            chunk += bytes(rng.randrange(256) for _ in range(size - len(chunk)))
            p.write(BUF + self.cursor, int.from_bytes(chunk, "little"), size)
            self.cursor += size
        elif op < 0.94:
            p.read(BUF + rng.randrange(0, 64), size)
        elif op < 0.99:
            if not p.q.read(LOC_STS) & 1:
                request(p)
            run(p, rng.choice(self.commands), store=size, load=self.size(), length=32)
        else:
            p.reset()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            try:
                self.step()
            except UnsafeStart:
                self.skipped += 1
        self.pair.registers()
        self.pair.get(END - BUF, 8)


@pytest.mark.parametrize("seed", range(12))
def test_random_sequence(crb_pair: CrbPair, seed: int) -> None:
    Walk(crb_pair, seed).run(300)


@pytest.mark.parametrize("seed", range(100, 103))
def test_random_sequence_asynchronous(async_crb_pair: CrbPair, seed: int) -> None:
    Walk(async_crb_pair, seed).run(300)


# ---------------------------------------------------------------------------
# Beyond the device
# ---------------------------------------------------------------------------


def test_nothing_is_mapped_beyond_the_first_window(crb_pair: CrbPair) -> None:
    """QEMU maps 0x1000 bytes: 0x1000..0x4FFF of the TPM window is unassigned
    memory (reads 0, writes dropped). That is the bus, not the device: tpmdev's
    CRB region ends at 0x1000 and refuses offsets beyond it as host misuse."""
    import tpmdev

    for off in (0x1000, 0x1004, 0x1030, 0x2000, 0x3F00, 0x4FFC):
        crb_pair.q.write(off, 0x01010101, 4)
        assert crb_pair.q.read(off, 4) == 0
        with pytest.raises(tpmdev.AccessError):
            crb_pair.dev.read(off, 4)
    crb_pair.registers()
