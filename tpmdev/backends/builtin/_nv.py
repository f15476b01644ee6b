"""NV indices of the TPM 2.0 engine: TPMS_NV_PUBLIC, TPMA_NV and the rules.

TCG TPM 2.0 Library Part 2 section 13 (TPMA_NV, TPMS_NV_PUBLIC) and Part 3
section 31 (NV storage commands), rev. 1.59. An :class:`NvIndex` is plain
data (public area, authValue, contents); :mod:`._tpm2` runs the commands.

Index types (TPM_NT, bits 4-7 of TPMA_NV) implemented: ordinary (dataSize up
to :data:`~._constants.MAX_NV_INDEX_SIZE`), counter, bits, extend (dataSize
= digest size of nameAlg), and the PIN pass/fail indices (8 bytes:
pinCount, pinLimit), whose authValue is usable only while pinCount < pinLimit.

The Name of an index (Part 1 16) is ``nameAlg || H_nameAlg(TPMS_NV_PUBLIC)``,
hashed over the public area as it is now, so TPMA_NV_WRITTEN and the lock
bits change the Name.

NV memory: this TPM has :data:`NV_MEMORY_SIZE` bytes for indices; an index
costs its dataSize plus :data:`NV_INDEX_OVERHEAD` (public area and
authValue). Defining one that does not fit is TPM_RC_NV_SPACE. (The limit
is the TPM's own: libtpms has a different memory layout.)
"""

from __future__ import annotations

from dataclasses import dataclass

from tpmdev.backends.builtin import _constants as c
from tpmdev.backends.builtin import _crypto
from tpmdev.backends.builtin._marshal import Reader, TpmError, tpm2b, u16, u32

__all__ = [
    "NV_INDEX_OVERHEAD",
    "NV_MEMORY_SIZE",
    "TPMA_NV_AUTHREAD",
    "TPMA_NV_AUTHWRITE",
    "TPMA_NV_CLEAR_STCLEAR",
    "TPMA_NV_GLOBALLOCK",
    "TPMA_NV_NO_DA",
    "TPMA_NV_ORDERLY",
    "TPMA_NV_OWNERREAD",
    "TPMA_NV_OWNERWRITE",
    "TPMA_NV_PLATFORMCREATE",
    "TPMA_NV_POLICYREAD",
    "TPMA_NV_POLICYWRITE",
    "TPMA_NV_POLICY_DELETE",
    "TPMA_NV_PPREAD",
    "TPMA_NV_PPWRITE",
    "TPMA_NV_READLOCKED",
    "TPMA_NV_READ_STCLEAR",
    "TPMA_NV_RESERVED",
    "TPMA_NV_WRITEALL",
    "TPMA_NV_WRITEDEFINE",
    "TPMA_NV_WRITELOCKED",
    "TPMA_NV_WRITTEN",
    "TPMA_NV_WRITE_STCLEAR",
    "TPM_NT_BITS",
    "TPM_NT_COUNTER",
    "TPM_NT_EXTEND",
    "TPM_NT_ORDINARY",
    "TPM_NT_PIN_FAIL",
    "TPM_NT_PIN_PASS",
    "MAX_ORDERLY_COUNT",
    "NvIndex",
    "check_define",
    "check_defined",
    "nt",
    "startup_attributes",
    "unmarshal_nv_public",
]

# TPMA_NV (Part 2 13.4)
TPMA_NV_PPWRITE = 1 << 0
TPMA_NV_OWNERWRITE = 1 << 1
TPMA_NV_AUTHWRITE = 1 << 2
TPMA_NV_POLICYWRITE = 1 << 3
TPMA_NV_POLICY_DELETE = 1 << 10
TPMA_NV_WRITELOCKED = 1 << 11
TPMA_NV_WRITEALL = 1 << 12
TPMA_NV_WRITEDEFINE = 1 << 13
TPMA_NV_WRITE_STCLEAR = 1 << 14
TPMA_NV_GLOBALLOCK = 1 << 15
TPMA_NV_PPREAD = 1 << 16
TPMA_NV_OWNERREAD = 1 << 17
TPMA_NV_AUTHREAD = 1 << 18
TPMA_NV_POLICYREAD = 1 << 19
TPMA_NV_NO_DA = 1 << 25
TPMA_NV_ORDERLY = 1 << 26
TPMA_NV_CLEAR_STCLEAR = 1 << 27
TPMA_NV_READLOCKED = 1 << 28
TPMA_NV_WRITTEN = 1 << 29
TPMA_NV_PLATFORMCREATE = 1 << 30
TPMA_NV_READ_STCLEAR = 1 << 31
#: Bits 8-9 and 20-24 are reserved: TPM_RC_RESERVED_BITS.
TPMA_NV_RESERVED = 0x01F00300

# TPM_NT (Part 2 13.2), the value of TPMA_NV bits 4-7
TPM_NT_ORDINARY = 0x0
TPM_NT_COUNTER = 0x1
TPM_NT_BITS = 0x2
TPM_NT_EXTEND = 0x4
TPM_NT_PIN_FAIL = 0x8
TPM_NT_PIN_PASS = 0x9
_TYPES = frozenset(
    {TPM_NT_ORDINARY, TPM_NT_COUNTER, TPM_NT_BITS, TPM_NT_EXTEND, TPM_NT_PIN_FAIL, TPM_NT_PIN_PASS}
)

#: The low bits an orderly counter skips ahead by after a disorderly shutdown.
MAX_ORDERLY_COUNT = 0xFF

NV_MEMORY_SIZE = 32 * 1024
NV_INDEX_OVERHEAD = 160


def nt(attributes: int) -> int:
    """TPM_NT of *attributes*."""
    return (attributes >> 4) & 0xF


@dataclass
class NvIndex:
    """One defined index: TPMS_NV_PUBLIC, its authValue and its contents."""

    handle: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    data_size: int
    auth: bytes
    data: bytearray

    def public(self) -> bytes:
        """TPMS_NV_PUBLIC, marshalled."""
        return (
            u32(self.handle)
            + u16(self.name_alg)
            + u32(self.attributes)
            + tpm2b(self.auth_policy)
            + u16(self.data_size)
        )

    def name(self) -> bytes:
        """The Name: nameAlg followed by the digest of the public area."""
        return u16(self.name_alg) + _crypto.digest(c.HASH_ALGS[self.name_alg][0], self.public())

    @property
    def type(self) -> int:
        return nt(self.attributes)

    def has(self, bits: int) -> bool:
        return bool(self.attributes & bits)

    @property
    def cost(self) -> int:
        return self.data_size + NV_INDEX_OVERHEAD


def unmarshal_nv_public(r: Reader) -> tuple[int, int, int, bytes, int]:
    """TPM2B_NV_PUBLIC: (nvIndex, nameAlg, attributes, authPolicy, dataSize).

    As the reference code does, the inner structure is read from the whole
    buffer and its length compared with the size field afterwards.
    """
    size = r.u16()
    if size == 0:
        raise TpmError(c.TPM_RC_SIZE)
    start = r.pos
    handle = r.u32()
    if not c.NV_INDEX_FIRST <= handle <= c.NV_INDEX_LAST:
        raise TpmError(c.TPM_RC_VALUE)
    name_alg = r.u16()
    if name_alg not in c.HASH_ALGS:
        raise TpmError(c.TPM_RC_HASH)
    attributes = r.u32()
    if attributes & TPMA_NV_RESERVED:
        raise TpmError(c.TPM_RC_RESERVED_BITS)
    policy = r.tpm2b(c.MAX_DIGEST_SIZE)
    data_size = r.u16()
    if data_size > c.MAX_NV_INDEX_SIZE:
        raise TpmError(c.TPM_RC_SIZE)
    if r.pos - start != size:
        raise TpmError(c.TPM_RC_SIZE)
    return handle, name_alg, attributes, policy, data_size


def check_define(
    auth_handle: int, auth: bytes, name_alg: int, attributes: int, policy: bytes, data_size: int
) -> None:
    """The consistency checks of TPM2_NV_DefineSpace (Part 3 31.3), in the
    reference order. Raises TpmError with the parameter or handle number."""
    p_auth = c.TPM_RC_P + (1 << 8)
    p_public = c.TPM_RC_P + (2 << 8)
    h_auth = c.TPM_RC_H + (1 << 8)
    name_size = c.HASH_ALGS[name_alg][1]
    if policy and len(policy) != name_size:
        raise TpmError(c.TPM_RC_SIZE + p_public)
    if len(auth.rstrip(b"\0")) > name_size:
        raise TpmError(c.TPM_RC_SIZE + p_auth)
    kind = nt(attributes)
    if kind not in _TYPES:
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if kind == TPM_NT_ORDINARY:
        if data_size > c.MAX_NV_INDEX_SIZE:
            raise TpmError(c.TPM_RC_SIZE + p_public)
    elif kind == TPM_NT_EXTEND:
        if data_size != name_size:
            raise TpmError(c.TPM_RC_SIZE + p_public)
    elif data_size != 8:
        raise TpmError(c.TPM_RC_SIZE + p_public)
    if kind == TPM_NT_COUNTER and attributes & TPMA_NV_CLEAR_STCLEAR:
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if kind == TPM_NT_PIN_FAIL and not attributes & TPMA_NV_NO_DA:
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if kind in (TPM_NT_PIN_FAIL, TPM_NT_PIN_PASS) and attributes & (
        TPMA_NV_AUTHWRITE | TPMA_NV_GLOBALLOCK | TPMA_NV_WRITEDEFINE
    ):
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if attributes & (TPMA_NV_WRITTEN | TPMA_NV_WRITELOCKED | TPMA_NV_READLOCKED):
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if not attributes & (TPMA_NV_OWNERREAD | TPMA_NV_PPREAD | TPMA_NV_AUTHREAD | TPMA_NV_POLICYREAD):
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if not attributes & (TPMA_NV_OWNERWRITE | TPMA_NV_PPWRITE | TPMA_NV_AUTHWRITE | TPMA_NV_POLICYWRITE):
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if attributes & TPMA_NV_CLEAR_STCLEAR and attributes & TPMA_NV_WRITEDEFINE:
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    platform_create = bool(attributes & TPMA_NV_PLATFORMCREATE)
    if platform_create != (auth_handle == c.TPM_RH_PLATFORM):
        raise TpmError(c.TPM_RC_ATTRIBUTES + h_auth)
    if attributes & TPMA_NV_POLICY_DELETE and auth_handle != c.TPM_RH_PLATFORM:
        raise TpmError(c.TPM_RC_ATTRIBUTES + p_public)
    if data_size > c.MAX_NV_BUFFER_SIZE and attributes & TPMA_NV_WRITEALL:
        raise TpmError(c.TPM_RC_SIZE + p_public)


def check_defined(index: NvIndex, platform_created: bool | None = None) -> str | None:
    """Why *index* cannot be a defined index of this TPM, or None if it can.

    The rules of :func:`check_define` that hold for as long as an index is
    defined (not those about the bits a TPM sets later, WRITTEN and the
    locks), and what the commands keep true of its contents. For a state
    loaded from outside: an index that breaks them was never defined.
    """
    if index.name_alg not in c.HASH_ALGS:
        return f"nameAlg {index.name_alg:#06x} is not a hash algorithm"
    name_size = c.HASH_ALGS[index.name_alg][1]
    kind = index.type
    attributes = index.attributes
    if attributes & TPMA_NV_RESERVED:
        return "reserved attribute bits are set"
    if kind not in _TYPES:
        return f"its type (TPM_NT {kind}) is none a TPM defines"
    if index.auth_policy and len(index.auth_policy) != name_size:
        return f"its authPolicy is {len(index.auth_policy)} bytes, not {name_size} (nameAlg)"
    if len(index.auth) > name_size:
        return f"its authValue is {len(index.auth)} bytes, more than the {name_size} of nameAlg"
    if kind == TPM_NT_ORDINARY:
        if index.data_size > c.MAX_NV_INDEX_SIZE:
            return f"it is {index.data_size} bytes, more than {c.MAX_NV_INDEX_SIZE}"
    elif kind == TPM_NT_EXTEND:
        if index.data_size != name_size:
            return f"an extend index of {index.data_size} bytes, not {name_size} (nameAlg)"
    elif index.data_size != 8:
        return f"a counter, bits or PIN index of {index.data_size} bytes, not 8"
    if len(index.data) != index.data_size:
        return f"it holds {len(index.data)} bytes of data for a size of {index.data_size}"
    if kind == TPM_NT_COUNTER and attributes & TPMA_NV_CLEAR_STCLEAR:
        return "a counter with TPMA_NV_CLEAR_STCLEAR"
    if kind == TPM_NT_PIN_FAIL and not attributes & TPMA_NV_NO_DA:
        return "a PIN fail index without TPMA_NV_NO_DA"
    if kind in (TPM_NT_PIN_FAIL, TPM_NT_PIN_PASS) and attributes & (
        TPMA_NV_AUTHWRITE | TPMA_NV_GLOBALLOCK | TPMA_NV_WRITEDEFINE
    ):
        return "a PIN index with AUTHWRITE, GLOBALLOCK or WRITEDEFINE"
    if not attributes & (TPMA_NV_OWNERREAD | TPMA_NV_PPREAD | TPMA_NV_AUTHREAD | TPMA_NV_POLICYREAD):
        return "no way to read it"
    if not attributes & (TPMA_NV_OWNERWRITE | TPMA_NV_PPWRITE | TPMA_NV_AUTHWRITE | TPMA_NV_POLICYWRITE):
        return "no way to write it"
    if attributes & TPMA_NV_CLEAR_STCLEAR and attributes & TPMA_NV_WRITEDEFINE:
        return "both TPMA_NV_CLEAR_STCLEAR and TPMA_NV_WRITEDEFINE"
    if attributes & TPMA_NV_POLICY_DELETE and not attributes & TPMA_NV_PLATFORMCREATE:
        return "TPMA_NV_POLICY_DELETE on an index the platform did not create"
    if index.data_size > c.MAX_NV_BUFFER_SIZE and attributes & TPMA_NV_WRITEALL:
        return f"TPMA_NV_WRITEALL on {index.data_size} bytes, more than one NV_Write carries"
    return None


def startup_attributes(attributes: int, reset: bool) -> int:
    """TPMA_NV after a TPM Reset (*reset*) or TPM Restart: read locks go,
    CLEAR_STCLEAR (and, on a Reset, ORDERLY) non-counter indices become
    unwritten, and write locks go unless the index is written WRITEDEFINE."""
    attributes &= ~TPMA_NV_READLOCKED
    if nt(attributes) != TPM_NT_COUNTER and (
        attributes & TPMA_NV_CLEAR_STCLEAR or (attributes & TPMA_NV_ORDERLY and reset)
    ):
        attributes &= ~TPMA_NV_WRITTEN
    if not attributes & TPMA_NV_WRITTEN or not attributes & TPMA_NV_WRITEDEFINE:
        attributes &= ~TPMA_NV_WRITELOCKED
    return attributes
