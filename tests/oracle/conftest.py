"""Fixtures of the conformance suite: QEMU's TIS (or CRB) and tpmdev's side by side.

The TIS pairs run on a platform: ``"isa"`` (``tpm-tis`` on q35, tpmdev's
``TIS``) or ``"sysbus"`` (``tpm-tis-device`` on Arm virt, tpmdev's
``TISSysbus``); ``make_pair(..., platform="sysbus")`` and ``sysbus_pair``.

Every test gets a fresh pair: a QEMU with its own swtpm, and a tpmdev
``TIS`` (compiled and pure, through ``tis_class``) on another fresh swtpm.
Starting both costs about a tenth of a second, and fresh TPMs fed the same
commands answer the same bytes (PCR counters, error codes), which a shared
long-lived swtpm would not guarantee.

:class:`Pair` (TIS) and :class:`CrbPair` (CRB), both :class:`Lockstep`,
apply each operation to both devices and compare every value read (and, for
the TIS, the interrupt line) after every step. A failure names the step::

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

from .commands import DETERMINISTIC, header_size, safe_to_send
from .qtest import (
    STATE_RECEPTION,
    Qemu,
    QemuCrb,
    QemuRegion,
    QemuTis,
    QtestError,
    Swtpm,
    split_access,
)

__all__ = ["Lockstep", "Pair", "CrbPair", "UnsafeGo", "UnsafeStart"]

_MISSING = [b for b in ("qemu-system-x86_64", "swtpm", "stdbuf") if shutil.which(b) is None]
#: the sysbus TIS runs on Arm virt (Debian: qemu-system-arm)
_MISSING_SYSBUS = _MISSING + [b for b in ("qemu-system-aarch64",) if shutil.which(b) is None]

STS = 0x18
TPM_GO = 0x20
EXPECT = 0x08
_SIZE_NAMES = {1: "b", 2: "w", 4: "l", 8: "q"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        missing = _MISSING_SYSBUS if "sysbus" in item.nodeid else _MISSING
        if missing and "oracle" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)}"))


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


class UnsafeStart(Exception):
    """A CRB START would send swtpm a command it cannot answer (or not reproducibly)."""


class Lockstep:
    """A QEMU device region and a tpmdev device driven in lockstep.

    Subclasses add what their interface needs around a write (refuse a
    command swtpm cannot answer, wait for a command to complete) and after
    every step (the TIS compares its interrupt line).
    """

    def __init__(
        self,
        qemu: Qemu,
        q: QemuRegion,
        dev: Any,
        *,
        tpm2: bool,
        asynchronous: bool = False,
        wait: Callable[[], None] | None = None,
    ) -> None:
        self.qemu = qemu
        self.q = q
        self.dev = dev
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

    def _check_step(self, what: str) -> None:
        """Compared after every step besides the values (TIS: the IRQ line)."""

    def _before_write(self, offset: int, value: int, size: int) -> object:
        """Called before a write reaches either device; the result goes to :meth:`_after_write`."""
        return None

    def _after_write(self, token: object) -> None:
        """Called after a write reached both devices."""

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
        self._check_step(what)
        return q

    def readb(self, offset: int, *, mask: int = -1) -> int:
        return self.read(offset, 1, mask=mask)

    def readw(self, offset: int) -> int:
        return self.read(offset, 2)

    def readl(self, offset: int) -> int:
        return self.read(offset, 4)

    def readq(self, offset: int) -> int:
        return self.read(offset, 8)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        value &= (1 << 8 * size) - 1  # what qtest keeps; tpmdev refuses wider values
        what = f"write{_SIZE_NAMES[size]} 0x{offset:x} 0x{value:x}"
        token = self._before_write(offset, value, size)
        self._note(what)
        self.q.write(offset, value, size)
        try:
            self.dev.write(offset, value, size)
        except Exception as exc:
            self._fail(f"{what}: tpmdev raised {exc!r}")
        self._after_write(token)
        self._check_step(what)

    def writeb(self, offset: int, value: int) -> None:
        self.write(offset, value, 1)

    def writew(self, offset: int, value: int) -> None:
        self.write(offset, value, 2)

    def writel(self, offset: int, value: int) -> None:
        self.write(offset, value, 4)

    def writeq(self, offset: int, value: int) -> None:
        self.write(offset, value, 8)

    def reset(self) -> None:
        """Machine reset on both (QMP system_reset; ``dev.reset()``)."""
        self._note("reset")
        self.qemu.system_reset()
        self.dev.reset()
        self._check_step("reset")


class Pair(Lockstep):
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
        super().__init__(qemu, QemuTis(qemu), dev, tpm2=tpm2, asynchronous=asynchronous, wait=wait)
        self._dev_irq = dev_irq

    def _check_irq(self, what: str) -> None:
        q, t = self.qemu.irq, self._dev_irq()
        if q != t:
            self._fail(f"{what}: IRQ line qemu {q} tpmdev {t}")

    def _check_step(self, what: str) -> None:
        self._check_irq(what)

    def _before_write(self, offset: int, value: int, size: int) -> object:
        go_loc = self._tpm_go_locality(offset, value, size)
        if go_loc is not None:
            self._check_go(go_loc)
        return go_loc

    def _after_write(self, token: object) -> None:
        if token is not None:
            self.settle(token)  # type: ignore[arg-type]

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


CRB_LOC_STS = 0x0C
CRB_START = 0x4C
CRB_BUFFER = 0x80
CRB_BUFSIZE = 0xF80  # min(swtpm's 4096, the CRB's 3968)


class CrbPair(Lockstep):
    """QEMU's CRB and a tpmdev CRB driven in lockstep.

    A write that STARTs a command waits until both sides completed it (QEMU:
    CTRL_START polled to zero within a time limit). A START that would send
    swtpm a command it cannot answer, or not reproducibly, is refused with
    :class:`UnsafeStart` before it reaches either device.
    """

    def __init__(
        self,
        qemu: Qemu,
        dev: Any,
        *,
        tpm2: bool,
        asynchronous: bool = False,
        wait: Callable[[], None] | None = None,
    ) -> None:
        self.qcrb = QemuCrb(qemu)
        super().__init__(qemu, self.qcrb, dev, tpm2=tpm2, asynchronous=asynchronous, wait=wait)

    @staticmethod
    def _starts(offset: int, value: int, size: int) -> bool:
        """Whether a piece of this write is CTRL_START = 1 (what QEMU acts on)."""
        for addr, piece in split_access(offset, size):
            if addr == CRB_START and (value >> 8 * (addr - offset)) & ((1 << 8 * piece) - 1) == 1:
                return True
        return False

    def _before_write(self, offset: int, value: int, size: int) -> object:
        if not self._starts(offset, value, size):
            return False
        # QEMU acts only with the locality assigned and START clear; the
        # state is read from QEMU without comparing (the step compares).
        if self.q.read(CRB_LOC_STS, 4) & 1 and not self.q.read(CRB_START, 4) & 1:
            head = self.q.read_bytes(CRB_BUFFER, 10)
            length = min(header_size(head), CRB_BUFSIZE)
            if not safe_to_send(head, length, self.allowed):
                raise UnsafeStart(f"START would send {length} bytes: {head.hex()}...")
        return True

    def _after_write(self, token: object) -> None:
        if token:
            self.settle()

    def settle(self) -> None:
        """Wait until the command in flight (if any) completed on both sides."""
        try:
            self.qcrb.wait_idle_backend(self.qemu.timeout)
        except QtestError as exc:
            self._fail(f"QEMU: {exc}")
        if self._dev_wait is not None:
            self._dev_wait()

    # -- conveniences ---------------------------------------------------
    def registers(self) -> None:
        """Compare every register slot."""
        for slot in range(0, CRB_BUFFER, 4):
            self.readl(slot)

    def put(self, data: bytes, size: int = 1, offset: int = CRB_BUFFER) -> None:
        """Write *data* into the buffer in *size*-byte stores (the last one padded with 0xEE)."""
        for i in range(0, len(data), size):
            chunk = data[i : i + size]
            self.write(offset + i, int.from_bytes(chunk + b"\xee" * (size - len(chunk)), "little"), size)

    def get(self, length: int, size: int = 4, offset: int = CRB_BUFFER) -> bytes:
        """Read *length* buffer bytes in *size*-byte loads, every load compared."""
        out = bytearray()
        for i in range(0, length, size):
            out += self.read(offset + i, size).to_bytes(size, "little")
        return bytes(out[:length])


# -- fixtures -----------------------------------------------------------


@pytest.fixture(params=["tpm2", "tpm12"])
def tpm2(request: pytest.FixtureRequest) -> bool:
    """TPM family of both swtpm instances."""
    return bool(request.param == "tpm2")


@pytest.fixture
def qemu_factory(tmp_path: Path) -> Iterator[Callable[..., Qemu]]:
    started: list[Any] = []

    def make(tpm2: bool, name: str = "qemu", irq: int = 5, device: str = "tpm-tis", ppi: bool = True) -> Qemu:
        workdir = tmp_path / name
        if workdir.exists():  # several QEMUs in one test
            workdir = tmp_path / f"{name}-{len(started)}"
        workdir.mkdir()
        sw = Swtpm(workdir, tpm2=tpm2)
        started.append(sw)
        sw.start()
        qemu = Qemu(workdir, sw, irq=irq, device=device, ppi=ppi)
        started.append(qemu)
        return qemu.start()

    yield make
    for thing in reversed(started):
        thing.close()


class _SelfCheckDevice(QemuTis):
    def close(self) -> None:
        pass


class _SelfCheckCrb(QemuCrb):
    def close(self) -> None:
        pass


SELF_CHECK = os.environ.get("TPMDEV_ORACLE_SELF_CHECK", "") not in ("", "0")

if SELF_CHECK:

    @pytest.fixture
    def tpmdev_tis() -> Any:
        """No tpmdev in a self check: a second QEMU stands in."""
        return None

    @pytest.fixture
    def tpmdev_crb() -> Any:
        return None

    @pytest.fixture
    def tpmdev_tis_sysbus() -> Any:
        return None

else:

    @pytest.fixture
    def tpmdev_tis(tis_class: Any) -> Any:
        """The tpmdev ``TIS`` class under test (compiled or pure)."""
        return tis_class

    @pytest.fixture
    def tpmdev_tis_sysbus(tis_sysbus_class: Any) -> Any:
        """The tpmdev ``TISSysbus`` class under test (compiled or pure)."""
        return tis_sysbus_class

    @pytest.fixture
    def tpmdev_crb(crb_class: Any) -> Any:
        """The tpmdev ``CRB`` class under test (compiled or pure)."""
        return crb_class


#: TIS platform -> (QEMU device, tpmdev fixture giving the class)
TIS_PLATFORMS = {"isa": "tpm-tis", "sysbus": "tpm-tis-device"}


@pytest.fixture
def make_pair(
    tpmdev_tis: Any, tpmdev_tis_sysbus: Any, tmp_path: Path, qemu_factory: Callable[..., Qemu]
) -> Iterator[Callable[..., Pair]]:
    """``make_pair(tpm2, asynchronous=False, irq_num=5, platform="isa")`` -> a fresh :class:`Pair`."""
    closers: list[Callable[[], None]] = []

    def make(tpm2: bool, *, asynchronous: bool = False, irq_num: int = 5, platform: str = "isa") -> Pair:
        device = TIS_PLATFORMS[platform]
        qemu = qemu_factory(tpm2, irq=irq_num, device=device)
        if SELF_CHECK:
            other = qemu_factory(tpm2, "reference", irq=irq_num, device=device)
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
        cls = tpmdev_tis if platform == "isa" else tpmdev_tis_sysbus
        dev = cls(backend, irq=irq, asynchronous=asynchronous, irq_num=irq_num)
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


@pytest.fixture
def sysbus_pair(make_pair: Callable[..., Pair], tpm2: bool) -> Pair:
    """A fresh synchronous pair of sysbus TIS devices (QEMU's on Arm virt)."""
    return make_pair(tpm2, platform="sysbus")


@pytest.fixture
def async_sysbus_pair(make_pair: Callable[..., Pair], tpm2: bool) -> Pair:
    """A fresh sysbus pair whose tpmdev device completes commands on a worker thread."""
    return make_pair(tpm2, asynchronous=True, platform="sysbus")


@pytest.fixture
def make_crb_pair(
    tpmdev_crb: Any, tmp_path: Path, qemu_factory: Callable[..., Qemu]
) -> Iterator[Callable[..., CrbPair]]:
    """``make_crb_pair(tpm2, asynchronous=False)`` -> a fresh :class:`CrbPair`."""
    closers: list[Callable[[], None]] = []

    def make(tpm2: bool, *, asynchronous: bool = False) -> CrbPair:
        qemu = qemu_factory(tpm2, device="tpm-crb")
        if SELF_CHECK:
            other = _SelfCheckCrb(qemu_factory(tpm2, "reference", device="tpm-crb"))
            return CrbPair(qemu, other, tpm2=tpm2, wait=other.wait_idle_backend)
        import tpmdev.backends

        state = tmp_path / f"tpmdev-crb-state-{len(closers)}"
        state.mkdir()
        backend = tpmdev.backends.Emulator.spawn(str(state), tpm_version=2 if tpm2 else 1)
        closers.append(backend.close)
        dev = tpmdev_crb(backend, asynchronous=asynchronous)
        closers.append(dev.close)
        return CrbPair(
            qemu, dev, tpm2=tpm2, asynchronous=asynchronous, wait=dev.wait if asynchronous else None
        )

    yield make
    for close in reversed(closers):
        close()


@pytest.fixture
def crb_pair(make_crb_pair: Callable[..., CrbPair], tpm2: bool) -> CrbPair:
    """A fresh synchronous CRB pair of the family chosen by ``tpm2``."""
    return make_crb_pair(tpm2)


@pytest.fixture
def async_crb_pair(make_crb_pair: Callable[..., CrbPair], tpm2: bool) -> CrbPair:
    """A fresh CRB pair whose tpmdev device completes commands on a worker thread."""
    return make_crb_pair(tpm2, asynchronous=True)
