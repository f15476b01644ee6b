"""Recording a device's bus operations, replaying them, and reading them.

Theory of operation
-------------------
A :class:`Recorder` sits in front of a device: it replaces the device's bus
entry points *on the instance* (``read``, ``write``, ``read_many``,
``write_many`` for MMIO frontends; the ``i2c_*`` calls for the TIS over I2C;
``reset``, ``poll`` and ``wait`` for all) with wrappers that call the
original and append one :class:`Event` per call: the operation, its
arguments and what it returned. :meth:`Recorder.close` puts the originals
back. Whoever calls the device through its attributes after the recorder
was installed is recorded (install it before handing the device to a driver
that keeps bound methods of its own).

A trace is a text file, one event per line, so it can be read, diffed and
edited by hand::

    #!tpmdev-trace 1
    @frontend tis
    @tpm-version 2
    @backend builtin
    w 0x0 0x2 1
    r 0x0 1 = 0xa1
    R 0x24 10 1 = 80010000001c00000000
    i2c_write 0418 = 0x2

Header lines start with ``@`` (``@option NAME=VALUE`` for constructor
options such as ``localities=5``); ``#`` starts a comment. An event line is
the operation, its arguments in call order (integers in hex or decimal, byte
strings as hex, ``-`` for an empty one) and, for calls that return
something, ``=`` and the result.

:func:`replay` builds a device of the recorded kind (or takes one), runs the
events in order and reports the first call whose result differs from the
recorded one. :func:`describe` turns a trace into lines a person reads:
register names, the bits of ACCESS, STS, the interrupt and CRB control
registers, FIFO and buffer traffic grouped, and every command and response
decoded by its TPM code.

The sPAPR vTPM has no registers (its guest talks in CRQ messages and DMA);
it is not traced here.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TextIO, Union

from tpmdev.errors import ConfigurationError, StateError, TpmDevError
from tpmdev.hw import regs
from tpmdev.hw.ops import OP_READ
from tpmdev.tpm_codes import command_name, response_name

__all__ = [
    "TRACE_FORMAT_VERSION",
    "Event",
    "Trace",
    "TraceError",
    "Divergence",
    "Recorder",
    "record",
    "load",
    "loads",
    "replay",
    "build_device",
    "open_recorded_backend",
    "describe",
    "frontend_kind",
    "frontend_class",
]

TRACE_FORMAT_VERSION = 1
_MAGIC = "#!tpmdev-trace"

Value = Union[int, bytes]


class TraceError(TpmDevError, ValueError):
    """A trace file that cannot be read: the message names the line."""


# Argument and result kinds of every recordable call: "i" an int, "b" bytes,
# "" (result) nothing.
_SCHEMA: dict[str, tuple[str, str]] = {
    "r": ("ii", "i"),  # read(offset, size) -> value
    "w": ("iii", ""),  # write(offset, value, size)
    "R": ("iii", "b"),  # read_many(offset, count, size) -> bytes
    "W": ("ibi", ""),  # write_many(offset, data, size)
    "i2c_write": ("b", "i"),
    "i2c_read": ("i", "b"),
    "i2c_read_reg": ("ii", "b"),
    "i2c_start": ("i", "i"),
    "i2c_send": ("i", "i"),
    "i2c_recv": ("", "i"),
    "i2c_nack": ("", ""),
    "i2c_stop": ("", ""),
    "reset": ("", ""),
    "poll": ("", "i"),
    "wait": ("", "i"),
}

# Parameter names and defaults of each call, in order (what the recorder
# fills in when a caller leaves one out or passes it by keyword). ``wait``'s
# timeout is not recorded: a replay waits for the command to finish.
_PARAMS: dict[str, tuple[tuple[str, Any], ...]] = {
    "r": (("offset", None), ("size", 4)),
    "w": (("offset", None), ("value", None), ("size", 4)),
    "R": (("offset", None), ("count", None), ("size", 1)),
    "W": (("offset", None), ("data", None), ("size", 1)),
    "i2c_write": (("data", None),),
    "i2c_read": (("count", None),),
    "i2c_read_reg": (("reg", None), ("count", None)),
    "i2c_start": (("recv", False),),
    "i2c_send": (("byte", None),),
}

_METHODS = {
    "r": "read",
    "w": "write",
    "R": "read_many",
    "W": "write_many",
}

_MMIO_OPS = ("r", "w", "R", "W")
_I2C_OPS = (
    "i2c_write",
    "i2c_read",
    "i2c_read_reg",
    "i2c_start",
    "i2c_send",
    "i2c_recv",
    "i2c_nack",
    "i2c_stop",
)
_COMMON_OPS = ("reset", "poll", "wait")


@dataclasses.dataclass(frozen=True)
class Event:
    """One call on the device: ``op`` (a key of the trace format), its
    arguments in call order, and its result (None for calls returning
    nothing)."""

    op: str
    args: tuple[Value, ...] = ()
    result: Optional[Value] = None

    def to_line(self) -> str:
        parts = [self.op, *(_fmt(a) for a in self.args)]
        if _SCHEMA[self.op][1]:
            parts += ["=", _fmt(self.result if self.result is not None else 0)]
        return " ".join(parts)


@dataclasses.dataclass
class Trace:
    """A recorded session: the device it ran on and its events."""

    frontend: str
    tpm_version: int
    backend: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[Event] = dataclasses.field(default_factory=list)
    #: the seed of a deterministic Builtin backend (random bytes and clock
    #: repeat, so a replay on ``Builtin(seed=...)`` can match exactly)
    seed: Optional[int] = None

    def dumps(self) -> str:
        out = io.StringIO()
        self.dump(out)
        return out.getvalue()

    def dump(self, out: TextIO) -> None:
        out.write(
            f"{_MAGIC} {TRACE_FORMAT_VERSION}\n@frontend {self.frontend}\n@tpm-version {self.tpm_version}\n"
        )
        if self.backend:
            out.write(f"@backend {self.backend}\n")
        if self.seed is not None:
            out.write(f"@seed {self.seed}\n")
        for name, value in sorted(self.options.items()):
            out.write(f"@option {name}={_fmt_option(value)}\n")
        for event in self.events:
            out.write(event.to_line() + "\n")

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        with open(path, "w", encoding="ascii") as f:
            self.dump(f)


def _fmt(value: Optional[Value]) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex() or "-"
    return hex(value if value is not None else 0)


def _fmt_option(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return hex(value) if value > 9 else str(value)
    raise ConfigurationError(f"trace options must be ints or bools, got {value!r}")


def _parse_option(text: str, where: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text, 0)
    except ValueError:
        raise TraceError(f"{where}: option value {text!r} is neither an int nor true/false") from None


# --- what a frontend is called in a trace -----------------------------------------


def _frontend_classes() -> dict[str, type]:
    """The frontends a trace covers (the register ones), by their trace names."""
    from tpmdev._frontends import frontend_class as _class_of

    return {kind: _class_of(kind) for kind in ("tis", "tis-sysbus", "crb", "tis-i2c")}


def frontend_class(kind: str) -> type:
    """The device class a trace calls *kind* (``tis``, ``tis-sysbus``, ``crb``, ``tis-i2c``)."""
    classes = _frontend_classes()
    if kind not in classes:
        raise ConfigurationError(f"no traceable frontend {kind!r}: one of {', '.join(classes)}")
    return classes[kind]


def frontend_kind(dev: object) -> str:
    """The trace name of *dev*'s frontend (``tis``, ``tis-sysbus``, ``crb``,
    ``tis-i2c``); ConfigurationError for a device that cannot be traced."""
    # most derived first: TISSysbus is a TIS
    for name, cls in sorted(_frontend_classes().items(), key=lambda kv: -len(kv[1].__mro__)):
        if isinstance(dev, cls):
            return name
    raise ConfigurationError(
        f"cannot trace a {type(dev).__name__}: traces cover the register frontends "
        "(TIS, TISSysbus, CRB, TISI2C); the sPAPR vTPM has no registers"
    )


#: The constructor options a trace records per frontend: what changes what
#: the guest reads (the rest, such as ``ppi``, is outside the registers).
_OPTIONS = {"tis": ("irq_num",), "tis-sysbus": ("irq_num",), "crb": ("localities", "address"), "tis-i2c": ()}


def _options_of(dev: Any, kind: str) -> dict[str, Any]:
    """The constructor options a replay needs to build the same device."""
    return {name: int(getattr(dev, name)) for name in _OPTIONS[kind]}


# --- recording ----------------------------------------------------------------------


class Recorder:
    """Records every bus operation on *dev* until :meth:`close`.

    ``backend`` is a free-form note of what ran the commands (shown by
    ``tpmdev trace show``; :func:`replay` opens it with
    :func:`tpmdev.backends.open` when no backend is given). *out*, when
    given, is where :meth:`close` writes the trace (a path or a text file).
    """

    def __init__(
        self,
        dev: Any,
        out: Union[str, os.PathLike[str], TextIO, None] = None,
        *,
        backend: str = "",
        seed: Optional[int] = None,
    ) -> None:
        kind = frontend_kind(dev)
        if getattr(dev, "closed", False):
            raise StateError("cannot record a closed device")
        if getattr(dev, "asynchronous", False):
            raise ConfigurationError(
                "cannot record an asynchronous device: what its polls read depends on when the worker "
                "finishes, so no replay could match; record a synchronous one"
            )
        if not isinstance(backend, str):
            raise ConfigurationError(f"backend must be a str describing the backend, got {backend!r}")
        self.device = dev
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigurationError(f"seed must be the Builtin backend's int seed (>= 0), got {seed!r}")
        self.trace = Trace(kind, int(dev.tpm_version), backend, _options_of(dev, kind), seed=seed)
        self._out = out
        self._depth = 0
        self._saved: dict[str, Any] = {}
        ops = (_I2C_OPS if kind == "tis-i2c" else _MMIO_OPS) + _COMMON_OPS
        for op in ops:
            name = _METHODS.get(op, op)
            original = getattr(dev, name)
            if name in vars(dev):
                self._saved[name] = original
            else:
                self._saved[name] = None  # a class attribute: restored by deleting ours
            setattr(dev, name, self._wrap(op, original))
        if kind != "tis-i2c" and hasattr(dev, "execute"):
            self._saved["execute"] = vars(dev).get("execute")
            dev.execute = self._wrap_execute(dev.execute)
        self._closed = False

    @property
    def events(self) -> list[Event]:
        return self.trace.events

    def _wrap(self, op: str, original: Callable[..., Any]) -> Callable[..., Any]:
        events = self.events
        params = _PARAMS.get(op, ())
        arg_kinds, result_kind = _SCHEMA[op]

        def call(*args: Any, **kwargs: Any) -> Any:
            # Only the outermost call is the guest's (or host's): reset()
            # calls wait(), and a replay's reset() will do so again.
            self._depth += 1
            try:
                result = original(*args, **kwargs)
            finally:
                self._depth -= 1
            if self._depth:
                return result
            # The call succeeded, so its arguments are what the device took:
            # record them in call order with the defaults filled in.
            values = list(args[: len(params)])
            for name, default in params[len(values) :]:
                values.append(kwargs.get(name, default))
            recorded = tuple(bytes(v) if k == "b" else int(v) for k, v in zip(arg_kinds, values))
            out: Optional[Value] = None
            if result_kind == "i":
                out = int(result)
            elif result_kind == "b":
                out = bytes(result)
            events.append(Event(op, recorded, out))
            return result

        call.__name__ = _METHODS.get(op, op)
        call.__doc__ = original.__doc__
        return call

    def _wrap_execute(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """A batch (:meth:`execute`) is recorded as the single accesses it is."""
        events = self.events

        def execute(ops: Any, out: Any = None) -> Any:
            result = original(ops, out)
            if self._depth:
                return result
            for row, value in zip(ops.tolist(), result.tolist()):
                kind, size, offset, written = row
                if kind == OP_READ:
                    events.append(Event("r", (offset, size), value))
                else:
                    events.append(Event("w", (offset, written, size)))
            return result

        execute.__doc__ = original.__doc__
        return execute

    def close(self) -> Trace:
        """Stop recording, restore the device's own methods, write the trace
        to *out* if one was given, and return it."""
        if self._closed:
            return self.trace
        self._closed = True
        for name, original in self._saved.items():
            if original is None:
                try:
                    delattr(self.device, name)
                except AttributeError:
                    pass
            else:
                setattr(self.device, name, original)
        if self._out is not None:
            if isinstance(self._out, (str, os.PathLike)):
                self.trace.save(self._out)
            else:
                self.trace.dump(self._out)
        return self.trace

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record(
    dev: Any,
    out: Union[str, os.PathLike[str], TextIO, None] = None,
    *,
    backend: str = "",
    seed: Optional[int] = None,
) -> Recorder:
    """``with tpmdev.trace.record(dev, "session.trace"): ...`` records the
    block's bus operations and writes them at its end (see :class:`Recorder`;
    ``seed`` notes the seed of a deterministic Builtin backend)."""
    return Recorder(dev, out, backend=backend, seed=seed)


# --- reading ------------------------------------------------------------------------


def loads(text: str) -> Trace:
    """Parse a trace; TraceError names the line that is wrong."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith(_MAGIC):
        raise TraceError(f"not a tpmdev trace: the first line must be '{_MAGIC} {TRACE_FORMAT_VERSION}'")
    try:
        version = int(lines[0][len(_MAGIC) :].strip())
    except ValueError:
        raise TraceError(f"line 1: bad format version {lines[0]!r}") from None
    if version != TRACE_FORMAT_VERSION:
        raise TraceError(
            f"line 1: trace format {version} is not supported (this tpmdev reads {TRACE_FORMAT_VERSION})"
        )
    header: dict[str, str] = {}
    options: dict[str, Any] = {}
    events: list[Event] = []
    for number, line in enumerate(lines[1:], start=2):
        where = f"line {number}"
        text_ = line.split("#", 1)[0].strip()
        if not text_:
            continue
        if text_.startswith("@"):
            if events:
                raise TraceError(f"{where}: header line after the first event")
            key, _, value = text_[1:].partition(" ")
            if key == "option":
                name, eq, raw = value.strip().partition("=")
                if not eq or not name:
                    raise TraceError(f"{where}: an option is written '@option NAME=VALUE'")
                options[name] = _parse_option(raw, where)
            elif key in ("frontend", "tpm-version", "backend", "seed"):
                header[key] = value.strip()
            else:
                raise TraceError(f"{where}: unknown header {key!r}")
            continue
        events.append(_parse_event(text_, where))
    frontend = header.get("frontend")
    if frontend not in _frontend_classes():
        raise TraceError(f"the trace names no known frontend (@frontend {frontend!r})")
    try:
        tpm_version = int(header.get("tpm-version", ""))
    except ValueError:
        tpm_version = 0
    if tpm_version not in (1, 2):
        raise TraceError("the trace must say '@tpm-version 1' or '@tpm-version 2'")
    unknown = sorted(set(options) - set(_OPTIONS[frontend]))
    if unknown:
        known = ", ".join(_OPTIONS[frontend]) or "none"
        raise TraceError(f"the {frontend} frontend has no option {unknown[0]!r} (its options: {known})")
    allowed = (_I2C_OPS if frontend == "tis-i2c" else _MMIO_OPS) + _COMMON_OPS
    for index, event in enumerate(events):
        if event.op not in allowed:
            raise TraceError(f"event {index}: {event.op!r} is not an operation of the {frontend} frontend")
    seed = None
    if "seed" in header:
        try:
            seed = int(header["seed"], 0)
        except ValueError:
            raise TraceError(f"@seed {header['seed']!r} is not an int") from None
    return Trace(frontend, tpm_version, header.get("backend", ""), options, events, seed)


def load(source: Union[str, os.PathLike[str], TextIO]) -> Trace:
    """Read a trace from a path or a text file."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, encoding="ascii") as f:
                return loads(f.read())
        except UnicodeDecodeError:
            raise TraceError(f"{os.fspath(source)}: not a tpmdev trace (not ASCII text)") from None
    return loads(source.read())


def _parse_event(text: str, where: str) -> Event:
    left, eq, right = text.partition("=")
    words = left.split()
    if not words:
        raise TraceError(f"{where}: an event starts with its operation")
    op = words[0]
    schema = _SCHEMA.get(op)
    if schema is None:
        raise TraceError(f"{where}: unknown operation {op!r}")
    arg_kinds, result_kind = schema
    if len(words) - 1 != len(arg_kinds):
        raise TraceError(f"{where}: {op} takes {len(arg_kinds)} argument(s), found {len(words) - 1}")
    if bool(eq) != bool(result_kind):
        raise TraceError(f"{where}: {op} " + ("needs '= RESULT'" if result_kind else "returns nothing"))
    args = tuple(_parse_value(k, w, where) for k, w in zip(arg_kinds, words[1:]))
    result = None
    if result_kind:
        value = right.split()
        if len(value) != 1:
            raise TraceError(f"{where}: one result after '='")
        result = _parse_value(result_kind, value[0], where)
    if op in ("r", "w", "R", "W"):
        size = args[1] if op == "r" else args[2]
        if not isinstance(size, int) or not 1 <= size <= 8:
            raise TraceError(f"{where}: an access size is 1 to 8 bytes, not {size!r}")
        moved = result if op == "r" else args[1] if op == "w" else None
        if isinstance(moved, int) and moved >> (8 * size):
            raise TraceError(f"{where}: {moved:#x} does not fit in {size} byte(s)")
    elif op in ("i2c_send", "i2c_read_reg") and isinstance(args[0], int) and args[0] > 0xFF:
        raise TraceError(f"{where}: {args[0]:#x} is not a byte")
    return Event(op, args, result)


def _parse_value(kind: str, word: str, where: str) -> Value:
    try:
        if kind == "b":
            return b"" if word == "-" else bytes.fromhex(word)
        value = int(word, 0)
    except ValueError:
        raise TraceError(f"{where}: {word!r} is not " + ("hex bytes" if kind == "b" else "an int")) from None
    if value < 0:
        raise TraceError(f"{where}: {word!r} is negative")
    return value


# --- replay -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where a replay first differed from its trace."""

    index: int
    event: Event
    got: Optional[Value]
    error: Optional[BaseException] = None

    def __str__(self) -> str:
        if self.error is not None:
            return f"event {self.index} ({self.event.to_line()}): {type(self.error).__name__}: {self.error}"
        got, want = _fmt(self.got), _fmt(self.event.result)
        return f"event {self.index} ({self.event.to_line()}): got {got}, the trace has {want}"


def open_recorded_backend(trace: Trace, spec: Optional[str] = None) -> Any:
    """A fresh backend for replaying *trace*: *spec* (as
    :func:`tpmdev.backends.open` takes it; default the one the trace names,
    else ``builtin``) in the trace's TPM version. A Builtin backend gets the
    trace's seed, so its random bytes and clock repeat."""
    from tpmdev.backends import Builtin, open as open_backend

    spec = spec or trace.backend or "builtin"
    kind, _, arg = spec.partition(":")
    if kind == "builtin" and not arg:
        return Builtin(tpm_version=trace.tpm_version, seed=trace.seed)
    return open_backend(spec, tpm_version=trace.tpm_version)


def build_device(trace: Trace, backend: Any) -> Any:
    """A fresh device of the trace's frontend and options on *backend*."""
    cls = frontend_class(trace.frontend)
    return cls(backend, tpm_version=trace.tpm_version, **trace.options)


def replay(
    trace: Trace, dev: Any = None, *, backend: Any = None, stop_at_first: bool = True
) -> list[Divergence]:
    """Run *trace*'s events against *dev* (default: a new device of the
    recorded kind on *backend*, by default the recorded backend opened with
    :func:`tpmdev.backends.open`) and return the divergences: the first one
    only unless ``stop_at_first`` is False. An empty list means every call
    returned what the trace recorded."""
    own = dev is None
    if own:
        if backend is None:
            backend = open_recorded_backend(trace)
        try:
            dev = build_device(trace, backend)
        except BaseException:
            backend.close()  # (a device that failed to build has not taken it over)
            raise
    elif frontend_kind(dev) != trace.frontend:
        raise ConfigurationError(f"the trace is of a {trace.frontend} device, not a {frontend_kind(dev)}")
    found: list[Divergence] = []
    try:
        for index, event in enumerate(trace.events):
            method = getattr(dev, _METHODS.get(event.op, event.op))
            try:
                result = method(*event.args)
            except TpmDevError as exc:
                found.append(Divergence(index, event, None, exc))
                if stop_at_first:
                    break
                continue
            kind = _SCHEMA[event.op][1]
            got: Optional[Value] = None if not kind else (int(result) if kind == "i" else bytes(result))
            if got != event.result:
                found.append(Divergence(index, event, got))
                if stop_at_first:
                    break
    finally:
        if own:
            dev.close()
    return found


# --- reading a trace as a person ----------------------------------------------------

_TIS_NAMES = {offset: name for name, offset in regs.TIS_REGISTERS.items()}
_CRB_NAMES = {offset: name for name, offset in regs.CRB_REGISTERS.items()}
_I2C_NAMES = {offset: name for name, offset in regs.TPM_I2C_REGISTERS.items()}

_ACCESS_BITS = (
    (0x80, "tpmRegValidSts"), (0x20, "activeLocality"), (0x10, "beenSeized"), (0x08, "Seize"),
    (0x04, "pendingRequest"), (0x02, "requestUse"), (0x01, "tpmEstablishment"),
)  # fmt: skip
_STS_BITS = (
    (0x02000000, "resetEstablishmentBit"), (0x01000000, "commandCancel"), (0x80, "stsValid"),
    (0x40, "commandReady"), (0x20, "tpmGo"), (0x10, "dataAvail"), (0x08, "Expect"),
    (0x04, "selfTestDone"), (0x02, "responseRetry"),
)  # fmt: skip
_INT_BITS = (
    (0x80000000, "globalIntEnable"), (0x80, "commandReadyInt"), (0x04, "localityChangeInt"),
    (0x02, "stsValidInt"), (0x01, "dataAvailInt"),
)  # fmt: skip
_CRB_BITS: dict[int, tuple[tuple[int, str], ...]] = {
    regs.TPM_LOC_STATE: ((0x80, "tpmRegValidSts"), (0x02, "locAssigned"), (0x01, "tpmEstablished")),
    regs.TPM_LOC_CTRL: (
        (0x08, "resetEstablishmentBit"), (0x04, "Seize"), (0x02, "Relinquish"), (0x01, "requestAccess"),
    ),
    regs.TPM_LOC_STS: ((0x02, "beenSeized"), (0x01, "Granted")),
    regs.TPM_CRB_CTRL_REQ: ((0x02, "goIdle"), (0x01, "cmdReady")),
    regs.TPM_CRB_CTRL_STS: ((0x02, "tpmIdle"), (0x01, "tpmSts")),
    regs.TPM_CRB_CTRL_CANCEL: ((0x01, "Cancel"),),
    regs.TPM_CRB_CTRL_START: ((0x01, "Start"),),
}  # fmt: skip


def _bits(value: int, table: Iterable[tuple[int, str]]) -> str:
    return " ".join(name for bit, name in table if value & bit)


def _decode_tis(reg: int, value: int, *, is_write: bool) -> str:
    if reg == regs.TPM_ACCESS:
        text = _bits(value, _ACCESS_BITS)
        if not is_write and value & 0x80 and not value & 0x01:
            text += " (established)"
        return text
    if reg in (regs.TPM_STS, regs.TPM_STS + 1, regs.TPM_STS + 2, regs.TPM_STS + 3):
        shifted = value << (8 * (reg - regs.TPM_STS))
        text = _bits(shifted, _STS_BITS)
        if not is_write and reg == regs.TPM_STS:
            burst = (shifted >> 8) & 0xFFFF
            text += f" burstCount={burst}" if burst or value > 0xFF else ""
        return text
    if reg in (regs.TPM_INT_ENABLE, regs.TPM_INT_STATUS):
        return _bits(value, _INT_BITS)
    return ""


class _Messages:
    """Gathers command bytes and response bytes and says when one is whole."""

    def __init__(self, tpm_version: int) -> None:
        self.version = tpm_version
        self.command = bytearray()
        self.response = bytearray()

    def command_line(self, locality: Optional[int]) -> Optional[str]:
        data, self.command = bytes(self.command), bytearray()
        if not data:
            return None
        where = f", locality {locality}" if locality is not None else ""
        if len(data) < 10:
            return f"  >> command of {len(data)} bytes (shorter than a header{where}): {data.hex()}"
        code = int.from_bytes(data[6:10], "big")
        return f"  >> {command_name(code, self.version)} ({len(data)} bytes{where}): {data.hex()}"

    def add_response(self, data: bytes) -> Optional[str]:
        self.response += data
        if len(self.response) < 10:
            return None
        size = int.from_bytes(self.response[2:6], "big")
        if len(self.response) < size:
            return None
        rsp, self.response = bytes(self.response), bytearray()
        rc = int.from_bytes(rsp[6:10], "big")
        return f"  << {response_name(rc, self.version)} ({len(rsp)} bytes): {rsp.hex()}"


def describe(trace: Trace) -> Iterator[str]:
    """Lines describing *trace* for a person (what ``tpmdev trace show``
    prints)."""
    yield (
        f"tpmdev trace: {trace.frontend}, TPM {'2.0' if trace.tpm_version == 2 else '1.2'}"
        + (f", backend {trace.backend}" if trace.backend else "")
        + "".join(f", {k}={v}" for k, v in sorted(trace.options.items()))
        + f", {len(trace.events)} events"
    )
    if trace.frontend == "tis-i2c":
        yield from _describe_i2c(trace)
    elif trace.frontend == "crb":
        yield from _describe_crb(trace)
    else:
        yield from _describe_tis(trace)


def _int(value: Optional[Value]) -> int:
    return value if isinstance(value, int) else 0


def _bytes(value: Optional[Value]) -> bytes:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else b""


def _common(index: int, event: Event) -> str:
    return f"{index:6d} {event.op}" + (f" = {_int(event.result)}" if event.result is not None else "")


def _access(event: Event) -> tuple[bool, int, int, bytes]:
    """(is a write, size of one access, value of a single access, bytes of
    a many-access call) of an MMIO event."""
    if event.op == "r":
        return False, _int(event.args[1]), _int(event.result), b""
    if event.op == "w":
        return True, _int(event.args[2]), _int(event.args[1]), b""
    if event.op == "R":
        return False, _int(event.args[2]), 0, _bytes(event.result)
    return True, _int(event.args[2]), 0, _bytes(event.args[1])


def _data(event: Event) -> bytes:
    """The bytes an MMIO event moved, in bus order."""
    _, size, value, many = _access(event)
    if event.op in ("R", "W"):
        return many
    return value.to_bytes(8, "little")[:size]


def _register_line(index: int, locality: int, name: str, width: int, event: Event, bits: str) -> str:
    is_write, size, value, many = _access(event)
    head = f"{index:6d} {'w' if is_write else 'r'} L{locality} {name:<{width}}"
    if event.op in ("R", "W"):
        return f"{head} x{len(many) // max(size, 1)}: {many.hex()}"
    arrow = "<-" if is_write else "="
    return f"{head} {size} {arrow} {value:#0{2 + 2 * size}x}" + (f"  {bits}" if bits else "")


def _describe_tis(trace: Trace) -> Iterator[str]:
    messages = _Messages(trace.tpm_version)
    run: list[tuple[int, str, bytes]] = []  # FIFO accesses in a row: (index, "w L0", bytes)

    def flush() -> Iterator[str]:
        if run:
            data = b"".join(d for _, _, d in run)
            yield f"{run[0][0]:6d} {run[0][1]} DATA_FIFO x{len(run)}: {data.hex()}"
            run.clear()

    for index, event in enumerate(trace.events):
        if event.op in _COMMON_OPS:
            yield from flush()
            yield _common(index, event)
            continue
        offset = _int(event.args[0])
        locality, reg = offset >> regs.TIS_LOCALITY_SHIFT, offset & 0xFFF
        is_write, _, value, _ = _access(event)
        if reg == regs.TPM_DATA_FIFO or regs.TPM_XDATA_FIFO <= reg <= regs.TPM_XDATA_FIFO_END + 3:
            data = _data(event)
            where = f"{'w' if is_write else 'r'} L{locality}"
            if run and run[-1][1] != where:
                yield from flush()
            run.append((index, where, data))
            if is_write:
                messages.command += data
            elif line := messages.add_response(data):
                yield from flush()
                yield line
            continue
        yield from flush()
        name = _TIS_NAMES.get(reg & ~3, f"reg {reg & ~3:#05x}") + (f"+{reg & 3}" if reg & 3 else "")
        yield _register_line(index, locality, name, 16, event, _decode_tis(reg, value, is_write=is_write))
        if is_write and reg == regs.TPM_STS and event.op == "w":
            if value & regs.TPM_STS_GO and (line := messages.command_line(locality)):
                yield line
            if value & regs.TPM_STS_COMMAND_READY:
                messages.command.clear()
                messages.response.clear()
    yield from flush()


def _describe_crb(trace: Trace) -> Iterator[str]:
    messages = _Messages(trace.tpm_version)
    # What the guest last wrote or read at each buffer address: a command is
    # what the buffer holds at CTRL_START, a response what was read back.
    shadow = bytearray(regs.CRB_LOCALITY_SIZE * regs.CRB_NUM_LOCALITIES)
    started: set[int] = set()
    for index, event in enumerate(trace.events):
        if event.op in _COMMON_OPS:
            yield _common(index, event)
            continue
        offset = _int(event.args[0])
        locality, reg = offset >> regs.CRB_LOCALITY_SHIFT, offset & 0xFFF
        is_write, size, value, _ = _access(event)
        base = (locality << regs.CRB_LOCALITY_SHIFT) + regs.TPM_CRB_DATA_BUFFER
        if reg >= regs.TPM_CRB_DATA_BUFFER:
            data = _data(event)
            last = data[-size:] if event.op in ("R", "W") else data  # many accesses: the last stays
            shadow[offset : offset + len(last)] = last
            at = reg - regs.TPM_CRB_DATA_BUFFER
            yield f"{index:6d} {'w' if is_write else 'r'} L{locality} DATA_BUFFER+{at:#05x} {data.hex()}"
            if not is_write and locality in started:
                rsp_size = int.from_bytes(shadow[base + 2 : base + 6], "big")
                if rsp_size >= 10 and offset + len(last) >= base + min(rsp_size, regs.CRB_BUFFER_SIZE):
                    started.discard(locality)
                    end = base + min(rsp_size, regs.CRB_BUFFER_SIZE)
                    if line := messages.add_response(bytes(shadow[base:end])):
                        yield line
            continue
        name = _CRB_NAMES.get(reg & ~3, f"reg {reg & ~3:#05x}")
        yield _register_line(index, locality, name, 22, event, _bits(value, _CRB_BITS.get(reg, ())))
        if is_write and reg == regs.TPM_CRB_CTRL_START and event.op == "w" and value & 1:
            cmd_size = int.from_bytes(shadow[base + 2 : base + 6], "big")
            messages.command += shadow[base : base + min(cmd_size, regs.CRB_BUFFER_SIZE)]
            if line := messages.command_line(locality):
                yield line
            started.add(locality)
            messages.response.clear()


def _describe_i2c(trace: Trace) -> Iterator[str]:
    messages = _Messages(trace.tpm_version)
    selected: Optional[int] = None
    for index, event in enumerate(trace.events):
        if event.op in _COMMON_OPS:
            yield _common(index, event)
            continue
        if event.op == "i2c_write":
            data = _bytes(event.args[0])
            if not data:
                yield f"{index:6d} i2c write (empty) = {_int(event.result)}"
                continue
            selected = data[0]
            name = _I2C_NAMES.get(selected, f"reg {selected:#04x}")
            payload = data[1:]
            if not payload:
                yield f"{index:6d} i2c select {name}"
                continue
            yield f"{index:6d} i2c w {name:<28} {payload.hex()}  (acked {_int(event.result)})"
            if selected == regs.TPM_I2C_DATA_FIFO:
                messages.command += payload
            elif selected == regs.TPM_I2C_STS:
                value = int.from_bytes(payload[:4], "little")
                if bits := _bits(value, _STS_BITS):
                    yield f"{'':6} {'':34} {bits}"
                if value & regs.TPM_STS_GO and (line := messages.command_line(None)):
                    yield line
                if value & regs.TPM_STS_COMMAND_READY:
                    messages.command.clear()
                    messages.response.clear()
            continue
        if event.op in ("i2c_read", "i2c_read_reg"):
            if event.op == "i2c_read_reg":
                selected = _int(event.args[0])
            data = _bytes(event.result)
            name = "(no register)" if selected is None else _I2C_NAMES.get(selected, f"reg {selected:#04x}")
            text = f"{index:6d} i2c r {name:<28} {data.hex()}"
            if selected == regs.TPM_I2C_STS and data:
                text += "  " + _decode_tis(regs.TPM_STS, int.from_bytes(data[:4], "little"), is_write=False)
            yield text
            if selected == regs.TPM_I2C_DATA_FIFO and (line := messages.add_response(data)):
                yield line
            continue
        args = " ".join(_fmt(a) for a in event.args)
        result = f" = {_fmt(event.result)}" if event.result is not None else ""
        yield f"{index:6d} {event.op} {args}{result}".rstrip()
