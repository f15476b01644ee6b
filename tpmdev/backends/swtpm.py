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

Three commands carry variable-length data and have their own framing:
HASH_DATA (u32 length, then the bytes), GET_STATEBLOB / SET_STATEBLOB (a
16- or 12-byte header, then the blob) and GET_INFO (a 12-byte header, then
NUL-terminated JSON). Their headers are messages like the others; the
methods read or write the data that follows.

Theory of operation of :class:`Control`: one connected stream socket (unix,
or TCP for ``--ctrl type=tcp``); a lock serialises whole request/response
exchanges, so a cancel sent from another thread never interleaves with a
locality change. Every read and write is bounded by the client's timeout. A
transport failure (timeout, closed socket, short answer, bytes nobody asked
for, a header announcing an absurd length) leaves the stream position
unknown, so the client marks itself broken and later calls fail at once; a
non-zero result is an ordinary answer and leaves the channel usable.

The client learns swtpm's ``PTM_CAP_*`` bits with one GET_CAPABILITY the
first time it needs them, and refuses a command swtpm does not support with
:class:`UnsupportedError` before sending anything (swtpm 0.7.1 has no
LOCK_STORAGE, for instance). SET_DATAFD is the exception: QEMU sends it
before it asks for the capabilities, so it is checked only once they are
known.

:func:`binary_features` asks a swtpm executable what it supports
(``swtpm socket --print-capabilities``), once per executable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tpmdev.backends.base import as_bytes, check_timeout
from tpmdev.errors import AccessError, BackendError
from tpmdev.wire import (
    TPM_BAD_LOCALITY,
    TPM_BAD_ORDINAL,
    TPM_BAD_PARAMETER,
    TPM_DECRYPT_ERROR,
    TPM_FAIL,
    TPM_IOERROR,
    TPM_NON_FATAL,
    TPM_SUCCESS,
)

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
    "PTM_CONFIG_FLAG_FILE_KEY",
    "PTM_CONFIG_FLAG_MIGRATION_KEY",
    "PTM_INIT_FLAG_DELETE_VOLATILE",
    "PTM_STATE_FLAG_DECRYPTED",
    "PTM_STATE_FLAG_ENCRYPTED",
    "SWTPM_INFO_TPMATTRIBUTES",
    "SWTPM_INFO_TPMFEATURES",
    "SWTPM_INFO_TPMSPECIFICATION",
    "BLOB_TYPE_NAMES",
    "HASH_DATA_CHUNK",
    "MAX_INFO_SIZE",
    "MAX_STATE_BLOB_SIZE",
    "RESULT_NON_FATAL",
    "TPM_BAD_LOCALITY",
    "TPM_BAD_ORDINAL",
    "TPM_BAD_PARAMETER",
    "TPM_DECRYPT_ERROR",
    "TPM_FAIL",
    "TPM_IOERROR",
    "TPM_SUCCESS",
    "CommandSpec",
    "Control",
    "STATE_PRESERVING_COMMANDS",
    "ControlError",
    "UnsupportedError",
    "StateBlob",
    "Empty",
    "GetCapabilityResponse",
    "GetConfigResponse",
    "GetEstablishedResponse",
    "GetInfoRequest",
    "GetInfoResponse",
    "GetStateBlobRequest",
    "GetStateBlobResponse",
    "HashDataRequest",
    "InitRequest",
    "LocalityRequest",
    "LockStorageRequest",
    "Message",
    "ResultResponse",
    "SetBufferSizeRequest",
    "SetBufferSizeResponse",
    "SetStateBlobRequest",
    "binary_features",
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

#: Blob type -> the key :meth:`tpmdev.backends.base.Backend.get_state` uses.
BLOB_TYPE_NAMES: dict[int, str] = {
    PTM_BLOB_TYPE_PERMANENT: "permanent",
    PTM_BLOB_TYPE_VOLATILE: "volatile",
    PTM_BLOB_TYPE_SAVESTATE: "savestate",
}

# GET_STATEBLOB request: hand out plaintext (undo ``--key`` encryption).
# GET_STATEBLOB response / SET_STATEBLOB request: the blob is encrypted with
# the state-file key (``--key``). Blobs encrypted with ``--migration-key``
# are self-describing and do not carry this flag (observed on 0.7.1).
PTM_STATE_FLAG_DECRYPTED = 1 << 0
PTM_STATE_FLAG_ENCRYPTED = 1 << 1

# GET_CONFIG flags: which keys swtpm was started with.
PTM_CONFIG_FLAG_FILE_KEY = 1 << 0  # --key (state files encrypted)
PTM_CONFIG_FLAG_MIGRATION_KEY = 1 << 1  # --migration-key (blobs encrypted)

# GET_INFO flags: which parts of the JSON document to return. swtpm 0.7.1
# knows these three (the third is TPM 2.0 only) and ignores other bits.
SWTPM_INFO_TPMSPECIFICATION = 1 << 0
SWTPM_INFO_TPMATTRIBUTES = 1 << 1
SWTPM_INFO_TPMFEATURES = 1 << 2

#: Bytes of data per HASH_DATA message. The socket form streams any length,
#: but the ioctl form's message holds 4092 bytes; staying within it works
#: with every swtpm, and consecutive HASH_DATA messages simply concatenate.
HASH_DATA_CHUNK = 4096 - 4

#: Largest state blob accepted from GET_STATEBLOB. The socket form puts no
#: bound on it (a TPM 2.0 permanent blob is a few KiB, more with NV indices);
#: a header announcing more is taken as garbled rather than allocated.
MAX_STATE_BLOB_SIZE = 16 << 20

#: Largest GET_INFO document accepted (0.7.1 sends a few hundred bytes).
MAX_INFO_SIZE = 1 << 20

#: Results with this bit set are "non-fatal": GET_STATEBLOB answers 0x800
#: (TPM_RETRY) for a blob that does not exist, e.g. the savestate blob when
#: no TPM2_Shutdown(STATE) was issued. QEMU treats them as an empty blob.
RESULT_NON_FATAL = TPM_NON_FATAL

# swtpm answers with TPM 1.2 result codes for both families (tpmdev.wire).

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
            raise AccessError(f"{type(self).__name__}: field out of range ({exc})") from None

    @classmethod
    def unpack(cls: type[_M], data: bytes) -> _M:
        if len(data) != cls.FORMAT.size:
            raise AccessError(f"{cls.__name__} takes {cls.FORMAT.size} bytes, got {len(data)}")
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
class GetConfigResponse(Message):
    """CMD_GET_CONFIG: result and ``PTM_CONFIG_FLAG_*`` bits."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">II")
    result: int
    flags: int


@dataclass(frozen=True)
class HashDataRequest(Message):
    """CMD_HASH_DATA: u32 length, then that many bytes to hash.

    Variable length: ``FORMAT`` covers the length field only.
    """

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">I")
    data: bytes = b""

    def pack(self) -> bytes:
        return self.FORMAT.pack(len(self.data)) + bytes(self.data)

    @classmethod
    def unpack(cls, data: bytes) -> HashDataRequest:
        if len(data) < cls.FORMAT.size:
            raise AccessError(f"HashDataRequest takes at least 4 bytes, got {len(data)}")
        (length,) = cls.FORMAT.unpack_from(data)
        if len(data) != 4 + length:
            raise AccessError(f"HashDataRequest announces {length} bytes of data, carries {len(data) - 4}")
        return cls(bytes(data[4:]))


@dataclass(frozen=True)
class GetStateBlobRequest(Message):
    """CMD_GET_STATEBLOB: ``PTM_STATE_FLAG_*``, ``PTM_BLOB_TYPE_*``, offset."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">III")
    state_flags: int
    type: int
    offset: int = 0


@dataclass(frozen=True)
class GetStateBlobResponse(Message):
    """CMD_GET_STATEBLOB header; ``length`` blob bytes follow it.

    ``totlength`` is what is left from the requested offset (socket form:
    always equal to ``length``, the whole rest in one answer).
    """

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">IIII")
    result: int
    state_flags: int
    totlength: int
    length: int


@dataclass(frozen=True)
class SetStateBlobRequest(Message):
    """CMD_SET_STATEBLOB header; ``length`` blob bytes follow it."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">III")
    state_flags: int
    type: int
    length: int


@dataclass(frozen=True)
class GetInfoRequest(Message):
    """CMD_GET_INFO: u64 ``SWTPM_INFO_*`` flags, u32 offset, u32 padding."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">QI4x")
    flags: int
    offset: int = 0


@dataclass(frozen=True)
class GetInfoResponse(Message):
    """CMD_GET_INFO header; ``length`` bytes of the JSON document follow.

    ``totlength`` is the size of the whole document including its NUL.
    """

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">III")
    result: int
    totlength: int
    length: int


@dataclass(frozen=True)
class LockStorageRequest(Message):
    """CMD_LOCK_STORAGE (swtpm >= 0.8): tries, 10 ms apart (QEMU: 300)."""

    FORMAT: ClassVar[struct.Struct] = struct.Struct(">I")
    retries: int = 300


@dataclass(frozen=True)
class StateBlob:
    """One state blob as swtpm handed it out.

    ``state_flags`` are the response's ``PTM_STATE_FLAG_*`` (ENCRYPTED when
    the blob is still encrypted with the ``--key`` state key), to be given
    back unchanged to SET_STATEBLOB. ``result`` is 0, or the non-fatal
    result (bit 0x800) swtpm answered for a blob it does not have; then
    ``data`` is empty.
    """

    type: int
    state_flags: int = 0
    data: bytes = b""
    result: int = 0

    @property
    def name(self) -> str:
        return BLOB_TYPE_NAMES.get(self.type, f"type {self.type}")

    @property
    def encrypted(self) -> bool:
        return bool(self.state_flags & PTM_STATE_FLAG_ENCRYPTED)

    def __repr__(self) -> str:
        extra = f", result=0x{self.result:X}" if self.result else ""
        return f"StateBlob({self.name}, flags={self.state_flags}, {len(self.data)} bytes{extra})"


@dataclass(frozen=True)
class CommandSpec:
    """How one control command is framed, and the capability it needs.

    ``request`` / ``response`` are the fixed parts; for the variable-length
    commands the data after them is handled by the :class:`Control` method.
    """

    code: int
    request: type[Message]
    response: type[Message]
    capability: int = 0  # PTM_CAP_* bit; 0 = always available

    @property
    def name(self) -> str:
        return COMMAND_NAMES[self.code]


#: The commands :class:`Control` speaks, by code.
COMMANDS: dict[int, CommandSpec] = {
    spec.code: spec
    for spec in (
        CommandSpec(CMD_GET_CAPABILITY, Empty, GetCapabilityResponse),
        CommandSpec(CMD_INIT, InitRequest, ResultResponse, PTM_CAP_INIT),
        CommandSpec(CMD_SHUTDOWN, Empty, ResultResponse, PTM_CAP_SHUTDOWN),
        CommandSpec(CMD_GET_TPMESTABLISHED, Empty, GetEstablishedResponse, PTM_CAP_GET_TPMESTABLISHED),
        CommandSpec(CMD_SET_LOCALITY, LocalityRequest, ResultResponse, PTM_CAP_SET_LOCALITY),
        CommandSpec(CMD_HASH_START, Empty, ResultResponse, PTM_CAP_HASHING),
        CommandSpec(CMD_HASH_DATA, HashDataRequest, ResultResponse, PTM_CAP_HASHING),
        CommandSpec(CMD_HASH_END, Empty, ResultResponse, PTM_CAP_HASHING),
        CommandSpec(CMD_CANCEL_TPM_CMD, Empty, ResultResponse, PTM_CAP_CANCEL_TPM_CMD),
        CommandSpec(CMD_STORE_VOLATILE, Empty, ResultResponse, PTM_CAP_STORE_VOLATILE),
        CommandSpec(CMD_RESET_TPMESTABLISHED, LocalityRequest, ResultResponse, PTM_CAP_RESET_TPMESTABLISHED),
        CommandSpec(CMD_GET_STATEBLOB, GetStateBlobRequest, GetStateBlobResponse, PTM_CAP_GET_STATEBLOB),
        CommandSpec(CMD_SET_STATEBLOB, SetStateBlobRequest, ResultResponse, PTM_CAP_SET_STATEBLOB),
        CommandSpec(CMD_STOP, Empty, ResultResponse, PTM_CAP_STOP),
        CommandSpec(CMD_GET_CONFIG, Empty, GetConfigResponse, PTM_CAP_GET_CONFIG),
        CommandSpec(CMD_SET_DATAFD, Empty, ResultResponse, PTM_CAP_SET_DATAFD),
        CommandSpec(CMD_SET_BUFFERSIZE, SetBufferSizeRequest, SetBufferSizeResponse, PTM_CAP_SET_BUFFERSIZE),
        CommandSpec(CMD_GET_INFO, GetInfoRequest, GetInfoResponse, PTM_CAP_GET_INFO),
        CommandSpec(CMD_LOCK_STORAGE, LockStorageRequest, ResultResponse, PTM_CAP_LOCK_STORAGE),
    )
}

_RESULT = struct.Struct(">I")
_CODE = struct.Struct(">I")
_T = TypeVar("_T")
_Recv = Callable[[int], bytes]


# -- errors -----------------------------------------------------------------
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


class UnsupportedError(BackendError):
    """swtpm lacks the capability a control command needs; nothing was sent.

    ``command`` is the command name, ``capability`` the missing
    ``PTM_CAP_*`` name (``"LOCK_STORAGE"``), ``caps`` what swtpm has.
    """

    def __init__(self, command: str, capability: str, caps: int) -> None:
        self.command = command
        self.capability = capability
        self.caps = caps
        super().__init__(
            f"swtpm does not support control command {command}: capability PTM_CAP_{capability} "
            f"is not set (it reports 0x{caps:X}); a newer swtpm may have it"
        )

    def __reduce__(self) -> tuple[type[UnsupportedError], tuple[str, str, int]]:
        return (type(self), (self.command, self.capability, self.caps))


_RESULT_HINTS = {
    TPM_BAD_PARAMETER: " (bad parameter)",
    TPM_FAIL: " (TPM failure)",
    TPM_BAD_ORDINAL: " (unknown command, or not allowed in the TPM's current state)",
    TPM_IOERROR: " (I/O error)",
    TPM_DECRYPT_ERROR: " (cannot decrypt: wrong or missing key)",
    TPM_BAD_LOCALITY: " (bad locality)",
}


#: Control commands that leave the TPM's state (and its established flag) as
#: it was. Every other command swtpm accepts may change it: INIT (which can
#: load a stored volatile state), STOP, SHUTDOWN, HASH_START/DATA/END,
#: RESET_TPMESTABLISHED, SET_STATEBLOB, and any code this table does not know.
STATE_PRESERVING_COMMANDS = frozenset(
    {
        CMD_GET_CAPABILITY,
        CMD_GET_TPMESTABLISHED,
        CMD_SET_LOCALITY,
        CMD_CANCEL_TPM_CMD,
        CMD_STORE_VOLATILE,
        CMD_GET_STATEBLOB,
        CMD_GET_CONFIG,
        CMD_SET_DATAFD,
        CMD_SET_BUFFERSIZE,
        CMD_GET_INFO,
        CMD_LOCK_STORAGE,
    }
)


# -- client -----------------------------------------------------------------
class Control:
    """A client of swtpm's control channel over a connected stream socket.

    The socket (unix or TCP) is borrowed: :meth:`close` is not called for
    you, and the owner closes it. *timeout* (seconds) bounds each whole
    exchange. *caps*, when given, are taken as swtpm's ``PTM_CAP_*`` bits
    instead of asking for them.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = 10.0, caps: int | None = None) -> None:
        self.timeout = check_timeout(timeout)
        self.sock = sock
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._caps = caps
        self._changes = 0

    @property
    def broken(self) -> str | None:
        """Why the channel is unusable, or None while it is fine.

        Once set it stays set: a failed transport leaves the stream position
        unknown, so every later command raises at once.
        """
        return self._broken

    @property
    def changes(self) -> int:
        """How many commands that may change the TPM's state were sent.

        Counts every command not in :data:`STATE_PRESERVING_COMMANDS` that
        swtpm did not refuse (a refused one changed nothing), however it was
        sent (a method, :meth:`call`, :meth:`exchange`, :meth:`transact`).
        A copy of TPM state taken at one count is current while the count
        is the same: the Emulator caches the established flag so.
        """
        return self._changes

    @property
    def caps(self) -> int | None:
        """The ``PTM_CAP_*`` bits, None until learned."""
        return self._caps

    # -- framing --------------------------------------------------------
    def call(self, code: int, request: Message | None = None, *, fds: tuple[int, ...] = ()) -> Message:
        """Send fixed-size command *code* with *request*; return its typed response.

        Raises :class:`UnsupportedError` (nothing sent) when swtpm lacks the
        command's capability, :class:`ControlError` for a non-zero result
        and :class:`BackendError` when the channel fails.
        """
        spec = COMMANDS[code]
        if request is None:
            request = spec.request()
        elif not isinstance(request, spec.request):
            raise AccessError(f"{spec.name} takes a {spec.request.__name__}, not {type(request).__name__}")
        body = request.pack()
        self.require(code)
        raw = self.exchange(code, body, spec.response.size(), fds=fds)
        return spec.response.unpack(raw)

    def require(self, code: int) -> None:
        """Raise :class:`UnsupportedError` unless swtpm supports command *code*.

        Learns the capabilities (one GET_CAPABILITY) the first time.
        SET_DATAFD is checked only when they are already known (QEMU sends
        it before asking).
        """
        spec = COMMANDS[code]
        if not spec.capability:
            return
        if self._caps is None:
            if code == CMD_SET_DATAFD:
                return
            self.get_capability()
        assert self._caps is not None
        if not self._caps & spec.capability:
            raise UnsupportedError(spec.name, CAPABILITY_NAMES[spec.capability], self._caps)

    def exchange(self, code: int, body: bytes, response_size: int, *, fds: tuple[int, ...] = ()) -> bytes:
        """Send a raw request; return the raw *response_size*-byte answer.

        The result is read first; the remainder only when it is 0. A
        non-zero result raises :class:`ControlError`. No capability check.
        """

        def read(recv: _Recv) -> bytes:
            head = recv(_RESULT.size)
            (result,) = _RESULT.unpack(head)
            if result != TPM_SUCCESS:
                raise ControlError(_name(code), code, result)
            return head + (recv(response_size - _RESULT.size) if response_size > _RESULT.size else b"")

        return self.transact(code, body, read, fds=fds)

    def transact(
        self, code: int, body: bytes, read: Callable[[_Recv], _T], *, fds: tuple[int, ...] = ()
    ) -> _T:
        """Send command *code* with *body*; let *read* parse the answer.

        *read* gets a ``recv(n)`` that returns exactly *n* bytes within the
        exchange's deadline. A :class:`ControlError` from *read* is an
        answer (the channel stays usable, so *read* must have consumed the
        whole reply); any other :class:`BackendError` breaks the channel.
        After *read*, bytes left unread (a reply longer than expected) break
        it too; so do bytes waiting before the request is sent.
        """
        name = _name(code)
        with self._lock:
            if self._broken is not None:
                raise BackendError(f"swtpm control channel is unusable ({self._broken}); cannot send {name}")
            deadline = time.monotonic() + self.timeout

            def recv(n: int) -> bytes:
                return recv_exactly(self.sock, n, deadline, self.timeout, "control answer")

            changes = False
            try:
                self._check_quiet("before the request")
                changes = code not in STATE_PRESERVING_COMMANDS
                self._send(_CODE.pack(code) + body, fds, deadline)
                try:
                    answer = read(recv)
                except ControlError:
                    changes = False  # refused: nothing changed
                    self._check_quiet("after its error result")
                    raise
                self._check_quiet("after the answer")
                return answer
            except ControlError:
                raise
            except BackendError as exc:
                self._broken = str(exc)
                raise BackendError(f"swtpm control command {name}: {exc}") from None
            finally:
                if changes:
                    self._changes += 1

    def _check_quiet(self, when: str) -> None:
        """Fail if swtpm sent bytes nobody asked for (a long or stray reply)."""
        try:
            # Non-blocking: with a timeout set, Python would first wait for
            # readability whatever the flags say.
            self.sock.settimeout(0)
            extra = self.sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # a dead peer shows up on the next read or write
        if extra:
            raise BackendError(
                f"swtpm sent {len(extra)}{'+' if len(extra) == 4096 else ''} unexpected bytes {when} "
                f"({extra[:16].hex()}...); the reply does not match the command"
            )

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

    # -- commands -----------------------------------------------------------
    def get_capability(self) -> int:
        """CMD_GET_CAPABILITY: the ``PTM_CAP_*`` bits swtpm supports (remembered)."""
        rsp = self.call(CMD_GET_CAPABILITY)
        assert isinstance(rsp, GetCapabilityResponse)
        self._caps = rsp.caps
        return rsp.caps

    def init(self, flags: int = 0) -> None:
        """CMD_INIT: (re)start the TPM; *flags* are ``PTM_INIT_FLAG_*``.

        TPM(2)_Startup is not sent; that is the guest's job. With
        ``PTM_INIT_FLAG_DELETE_VOLATILE`` the TPM resumes from the volatile
        state it has (e.g. one just loaded with SET_STATEBLOB) and the
        stored copy is deleted, so a later plain INIT starts afresh.
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

    def hash_start(self) -> None:
        """CMD_HASH_START: _TPM_Hash_Start at swtpm's current locality."""
        self.call(CMD_HASH_START)

    def hash_data(self, data: bytes) -> None:
        """CMD_HASH_DATA: _TPM_Hash_Data, in chunks of :data:`HASH_DATA_CHUNK`.

        Empty *data* sends nothing.
        """
        view = as_bytes(data, "data")
        for start in range(0, len(view), HASH_DATA_CHUNK):
            self.call(CMD_HASH_DATA, HashDataRequest(view[start : start + HASH_DATA_CHUNK]))

    def hash_end(self) -> None:
        """CMD_HASH_END: _TPM_Hash_End (extends the digest; sets the established flag)."""
        self.call(CMD_HASH_END)

    def cancel_tpm_cmd(self) -> None:
        """CMD_CANCEL_TPM_CMD: cancel the command the TPM is running."""
        self.call(CMD_CANCEL_TPM_CMD)

    def store_volatile(self) -> None:
        """CMD_STORE_VOLATILE: write the volatile state to the state directory."""
        self.call(CMD_STORE_VOLATILE)

    def reset_tpm_established(self, locality: int) -> None:
        """CMD_RESET_TPMESTABLISHED as if requested from *locality* (3 or 4)."""
        self.call(CMD_RESET_TPMESTABLISHED, LocalityRequest(locality))

    def get_stateblob(self, blob_type: int, state_flags: int = PTM_STATE_FLAG_DECRYPTED) -> StateBlob:
        """CMD_GET_STATEBLOB: the whole blob of *blob_type* (``PTM_BLOB_TYPE_*``).

        A non-fatal result (bit 0x800: swtpm has no such blob) gives an
        empty :class:`StateBlob` carrying that result, as QEMU treats it.
        Other non-zero results raise :class:`ControlError`. When an answer
        holds less than the rest of the blob (``totlength > length``; the
        ioctl form does that, the socket form never), the rest is asked
        for at the next offset.

        Asking for the VOLATILE blob makes swtpm store its volatile state
        first, so the blob is current.
        """
        self.require(CMD_GET_STATEBLOB)
        data = bytearray()
        flags = 0
        total: int | None = None
        while total is None or len(data) < total:
            header, chunk = self._get_stateblob_part(GetStateBlobRequest(state_flags, blob_type, len(data)))
            if header.result != TPM_SUCCESS:  # non-fatal: nothing of this kind
                if data:
                    raise BackendError(
                        f"swtpm answered result 0x{header.result:X} for the {_blob_name(blob_type)} "
                        f"blob at offset {len(data)} after sending part of it"
                    )
                return StateBlob(blob_type, header.state_flags, b"", header.result)
            if total is None:
                total, flags = header.totlength, header.state_flags
            elif not chunk:
                raise BackendError(
                    f"swtpm sent no more of the {_blob_name(blob_type)} blob at offset {len(data)} of {total}"
                )
            data += chunk
            if len(data) > total:
                raise BackendError(
                    f"swtpm sent {len(data)} bytes of a {total}-byte {_blob_name(blob_type)} blob"
                )
        return StateBlob(blob_type, flags, bytes(data))

    def _get_stateblob_part(self, request: GetStateBlobRequest) -> tuple[GetStateBlobResponse, bytes]:
        def read(recv: _Recv) -> tuple[GetStateBlobResponse, bytes]:
            head = recv(_RESULT.size)
            (result,) = _RESULT.unpack(head)
            # swtpm answers only the result when it refuses before looking
            # for the blob (TPM not running: 0x0A; short request: 0x03) and
            # the whole 16-byte header otherwise, errors included (0x800 for
            # a missing blob or an unknown type, 0x21 for a decryption
            # failure). Observed on 0.7.1.
            if result in (TPM_BAD_ORDINAL, TPM_BAD_PARAMETER):
                raise ControlError("GET_STATEBLOB", CMD_GET_STATEBLOB, result)
            header = GetStateBlobResponse.unpack(head + recv(GetStateBlobResponse.size() - _RESULT.size))
            if header.totlength > MAX_STATE_BLOB_SIZE or header.length > header.totlength:
                raise BackendError(
                    f"GET_STATEBLOB header announces {header.length} of {header.totlength} bytes "
                    f"(accepted: up to {MAX_STATE_BLOB_SIZE} in all, length <= totlength); garbled answer"
                )
            chunk = recv(header.length) if header.length else b""
            if result != TPM_SUCCESS and not result & RESULT_NON_FATAL:
                raise ControlError("GET_STATEBLOB", CMD_GET_STATEBLOB, result)
            return header, chunk

        return self.transact(CMD_GET_STATEBLOB, request.pack(), read)

    def set_stateblob(self, blob_type: int, data: bytes, state_flags: int = 0) -> None:
        """CMD_SET_STATEBLOB: load *data* as the blob of *blob_type*.

        The TPM must be stopped (CMD_STOP), else swtpm answers 0x0A.
        *state_flags* are the ones :meth:`get_stateblob` reported
        (``PTM_STATE_FLAG_ENCRYPTED`` for a blob still under the ``--key``
        state key). The header, then the blob, then the result is read.
        """
        self.require(CMD_SET_STATEBLOB)
        blob = bytes(data)
        header = SetStateBlobRequest(state_flags, blob_type, len(blob)).pack()
        self.transact(CMD_SET_STATEBLOB, header + blob, _read_result(CMD_SET_STATEBLOB))

    def stop(self) -> None:
        """CMD_STOP: stop the TPM (the process keeps running)."""
        self.call(CMD_STOP)

    def get_config(self) -> int:
        """CMD_GET_CONFIG: ``PTM_CONFIG_FLAG_*`` (which keys swtpm has)."""
        rsp = self.call(CMD_GET_CONFIG)
        assert isinstance(rsp, GetConfigResponse)
        return rsp.flags

    def set_datafd(self, fd: int) -> None:
        """CMD_SET_DATAFD: hand swtpm *fd* (SCM_RIGHTS) as its data channel.

        Unix sockets only; over TCP swtpm 0.7.1 answers 0x03 (0x1F with
        a ``--server`` socket).
        """
        self.call(CMD_SET_DATAFD, fds=(fd,))

    def set_buffersize(self, size: int = 0) -> tuple[int, int, int]:
        """CMD_SET_BUFFERSIZE: set (TPM stopped) or, with 0, ask the size.

        Returns ``(buffersize, minsize, maxsize)``; swtpm clamps a wanted
        size into its bounds.
        """
        rsp = self.call(CMD_SET_BUFFERSIZE, SetBufferSizeRequest(size))
        assert isinstance(rsp, SetBufferSizeResponse)
        return rsp.buffersize, rsp.minsize, rsp.maxsize

    def get_info(self, flags: int = SWTPM_INFO_TPMSPECIFICATION) -> dict[str, Any]:
        """CMD_GET_INFO: the JSON document for *flags* (``SWTPM_INFO_*``), parsed.

        Works whether or not the TPM runs. Asks again at the next offset
        while the document is incomplete.
        """
        self.require(CMD_GET_INFO)
        text = bytearray()
        total: int | None = None
        while total is None or len(text) < total:
            header, chunk = self._get_info_part(GetInfoRequest(flags, len(text)))
            if total is None:
                total = header.totlength
            elif not chunk:
                raise BackendError(f"swtpm sent no more of the GET_INFO document at {len(text)} of {total}")
            text += chunk
        if len(text) != total or not text.endswith(b"\0"):
            raise BackendError(f"GET_INFO document is not NUL-terminated or not {total} bytes: {text[:64]!r}")
        try:
            info = json.loads(bytes(text[:-1]).decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise BackendError(f"GET_INFO answered invalid JSON ({exc}): {text[:64]!r}") from None
        if not isinstance(info, dict):
            raise BackendError(f"GET_INFO answered JSON that is not an object: {text[:64]!r}")
        return info

    def _get_info_part(self, request: GetInfoRequest) -> tuple[GetInfoResponse, bytes]:
        def read(recv: _Recv) -> tuple[GetInfoResponse, bytes]:
            head = recv(_RESULT.size)
            (result,) = _RESULT.unpack(head)
            if result != TPM_SUCCESS:
                raise ControlError("GET_INFO", CMD_GET_INFO, result)
            header = GetInfoResponse.unpack(head + recv(GetInfoResponse.size() - _RESULT.size))
            left = header.totlength - request.offset
            if header.totlength > MAX_INFO_SIZE or header.length > left:
                raise BackendError(
                    f"GET_INFO header announces {header.length} bytes at offset {request.offset} of "
                    f"{header.totlength} (accepted: up to {MAX_INFO_SIZE}); garbled answer"
                )
            return header, recv(header.length) if header.length else b""

        return self.transact(CMD_GET_INFO, request.pack(), read)

    def lock_storage(self, retries: int = 300) -> None:
        """CMD_LOCK_STORAGE (swtpm >= 0.8): take the NVRAM lock again.

        Refused with :class:`UnsupportedError` by swtpm 0.7.1.
        """
        self.call(CMD_LOCK_STORAGE, LockStorageRequest(retries))


def _name(code: int) -> str:
    return COMMAND_NAMES.get(code, f"0x{code:02X}")


def _blob_name(blob_type: int) -> str:
    return BLOB_TYPE_NAMES.get(blob_type, f"type-{blob_type}")


def _read_result(code: int) -> Callable[[_Recv], None]:
    def read(recv: _Recv) -> None:
        (result,) = _RESULT.unpack(recv(_RESULT.size))
        if result != TPM_SUCCESS:
            raise ControlError(_name(code), code, result)

    return read


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout
    return left


def recv_exactly(sock: socket.socket, n: int, deadline: float, timeout: float, what: str) -> bytes:
    """Read exactly *n* bytes before *deadline* (a ``time.monotonic`` value).

    Raises :class:`BackendError` on timeout, end of stream or socket error;
    *what* names the awaited data in the message.
    """
    buf = bytearray()
    try:
        while len(buf) < n:
            sock.settimeout(_remaining(deadline))
            chunk = sock.recv(min(n - len(buf), 1 << 20))
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


# -- the swtpm executable -----------------------------------------------------
_features_lock = threading.Lock()
_features_cache: dict[str, Mapping[str, Any]] = {}


def binary_features(path: str | os.PathLike[str] = "swtpm", *, timeout: float = 10.0) -> dict[str, Any]:
    """What the swtpm executable at *path* supports, from ``--print-capabilities``.

    Returns the parsed JSON of ``swtpm socket --print-capabilities``:
    ``{"type": "swtpm", "features": [...], "version": "0.7.1"}`` (``version``
    is absent before swtpm 0.7). Asked once per executable (resolved path)
    and cached. Raises :class:`BackendError` when *path* is not found or
    does not answer with such a document.
    """
    exe = shutil.which(os.fspath(path))
    if exe is None:
        raise BackendError(
            f"swtpm executable {os.fspath(path)!r} not found; install swtpm "
            "(Debian/Ubuntu: apt-get install swtpm) or pass its path"
        )
    key = os.path.realpath(exe)
    with _features_lock:
        cached = _features_cache.get(key)
        if cached is None:
            cached = _ask_features(exe, timeout)
            _features_cache[key] = cached
    return {k: list(v) if isinstance(v, list) else v for k, v in cached.items()}


def _ask_features(exe: str, timeout: float) -> dict[str, Any]:
    try:
        out = subprocess.run(
            [exe, "socket", "--print-capabilities"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"cannot run {exe!r} socket --print-capabilities ({exc})") from None
    text = out.stdout.decode(errors="replace").strip()
    try:
        doc = json.loads(text) if out.returncode == 0 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
        detail = (text or out.stderr.decode(errors="replace").strip())[:200]
        raise BackendError(
            f"{exe!r} socket --print-capabilities did not print the capabilities document "
            f"(status {out.returncode}: {detail!r}); swtpm 0.2 or newer is needed"
        )
    return doc
