"""Register traces of an MMIO frontend: record a session, show it decoded, replay it.

A trace is every register access a guest made to a TIS, a sysbus TIS or a
CRB, in order: ``(op, offset, size, value)`` with ``op`` ``"r"`` (the value
read) or ``"w"`` (the value written).

* :class:`Recorder` wraps a device (``read`` / ``write`` pass through and are
  recorded); a driver drives it as it would drive the device.
* :func:`save` / :func:`load`: a text file, JSON lines, the first naming the
  frontend and TPM version (``{"tpmdev-trace": 1, "frontend": "tis",
  "tpm": 2}``), then one ``["r", offset, size, value]`` per access.
* :func:`describe` pretty-prints: register names (locality of a TIS access
  shown), the bits of ACCESS / STS / LOC_STATE / CTRL_STS decoded, runs of
  FIFO or buffer bytes folded into one line, and every command and response
  decoded by its TPM codes (command code name, response code).
* :func:`replay` performs the writes on a device and compares every read
  with the recorded value; the first difference is a :class:`Divergence`.
  Random numbers differ between TPMs: replay against ``Builtin(seed=...)``
  with the seed the session was recorded with to get the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from tpmdev.drivers.commands import command_name
from tpmdev.errors import ConfigurationError, StateError
from tpmdev.hw.regs import (
    CRB_REGISTERS,
    TIS_REGISTERS,
    TPM_ACCESS,
    TPM_CRB_CTRL_START,
    TPM_CRB_CTRL_STS,
    TPM_CRB_DATA_BUFFER,
    TPM_DATA_FIFO,
    TPM_LOC_STATE,
    TPM_STS,
    TPM_STS_GO,
    TPM_XDATA_FIFO,
)
from tpmdev.wire import HEADER_SIZE, header_size, parse_header

__all__ = ["Access", "Trace", "Recorder", "Divergence", "save", "load", "describe", "replay", "frontend_of"]

TRACE_VERSION = 1

_ACCESS_BITS = [
    (0x80, "tpmRegValidSts"),
    (0x20, "activeLocality"),
    (0x10, "beenSeized"),
    (0x08, "Seize"),
    (0x04, "pendingRequest"),
    (0x02, "requestUse"),
    (0x01, "tpmEstablishment"),
]
_STS_BITS = [
    (0x02000000, "resetEstablishmentBit"),
    (0x01000000, "commandCancel"),
    (0x80, "stsValid"),
    (0x40, "commandReady"),
    (0x20, "tpmGo"),
    (0x10, "dataAvail"),
    (0x08, "Expect"),
    (0x04, "selfTestDone"),
    (0x02, "responseRetry"),
]
_LOC_STATE_BITS = [(0x80, "tpmRegValidSts"), (0x02, "locAssigned"), (0x01, "tpmEstablished")]
_CTRL_STS_BITS = [(0x02, "tpmIdle"), (0x01, "tpmSts")]


class Access(NamedTuple):
    op: str  # "r" or "w"
    offset: int
    size: int
    value: int


@dataclass
class Trace:
    frontend: str  # "tis", "tis-sysbus" or "crb"
    tpm_version: int
    accesses: list[Access]


@dataclass(frozen=True)
class Divergence:
    """The first read that gave another value than the recorded one."""

    index: int
    access: Access
    got: int
    crb: bool = False

    def __str__(self) -> str:
        a = self.access
        return (
            f"access {self.index}: read {_name(a.offset, self.crb)} (offset {a.offset:#x}, {a.size} bytes) "
            f"gave {self.got:#x}, the trace has {a.value:#x}"
        )


def frontend_of(dev: Any) -> str:
    """The trace frontend word of an MMIO device (ConfigurationError for others)."""
    from tpmdev.crb import CRB
    from tpmdev.tis import TIS, TISSysbus

    if isinstance(dev, TISSysbus):
        return "tis-sysbus"
    if isinstance(dev, TIS):
        return "tis"
    if isinstance(dev, CRB):
        return "crb"
    raise ConfigurationError(
        f"register traces are of MMIO frontends (TIS, TISSysbus, CRB), not {type(dev).__name__}"
    )


class Recorder:
    """*dev* with every ``read`` / ``write`` recorded in :attr:`accesses`;
    anything else is the device's."""

    def __init__(self, dev: Any) -> None:
        self.frontend = frontend_of(dev)
        self.dev = dev
        #: what :func:`tpmdev.drivers.for_device` drives this like
        self.wrapped_device = dev
        self.accesses: list[Access] = []

    def read(self, offset: int, size: int = 4) -> int:
        value = int(self.dev.read(offset, size))
        self.accesses.append(Access("r", offset, size, value))
        return value

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self.accesses.append(Access("w", offset, size, value))
        self.dev.write(offset, value, size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dev, name)

    @property
    def trace(self) -> Trace:
        return Trace(self.frontend, self.dev.tpm_version, list(self.accesses))


def save(trace: Trace, path: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        head = {"tpmdev-trace": TRACE_VERSION, "frontend": trace.frontend, "tpm": trace.tpm_version}
        f.write(json.dumps(head) + "\n")
        for a in trace.accesses:
            f.write(json.dumps([a.op, a.offset, a.size, a.value]) + "\n")


def load(path: str) -> Trace:
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read the trace {path}: {exc}") from None
    try:
        head = json.loads(lines[0])
        if head.get("tpmdev-trace") != TRACE_VERSION or head.get("frontend") not in (
            "tis",
            "tis-sysbus",
            "crb",
        ):
            raise ValueError("not a tpmdev trace of version 1")
        accesses = []
        for line in lines[1:]:
            op, offset, size, value = json.loads(line)
            if op not in ("r", "w") or size not in (1, 2, 4, 8):
                raise ValueError(f"bad access {line}")
            accesses.append(Access(op, int(offset), int(size), int(value)))
        return Trace(head["frontend"], int(head.get("tpm", 2)), accesses)
    except (ValueError, IndexError, TypeError, AttributeError) as exc:
        raise StateError(f"{path} is not a tpmdev register trace ({exc})") from None


# -- describe ----------------------------------------------------------------------

_TIS_NAMES = {offset: name for name, offset in TIS_REGISTERS.items()}
_CRB_NAMES = {offset: name for name, offset in CRB_REGISTERS.items()}


def _name(offset: int, crb: bool) -> str:
    if crb:
        if offset >= TPM_CRB_DATA_BUFFER:
            return f"TPM_CRB_DATA_BUFFER+{offset - TPM_CRB_DATA_BUFFER:#x}"
        return _CRB_NAMES.get(offset & 0xFFC, f"reg {offset:#05x}")
    locality, reg = offset >> 12, offset & 0xFFF
    if TPM_XDATA_FIFO <= reg < TPM_XDATA_FIFO + 0x40:
        reg = TPM_XDATA_FIFO
    name = _TIS_NAMES.get(reg & 0xFFC, f"reg {reg:#05x}")
    return f"{name}_{locality}" + (f"+{reg & 3}" if reg & 3 and reg not in (TPM_XDATA_FIFO,) else "")


def _bits(value: int, table: list[tuple[int, str]]) -> str:
    return "|".join(name for bit, name in table if value & bit)


def _decode(a: Access, crb: bool) -> str:
    reg = a.offset & 0xFFF
    if not crb and reg == TPM_ACCESS and a.size == 1:
        return _bits(a.value, _ACCESS_BITS)
    if not crb and reg == TPM_STS:
        text = _bits(a.value, _STS_BITS)
        if a.op == "r" and a.size >= 2:
            text += f" burstCount={(a.value >> 8) & 0xFFFF}"
        return text
    if crb and a.offset == TPM_LOC_STATE:
        return _bits(a.value, _LOC_STATE_BITS) + f" activeLocality={(a.value >> 2) & 7}"
    if crb and a.offset == TPM_CRB_CTRL_STS:
        return _bits(a.value, _CTRL_STS_BITS)
    return ""


def _message(data: bytes, command: bool) -> str:
    if len(data) < HEADER_SIZE:
        return f"{len(data)} bytes (no complete header)"
    tag, _, code = parse_header(data)
    if command:
        return f"command {command_name(data)} ({len(data)} bytes, tag {tag:#06x}): {data.hex()}"
    outcome = "success" if code == 0 else f"error {code:#x}"
    return f"response rc={code:#x} ({outcome}, {len(data)} bytes): {data.hex()}"


def describe(trace: Trace) -> Iterator[str]:
    """The trace as readable lines (see the module documentation)."""
    crb = trace.frontend == "crb"
    version = "2.0" if trace.tpm_version == 2 else "1.2"
    yield f"register trace of a {trace.frontend} (TPM {version}), {len(trace.accesses)} accesses"
    fifo = bytearray()  # bytes of the current run through DATA_FIFO / the CRB buffer
    fifo_op = ""
    fifo_start = 0
    command = bytearray()
    response = bytearray()
    buffer: dict[int, int] = {}  # CRB: bytes written to the buffer
    read_back: dict[int, int] = {}  # CRB: bytes read from it since START
    shown = False

    def flush() -> Iterator[str]:
        nonlocal fifo_op
        if fifo_op:
            where = "TPM_CRB_DATA_BUFFER" if crb else "TPM_DATA_FIFO"
            verb = "read " if fifo_op == "r" else "write"
            yield f"{fifo_start:6d} {verb} {where} x{len(fifo)} bytes: {bytes(fifo).hex()}"
        fifo.clear()
        fifo_op = ""

    for i, a in enumerate(trace.accesses):
        is_data = (crb and a.offset >= TPM_CRB_DATA_BUFFER) or (
            not crb and (a.offset & 0xFFF) in (TPM_DATA_FIFO, TPM_XDATA_FIFO)
        )
        if is_data:
            if fifo_op != a.op:
                yield from flush()
                fifo_op, fifo_start = a.op, i
            chunk = a.value.to_bytes(a.size, "little")
            fifo += chunk
            if crb:
                # the buffer is RAM: the command is what was written, the
                # response what was read, by offset (drivers read the header twice)
                seen = buffer if a.op == "w" else read_back
                for k, byte in enumerate(chunk):
                    seen[a.offset - TPM_CRB_DATA_BUFFER + k] = byte
                if a.op == "r" and not shown and all(k in read_back for k in range(HEADER_SIZE)):
                    head = bytes(read_back[k] for k in range(HEADER_SIZE))
                    size = max(header_size(head), HEADER_SIZE)
                    if all(k in read_back for k in range(size)):
                        yield from flush()
                        yield f"{'':6} == {_message(bytes(read_back[k] for k in range(size)), False)}"
                        shown = True
                continue
            if a.op == "w":
                command += chunk
            else:
                response += chunk
            if a.op == "r" and len(response) >= HEADER_SIZE and len(response) >= header_size(bytes(response)):
                yield from flush()
                yield f"{'':6} == {_message(bytes(response[: header_size(bytes(response))]), False)}"
                response.clear()
            continue
        yield from flush()
        decoded = _decode(a, crb)
        verb = "read " if a.op == "r" else "write"
        yield f"{i:6d} {verb} {_name(a.offset, crb):<28} {a.value:#0{2 + 2 * a.size}x}" + (
            f"  {decoded}" if decoded else ""
        )
        go = (crb and a.op == "w" and (a.offset & 0xFFF) == TPM_CRB_CTRL_START and a.value & 1) or (
            not crb and a.op == "w" and (a.offset & 0xFFF) == TPM_STS and a.value & TPM_STS_GO
        )
        if go:
            if crb:
                size = header_size(bytes(buffer.get(k, 0) for k in range(HEADER_SIZE)))
                command = bytearray(buffer.get(k, 0) for k in range(max(size, HEADER_SIZE)))
            yield f"{'':6} == {_message(bytes(command), True)}"
            command.clear()
            response.clear()
            read_back.clear()
            shown = False
    yield from flush()


# -- replay ------------------------------------------------------------------------------


def replay(trace: Trace, dev: Any, *, stop_at_first: bool = True) -> Optional[Divergence]:
    """Perform *trace* on *dev*; the first read that differs (None: identical)."""
    if frontend_of(dev) != trace.frontend:
        raise ConfigurationError(f"the trace is of a {trace.frontend}, the device a {frontend_of(dev)}")
    first: Optional[Divergence] = None
    for i, a in enumerate(trace.accesses):
        if a.op == "w":
            dev.write(a.offset, a.value, a.size)
            continue
        got = int(dev.read(a.offset, a.size))
        if got != a.value and first is None:
            first = Divergence(i, a, got, trace.frontend == "crb")
            if stop_at_first:
                return first
    return first
