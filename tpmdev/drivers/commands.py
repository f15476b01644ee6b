"""Builders and decoders for the few TPM commands the demo, the tests and the
benchmarks send as a guest would (TPM 2.0 Part 3 / TPM 1.2 Part 3 layouts).

Not a TPM software stack: just enough to build correct commands and read the
fields of their responses.
"""

from __future__ import annotations

import struct

from tpmdev.wire import TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS, TPM_TAG_RQU_COMMAND, build_command, parse_header

__all__ = [
    "TPM2_CC",
    "TPM12_ORD",
    "TPM_ALG_SHA1",
    "TPM_ALG_SHA256",
    "TPM_RS_PW",
    "tpm2_startup",
    "tpm2_get_random",
    "tpm2_pcr_extend",
    "tpm2_pcr_read",
    "tpm12_startup",
    "tpm12_get_random",
    "tpm12_extend",
    "tpm12_pcr_read",
    "command_name",
    "decode_get_random",
    "decode_pcr_read",
    "decode_tpm12_digest",
]

TPM2_CC = {
    "Startup": 0x144,
    "Shutdown": 0x145,
    "SelfTest": 0x143,
    "GetCapability": 0x17A,
    "GetRandom": 0x17B,
    "PCR_Extend": 0x182,
    "PCR_Read": 0x17E,
    "ReadClock": 0x181,
    "Hash": 0x17D,
}
TPM12_ORD = {
    "TPM_Startup": 0x99,
    "TPM_GetRandom": 0x46,
    "TPM_Extend": 0x14,
    "TPM_PcrRead": 0x15,
    "TPM_GetCapability": 0x65,
    "TPM_ContinueSelfTest": 0x53,
}
TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_RS_PW = 0x40000009
TPM_SU_CLEAR = 0x0000
TPM_ST_CLEAR = 0x0001

_NAMES = {**{code: f"TPM2_{name}" for name, code in TPM2_CC.items()}, **{v: k for k, v in TPM12_ORD.items()}}
_DIGEST_SIZES = {TPM_ALG_SHA1: 20, TPM_ALG_SHA256: 32, 0x000C: 48, 0x000D: 64}


def command_name(command: bytes) -> str:
    """A readable name for a command's code."""
    _, _, code = parse_header(command)
    return _NAMES.get(code, f"command {code:#x}")


def _password_session() -> bytes:
    # TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, attributes 0, empty password
    auth = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
    return struct.pack(">I", len(auth)) + auth


def _pcr_selection(alg: int, pcrs: list[int]) -> bytes:
    bitmap = bytearray(3)
    for pcr in pcrs:
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    return struct.pack(">IHB", 1, alg, 3) + bytes(bitmap)


def tpm2_startup(startup_type: int = TPM_SU_CLEAR) -> bytes:
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["Startup"], struct.pack(">H", startup_type))


def tpm2_get_random(count: int) -> bytes:
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["GetRandom"], struct.pack(">H", count))


def tpm2_pcr_extend(pcr: int, digest: bytes, alg: int = TPM_ALG_SHA256) -> bytes:
    body = struct.pack(">I", pcr) + _password_session() + struct.pack(">IH", 1, alg) + digest
    return build_command(TPM_ST_SESSIONS, TPM2_CC["PCR_Extend"], body)


def tpm2_pcr_read(pcrs: list[int], alg: int = TPM_ALG_SHA256) -> bytes:
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["PCR_Read"], _pcr_selection(alg, pcrs))


def tpm12_startup(startup_type: int = TPM_ST_CLEAR) -> bytes:
    return build_command(TPM_TAG_RQU_COMMAND, TPM12_ORD["TPM_Startup"], struct.pack(">H", startup_type))


def tpm12_get_random(count: int) -> bytes:
    return build_command(TPM_TAG_RQU_COMMAND, TPM12_ORD["TPM_GetRandom"], struct.pack(">I", count))


def tpm12_extend(pcr: int, digest: bytes) -> bytes:
    return build_command(TPM_TAG_RQU_COMMAND, TPM12_ORD["TPM_Extend"], struct.pack(">I", pcr) + digest)


def tpm12_pcr_read(pcr: int) -> bytes:
    return build_command(TPM_TAG_RQU_COMMAND, TPM12_ORD["TPM_PcrRead"], struct.pack(">I", pcr))


def decode_get_random(response: bytes, tpm_version: int = 2) -> bytes:
    """The random bytes of a TPM2_GetRandom / TPM_GetRandom response."""
    if tpm_version == 2:
        (size,) = struct.unpack_from(">H", response, 10)
        return response[12 : 12 + size]
    (size,) = struct.unpack_from(">I", response, 10)
    return response[14 : 14 + size]


def decode_pcr_read(response: bytes) -> tuple[int, list[bytes]]:
    """``(pcrUpdateCounter, digests)`` of a TPM2_PCR_Read response."""
    offset = 10
    (counter, count) = struct.unpack_from(">II", response, offset)
    offset += 8
    for _ in range(count):  # TPML_PCR_SELECTION
        _alg, size_of_select = struct.unpack_from(">HB", response, offset)
        offset += 3 + size_of_select
    (ndigests,) = struct.unpack_from(">I", response, offset)
    offset += 4
    digests = []
    for _ in range(ndigests):
        (size,) = struct.unpack_from(">H", response, offset)
        digests.append(response[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return counter, digests


def decode_tpm12_digest(response: bytes) -> bytes:
    """The 20-byte PCR value of a TPM_Extend / TPM_PcrRead response."""
    return response[10:30]
