"""Builders and decoders for the few TPM commands the demo, the tests and the
benchmarks send as a guest would (TPM 2.0 Part 3 / TPM 1.2 Part 3 layouts).

Not a TPM software stack: just enough to build correct commands and read the
fields of their responses.
"""

from __future__ import annotations

import struct

from tpmdev.errors import ConfigurationError
from tpmdev.wire import TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS, TPM_TAG_RQU_COMMAND, build_command, parse_header

__all__ = [
    "TPM2_CC",
    "TPM12_ORD",
    "TPM_ALG_SHA1",
    "TPM_ALG_SHA256",
    "TPM_RS_PW",
    "TPM_ALG_SHA384",
    "TPM_ALG_SHA512",
    "TPM_ALG_NULL",
    "TPM_RH_OWNER",
    "TPM_RH_NULL",
    "TPM_CAP_TPM_PROPERTIES",
    "TPM_CAP_PCRS",
    "PCR_COUNT",
    "TPMA_NV_ORDINARY_RW",
    "tpm2_startup",
    "tpm2_get_random",
    "tpm2_pcr_extend",
    "tpm2_pcr_read",
    "tpm2_shutdown",
    "tpm2_get_capability",
    "tpm2_pcr_extend_banks",
    "tpm2_pcr_event",
    "tpm2_pcr_reset",
    "tpm2_hash",
    "tpm2_nv_define_space",
    "tpm2_nv_write",
    "tpm2_nv_read",
    "tpm2_nv_read_public",
    "tpm2_nv_undefine_space",
    "tpm12_startup",
    "tpm12_get_random",
    "tpm12_extend",
    "tpm12_pcr_read",
    "command_name",
    "decode_get_random",
    "decode_pcr_read",
    "decode_pcr_selection",
    "decode_tpm12_digest",
]

TPM2_CC = {
    "NV_UndefineSpace": 0x122,
    "NV_DefineSpace": 0x12A,
    "PCR_Event": 0x13C,
    "PCR_Reset": 0x13D,
    "NV_Write": 0x137,
    "NV_Read": 0x14E,
    "NV_ReadPublic": 0x169,
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
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_RH_OWNER = 0x40000001
TPM_RH_NULL = 0x40000007
TPM_CAP_PCRS = 0x00000005
TPM_CAP_TPM_PROPERTIES = 0x00000006
#: PCRs of a PC Client TPM (0..23), the ones a 3-byte pcrSelect covers
PCR_COUNT = 24
#: TPMA_NV_OWNERWRITE | TPMA_NV_AUTHWRITE | TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD
TPMA_NV_ORDINARY_RW = 0x00060006
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
    bitmap = bytearray(PCR_COUNT // 8)
    for pcr in pcrs:
        if isinstance(pcr, bool) or not isinstance(pcr, int) or not 0 <= pcr < PCR_COUNT:
            raise ConfigurationError(
                f"PCR numbers must be 0..{PCR_COUNT - 1} (a PC Client TPM's PCRs), got {pcr!r}"
            )
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


def tpm2_shutdown(shutdown_type: int = TPM_SU_CLEAR) -> bytes:
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["Shutdown"], struct.pack(">H", shutdown_type))


def tpm2_get_capability(capability: int, prop: int, count: int) -> bytes:
    body = struct.pack(">III", capability, prop, count)
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["GetCapability"], body)


def tpm2_pcr_extend_banks(pcr: int, digests: list[tuple[int, bytes]]) -> bytes:
    """TPM2_PCR_Extend with one digest per bank (``[(alg, digest), ...]``)."""
    values = struct.pack(">I", len(digests)) + b"".join(struct.pack(">H", alg) + d for alg, d in digests)
    body = struct.pack(">I", pcr) + _password_session() + values
    return build_command(TPM_ST_SESSIONS, TPM2_CC["PCR_Extend"], body)


def tpm2_pcr_event(pcr: int, data: bytes) -> bytes:
    body = struct.pack(">I", pcr) + _password_session() + struct.pack(">H", len(data)) + data
    return build_command(TPM_ST_SESSIONS, TPM2_CC["PCR_Event"], body)


def tpm2_pcr_reset(pcr: int) -> bytes:
    return build_command(TPM_ST_SESSIONS, TPM2_CC["PCR_Reset"], struct.pack(">I", pcr) + _password_session())


def tpm2_hash(data: bytes, alg: int = TPM_ALG_SHA256, hierarchy: int = TPM_RH_NULL) -> bytes:
    body = struct.pack(">H", len(data)) + data + struct.pack(">HI", alg, hierarchy)
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["Hash"], body)


def tpm2_nv_define_space(
    index: int, size: int, attributes: int = TPMA_NV_ORDINARY_RW, name_alg: int = TPM_ALG_SHA256
) -> bytes:
    """TPM2_NV_DefineSpace by the owner (empty owner password), empty index auth."""
    public = struct.pack(">IHIHH", index, name_alg, attributes, 0, size)
    body = (
        struct.pack(">I", TPM_RH_OWNER)
        + _password_session()
        + struct.pack(">H", 0)  # TPM2B_AUTH
        + struct.pack(">H", len(public))
        + public
    )
    return build_command(TPM_ST_SESSIONS, TPM2_CC["NV_DefineSpace"], body)


def tpm2_nv_write(index: int, data: bytes, offset: int = 0) -> bytes:
    body = struct.pack(">II", index, index) + _password_session() + struct.pack(">H", len(data)) + data
    return build_command(TPM_ST_SESSIONS, TPM2_CC["NV_Write"], body + struct.pack(">H", offset))


def tpm2_nv_read(index: int, size: int, offset: int = 0) -> bytes:
    body = struct.pack(">II", index, index) + _password_session() + struct.pack(">HH", size, offset)
    return build_command(TPM_ST_SESSIONS, TPM2_CC["NV_Read"], body)


def tpm2_nv_read_public(index: int) -> bytes:
    return build_command(TPM_ST_NO_SESSIONS, TPM2_CC["NV_ReadPublic"], struct.pack(">I", index))


def tpm2_nv_undefine_space(index: int) -> bytes:
    body = struct.pack(">II", TPM_RH_OWNER, index) + _password_session()
    return build_command(TPM_ST_SESSIONS, TPM2_CC["NV_UndefineSpace"], body)


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


def decode_pcr_selection(response: bytes) -> list[tuple[int, bytes]]:
    """``[(hashAlg, pcrSelect), ...]``: the TPML_PCR_SELECTION of a successful
    TPM2_GetCapability(TPM_CAP_PCRS) response, in the TPM's order.

    Raises :class:`struct.error` when the response is too short for what it
    announces.
    """
    # header, moreData (1), capability (4), then the TPML_PCR_SELECTION
    (count,) = struct.unpack_from(">I", response, 15)
    offset = 19
    selections = []
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", response, offset)
        select = response[offset + 3 : offset + 3 + size]
        if len(select) != size:
            raise struct.error(f"pcrSelect of {size} bytes runs past the end of the response")
        selections.append((alg, select))
        offset += 3 + size
    return selections


def decode_tpm12_digest(response: bytes) -> bytes:
    """The 20-byte PCR value of a TPM_Extend / TPM_PcrRead response."""
    return response[10:30]
