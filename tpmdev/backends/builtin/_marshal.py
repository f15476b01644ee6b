"""Unmarshalling and marshalling of big-endian TPM structures.

TPM 2.0 Library Part 2 section 4 ("Marshaling") and the TPM 1.2 Main Part 2
use the same rules: integers are big-endian, a ``TPM2B`` is a 16-bit size and
that many bytes, a list is a 32-bit count and that many entries.

:class:`Reader` walks a command buffer. When the bytes run out it raises
:class:`TpmError` carrying ``TPM_RC_INSUFFICIENT``; callers re-raise with the
handle, parameter or session number added (:func:`rc_with`), exactly as the
reference implementation adds ``RC_<Command>_<name>`` to an unmarshal error.
"""

from __future__ import annotations

import struct

from tpmdev.backends.builtin._constants import TPM_RC_FMT1, TPM_RC_INSUFFICIENT, TPM_RC_SIZE

__all__ = ["Reader", "TpmError", "rc_with", "tpm2b", "u8", "u16", "u32", "u64"]


class TpmError(Exception):
    """A TPM command failed with response code :attr:`rc`.

    Internal to the engine: :meth:`Builtin.execute` turns it into an error
    response and never lets it escape.
    """

    def __init__(self, rc: int) -> None:
        super().__init__(f"TPM response code 0x{rc:03X}")
        self.rc = rc


def rc_with(rc: int, which: int, number: int) -> int:
    """Add a handle/parameter/session reference to a format-one *rc*.

    *which* is ``TPM_RC_H``, ``TPM_RC_P`` or ``TPM_RC_S``; *number* counts from
    1. Format-zero codes and codes that already carry a number pass unchanged.
    """
    if not rc & TPM_RC_FMT1 or rc & 0xFC0 != TPM_RC_FMT1:
        return rc
    return rc | which | (number << 8)


class Reader:
    """A cursor over a command buffer."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise TpmError(TPM_RC_INSUFFICIENT)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def tpm2b(self, max_size: int) -> bytes:
        """A TPM2B: TPM_RC_SIZE if its size exceeds *max_size* (Part 2 4.8)."""
        size = self.u16()
        if size > max_size:
            raise TpmError(TPM_RC_SIZE)
        return self.take(size)


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def u8(value: int) -> bytes:
    return bytes((value & 0xFF,))


def u16(value: int) -> bytes:
    return _U16.pack(value & 0xFFFF)


def u32(value: int) -> bytes:
    return _U32.pack(value & 0xFFFFFFFF)


def u64(value: int) -> bytes:
    return _U64.pack(value & 0xFFFFFFFFFFFFFFFF)


def tpm2b(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value
