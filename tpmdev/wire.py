"""TPM wire-format helpers shared by frontends, backends and drivers.

TPM commands and responses are big-endian: a 2-byte tag, a 4-byte size
covering the whole message, then a 4-byte command code (commands) or
response code (responses). Nothing here touches the register hot path.
"""

from __future__ import annotations

import struct

__all__ = [
    "HEADER_SIZE",
    "TPM_ST_NO_SESSIONS",
    "TPM_ST_SESSIONS",
    "TPM_TAG_RQU_COMMAND",
    "TPM_TAG_RSP_COMMAND",
    "TPM_SUCCESS",
    "TPM_BADINDEX",
    "TPM_BAD_PARAMETER",
    "TPM_DEACTIVATED",
    "TPM_FAIL",
    "TPM_BAD_ORDINAL",
    "TPM_SIZE",
    "TPM_BAD_PARAM_SIZE",
    "TPM_BADTAG",
    "TPM_IOERROR",
    "TPM_DECRYPT_ERROR",
    "TPM_INVALID_POSTINIT",
    "TPM_BAD_TYPE",
    "TPM_BAD_LOCALITY",
    "TPM_NON_FATAL",
    "TPM_RC_FAILURE",
    "FATAL_RESPONSE",
    "TPM2_READCLOCK_PROBE",
    "TPM12_GETTICKS_PROBE",
    "TPM_ORD_CONTINUE_SELF_TEST",
    "build_command",
    "parse_header",
    "header_size",
    "is_whole_message",
    "response_code",
    "is_selftest_done",
    "version_from_probe",
]

HEADER_SIZE = 10

# TPM 2.0 structure tags (TPM_ST)
TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
# TPM 1.2 tags
TPM_TAG_RQU_COMMAND = 0x00C1
TPM_TAG_RSP_COMMAND = 0x00C4

# TPM 1.2 return codes (TPM_RESULT, Main Part 2 section 16). swtpm's control
# channel and libtpms' library API answer with these for both TPM families.
TPM_SUCCESS = 0x00
TPM_BADINDEX = 0x02
TPM_BAD_PARAMETER = 0x03
TPM_DEACTIVATED = 0x06
TPM_FAIL = 0x09
TPM_BAD_ORDINAL = 0x0A
TPM_SIZE = 0x17
TPM_BAD_PARAM_SIZE = 0x19
TPM_BADTAG = 0x1E
TPM_IOERROR = 0x1F
TPM_DECRYPT_ERROR = 0x21
TPM_INVALID_POSTINIT = 0x26
TPM_BAD_TYPE = 0x34
TPM_BAD_LOCALITY = 0x3D
TPM_NON_FATAL = 0x800  #: set in results that are warnings, not errors
TPM_RC_FAILURE = 0x00000101  # TPM 2.0 failure mode

#: What QEMU's backends hand the guest when a command could not be run: a
#: TPM 1.2 style TPM_FAIL response, used for TPM 2.0 too.
FATAL_RESPONSE = bytes.fromhex("00c4 0000000a 00000009")

#: The two probes QEMU's tpm_util sends to learn a TPM's version.
TPM2_READCLOCK_PROBE = bytes.fromhex("8001 0000000a 00000181")
TPM12_GETTICKS_PROBE = bytes.fromhex("00c1 0000000a 000000f1")

TPM_ORD_CONTINUE_SELF_TEST = 0x00000053

_HDR = struct.Struct(">HII")


def build_command(tag: int, code: int, body: bytes = b"") -> bytes:
    """Return a command with a correct header around *body*."""
    return _HDR.pack(tag, HEADER_SIZE + len(body), code) + body


def parse_header(message: bytes) -> tuple[int, int, int]:
    """Return ``(tag, size, code)`` of a command or response.

    Raises ``ValueError`` if *message* is shorter than a header.
    """
    if len(message) < HEADER_SIZE:
        raise ValueError(f"TPM message of {len(message)} bytes is shorter than its 10-byte header")
    tag, size, code = _HDR.unpack_from(message)
    return tag, size, code


def header_size(message: bytes) -> int:
    """The size field of a message (bytes 2..5), or 0 if it is too short."""
    if len(message) < 6:
        return 0
    return int.from_bytes(message[2:6], "big")


def response_code(response: bytes) -> int:
    """The response code of *response* (bytes 6..9)."""
    return parse_header(response)[2]


def is_whole_message(message: bytes) -> bool:
    """True if *message* is a whole header whose size field equals its length
    (QEMU's test of an answer read from a TPM in one piece)."""
    return len(message) >= HEADER_SIZE and header_size(message) == len(message)


def is_selftest_done(command: bytes, response: bytes) -> bool:
    """True for a successful TPM 1.2 ContinueSelfTest (sets STS.selfTestDone).

    QEMU checks only the ordinal of a command of at least 10 bytes and a zero
    response code; TPM 2.0 self-tests never count.
    """
    if len(command) < HEADER_SIZE or len(response) < HEADER_SIZE:
        return False
    ordinal = int.from_bytes(command[6:10], "big")
    return ordinal == TPM_ORD_CONTINUE_SELF_TEST and response_code(response) == 0


def version_from_probe(response: bytes, probe: bytes) -> int:
    """Interpret the answer to one of the version probes as QEMU does.

    A valid answer has at least 10 bytes and a size field equal to its length.
    Returns 2 for a TPM2_ReadClock answered with tag 0x8001, 1 for a
    TPM_GetTicks answered with tag 0x00C4, else 0.
    """
    if not is_whole_message(response):
        return 0
    tag = int.from_bytes(response[0:2], "big")
    if probe == TPM2_READCLOCK_PROBE and tag == TPM_ST_NO_SESSIONS:
        return 2
    if probe == TPM12_GETTICKS_PROBE and tag == TPM_TAG_RSP_COMMAND:
        return 1
    return 0
