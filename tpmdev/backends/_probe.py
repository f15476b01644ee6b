"""QEMU's two TPM probes: which TPM family, and how big a command may be.

QEMU learns both facts by sending ordinary TPM commands (its ``tpm_util``
helpers); the passthrough backend has no other way to ask a host TPM, and the
emulator backend uses the version probe too. The probes are kept here as
functions of a *transact* callable so that any backend can be probed the same
way, e.g. ``probe_version(backend.execute)``.

Theory of operation
-------------------
``transact(command) -> bytes`` sends one command and returns the raw answer,
all of it. It may raise :class:`tpmdev.BackendError` or :class:`OSError` (no
answer in time, device error, a backend that validates answers itself); a
probe counts that as a failed probe and never lets it escape.

Version (:func:`probe_version`):

1. TPM2_ReadClock (``80 01 00 00 00 0A 00 00 01 81``). A valid answer (at
   least 10 bytes, size field equal to its length, no more than the
   :data:`VERSION_PROBE_READ_SIZE` bytes QEMU reads) tagged 0x8001 means TPM
   2.0. A TPM 1.2 answers this with a 0x00C4-tagged error.
2. Otherwise TPM_GetTicks (``00 C1 00 00 00 0A 00 00 00 F1``); a valid answer
   tagged 0x00C4 means TPM 1.2. An error answer counts: a TPM that was never
   started still identifies itself.
3. Otherwise 0: not a TPM we know.

Buffer size (:func:`probe_buffer_size`), asked at every machine reset:

* TPM 1.2: TPM_GetCapability(TPM_CAP_PROPERTY, subCap TPM_CAP_PROP_INPUT_BUFFER),
  22 bytes. The answer must be exactly 18 bytes (header, u32 length 4, u32
  value); the value is the size.
* TPM 2.0: TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_MAX_COMMAND_SIZE,
  count 2), 22 bytes; the second property returned is TPM_PT_MAX_RESPONSE_SIZE.
  The answer must be exactly 35 bytes (header 10, moreData 1, capability 4,
  count 4, two property/value pairs 16) with count 2; the size is the larger
  of the two values.
* Anything else, or a TPM of unknown family: :data:`~tpmdev.backends.DEFAULT_BUFFER_SIZE`
  (4096).

QUIRKS kept from QEMU: the buffer-size answer's tag, response code,
capability, moreData and property identifiers are not checked, only the
lengths and the count; a reported size of 0 is taken as it is.

Where we differ: QEMU reads at most 1024 bytes for a version answer and at
most the expected 18 or 35 bytes for a buffer-size answer, then insists that
the size field equals the bytes read. We take the whole answer and check its
length against the same limits, which reaches the same verdict for every
answer (a longer answer fails either way) without leaving unread bytes in the
device.
"""

from __future__ import annotations

import logging
import struct
from typing import Callable, Optional

from tpmdev.backends.base import DEFAULT_BUFFER_SIZE, check_tpm_version
from tpmdev.errors import BackendError
from tpmdev.wire import (
    HEADER_SIZE,
    TPM2_READCLOCK_PROBE,
    TPM12_GETTICKS_PROBE,
    TPM_ST_NO_SESSIONS,
    TPM_TAG_RQU_COMMAND,
    build_command,
    is_whole_message,
    version_from_probe,
)

__all__ = [
    "Transact",
    "VERSION_PROBE_READ_SIZE",
    "VERSION_PROBES",
    "TPM12_BUFFER_SIZE_PROBE",
    "TPM2_BUFFER_SIZE_PROBE",
    "TPM12_BUFFER_SIZE_ANSWER_SIZE",
    "TPM2_BUFFER_SIZE_ANSWER_SIZE",
    "buffer_size_probe",
    "version_from_answer",
    "buffer_size_from_answer",
    "probe_version",
    "probe_buffer_size",
]

log = logging.getLogger(__name__)

#: Sends one TPM command, returns the whole raw answer.
Transact = Callable[[bytes], bytes]

#: How much of a version-probe answer QEMU reads.
VERSION_PROBE_READ_SIZE = 1024

#: The version probes, in the order QEMU sends them, with the version each detects.
VERSION_PROBES = ((TPM2_READCLOCK_PROBE, 2), (TPM12_GETTICKS_PROBE, 1))

# TPM 1.2 (TPM Main Part 2/3): TPM_ORD_GetCapability, TPM_CAP_PROPERTY,
# TPM_CAP_PROP_INPUT_BUFFER.
_TPM_ORD_GET_CAPABILITY = 0x00000065
_TPM_CAP_PROPERTY = 0x00000005
_TPM_CAP_PROP_INPUT_BUFFER = 0x00000124
# TPM 2.0 (Part 2): TPM_CC_GetCapability, TPM_CAP_TPM_PROPERTIES,
# TPM_PT_MAX_COMMAND_SIZE (TPM_PT_MAX_RESPONSE_SIZE follows it).
_TPM2_CC_GET_CAPABILITY = 0x0000017A
_TPM2_CAP_TPM_PROPERTIES = 0x00000006
_TPM2_PT_MAX_COMMAND_SIZE = 0x0000011E

#: TPM_GetCapability(TPM_CAP_PROPERTY, 4, TPM_CAP_PROP_INPUT_BUFFER): 22 bytes.
TPM12_BUFFER_SIZE_PROBE = build_command(
    TPM_TAG_RQU_COMMAND,
    _TPM_ORD_GET_CAPABILITY,
    struct.pack(">III", _TPM_CAP_PROPERTY, 4, _TPM_CAP_PROP_INPUT_BUFFER),
)
#: TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_MAX_COMMAND_SIZE, 2): 22 bytes.
TPM2_BUFFER_SIZE_PROBE = build_command(
    TPM_ST_NO_SESSIONS,
    _TPM2_CC_GET_CAPABILITY,
    struct.pack(">III", _TPM2_CAP_TPM_PROPERTIES, _TPM2_PT_MAX_COMMAND_SIZE, 2),
)

#: Header, u32 length, u32 value.
TPM12_BUFFER_SIZE_ANSWER_SIZE = HEADER_SIZE + 4 + 4
#: Header, moreData, capability, count, two (property, value) pairs.
TPM2_BUFFER_SIZE_ANSWER_SIZE = HEADER_SIZE + 1 + 4 + 4 + 2 * 8

_TPM12_ANSWER = struct.Struct(">II")  # after the header: length, value
_TPM2_ANSWER = struct.Struct(">BIIIIII")  # moreData, cap, count, p1, v1, p2, v2


def version_from_answer(answer: bytes, probe: bytes) -> int:
    """The TPM version one probe's *answer* shows (2, 1), or 0.

    :func:`tpmdev.wire.version_from_probe` plus QEMU's 1024-byte read limit.
    """
    if len(answer) > VERSION_PROBE_READ_SIZE:
        return 0
    return version_from_probe(answer, probe)


def buffer_size_probe(tpm_version: int) -> bytes:
    """The command QEMU sends to learn the buffer size of a TPM *tpm_version*."""
    if check_tpm_version(tpm_version) == 2:
        return TPM2_BUFFER_SIZE_PROBE
    return TPM12_BUFFER_SIZE_PROBE


def buffer_size_from_answer(answer: bytes, tpm_version: int) -> Optional[int]:
    """The buffer size in the answer to :func:`buffer_size_probe`, or None.

    None when QEMU would reject the answer (see the module documentation).
    """
    if not is_whole_message(answer):
        return None
    if tpm_version == 1:
        if len(answer) != TPM12_BUFFER_SIZE_ANSWER_SIZE:
            return None
        length, value = _TPM12_ANSWER.unpack_from(answer, HEADER_SIZE)
        return value if length == 4 else None
    if tpm_version == 2:
        if len(answer) != TPM2_BUFFER_SIZE_ANSWER_SIZE:
            return None
        _more, _cap, count, _p1, value1, _p2, value2 = _TPM2_ANSWER.unpack_from(answer, HEADER_SIZE)
        return max(value1, value2) if count == 2 else None
    return None


def _ask(transact: Transact, command: bytes, what: str) -> Optional[bytes]:
    try:
        return bytes(transact(command))
    except (BackendError, OSError) as exc:
        log.debug("%s probe %s failed: %s", what, command.hex(), exc)
        return None


def probe_version(transact: Transact) -> int:
    """Ask as QEMU does whether the TPM behind *transact* is a TPM 2.0 (2) or
    1.2 (1); 0 if neither probe got a fitting answer. Never raises for the
    TPM's behaviour."""
    for probe, _version in VERSION_PROBES:
        answer = _ask(transact, probe, "version")
        if answer is None:
            continue
        version = version_from_answer(answer, probe)
        log.debug("version probe %s -> %s (TPM version %d)", probe.hex(), answer.hex(), version)
        if version:
            return version
    return 0


def probe_buffer_size(transact: Transact, tpm_version: int, default: int = DEFAULT_BUFFER_SIZE) -> int:
    """Ask the TPM behind *transact* for its buffer size as QEMU does.

    Returns *default* (QEMU: 4096) when the TPM's family is unknown (0) or its
    answer is unusable; the reason is logged.
    """
    if tpm_version not in (1, 2):
        log.warning("TPM version unknown; assuming a %d-byte buffer", default)
        return default
    command = buffer_size_probe(tpm_version)
    answer = _ask(transact, command, "buffer size")
    if answer is None:
        log.warning("TPM did not answer the buffer size probe; assuming %d bytes", default)
        return default
    size = buffer_size_from_answer(answer, tpm_version)
    if size is None:
        code = int.from_bytes(answer[6:10], "big") if len(answer) >= HEADER_SIZE else None
        log.warning(
            "unexpected answer to %s (%d bytes, response code %s); assuming a %d-byte buffer",
            "TPM2_GetCapability" if tpm_version == 2 else "TPM_GetCapability",
            len(answer),
            "?" if code is None else f"0x{code:x}",
            default,
        )
        return default
    log.debug("TPM buffer size %d", size)
    return size
