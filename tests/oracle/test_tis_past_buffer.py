"""FIFO reads past the end of the shared buffer (QEMU reads its own state).

A locality that relinquishes in COMPLETION keeps dataAvail; another locality
can then fill the shared buffer to its end (rw_offset 4096) with a command
whose header announces 4096 bytes. When the first locality takes the TPM
again, its next FIFO read is ``buffer[4096]``: QEMU 7.2 reads there the
bytes that follow its buffer (its rw_offset, already incremented, then its
active locality). tpmdev models those bytes without leaving its buffer. Every
value read and the interrupt line are compared; the exact sequence of the
issue that found it comes first.
"""

from __future__ import annotations

import pytest

from .commands import TPM2, TPM12
from .conftest import Pair

pytestmark = pytest.mark.oracle

STS = 0x18
FIFO = 0x24
INT_ENABLE = 0x08
INT_STATUS = 0x10

#: Header: 4096 bytes; 5006 bytes in all, so rw_offset stops at 4096.
FILL = bytes.fromhex("8001 00001000") + bytes(5000)


def loc(n: int, reg: int = 0) -> int:
    return (n << 12) | reg


def leave_response(pair: Pair, n: int, command: bytes) -> None:
    """Locality *n* runs *command* (interrupts on) and relinquishes without reading."""
    pair.request(n)
    pair.writel(loc(n, INT_ENABLE), 0x8000008F)  # QEMU 7.2: from the active locality only
    pair.send(n, command)
    pair.readl(loc(n, STS))
    pair.writel(loc(n, INT_STATUS), 0xFF)
    pair.relinquish(n)


def fill_buffer(pair: Pair, n: int) -> None:
    """Locality *n* writes FILL byte by byte and relinquishes (no tpmGo)."""
    pair.request(n)
    pair.writel(loc(n, STS), 0x40)
    pair.readl(loc(n, STS))
    for i, byte in enumerate(FILL):
        pair.writeb(loc(n, FIFO), byte)
        if i in (5, 4094, 4095, 4096, len(FILL) - 1):
            pair.readl(loc(n, STS))
    pair.relinquish(n)


def read_past(pair: Pair, n: int) -> int:
    """Locality *n* takes the TPM and reads one FIFO byte, STS around it."""
    pair.request(n)
    pair.readl(loc(n, STS))
    for lane in range(4):
        pair.readb(loc(n, STS + lane))
    value = pair.readb(loc(n, FIFO))
    pair.readl(loc(n, INT_STATUS))
    pair.readl(loc(n, STS))
    for lane in range(4):
        pair.readb(loc(n, STS + lane))
    pair.readw(loc(n, STS))
    pair.readw(loc(n, STS + 2))
    pair.readb(loc(n, FIFO))  # dataAvail dropped: 0xFF
    return value


def startup(pair: Pair) -> bytes:
    return TPM2["startup"] if pair.tpm2 else TPM12["startup"]


def pcr_read(pair: Pair) -> bytes:
    return TPM2["pcr_read10"] if pair.tpm2 else TPM12["pcr_read10"]


def test_issue_sequence(pair: Pair) -> None:
    leave_response(pair, 0, startup(pair))
    fill_buffer(pair, 1)
    assert read_past(pair, 0) == 0x01  # the low byte of rw_offset 4097
    pair.writel(loc(0, INT_STATUS), 0xFF)
    pair.writeb(loc(0, STS), 0x02)  # responseRetry: back inside the buffer
    pair.readl(loc(0, STS))
    pair.readl(loc(0, FIFO))


@pytest.mark.parametrize("readers", [[0, 2, 3], [3, 2, 0]], ids=["0-2-3", "3-2-0"])
def test_three_readers(pair: Pair, readers: list[int]) -> None:
    commands = [startup(pair), pcr_read(pair), pcr_read(pair)]
    for n, command in zip(readers, commands):
        leave_response(pair, n, command)
    fill_buffer(pair, 1)
    got = []
    for n in readers:
        got.append(read_past(pair, n))
        pair.relinquish(n)
    assert got == [0x01, 0x10, readers[2]]  # rw_offset's two bytes, then the active locality
