"""The swtpm control channel: typed messages and a small blocking client.

swtpm (the software TPM emulator) listens on two channels. TPM commands and
responses travel raw over the *data* channel; everything else -- power on,
locality, cancel, buffer size, the established flag, state blobs -- is a
*control* message. This module knows the control side, as swtpm's socket
form speaks it (the ioctl form of the CUSE device uses host byte order and
is not covered).

Framing (socket form, every field big-endian)::

    request:  u32 command code | request body (fixed per command)
    response: u32 result       | response body (only when result == 0)

A response carries no length and no echo of the command, so the client must
know how long each answer is. Most commands answer only the 4-byte result
when they fail, so :class:`Control` reads in two passes: the result first,
then the rest of the fixed-size response only when the result is 0. Result
codes are TPM 1.2 numbers for both TPM families (0x0A unknown command or
wrong state, 0x3D bad locality, ...).

Each message is a small frozen dataclass with a ``FORMAT`` (``struct.Struct``)
and ``pack()`` / ``unpack()``; :data:`COMMANDS` ties a command code to its
request and response types, so adding a command is one table row and one
method. Names follow swtpm's ``tpm_ioctl.h`` (``CMD_*``, ``PTM_CAP_*``,
``PTM_BLOB_TYPE_*``).

Theory of operation of :class:`Control`: one connected unix stream socket;
a lock serialises whole request/response exchanges, so a cancel sent from
another thread never interleaves with a locality change. Every read and
write is bounded by the client's timeout. A transport failure (timeout,
closed socket, short answer) leaves the stream position unknown, so the
client marks itself broken and later calls fail at once; a non-zero result
is an ordinary answer and leaves the channel usable.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from tpmdev.errors import BackendError

__all__ = [
    "CAPABILITY_NAMES",
    "CMD_CANCEL_TPM_CMD",
    "CMD_GET_CAPABILITY",
    "CMD_GET_CONFIG",
    "CMD_GET_INFO",
    "CMD_GET_STATEBLOB",
    "CMD_GET_TPMESTABLISHED",
    "CMD_HASH_DATA",
    "CMD_HASH_END",
    "CMD_HASH_START",
    "CMD_INIT",
    "CMD_LOCK_STORAGE",
    "CMD_RESET_TPMESTABLISHED",
    "CMD_SET_BUFFERSIZE",
    "CMD_SET_DATAFD",
    "CMD_SET_LOCALITY",
    "CMD_SET_STATEBLOB",
    "CMD_SHUTDOWN",
    "CMD_STOP",
    "CMD_STORE_VOLATILE",
    "COMMANDS",
    "COMMAND_NAMES",
    "PTM_BLOB_TYPE_PERMANENT",
    "PTM_BLOB_TYPE_SAVESTATE",
    "PTM_BLOB_TYPE_VOLATILE",
    "PTM_CAP_CANCEL_TPM_CMD",
    "PTM_CAP_GET_CONFIG",
    "PTM_CAP_GET_INFO",
    "PTM_CAP_GET_STATEBLOB",
    "PTM_CAP_GET_TPMESTABLISHED",
    "PTM_CAP_HASHING",
    "PTM_CAP_INIT",
    "PTM_CAP_LOCK_STORAGE",
    "PTM_CAP_RESET_TPMESTABLISHED",
    "PTM_CAP_SEND_COMMAND_HEADER",
    "PTM_CAP_SET_BUFFERSIZE",
    "PTM_CAP_SET_DATAFD",
    "PTM_CAP_SET_LOCALITY",
    "PTM_CAP_SET_STATEBLOB",
    "PTM_CAP_SHUTDOWN",
    "PTM_CAP_STOP",
    "PTM_CAP_STORE_VOLATILE",
    "PTM_INIT_FLAG_DELETE_VOLATILE",
    "PTM_STATE_FLAG_DECRYPTED",
    "PTM_STATE_FLAG_ENCRYPTED",
    "TPM_BAD_LOCALITY",
    "TPM_BAD_ORDINAL",
    "TPM_BAD_PARAMETER",
    "TPM_FAIL",
    "TPM_IOERROR",
    "TPM_SUCCESS",
    "CommandSpec",
    "Control",
    "ControlError",
    "Empty",
    "GetCapabilityResponse",
    "GetEstablishedResponse",
    "InitRequest",
    "LocalityRequest",
    "Message",
    "ResultResponse",
    "SetBufferSizeRequest",
    "SetBufferSizeResponse",
    "capability_names",
    "recv_exactly",
]

# -- command codes (tpm_ioctl.h, socket form) -------------------------------
CMD_GET_CAPABILITY = 0x01
CMD_INIT = 0x02
CMD_SHUTDOWN = 0x03
CMD_GET_TPMESTABLISHED = 0x04
CMD_SET_LOCALITY = 0x05
CMD_HASH_START = 0x06
CMD_HASH_DATA = 0x07
CMD_HASH_END = 0x08
CMD_CANCEL_TPM_CMD = 0x09
CMD_STORE_VOLATILE = 0x0A
CMD_RESET_TPMESTABLISHED = 0x0B
CMD_GET_STATEBLOB = 0x0C
CMD_SET_STATEBLOB = 0x0D
CMD_STOP = 0x0E
CMD_GET_CONFIG = 0x0F
CMD_SET_DATAFD = 0x10
CMD_SET_BUFFERSIZE = 0x11
CMD_GET_INFO = 0x12
CMD_LOCK_STORAGE = 0x13  # swtpm >= 0.8

#: Command code -> name without the ``CMD_`` prefix, for messages.
COMMAND_NAMES: dict[int, str] = {
    code: name[len("CMD_") :]
    for name, code in list(globals().items())
    if name.startswith("CMD_") and isinstance(code, int)
}

# -- capability bits (answer of CMD_GET_CAPABILITY) -------------------------
PTM_CAP_INIT = 1 << 0
PTM_CAP_SHUTDOWN = 1 << 1
PTM_CAP_GET_TPMESTABLISHED = 1 << 2
PTM_CAP_SET_LOCALITY = 1 << 3
PTM_CAP_HASHING = 1 << 4
PTM_CAP_CANCEL_TPM_CMD = 1 << 5
PTM_CAP_STORE_VOLATILE = 1 << 6
PTM_CAP_RESET_TPMESTABLISHED = 1 << 7
PTM_CAP_GET_STATEBLOB = 1 << 8
PTM_CAP_SET_STATEBLOB = 1 << 9
PTM_CAP_STOP = 1 << 10
PTM_CAP_GET_CONFIG = 1 << 11
PTM_CAP_SET_DATAFD = 1 << 12
PTM_CAP_SET_BUFFERSIZE = 1 << 13
PTM_CAP_GET_INFO = 1 << 14
PTM_CAP_SEND_COMMAND_HEADER = 1 << 15  # TPM 2.0 only
PTM_CAP_LOCK_STORAGE = 1 << 16  # swtpm >= 0.8

#: Capability bit -> name (without the ``PTM_CAP_`` prefix).
CAPABILITY_NAMES: dict[int, str] = {
    bit: name[len("PTM_CAP_") :]
    for name, bit in list(globals().items())
    if name.startswith("PTM_CAP_") and isinstance(bit, int)
}


def capability_names(caps: int) -> list[str]:
    """Names of the capability bits set in *caps*, lowest bit first."""
    return [name for bit, name in sorted(CAPABILITY_NAMES.items()) if caps & bit]


# -- flags and enumerations -------------------------------------------------
PTM_INIT_FLAG_DELETE_VOLATILE = 1 << 0

PTM_BLOB_TYPE_PERMANENT = 1
PTM_BLOB_TYPE_VOLATILE = 2
PTM_BLOB_TYPE_SAVESTATE = 3

PTM_STATE_FLAG_DECRYPTED = 1 << 0
PTM_STATE_FLAG_ENCRYPTED = 1 << 1

# Result codes swtpm answers with (TPM 1.2 numbering, for both families).
TPM_SUCCESS = 0x00
TPM_BAD_PARAMETER = 0x03
TPM_FAIL = 0x09
TPM_BAD_ORDINAL = 0x0A
TPM_IOERROR = 0x1F
TPM_BAD_LOCALITY = 0x3D

# -- messages ---------------------------------------------------------------
_M = TypeVar("_M", bound="Message")


@dataclass(frozen=True)
class Message:
    """Base of the fixed-size control messages.

    A subclass declares its fields (in wire order) and ``FORMAT``; padding
    is ``x`` in the format and has no field. Unsigned fields are checked by
    ``struct`` when packing.
    """

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">")

    def pack(self) -> bytes:
        try:
            return self.FORMAT.pack(*dataclasses.astuple(self))
        except struct.error as exc:
            raise ValueError(f"{type(self).__name__}: field out of range ({exc})") from None

    @classmethod
    def unpack(cls: type[_M], data: bytes) -> _M:
        if len(data) != cls.FORMAT.size:
            raise ValueError(f"{cls.__name__} takes {cls.FORMAT.size} bytes, got {len(data)}")
        return cls(*cls.FORMAT.unpack(data))

    @classmethod
    def size(cls) -> int:
        return cls.FORMAT.size


@dataclass(frozen=True)
class Empty(Message):
    """No body (requests of GET_CAPABILITY, SHUTDOWN, STOP, ...)."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">")


@dataclass(frozen=True)
class ResultResponse(Message):
    """The response of most commands: the result code alone."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">I")
    result: int


@dataclass(frozen=True)
class GetCapabilityResponse(Message):
    """CMD_GET_CAPABILITY: result and the ``PTM_CAP_*`` bits.

    Older swtpm declare this as one u64 whose upper half is 0; newer ones
    as two u32. Both put the same 8 bytes on the wire.
    """

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">II")
    result: int
    caps: int


@dataclass(frozen=True)
class InitRequest(Message):
    """CMD_INIT: ``PTM_INIT_FLAG_*`` bits (swtpm wants exactly 4 bytes)."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">I")
    init_flags: int = 0


@dataclass(frozen=True)
class GetEstablishedResponse(Message):
    """CMD_GET_TPMESTABLISHED: result, the flag byte, 3 padding bytes."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">IB3x")
    result: int
    bit: int


@dataclass(frozen=True)
class LocalityRequest(Message):
    """CMD_SET_LOCALITY and CMD_RESET_TPMESTABLISHED: locality + 3 padding.

    The padding is sent as zeros (QEMU 7.2 leaves it uninitialised for
    RESET_TPMESTABLISHED).
    """

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">B3x")
    locality: int


@dataclass(frozen=True)
class SetBufferSizeRequest(Message):
    """CMD_SET_BUFFERSIZE: wanted size, 0 to only ask."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">I")
    buffersize: int = 0


@dataclass(frozen=True)
class SetBufferSizeResponse(Message):
    """CMD_SET_BUFFERSIZE: result, the size now in force, its bounds."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">IIII")
    result: int
    buffersize: int
    minsize: int
    maxsize: int


@dataclass(frozen=True)
class CommandSpec:
    """How one control command is framed."""

    code: int
    request: type[Message]
    response: type[Message]

    @property
    def name(self) -> str:
        return COMMAND_NAMES[self.code]


#: The commands :class:`Control` speaks, by code.
COMMANDS: dict[int, CommandSpec] = {
    spec.code: spec
    for spec in (
        CommandSpec(CMD_GET_CAPABILITY, Empty, GetCapabilityResponse),
        CommandSpec(CMD_INIT, InitRequest, ResultResponse),
        CommandSpec(CMD_SHUTDOWN, Empty, ResultResponse),
        CommandSpec(CMD_GET_TPMESTABLISHED, Empty, GetEstablishedResponse),
        CommandSpec(CMD_SET_LOCALITY, LocalityRequest, ResultResponse),
        CommandSpec(CMD_CANCEL_TPM_CMD, Empty, ResultResponse),
        CommandSpec(CMD_RESET_TPMESTABLISHED, LocalityRequest, ResultResponse),
        CommandSpec(CMD_STOP, Empty, ResultResponse),
        CommandSpec(CMD_SET_DATAFD, Empty, ResultResponse),
        CommandSpec(CMD_SET_BUFFERSIZE, SetBufferSizeRequest, SetBufferSizeResponse),
    )
}

_RESULT = struct.Struct(">I")
_CODE = struct.Struct(">I")


# -- client -----------------------------------------------------------------
class ControlError(BackendError):
    """swtpm answered a control command with a non-zero result.

    ``command`` is the command name (``"SET_LOCALITY"``), ``code`` its
    number, ``result`` the result code swtpm returned.
    """

    def __init__(self, command: str, code: int, result: int) -> None:
        self.command = command
        self.code = code
        self.result = result
        super().__init__(
            f"swtpm refused control command {command} (0x{code:02X}): result 0x{result:X}"
            f"{_RESULT_HINTS.get(result, '')}"
        )

    def __reduce__(self) -> tuple[type[ControlError], tuple[str, int, int]]:
        return (type(self), (self.command, self.code, self.result))


_RESULT_HINTS = {
    TPM_BAD_PARAMETER: " (bad parameter)",
    TPM_FAIL: " (TPM failure)",
    TPM_BAD_ORDINAL: " (unknown command, or not allowed in the TPM's current state)",
    TPM_IOERROR: " (I/O error)",
    TPM_BAD_LOCALITY: " (bad locality)",
}


class Control:
    """A client of swtpm's control channel over a connected unix socket.

    The socket is borrowed: :meth:`close` is not called for you, and the
    owner closes it. *timeout* (seconds) bounds each whole exchange.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.sock = sock
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._broken: str | None = None

    @property
    def broken(self) -> str | None:
        """Why the channel is unusable, or None while it is fine."""
        return self._broken

    # -- framing --------------------------------------------------------
    def call(self, code: int, request: Message | None = None, *, fds: tuple[int, ...] = ()) -> Message:
        """Send command *code* with *request* and return its typed response.

        Raises :class:`ControlError` for a non-zero result and
        :class:`BackendError` when the channel fails.
        """
        spec = COMMANDS[code]
        if request is None:
            request = spec.request()
        elif not isinstance(request, spec.request):
            raise TypeError(f"{spec.name} takes a {spec.request.__name__}, not {type(request).__name__}")
        raw = self.exchange(code, request.pack(), spec.response.size(), fds=fds)
        return spec.response.unpack(raw)

    def exchange(self, code: int, body: bytes, response_size: int, *, fds: tuple[int, ...] = ()) -> bytes:
        """Send a raw request; return the raw *response_size*-byte answer.

        The result is read first; the remainder only when it is 0. A
        non-zero result raises :class:`ControlError`.
        """
        name = COMMAND_NAMES.get(code, f"0x{code:02X}")
        with self._lock:
            if self._broken is not None:
                raise BackendError(f"swtpm control channel is unusable ({self._broken}); cannot send {name}")
            deadline = time.monotonic() + self.timeout
            try:
                self._send(_CODE.pack(code) + body, fds, deadline)
                head = self._recv(_RESULT.size, deadline)
                (result,) = _RESULT.unpack(head)
                if result != TPM_SUCCESS:
                    raise ControlError(name, code, result)
                rest = self._recv(response_size - _RESULT.size, deadline) if response_size > 4 else b""
            except ControlError:
                raise
            except BackendError as exc:
                self._broken = str(exc)
                raise BackendError(f"swtpm control command {name}: {exc}") from None
            return head + rest

    def _send(self, data: bytes, fds: tuple[int, ...], deadline: float) -> None:
        try:
            self.sock.settimeout(_remaining(deadline))
            if fds:
                sent = socket.send_fds(self.sock, [data], list(fds))
                if sent != len(data):
                    self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
        except (socket.timeout, BlockingIOError):
            raise BackendError(f"swtpm did not take the request within {self.timeout} s") from None
        except OSError as exc:
            raise BackendError(f"cannot write to swtpm ({exc.strerror or exc})") from None

    def _recv(self, n: int, deadline: float) -> bytes:
        return recv_exactly(self.sock, n, deadline, self.timeout, "control answer")

    # -- commands QEMU uses -----------------------------------------------
    def get_capability(self) -> int:
        """CMD_GET_CAPABILITY: the ``PTM_CAP_*`` bits swtpm supports."""
        rsp = self.call(CMD_GET_CAPABILITY)
        assert isinstance(rsp, GetCapabilityResponse)
        return rsp.caps

    def init(self, flags: int = 0) -> None:
        """CMD_INIT: (re)start the TPM; *flags* are ``PTM_INIT_FLAG_*``.

        TPM(2)_Startup is not sent; that is the guest's job.
        """
        self.call(CMD_INIT, InitRequest(flags))

    def shutdown(self) -> None:
        """CMD_SHUTDOWN: swtpm answers and then exits."""
        self.call(CMD_SHUTDOWN)

    def get_tpm_established(self) -> bool:
        """CMD_GET_TPMESTABLISHED (needs a running TPM, else result 0x0A)."""
        rsp = self.call(CMD_GET_TPMESTABLISHED)
        assert isinstance(rsp, GetEstablishedResponse)
        return bool(rsp.bit & 1)

    def set_locality(self, locality: int) -> None:
        """CMD_SET_LOCALITY: later data-channel commands run at *locality*."""
        self.call(CMD_SET_LOCALITY, LocalityRequest(locality))

    def cancel_tpm_cmd(self) -> None:
        """CMD_CANCEL_TPM_CMD: cancel the command the TPM is running."""
        self.call(CMD_CANCEL_TPM_CMD)

    def reset_tpm_established(self, locality: int) -> None:
        """CMD_RESET_TPMESTABLISHED as if requested from *locality* (3 or 4)."""
        self.call(CMD_RESET_TPMESTABLISHED, LocalityRequest(locality))

    def stop(self) -> None:
        """CMD_STOP: stop the TPM (the process keeps running)."""
        self.call(CMD_STOP)

    def set_datafd(self, fd: int) -> None:
        """CMD_SET_DATAFD: hand swtpm *fd* (SCM_RIGHTS) as its data channel."""
        self.call(CMD_SET_DATAFD, fds=(fd,))

    def set_buffersize(self, size: int = 0) -> tuple[int, int, int]:
        """CMD_SET_BUFFERSIZE: set (TPM stopped) or, with 0, ask the size.

        Returns ``(buffersize, minsize, maxsize)``; swtpm clamps a wanted
        size into its bounds.
        """
        rsp = self.call(CMD_SET_BUFFERSIZE, SetBufferSizeRequest(size))
        assert isinstance(rsp, SetBufferSizeResponse)
        return rsp.buffersize, rsp.minsize, rsp.maxsize


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout
    return left


def recv_exactly(sock: socket.socket, n: int, deadline: float, timeout: float, what: str) -> bytes:
    """Read exactly *n* bytes before *deadline* (a ``time.monotonic`` value).

    Raises :class:`BackendError` on timeout, end of stream or socket error;
    *what* names the awaited data in the message. Shared with the data
    channel of :class:`tpmdev.backends.emulator.Emulator`.
    """
    buf = bytearray()
    try:
        while len(buf) < n:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(n - len(buf))
            if not chunk:
                got = f" after {len(buf)} of {n} bytes" if buf else ""
                raise BackendError(f"swtpm closed the connection while sending its {what}{got}")
            buf += chunk
    except (socket.timeout, BlockingIOError):
        got = f" ({len(buf)} of {n} bytes came)" if buf else ""
        raise BackendError(f"no complete {what} from swtpm within {timeout} s{got}") from None
    except OSError as exc:
        raise BackendError(f"cannot read the {what} from swtpm ({exc.strerror or exc})") from None
    return bytes(buf)
