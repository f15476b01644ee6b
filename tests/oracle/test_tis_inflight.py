"""Conformance while a command is in flight: both swtpms frozen.

A command normally completes within a millisecond, too fast to act on it
reproducibly. Here both swtpm processes (QEMU's and tpmdev's) are stopped
with SIGSTOP before tpmGo, so the command stays in EXECUTION on both sides
for as long as the test likes, and everything a guest can do meanwhile is
compared step by step. tpmdev runs with ``asynchronous=True`` (QEMU's mode).

An operation that makes the TIS cancel the command (a hand-over to a waiting
locality, a Seize, commandReady, commandCancel) blocks on the cancel control
message while swtpm is stopped, in QEMU and in tpmdev alike. Such a trigger
is sent to QEMU without waiting for its answer and to tpmdev from a thread;
then both swtpms resume, both answers are collected, both sides settle, and
the outcome is compared. The intermediate values (ACCESS 0xA5 while a
hand-over is deferred, ...) are compared before the trigger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .commands import TPM2, TPM12
from .conftest import Pair

pytestmark = pytest.mark.oracle

STS = 0x18
FIFO = 0x24
INT_ENABLE = 0x08
INT_STATUS = 0x10


def loc(n: int, reg: int = 0) -> int:
    return (n << 12) | reg


def _tpmdev_pid(pair: Pair) -> int:
    pid = pair.dev.backend.pid
    assert pid is not None
    return int(pid)


@contextmanager
def frozen(pair: Pair) -> Iterator[None]:
    """Both swtpms stopped inside the block (resumed on the way out, always)."""
    pid = _tpmdev_pid(pair)
    pair.qemu.swtpm.pause()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        pair.qemu.swtpm.resume()


def write_frozen(pair: Pair, offset: int, value: int, size: int = 1) -> None:
    """A write to both while frozen, without Pair.write's wait for completion."""
    pair._note(f"write{ {1: 'b', 2: 'w', 4: 'l'}[size] } 0x{offset:x} 0x{value:x} (swtpm frozen)")
    pair.q.write(offset, value, size)
    pair.dev.write(offset, value, size)
    pair._check_irq("write")


def _queued_bytes(pid: int) -> int:
    """Bytes waiting in the receive queues of *pid*'s unix stream sockets, as ``ss`` reports them."""
    out = subprocess.run(["ss", "-xHnp"], capture_output=True, text=True, check=True, timeout=10).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if f"pid={pid}," in line)


def _wait_sent(pair: Pair, command: bytes, timeout: float = 10.0) -> None:
    """Wait until QEMU's worker thread has written *command* to its (stopped) swtpm.

    QEMU hands the command to a worker thread at tpmGo and the worker reads
    the TIS buffer when it writes to the socket. If the guest overwrites the
    buffer first (another locality's command), swtpm receives the new bytes:
    a race inside QEMU, not a behaviour to compare. Waiting for the bytes to
    sit in the frozen swtpm's receive queue takes the race out.
    """
    proc = pair.qemu.swtpm.proc
    assert proc is not None
    deadline = time.monotonic() + timeout
    while _queued_bytes(proc.pid) < len(command):
        if time.monotonic() > deadline:
            raise AssertionError(f"QEMU did not send the {len(command)}-byte command within {timeout} s")
        time.sleep(0.002)


def start_frozen_command(pair: Pair, command: bytes, locality: int = 0) -> None:
    """Write *command* at *locality* and tpmGo it; the caller has frozen both swtpms."""
    base = loc(locality)
    pair.writel(base | STS, 0x40)
    for byte in command:
        pair.writeb(base | FIFO, byte)
    pair.readl(base | STS)
    write_frozen(pair, base | STS, 0x20)  # tpmGo: the command stays in flight
    _wait_sent(pair, command)


def trigger_and_resume(pair: Pair, offset: int, value: int, size: int = 1) -> None:
    """A write that makes both TIS cancel: both block until swtpm resumes."""
    pair._note(f"write{'bwxl'[size - 1 if size < 4 else 3]} 0x{offset:x} 0x{value:x} (cancels; resume swtpm)")
    line = f"write{ {1: 'b', 2: 'w', 4: 'l'}[size] } 0x{0xFED40000 + offset:x} 0x{value:x}"
    pair.qemu.send_nowait(line)
    errors: list[BaseException] = []

    def tpmdev_write() -> None:
        try:
            pair.dev.write(offset, value, size)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=tpmdev_write)
    thread.start()
    os.kill(_tpmdev_pid(pair), signal.SIGCONT)
    pair.qemu.swtpm.resume()
    pair.qemu.collect(line)
    thread.join(15)
    assert not thread.is_alive(), "tpmdev's write did not return after swtpm resumed"
    assert not errors, errors


def compare_all(pair: Pair) -> None:
    for n in range(5):
        pair.readb(loc(n))
        pair.readl(loc(n, STS))
        pair.readl(loc(n, INT_STATUS))


def commands(pair: Pair) -> dict[str, bytes]:
    return TPM2 if pair.tpm2 else TPM12


def receive_response(pair: Pair, n: int) -> None:
    """Read the whole response waiting at locality *n* (length from burstCount)."""
    sts = pair.readl(loc(n, STS))
    assert sts & 0x90 == 0x90, f"no response at locality {n}: STS {sts:#x}"
    pair.receive(n, (sts >> 8) & 0xFFFF)


def use_active_locality(pair: Pair) -> None:
    """Whoever holds the TPM now runs a command to the end, on both sides."""
    for n in range(4):
        if pair.readb(loc(n)) & 0x20:
            pair.writel(loc(n, INT_STATUS), 0xFF)
            pair.send(n, commands(pair)["pcr_read10"])
            receive_response(pair, n)
            compare_all(pair)


def prepare(pair: Pair) -> Pair:
    """TPM(2)_Startup at locality 0, interrupts enabled there, status cleared."""
    pair.request(0)
    pair.writel(loc(0, INT_ENABLE), 0x8000008F)
    pair.send(0, commands(pair)["startup"])
    pair.receive(0, 10)
    pair.writel(loc(0, INT_STATUS), 0xFF)
    return pair


@pytest.fixture
def inflight(async_pair: Pair) -> Pair:
    """An async pair (TPM 2.0 and 1.2) ready for a command at locality 0."""
    return prepare(async_pair)


def test_state_during_execution(inflight: Pair) -> None:
    pair = inflight
    with frozen(pair):
        start_frozen_command(pair, commands(pair)["pcr_read10"])
        for size in (1, 2, 4):
            pair.read(loc(0, STS), size)
            pair.read(loc(0, FIFO), size)
        pair.writeb(loc(0, FIFO), 0x80)  # dropped in EXECUTION
        pair.writel(loc(0, STS), 0x02)  # responseRetry: ignored
        write_frozen(pair, loc(0, STS), 0x20, 4)  # tpmGo again: ignored
        pair.request(1)  # queued: shows as pending
        pair.writeb(loc(0), 0x08)  # Seize by the active locality itself: ignored
        compare_all(pair)
    pair.settle()
    compare_all(pair)
    receive_response(pair, 0)


@pytest.mark.parametrize(
    "prepare_writes, trigger",
    [
        # relinquish with a waiter: the hand-over waits for the response
        ([(loc(1), 0x02)], (loc(0), 0x20)),
        # a higher locality seizes; the lower requester keeps waiting
        ([(loc(1), 0x02)], (loc(2), 0x08)),
        # commandReady aborts the command: READY when the response arrives
        ([], (loc(0, STS), 0x40)),
        # relinquish, then a seize by a higher locality while nobody is active
        ([(loc(0), 0x20), (loc(1), 0x02)], (loc(3), 0x08)),
    ],
    ids=["relinquish-to-waiter", "seize", "command-ready-abort", "seize-after-relinquish"],
)
def test_deferred_operations(
    inflight: Pair, prepare_writes: list[tuple[int, int]], trigger: tuple[int, int]
) -> None:
    pair = inflight
    with frozen(pair):
        start_frozen_command(pair, commands(pair)["pcr_read10"])
        for offset, value in prepare_writes:
            pair.writeb(offset, value)
        compare_all(pair)
        trigger_and_resume(pair, *trigger)
    pair.settle()
    compare_all(pair)
    use_active_locality(pair)


@pytest.mark.parametrize("tpm2", ["tpm2"], indirect=True)
def test_command_cancel(inflight: Pair) -> None:
    pair = inflight
    with frozen(pair):
        start_frozen_command(pair, commands(pair)["pcr_read10"])
        trigger_and_resume(pair, loc(0, STS), 0x01000000, 4)
    pair.settle()
    compare_all(pair)
    receive_response(pair, 0)


def test_second_tpmgo_gets_first_response(inflight: Pair) -> None:
    """QEMU quirk: a tpmGo while a command is in flight is dropped, but its
    locality becomes the command's locality and receives the first response;
    the first locality stays in EXECUTION."""
    pair = inflight
    cmds = commands(pair)
    with frozen(pair):
        start_frozen_command(pair, cmds["pcr_read10"])
        pair.relinquish(0)  # nobody waiting: no cancel, locality 0 stays in EXECUTION
        pair.request(1)
        pair.writel(loc(1, STS), 0x40)  # IDLE->READY keeps the stale offset
        pair.readl(loc(1, STS))
        pair.writel(loc(1, STS), 0x40)  # READY: offset back to 0
        for byte in cmds["selftest" if pair.tpm2 else "continue_selftest"]:
            pair.writeb(loc(1, FIFO), byte)
        write_frozen(pair, loc(1, STS), 0x20)  # the second tpmGo
        compare_all(pair)
    pair.settle(1)
    compare_all(pair)
    receive_response(pair, 1)
