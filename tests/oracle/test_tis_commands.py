"""Commands through the FIFO: state machine, STS after every byte, quirks.

Spec 1.7-1.9 and 0.3. Each command is written byte by byte (or in 2/4-byte
pieces, or through XDATA_FIFO) with STS read after every write, run to
completion (the pair waits until QEMU's backend answered and tpmdev's did),
and read back byte by byte with STS after every read.
"""

from __future__ import annotations

from typing import Callable

import pytest

from .commands import DETERMINISTIC, TPM2, TPM12, ordinal
from .conftest import Pair

pytestmark = pytest.mark.oracle

STS, FIFO, XFIFO = 0x018, 0x024, 0x080
READY, GO, RETRY = 0x40, 0x20, 0x02


def table(pair: Pair) -> dict[str, bytes]:
    return TPM2 if pair.tpm2 else TPM12


def burst(sts: int) -> int:
    return (sts >> 8) & 0xFFFF


def run(
    pair: Pair, loc: int, command: bytes, *, size: int = 1, offset: int = FIFO, mask_from: int | None = None
) -> bytes:
    """One complete command at the active locality *loc*; the response."""
    pair.send(loc, command, size=size, offset=offset)
    sts = pair.readl(loc << 12 | STS)
    assert sts & 0xFF & ~0x04 == 0x90, hex(sts)
    length = burst(sts)
    response = pair.receive(loc, length, size=size, offset=offset, mask_from=mask_from)
    for _ in range(3):  # past the end: 0xFF, no state change
        pair.readb(loc << 12 | FIFO)
        pair.readl(loc << 12 | STS)
    return response


def startup(pair: Pair, loc: int = 0) -> bytes:
    if pair.readb(loc << 12) & 0x20 == 0:
        pair.request(loc)
    return run(pair, loc, table(pair)["startup"])


def test_transmit_startup_exact_sts(pair: Pair) -> None:
    """10.1 check_transmit against swtpm, with the STS values of spec 0.3."""
    family = 0x04000000 if pair.tpm2 else 0
    pair.request(0)
    assert pair.readl(STS) == family | 0x00100000
    pair.writel(STS, READY)
    assert pair.readl(STS) == family | 0x00100040
    command = table(pair)["startup"]
    for i, byte in enumerate(command, 1):
        pair.writeb(FIFO, byte)
        expect = 0x80 if i == len(command) else 0x88
        assert pair.readl(STS) == family | (0x1000 - i) << 8 | expect
    pair.writeb(STS, GO)
    assert pair.readl(STS) == family | 0x00000A90
    response = pair.receive(0, 10)
    assert response[:6] == (b"\x80\x01\x00\x00\x00\x0a" if pair.tpm2 else b"\x00\xc4\x00\x00\x00\x0a")
    assert pair.readl(STS) == family | 0x000FF680
    pair.writeb(STS, RETRY)
    assert pair.readl(STS) == family | 0x00000A90
    pair.receive(0, 10)
    pair.writel(STS, READY)
    assert pair.readl(STS) == family | 0x00100040
    pair.relinquish(0)


def test_command_sequence(pair: Pair) -> None:
    """Every command of the family, in order, each one complete."""
    startup(pair)
    cmds = table(pair)
    pair.allowed = DETERMINISTIC | {ordinal(cmds["get_random8"])}
    for name, command in cmds.items():
        if name == "startup":
            continue
        loc = 0 if name != "pcr_read10" else 2
        pair.request(loc)
        mask_from = (12 if pair.tpm2 else 14) if name.startswith("get_random") else None
        run(pair, loc, command, mask_from=mask_from)
        pair.writel(loc << 12 | STS, READY)
        pair.readl(loc << 12 | STS)
        pair.relinquish(loc)
        for other in range(5):
            pair.readl(other << 12 | STS)
            pair.request(other) if other < 4 else None
            pair.readl(other << 12 | STS)
            pair.relinquish(other) if other < 4 else None


@pytest.mark.parametrize(
    "size,offset",
    [(1, FIFO), (2, FIFO), (4, FIFO), (1, XFIFO), (2, 0x0A0), (4, 0x0BC), (4, 0x025), (2, 0x027), (4, 0x0BE)],
)
def test_fifo_access_sizes(pair: Pair, size: int, offset: int) -> None:
    """1/2/4-byte FIFO and XDATA_FIFO transfers, aligned or not."""
    pair.request(0)
    run(pair, 0, table(pair)["startup"], size=size, offset=offset)
    pair.writel(STS, READY)
    run(pair, 0, table(pair)["pcr_read10"], size=size, offset=offset)
    pair.writel(STS, READY)
    pair.readl(STS)


def test_large_response(pair: Pair) -> None:
    startup(pair)
    pair.relinquish(0)
    pair.request(1)
    pair.writel(1 << 12 | STS, READY)  # IDLE -> READY keeps the stale rw_offset
    command = TPM2["get_cap_algs"] if pair.tpm2 else TPM12["get_cap_props"]
    run(pair, 1, command, size=4)
    pair.writeb(1 << 12 | STS, RETRY)
    pair.readl(1 << 12 | STS)
    for lane in range(4):  # byte reads of STS with a response waiting: no clamp
        pair.readb(1 << 12 | STS | lane)
        pair.readw(1 << 12 | STS | lane)
    pair.receive(1, 300, size=2)


def test_command_ready_in_every_state(pair: Pair) -> None:
    cmd = table(pair)["startup"]
    pair.request(0)
    pair.writel(STS, READY)  # IDLE -> READY
    pair.readl(STS)
    pair.writel(STS, READY)  # READY -> READY
    pair.readl(STS)
    for byte in cmd[:5]:
        pair.writeb(FIFO, byte)
    pair.writel(STS, READY)  # RECEPTION (Expect set) -> READY
    pair.readl(STS)
    for byte in cmd:
        pair.writeb(FIFO, byte)
    pair.writel(STS, READY)  # RECEPTION (complete) -> READY
    pair.readl(STS)
    for byte in cmd:
        pair.writeb(FIFO, byte)
    pair.writeb(STS, GO)
    pair.readl(STS)
    pair.receive(0, 3)
    pair.writel(STS, READY)  # COMPLETION, part read -> READY
    pair.readl(STS)
    pair.readb(FIFO)
    run(pair, 0, table(pair)["pcr_read10"])
    pair.writel(STS, READY)  # COMPLETION, all read -> READY
    pair.readl(STS)
    pair.relinquish(0)
    pair.request(0)
    pair.readl(STS)


def test_ignored_actions(pair: Pair) -> None:
    """tpmGo / responseRetry in the wrong states, two action bits, Expect set."""
    cmd = table(pair)["startup"]
    pair.request(0)
    for value in (GO, RETRY, GO | READY, READY | RETRY, GO | RETRY, 0x62, 0):
        pair.writel(STS, value)  # IDLE
        pair.readl(STS)
    pair.writel(STS, READY)
    for value in (GO, RETRY, GO | RETRY):
        pair.writel(STS, value)  # READY
        pair.readl(STS)
    for byte in cmd[:7]:
        pair.writeb(FIFO, byte)
    for value in (GO, RETRY, GO | READY):
        pair.writel(STS, value)  # RECEPTION with Expect set
        pair.readl(STS)
    for byte in cmd[7:]:
        pair.writeb(FIFO, byte)
    for byte in b"\x00\x11\x22":  # after the end: dropped
        pair.writeb(FIFO, byte)
        pair.readl(STS)
    pair.writel(STS, RETRY | GO)
    pair.readl(STS)
    pair.writel(STS, GO)
    pair.readl(STS)
    for value in (GO, GO | RETRY):
        pair.writel(STS, value)  # COMPLETION
        pair.readl(STS)
    pair.writeb(FIFO, 0x55)  # FIFO write in COMPLETION: dropped
    pair.receive(0, 10)
    pair.writel(STS, 0x03000000)  # commandCancel | resetEstablishment, not in EXECUTION
    pair.readl(STS)
    pair.readl(0)


def test_fifo_from_non_active_locality(pair: Pair) -> None:
    cmd = table(pair)["startup"]
    pair.request(0)
    pair.writeb(0x1000, 0x02)  # locality 1 waits

    def poke() -> None:
        for loc in (1, 2, 4):
            for off, size in ((FIFO, 1), (FIFO, 4), (XFIFO, 2), (STS, 4)):
                pair.write(loc << 12 | off, 0x5A5A5A5A & ((1 << 8 * size) - 1), size)
                pair.read(loc << 12 | off, size)
        pair.readl(STS)

    poke()
    pair.writel(STS, READY)
    poke()
    for byte in cmd[:4]:
        pair.writeb(FIFO, byte)
    poke()
    for byte in cmd[4:]:
        pair.writeb(FIFO, byte)
    poke()
    pair.writeb(STS, GO)
    poke()
    pair.receive(0, 4)
    poke()
    pair.relinquish(0)  # locality 1 gets it
    poke()
    pair.readl(0x1000 | STS)


def test_header_size_truncated_to_16_bits(pair: Pair) -> None:
    """Size 0x00010006 completes after 6 bytes (QUIRK); aborted, never sent."""
    pair.request(0)
    pair.writel(STS, READY)
    for byte in bytes.fromhex("800100010006"):
        pair.writeb(FIFO, byte)
        pair.readl(STS)
    for byte in b"\x00\x00":
        pair.writeb(FIFO, byte)
        pair.readl(STS)
    pair.writel(STS, READY)
    assert pair.readl(STS) & 0xFF == 0x40
    run(pair, 0, table(pair)["startup"])


def test_overlong_command_drops_expect(pair: Pair) -> None:
    """The 4097th byte of a command clears Expect (buffer full); aborted, never sent."""
    pair.request(0)
    pair.writel(STS, READY)
    pair.writel(FIFO, 0x00200180)  # size 0x2000 (> 4096)
    for _ in range(1, 1023):
        pair.writel(FIFO, 0x01020304)
    pair.readl(STS)
    for _ in range(4):
        pair.writeb(FIFO, 0xAA)
        pair.readl(STS)
    for _ in range(3):
        pair.writeb(FIFO, 0xBB)  # 4097th and later
        pair.readl(STS)
    pair.writel(STS, READY)
    pair.readl(STS)
    run(pair, 0, table(pair)["startup"], size=4)


def test_dword_write_of_10_byte_command(pair: Pair) -> None:
    """Three dword writes send 12 bytes of a 10-byte command (QUIRK)."""
    pair.request(0)
    startup(pair)
    pair.writel(STS, READY)
    cmd = bytes.fromhex("80010000000a00000144" if pair.tpm2 else "00c10000000a00000099") + b"\x00\x00"
    response = run(pair, 0, cmd, size=4)
    code = int.from_bytes(response[6:10], "big")
    assert code == (0x142 if pair.tpm2 else 0x19), hex(code)


def test_stale_rw_offset_after_relinquish_in_completion(pair: Pair) -> None:
    """IDLE -> READY keeps rw_offset; new bytes go after 5 stale ones (QUIRK)."""
    pair.request(0)
    pair.send(0, table(pair)["startup"])
    pair.receive(0, 5)
    pair.relinquish(0)  # nobody waiting: stays COMPLETION, rw_offset 5
    pair.request(1)
    pair.writel(0x1000 | STS, READY)
    assert burst(pair.readl(0x1000 | STS)) == 4091
    rest = table(pair)["startup"][5:]
    for byte in rest:
        pair.writeb(0x1000 | FIFO, byte)
        pair.readl(0x1000 | STS)
    pair.writeb(0x1000 | STS, GO)
    pair.readl(0x1000 | STS)
    pair.receive(1, 10)
    pair.writel(0x1000 | STS, READY)
    pair.readl(0x1000 | STS)
    pair.relinquish(1)
    pair.request(0)
    pair.readl(STS)
    pair.readb(FIFO)


@pytest.mark.parametrize("how", ["relinquish", "seize"])
def test_handover_in_reception(pair: Pair, how: str) -> None:
    """The old locality stays in RECEPTION (STS 0x88, burst 4096)."""
    cmd = table(pair)["startup"]
    pair.request(0)
    pair.writel(STS, READY)
    for byte in cmd[:8]:
        pair.writeb(FIFO, byte)
    if how == "relinquish":
        pair.writeb(0x2000, 0x02)
        pair.relinquish(0)
    else:
        pair.writeb(0x2000, 0x08)
    pair.readl(0x2000 | STS)
    pair.writeb(0x2000, 0x20)
    pair.request(0)
    pair.readl(STS)
    for byte in cmd[8:]:
        pair.writeb(FIFO, byte)
        pair.readl(STS)
    pair.writel(STS, READY)
    run(pair, 0, cmd)


def test_relinquish_in_completion_then_return(pair: Pair) -> None:
    pair.request(0)
    pair.send(0, table(pair)["startup"])
    pair.relinquish(0)
    pair.request(0)
    pair.readl(STS)
    pair.receive(0, 10)
    pair.writel(STS, READY)
    pair.readl(STS)


def test_selftest_done(pair: Pair) -> None:
    """TPM 1.2 ContinueSelfTest sets selfTestDone everywhere; reset clears it."""
    startup(pair)
    name = "selftest" if pair.tpm2 else "continue_selftest"
    pair.writel(STS, READY)
    run(pair, 0, table(pair)[name])
    pair.writel(STS, READY)
    pair.readl(STS)
    pair.relinquish(0)
    for loc in range(4):
        pair.request(loc)
        pair.readl(loc << 12 | STS)
        pair.writel(loc << 12 | STS, READY)
        pair.readl(loc << 12 | STS)
        pair.relinquish(loc)
    pair.reset()
    pair.request(3)
    pair.readl(0x3000 | STS)


def test_commands_after_reset(pair: Pair) -> None:
    pair.request(0)
    startup(pair)
    pair.send(0, table(pair)["pcr_read10"])
    pair.reset()
    pair.request(0)
    pair.readl(STS)
    pair.readb(FIFO)
    startup(pair)
    pair.writel(STS, READY)
    run(pair, 0, table(pair)["pcr_read10"])


ASYNC_SEQUENCES: dict[str, Callable[[Pair], None]] = {
    "transmit": test_transmit_startup_exact_sts,
    "sequence": test_command_sequence,
    "command_ready": test_command_ready_in_every_state,
    "stale_offset": test_stale_rw_offset_after_relinquish_in_completion,
    "dword": test_dword_write_of_10_byte_command,
    "reset": test_commands_after_reset,
}


@pytest.mark.parametrize("name", sorted(ASYNC_SEQUENCES))
def test_asynchronous_device(async_pair: Pair, name: str) -> None:
    """The same sequences with tpmdev completing commands on a worker."""
    ASYNC_SEQUENCES[name](async_pair)
