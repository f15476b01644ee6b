"""A small qtest client that runs QEMU's TIS (ISA and sysbus) and CRB as the conformance oracle.

Theory of operation
-------------------

:class:`Swtpm` starts ``swtpm socket`` with only a control channel (no
``--server``): QEMU hands the data channel over itself with SET_DATAFD, as a
real ``-tpmdev emulator`` does. :class:`Qemu` listens on a unix socket,
starts ``qemu-system-x86_64 -machine q35 -accel tcg -S`` with a ``tpm-tis``
(or, with ``device="tpm-crb"``, a ``tpm-crb``) device on that swtpm and
accepts QEMU's qtest connection (QEMU is the client). With
``device="tpm-tis-device"`` it starts ``qemu-system-aarch64 -machine virt``
instead, where the sysbus TIS is the platform bus's first dynamic device
(:data:`VIRT`: base 0x0C000000). Every socket read
has a timeout; :meth:`Qemu.close` kills what was started.

qtest is a line protocol: one request line, one answer line (``OK ...`` or
``FAIL ...``). After ``irq_intercept_in ioapic`` QEMU also writes
``IRQ raise N`` / ``IRQ lower N`` lines whenever an I/O APIC input changes
(on ``virt``: ``irq_intercept_in`` on the GIC, whose input 112 is the
platform bus's first interrupt, where ``virt`` wires the sysbus TIS's IRQ 0);
they arrive in order on the same socket, before the answer of the request
that caused them, or before the next answer when the change came from the
main loop (a backend completion). :meth:`Qemu.command` files them into
:attr:`Qemu.irq_levels` and returns the answer line.

QEMU 7.2 compiles the TIS debug register in: a read of DEBUG (0xF90) prints
the device state on QEMU's stdout. stdout goes to a file, line buffered, and
:meth:`Qemu.tis_dump` parses that print: the locality's state machine state,
the shared rw_offset and the buffer. The harness uses it only to wait for a
command in flight and to refuse a tpmGo that would hang swtpm; never as a
compared value.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "TIS_BASE",
    "CRB_BASE",
    "TIS_IRQ",
    "Platform",
    "Q35",
    "VIRT",
    "PLATFORMS",
    "QtestError",
    "Swtpm",
    "Qemu",
    "QemuRegion",
    "QemuTis",
    "QemuCrb",
    "TisDump",
    "split_access",
]

#: Where the ISA TIS sits on q35.
TIS_BASE = 0xFED40000
#: Where the CRB sits on q35 (the same window).
CRB_BASE = 0xFED40000
#: I/O APIC input of the TIS interrupt (ISA IRQ 5).
TIS_IRQ = 5

QEMU_BINARY = os.environ.get("TPMDEV_QEMU", "qemu-system-x86_64")
QEMU_AARCH64_BINARY = os.environ.get("TPMDEV_QEMU_AARCH64", "qemu-system-aarch64")
SWTPM_BINARY = os.environ.get("TPMDEV_SWTPM", "swtpm")

#: TIS state machine numbers as QEMU prints them.
STATE_IDLE, STATE_READY, STATE_COMPLETION, STATE_EXECUTION, STATE_RECEPTION = range(5)


class QtestError(Exception):
    """QEMU or swtpm misbehaved (refused a request, timed out, died)."""


@dataclass(frozen=True)
class Platform:
    """A QEMU machine that carries a TPM: where the device sits and how its IRQ is seen."""

    binary: str
    machine: str
    #: base of the TPM region (TIS or CRB)
    base: int
    #: qtest ``irq_intercept_in`` target: the interrupt controller the TPM's line reaches
    irq_controller: str
    #: the controller input of the TPM's line; None: the ISA IRQ number (``irq`` property)
    irq_input: int | None


#: PC (q35): ISA TIS or CRB at 0xFED40000, the TIS's ISA IRQ at the I/O APIC input of that number.
Q35 = Platform(QEMU_BINARY, "q35", TIS_BASE, "ioapic", None)
#: Arm virt: the sysbus TIS is the first platform-bus device (0x0C000000); virt wires the platform
#: bus's interrupts to GIC SPIs 112..175 (GIC inputs 112..), the TIS's IRQ 0 to the first. The GIC
#: is the second object QEMU's virt creates without a parent (after the CPU).
VIRT = Platform(QEMU_AARCH64_BINARY, "virt", 0x0C000000, "/machine/unattached/device[1]", 112)

#: the platform of each QEMU TPM device the harness drives
PLATFORMS = {"tpm-tis": Q35, "tpm-crb": Q35, "tpm-tis-device": VIRT}


def split_access(addr: int, size: int) -> list[tuple[int, int]]:
    """The naturally aligned pieces QEMU's memory core makes of one access.

    A qtest access of 2 or 4 bytes that is not aligned to its size reaches
    the device as aligned pieces, largest first: 4 bytes at 0x19 become
    (0x19, 1), (0x1A, 2), (0x1C, 1).
    """
    pieces = []
    while size:
        piece = 4
        while piece > size or addr % piece:
            piece //= 2
        pieces.append((addr, piece))
        addr += piece
        size -= piece
    return pieces


def _wait_for_path(path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise QtestError(f"{what} exited with status {proc.returncode} before creating {path.name}")
        if time.monotonic() > deadline:
            raise QtestError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.005)


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGCONT)
    except ProcessLookupError:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Swtpm:
    """``swtpm socket`` with a unix control channel, as QEMU expects it."""

    def __init__(self, workdir: Path, *, tpm2: bool = True, name: str = "swtpm") -> None:
        self.workdir = workdir
        self.tpm2 = tpm2
        self.state_dir = workdir / f"{name}-state"
        self.ctrl_path = workdir / f"{name}.ctrl"
        self._log_path = workdir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Swtpm:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            SWTPM_BINARY,
            "socket",
            "--tpmstate",
            f"dir={self.state_dir}",
            "--ctrl",
            f"type=unixio,path={self.ctrl_path}",
        ]
        if self.tpm2:
            args.append("--tpm2")
        self._log = open(self._log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        _wait_for_path(self.ctrl_path, self.proc, timeout, "swtpm")
        return self

    def pause(self) -> None:
        """Freeze swtpm (SIGSTOP): a command sent now stays in flight."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        _stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class TisDump:
    """What one DEBUG read printed: state of the read locality and the buffer."""

    active: int
    locality: int
    state: int
    rw_offset: int
    buffer: bytes


_DUMP_ACTIVE = re.compile(r"active locality\s*:\s*(\d+)")
_DUMP_STATE = re.compile(r"state of locality (\d+)\s*:\s*(\d+)")
_DUMP_OFFSET = re.compile(r"r/w offset\s*:\s*(\d+)")
_DUMP_BUFFER = re.compile(r"result buffer\s*:(.*)$")
_DUMP_MORE = re.compile(r"^[\s0-9a-f>]+$")


class Qemu:
    """One QEMU with a ``tpm-tis`` (or *device*) on a :class:`Swtpm`, driven over qtest."""

    def __init__(
        self,
        workdir: Path,
        swtpm: Swtpm,
        *,
        timeout: float = 10.0,
        irq: int = 5,
        device: str = "tpm-tis",
        ppi: bool = True,
    ) -> None:
        if device not in PLATFORMS:
            raise ValueError(f"unsupported TPM device {device!r}")
        self.platform = PLATFORMS[device]
        self.base = self.platform.base
        self.workdir = workdir
        self.swtpm = swtpm
        self.timeout = timeout
        self.irq_num = irq
        self.device = device
        self.ppi = ppi  # the ISA TIS's and the CRB's ppi property (both default on)
        self.irq_levels: dict[int, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._sock: socket.socket | None = None
        self._rbuf = b""
        self._qmp: socket.socket | None = None
        self._qmp_buf = b""
        self._out_path = workdir / "qemu.out"
        self._out: IO[bytes] | None = None
        self._out_reader: IO[bytes] | None = None
        self._qtest_path = workdir / "qtest.sock"
        self._qmp_path = workdir / "qmp.sock"

    # -- life cycle -----------------------------------------------------
    def start(self) -> Qemu:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self._qtest_path))
        self._listener.listen(1)
        self._listener.settimeout(self.timeout)
        args = [
            self.platform.binary,
            "-machine", self.platform.machine,
            "-accel", "tcg",
            "-S",
            "-qtest", f"unix:{self._qtest_path}",
            "-qtest-log", "/dev/null",
            "-display", "none",
            "-nodefaults",
            "-qmp", f"unix:{self._qmp_path},server=on,wait=off",
            "-chardev", f"socket,id=chrtpm,path={self.swtpm.ctrl_path}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", self._device_arg(),
        ]  # fmt: skip
        self._out = open(self._out_path, "wb")
        self._out_reader = open(self._out_path, "rb")
        # stdbuf: the DEBUG dump must reach the file before the qtest answer.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", *args], stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT
        )
        try:
            self._sock, _ = self._listener.accept()
        except socket.timeout:
            raise QtestError(f"QEMU did not connect to qtest: {self.output()[-2000:]}") from None
        self._sock.settimeout(self.timeout)
        self.command(f"irq_intercept_in {self.platform.irq_controller}")
        self._qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._qmp.settimeout(self.timeout)
        self._qmp.connect(str(self._qmp_path))
        self._qmp_message()  # greeting
        self.qmp("qmp_capabilities")

    def _device_arg(self) -> str:
        ppi = "" if self.ppi or self.device == "tpm-tis-device" else ",ppi=off"
        if self.device in ("tpm-tis", "tpm-tis-device"):
            return f"{self.device},tpmdev=tpm0,irq={self.irq_num}{ppi}"
        return f"{self.device},tpmdev=tpm0{ppi}"  # tpm-crb has no interrupt

    def close(self) -> None:
        for sock in (self._sock, self._qmp, self._listener):
            if sock is not None:
                sock.close()
        self._sock = self._qmp = self._listener = None
        _stop_process(self.proc)
        for f in (self._out, self._out_reader):
            if f is not None:
                f.close()
        self._out = self._out_reader = None

    def __enter__(self) -> Qemu:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def output(self) -> str:
        """Everything QEMU printed so far."""
        try:
            return self._out_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- qtest ----------------------------------------------------------
    def _readline(self, sock: socket.socket, attr: str) -> bytes:
        buf: bytes = getattr(self, attr)
        while b"\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise QtestError(f"no answer from QEMU within {self.timeout} s") from None
            if not chunk:
                raise QtestError(f"QEMU closed the connection: {self.output()[-2000:]}")
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        setattr(self, attr, rest)
        return line

    def command(self, line: str) -> str:
        """Send one qtest request, return its answer (without the IRQ lines)."""
        if self._sock is None:
            raise QtestError("QEMU is not running")
        self._sock.sendall(line.encode() + b"\n")
        return self._answer(line)

    def _answer(self, line: str) -> str:
        assert self._sock is not None
        while True:
            answer = self._readline(self._sock, "_rbuf").decode().strip()
            if answer.startswith("IRQ "):
                _, how, num = answer.split()
                self.irq_levels[int(num)] = 1 if how == "raise" else 0
                continue
            if not answer.startswith("OK"):
                raise QtestError(f"qtest {line!r}: {answer}")
            return answer

    def send_nowait(self, line: str) -> None:
        """Send a request whose answer :meth:`collect` reads later."""
        assert self._sock is not None
        self._sock.sendall(line.encode() + b"\n")

    def collect(self, line: str) -> str:
        return self._answer(line)

    @property
    def irq(self) -> int:
        """Level of the TIS interrupt line at the interrupt controller."""
        line = self.platform.irq_input
        return self.irq_levels.get(self.irq_num if line is None else line, 0)

    _READ = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}
    _WRITE = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}

    def readmem(self, addr: int, size: int) -> int:
        return int(self.command(f"{self._READ[size]} 0x{addr:x}").split()[1], 16)

    def writemem(self, addr: int, value: int, size: int) -> None:
        self.command(f"{self._WRITE[size]} 0x{addr:x} 0x{value:x}")

    def read_bytes(self, addr: int, length: int) -> bytes:
        answer = self.command(f"read 0x{addr:x} 0x{length:x}")
        return bytes.fromhex(answer.split()[1][2:])

    # -- QMP ------------------------------------------------------------
    def _qmp_message(self) -> dict[str, object]:
        assert self._qmp is not None
        msg = json.loads(self._readline(self._qmp, "_qmp_buf"))
        assert isinstance(msg, dict)
        return msg

    def qmp(self, execute: str, *, wait_event: str | None = None) -> object:
        if self._qmp is None:
            raise QtestError("QEMU is not running")
        self._qmp.sendall(json.dumps({"execute": execute}).encode() + b"\n")
        result: object = None
        got_return = False
        seen_event = wait_event is None
        while not (got_return and seen_event):
            msg = self._qmp_message()
            if "return" in msg:
                got_return, result = True, msg["return"]
            elif "error" in msg:
                raise QtestError(f"QMP {execute}: {msg['error']}")
            elif msg.get("event") == wait_event:
                seen_event = True
        return result

    def system_reset(self) -> None:
        """Machine reset; returns once the reset ran (the RESET event)."""
        self.qmp("system_reset", wait_event="RESET")
        self.readmem(self.base + 0xF00, 4)  # a round trip after the reset (TIS DID_VID, CRB buffer)

    # -- the TIS debug print --------------------------------------------
    def tis_dump(self, locality: int) -> TisDump:
        """Read DEBUG of *locality* and parse what QEMU printed."""
        assert self._out_reader is not None
        self._out_reader.seek(0, os.SEEK_END)
        self.readmem(self.base + (locality << 12) + 0xF90, 4)
        deadline = time.monotonic() + self.timeout
        text = b""
        while b"result buffer" not in text or not text.endswith(b"\n"):
            chunk = self._out_reader.read()
            if chunk:
                text += chunk
                continue
            if time.monotonic() > deadline:
                raise QtestError(f"no TIS dump after reading DEBUG: {text!r}")
            time.sleep(0.001)
        lines = text.decode(errors="replace").splitlines()
        start = max(i for i, ln in enumerate(lines) if "active locality" in ln)
        active = state = offset = -1
        loc = locality
        buf = b""
        in_buffer = False
        for ln in lines[start:]:
            rest = ln.partition("tpm_tis:")[2]
            if in_buffer and _DUMP_MORE.match(rest):
                buf += bytes.fromhex(rest.replace(">", " "))
                continue
            in_buffer = False
            if m := _DUMP_ACTIVE.search(ln):
                active = int(m.group(1))
            elif m := _DUMP_STATE.search(ln):
                loc, state = int(m.group(1)), int(m.group(2))
            elif m := _DUMP_OFFSET.search(ln):
                offset = int(m.group(1))
            elif m := _DUMP_BUFFER.search(ln):
                buf = bytes.fromhex(m.group(1).replace(">", " "))
                in_buffer = True
        if state < 0 or offset < 0:
            raise QtestError(f"unparsable TIS dump: {lines[start:]!r}")
        return TisDump(active, loc, state, offset, buf)

    def wait_idle_backend(self, localities: range = range(4), timeout: float = 5.0) -> None:
        """Poll until no locality is in EXECUTION (the backend answered)."""
        deadline = time.monotonic() + timeout
        for loc in localities:
            while self.tis_dump(loc).state == STATE_EXECUTION:
                if time.monotonic() > deadline:
                    raise QtestError(f"locality {loc} still executing after {timeout} s")
                time.sleep(0.001)


class QemuRegion:
    """A device region of QEMU seen like a tpmdev device: offsets relative to the base."""

    def __init__(self, qemu: Qemu, base: int | None = None) -> None:
        self.qemu = qemu
        self.base = qemu.base if base is None else base

    def read(self, offset: int, size: int = 4) -> int:
        return self.qemu.readmem(self.base + offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self.qemu.writemem(self.base + offset, value, size)

    def read_bytes(self, offset: int, length: int) -> bytes:
        return self.qemu.read_bytes(self.base + offset, length)

    def reset(self) -> None:
        self.qemu.system_reset()


class QemuTis(QemuRegion):
    """QEMU's TIS seen like a tpmdev device: offsets relative to the base."""

    @property
    def irq(self) -> int:
        return self.qemu.irq


class QemuCrb(QemuRegion):
    """QEMU's CRB seen like a tpmdev device: offsets relative to the base."""

    #: CTRL_START, and its bit 0 (command in progress)
    CTRL_START = 0x4C

    def __init__(self, qemu: Qemu, base: int = CRB_BASE) -> None:
        super().__init__(qemu, base)

    def wait_idle_backend(self, timeout: float = 10.0) -> None:
        """Poll CTRL_START until bit 0 is clear (the backend answered)."""
        deadline = time.monotonic() + timeout
        while self.read(self.CTRL_START) & 1:
            if time.monotonic() > deadline:
                raise QtestError(f"CTRL_START still set after {timeout} s")
            time.sleep(0.0005)
