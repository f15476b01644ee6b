"""Fixtures of the conformance suite: QEMU's TIS and tpmdev's TIS side by side.

Every test gets a fresh pair: a QEMU with its own swtpm, and a tpmdev
``TIS`` (compiled and pure, through ``tis_class``) on another fresh swtpm.
Starting both costs about a tenth of a second, and fresh TPMs fed the same
commands answer the same bytes (PCR counters, error codes), which a shared
long-lived swtpm would not guarantee.

:class:`Pair` applies each operation to both devices and compares every value
read and the interrupt line after every step. A failure names the step::

    step 17 readl 0x1018: qemu 0x04100040 tpmdev 0x04100080

followed by the steps before it.

``TPMDEV_ORACLE_SELF_CHECK=1`` puts a second QEMU in tpmdev's place: the
suite must then pass against itself, which checks the harness (and that
nothing in a test depends on timing).
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from .commands import DETERMINISTIC, safe_to_send
from .qtest import (
    STATE_RECEPTION,
    Qemu,
    QemuTis,
    QtestError,
    Swtpm,
    split_access,
)

__all__ = ["Pair", "UnsafeGo"]

_MISSING = [b for b in ("qemu-system-x86_64", "swtpm", "stdbuf") if shutil.which(b) is None]

STS = 0x18
TPM_GO = 0x20
EXPECT = 0x08
_SIZE_NAMES = {1: "b", 2: "w", 4: "l"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not _MISSING:
        return
    skip = pytest.mark.skip(reason=f"needs {', '.join(_MISSING)}")
    for item in items:
        if "oracle" in item.keywords:
            item.add_marker(skip)


def _fifo_bytes(offset: int, size: int) -> int:
    """How many bytes of an access at *offset* reach DATA_FIFO or XDATA_FIFO."""
    reg = offset & 0xFFF
    return sum(1 for a in range(reg, reg + size) if 0x24 <= a < 0x28 or 0x80 <= a < 0xC0)


class Device(Protocol):
    def read(self, offset: int, size: int = 4) -> int: ...
    def write(self, offset: int, value: int, size: int = 4) -> None: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


class UnsafeGo(Exception):
    """A tpmGo would send swtpm a command it cannot answer (or not reproducibly)."""


class Pair:
    """QEMU's TIS and a tpmdev TIS driven in lockstep."""

    def __init__(
        self,
        qemu: Qemu,
        dev: Any,
        dev_irq: Callable[[], int],
        *,
        tpm2: bool,
        asynchronous: bool = False,
        wait: Callable[[], None] | None = None,
    ) -> None:
        self.qemu = qemu
        self.q = QemuTis(qemu)
        self.dev = dev
        self._dev_irq = dev_irq
        self._dev_wait = wait
        self.tpm2 = tpm2
        self.asynchronous = asynchronous
        self.step = 0
        self.allowed = DETERMINISTIC
        self.history: collections.deque[str] = collections.deque(maxlen=15)

    # -- reporting ------------------------------------------------------
    def _note(self, text: str) -> None:
        self.step += 1
        self.history.append(f"step {self.step} {text}")

    def _fail(self, text: str) -> None:
        recent = "\n  ".join(list(self.history)[:-1])
        raise AssertionError(f"step {self.step} {text}\n  after:\n  {recent}")

    def _check_irq(self, what: str) -> None:
        q, t = self.qemu.irq, self._dev_irq()
        if q != t:
            self._fail(f"{what}: IRQ line qemu {q} tpmdev {t}")

    # -- operations -----------------------------------------------------
    def read(self, offset: int, size: int = 4, *, mask: int = -1) -> int:
        """Read both; compare (under *mask*: 0 compares nothing); QEMU's value."""
        what = f"read{_SIZE_NAMES[size]} 0x{offset:x}"
        self._note(what)
        q = self.q.read(offset, size)
        try:
            t = self.dev.read(offset, size)
        except Exception as exc:  # a refusal is a difference too
            self._fail(f"{what}: qemu 0x{q:0{2 * size}x} tpmdev raised {exc!r}")
        if (q ^ t) & mask:
            self._fail(f"{what}: qemu 0x{q:0{2 * size}x} tpmdev 0x{t:0{2 * size}x}")
        self._check_irq(what)
        return q

    def readb(self, offset: int, *, mask: int = -1) -> int:
        return self.read(offset, 1, mask=mask)

    def readw(self, offset: int) -> int:
        return self.read(offset, 2)

    def readl(self, offset: int) -> int:
        return self.read(offset, 4)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        value &= (1 << 8 * size) - 1  # what qtest keeps; tpmdev refuses wider values
        what = f"write{_SIZE_NAMES[size]} 0x{offset:x} 0x{value:x}"
        go_loc = self._tpm_go_locality(offset, value, size)
        if go_loc is not None:
            self._check_go(go_loc)
        self._note(what)
        self.q.write(offset, value, size)
        try:
            self.dev.write(offset, value, size)
        except Exception as exc:
            self._fail(f"{what}: tpmdev raised {exc!r}")
        if go_loc is not None:
            self.settle(go_loc)
        self._check_irq(what)

    def writeb(self, offset: int, value: int) -> None:
        self.write(offset, value, 1)

    def writew(self, offset: int, value: int) -> None:
        self.write(offset, value, 2)

    def writel(self, offset: int, value: int) -> None:
        self.write(offset, value, 4)

    def reset(self) -> None:
        """Machine reset on both (QMP system_reset; ``dev.reset()``)."""
        self._note("reset")
        self.qemu.system_reset()
        self.dev.reset()
        self._check_irq("reset")

    # -- commands in flight ---------------------------------------------
    @staticmethod
    def _tpm_go_locality(offset: int, value: int, size: int) -> int | None:
        """The locality whose STS receives tpmGo from this write, if any."""
        for addr, piece in split_access(offset, size):
            shift = 8 * (addr - offset)
            part = (value >> shift) & ((1 << 8 * piece) - 1)
            if addr & 0xFFC == STS and (part << 8 * (addr & 3)) & TPM_GO:
                return addr >> 12
        return None

    def _check_go(self, loc: int) -> None:
        """Refuse a tpmGo that would hang swtpm or give a random response."""
        if loc > 3:
            return  # locality-4 writes are dropped
        dump = self.qemu.tis_dump(loc)
        if dump.state != STATE_RECEPTION or dump.active != loc:
            return
        sts = self.q.read((loc << 12) | STS, 4)
        if sts & EXPECT:
            return
        # QEMU prints the buffer up to the header size, enough to judge it.
        head = dump.buffer[: min(10, dump.rw_offset)]
        if not safe_to_send(head, dump.rw_offset, self.allowed):
            raise UnsafeGo(f"tpmGo at locality {loc} would send {dump.rw_offset} bytes: {head.hex()}...")

    def settle(self, loc: int | None = None) -> None:
        """Wait until the command in flight (if any) completed on both sides."""
        localities = range(4) if loc is None else range(loc, loc + 1)
        try:
            self.qemu.wait_idle_backend(localities)
        except QtestError as exc:
            self._fail(f"QEMU: {exc}")
        if self._dev_wait is not None:
            self._dev_wait()

    # -- conveniences ---------------------------------------------------
    def send(self, loc: int, command: bytes, *, size: int = 1, offset: int = 0x24) -> None:
        """commandReady, the command in *size*-byte FIFO writes, STS after each, tpmGo."""
        base = loc << 12
        self.writel(base | STS, 0x40)
        self.readl(base | STS)
        i = 0
        while i < len(command):
            # Bytes of an unaligned access that fall outside the FIFO are lost.
            n = min(_fifo_bytes(offset, size), len(command) - i)
            chunk = command[i : i + n] + b"\xee" * (size - n)
            self.write(base | offset, int.from_bytes(chunk, "little"), size if n == size else len(chunk))
            self.readl(base | STS)
            i += n
        self.writeb(base | STS, TPM_GO)
        self.readl(base | STS)

    def receive(
        self, loc: int, length: int, *, size: int = 1, offset: int = 0x24, mask_from: int | None = None
    ) -> bytes:
        """Read *length* response bytes; STS after each read. Bytes from *mask_from* on are not compared."""
        base = loc << 12
        out = bytearray()
        while len(out) < length:
            n = min(_fifo_bytes(offset, size), length - len(out))
            if n < size and n < length - len(out):
                n = size  # an unaligned read: only the FIFO bytes are kept
            mask = -1
            if mask_from is not None and len(out) + n > mask_from:
                keep = max(0, mask_from - len(out))
                mask = (1 << 8 * keep) - 1
            value = self.read(base | offset, n, mask=mask)
            got = min(_fifo_bytes(offset, n), length - len(out))
            out += value.to_bytes(n, "little")[:got]
            self.readl(base | STS)
        return bytes(out)

    def request(self, loc: int) -> None:
        self.writeb(loc << 12, 0x02)
        self.readb(loc << 12)

    def relinquish(self, loc: int) -> None:
        self.writeb(loc << 12, 0x20)
        self.readb(loc << 12)


# -- fixtures -----------------------------------------------------------


@pytest.fixture(params=["tpm2", "tpm12"])
def tpm2(request: pytest.FixtureRequest) -> bool:
    """TPM family of both swtpm instances."""
    return bool(request.param == "tpm2")


@pytest.fixture
def qemu_factory(tmp_path: Path) -> Iterator[Callable[..., Qemu]]:
    started: list[Any] = []

    def make(tpm2: bool, name: str = "qemu", irq: int = 5) -> Qemu:
        workdir = tmp_path / name
        workdir.mkdir()
        sw = Swtpm(workdir, tpm2=tpm2)
        started.append(sw)
        sw.start()
        qemu = Qemu(workdir, sw, irq=irq)
        started.append(qemu)
        return qemu.start()

    yield make
    for thing in reversed(started):
        thing.close()


class _SelfCheckDevice(QemuTis):
    def close(self) -> None:
        pass


SELF_CHECK = os.environ.get("TPMDEV_ORACLE_SELF_CHECK", "") not in ("", "0")

if SELF_CHECK:

    @pytest.fixture
    def tpmdev_tis() -> Any:
        """No tpmdev in a self check: a second QEMU stands in."""
        return None

else:

    @pytest.fixture
    def tpmdev_tis(tis_class: Any) -> Any:
        """The tpmdev ``TIS`` class under test (compiled or pure)."""
        return tis_class


@pytest.fixture
def make_pair(
    tpmdev_tis: Any, tmp_path: Path, qemu_factory: Callable[..., Qemu]
) -> Iterator[Callable[..., Pair]]:
    """``make_pair(tpm2, asynchronous=False, irq_num=5)`` -> a fresh :class:`Pair`."""
    closers: list[Callable[[], None]] = []

    def make(tpm2: bool, *, asynchronous: bool = False, irq_num: int = 5) -> Pair:
        qemu = qemu_factory(tpm2, irq=irq_num)
        if SELF_CHECK:
            other = qemu_factory(tpm2, "reference", irq=irq_num)
            dev = _SelfCheckDevice(other)
            return Pair(qemu, dev, lambda: other.irq, tpm2=tpm2, wait=other.wait_idle_backend)
        import tpmdev.backends

        level = [0]

        def irq(value: int) -> None:
            level[0] = value

        state = tmp_path / f"tpmdev-state-{len(closers)}"
        state.mkdir()
        backend = tpmdev.backends.Emulator.spawn(str(state), tpm_version=2 if tpm2 else 1)
        closers.append(backend.close)
        dev = tpmdev_tis(backend, irq=irq, asynchronous=asynchronous, irq_num=irq_num)
        closers.append(dev.close)
        return Pair(
            qemu,
            dev,
            lambda: level[0],
            tpm2=tpm2,
            asynchronous=asynchronous,
            wait=dev.wait if asynchronous else None,
        )

    yield make
    for close in reversed(closers):
        close()


@pytest.fixture
def pair(make_pair: Callable[..., Pair], tpm2: bool) -> Pair:
    """A fresh synchronous pair of the family chosen by ``tpm2``."""
    return make_pair(tpm2)


@pytest.fixture
def async_pair(make_pair: Callable[..., Pair], tpm2: bool) -> Pair:
    """A fresh pair whose tpmdev device completes commands on a worker thread."""
    return make_pair(tpm2, asynchronous=True)
