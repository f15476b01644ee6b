"""Checks of a libtpms TPM 2.0 permanent state blob before it is loaded in process.

What libtpms checks itself
--------------------------
``TPMLIB_SetState`` unmarshals a blob before it accepts it: section magics
and versions, sizes against buffers, hash algorithms where the structure
says "hash" (PCR banks, NV name algorithms), reserved NV attribute bits.
TPM 1.2 permanent blobs and every volatile blob end with a SHA-1 digest of
their contents, which libtpms verifies. ``TPMLIB_ValidateState`` (exported
by libtpms 0.6+) runs the same unmarshalling, so it finds nothing more.

What it does not, and this module does
--------------------------------------
A TPM 2.0 permanent blob (libtpms' ``PERSISTENT_ALL``: NV header, compile
constants, ``PERSISTENT_DATA``, ``ORDERLY_DATA``, ``STATE_RESET_DATA`` and
``STATE_CLEAR_DATA`` after an orderly shutdown, the orderly RAM indices,
the user NV area) carries no digest, and some of its values are used later
without a check. Those that can take the process down when corrupted are
checked here, walking the blob exactly as libtpms 0.9 unmarshals it:

* algorithm fields that select a hash: the audit hash algorithm while any
  command is audited (libtpms crashes at the next audited command if it is
  not a hash it implements -- four bytes of 7f ff ff ff over the end of the
  audit bitmap do it), the hierarchy, platform and PCR policy algorithms,
  with digests of their size;
* every NV index of the user NV area: its handle, a type the TPM defines
  (ordinary, counter, bits, extend, PIN fail / pass), a size its type allows
  (8 bytes for counters, bits and PINs, the digest size for extend indices),
  the space reserved for its data (its size, or none and an orderly RAM copy
  of that size), and the entry size libtpms walks the NV area with when the
  entry has no data (a wrong one crashes the load).

Anything wrong raises :class:`tpmdev.StateError` naming the field. The walk
stops quietly (libtpms then judges alone) at a section whose minimum version
is newer than libtpms 0.9 writes, and at the first persistent object in the
NV area (objects are not checked). Values are checked, not their history: a
blob crafted to be consistent and still break libtpms is not caught, which
is why in-process libtpms trusts its state (see :mod:`tpmdev.backends.libtpms`).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from tpmdev.errors import StateError

__all__ = ["HASH_SIZES", "check_tpm2_permanent"]

log = logging.getLogger(__name__)

#: The hash algorithms libtpms 0.9 implements (TPM_ALG_ID: digest size).
HASH_SIZES = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64}
_ALG_NULL = 0x0010
_NO_ALG = (0x0000, _ALG_NULL)

# TPMA_NV_TPM_NT (bits 4..7) values the TPM 2.0 library defines, and the
# data size each demands (None: any).
_NT_NAMES = {0: "ordinary", 1: "counter", 2: "bits", 4: "extend", 8: "PIN fail", 9: "PIN pass"}
_NT_EIGHT_BYTES = {1, 2, 8, 9}
_NT_EXTEND = 4
_TPMA_NV_ORDERLY = 1 << 26

_HT_NV_INDEX = 0x01
_HT_PERSISTENT = 0x81

# Native sizes libtpms walks its NV area with (Linux ABIs: 4-byte aligned
# UINT32): sizeof(NV_INDEX) (TPMS_NV_PUBLIC 80 + TPM2B_AUTH 66, padded) and
# sizeof(NV_RAM_HEADER) (size, handle, attributes).
_NV_INDEX_SIZE = 148
_NV_RAM_HEADER_SIZE = 12

_TPM_SU_STATE = 0x0001
_TPM_SU_STATE_MASK = 0x3FFF  # ~(PRE_STARTUP_FLAG | STARTUP_LOCALITY_3)

# Section magics, and the newest version of each that libtpms 0.9 writes.
_PERSISTENT_ALL = (0xAB364723, 3)
_PA_COMPILE_CONSTANTS = (0xC9EA6431, 3)
_PERSISTENT_DATA = (0x12213443, 4)
_PCR_POLICY = (0x176BE626, 2)
_ORDERLY_DATA = (0x56657887, 2)
_DRBG_STATE = (0x6FE83EA1, 2)
_STATE_RESET_DATA = (0x01102332, 4)
_STATE_CLEAR_DATA = (0x98897667, 2)
_PCR_SAVE = (0x7372EABC, 2)
_PCR_AUTHVALUE = (0x6BE82EAF, 2)
_INDEX_ORDERLY_RAM = (0x5346FEAB, 2)
_USER_NVRAM = (0x094F22C3, 2)
_NV_INDEX = (0x2547265A, 2)

_WHAT = "TPM 2.0 permanent state blob"


class _Stop(Exception):
    """The rest of the blob is left to libtpms (a newer section, an object)."""


class _SkipToEnd(Exception):
    """A section's block for newer versions was skipped: the section ends here."""


def check_tpm2_permanent(raw: bytes) -> None:
    """Check a libtpms TPM 2.0 permanent blob (the data inside swtpm's envelope).

    Raises :class:`tpmdev.StateError` for a value libtpms would use unchecked
    to its harm (see the module documentation).
    """
    walker = _Walker(bytes(raw))
    try:
        walker.persistent_all()
    except _Stop as why:
        log.debug("libtpms state check stopped at offset %d: %s", walker.pos, why)
    except struct.error:
        raise StateError(f"{_WHAT} is truncated ({len(raw)} bytes)") from None


class _Walker:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.orderly_ram: dict[int, int] = {}  # handle -> data size

    # -- primitives ---------------------------------------------------------
    def _take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def u8(self) -> int:
        return self._take(">B")

    def u16(self) -> int:
        return self._take(">H")

    def u32(self) -> int:
        return self._take(">I")

    def u64(self) -> int:
        return self._take(">Q")

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise struct.error("truncated")
        self.pos += n

    def tpm2b(self) -> int:
        """A TPM2B: its size (the bytes are skipped; libtpms bounds the size)."""
        n = self.u16()
        self.skip(n)
        return n

    def header(self, name: str, section: tuple[int, int]) -> int:
        """An NV_HEADER: the section's version."""
        magic, newest = section
        version = self.u16()
        found = self.u32()
        if found != magic:
            raise StateError(
                f"{_WHAT}: {name} has magic 0x{found:08X}, not 0x{magic:08X}; not a libtpms TPM 2.0 state"
            )
        if version >= 2 and self.u16() > newest:
            raise _Stop(f"{name} needs a libtpms newer than 0.9")
        return version

    def block(self, name: str, needed: bool) -> bool:
        """BLOCK_SKIP_READ: True if an inline block follows, False if none.

        Raises _SkipToEnd when the block is one libtpms skips (not needed).
        """
        present = self.u8() != 0
        size = self.u16()
        if present and not needed:
            self.skip(size)
            raise _SkipToEnd
        if needed and not present:
            raise StateError(f"{_WHAT}: {name} lacks a block libtpms needs")
        return present

    def opaque_block(self) -> None:
        """A block this walk does not look into: libtpms reads it inline or
        skips it, by a compile option; either way it spans its size."""
        if self.u8():
            self.skip(self.u16())
        else:
            self.u16()

    def tail(self, name: str, version: int) -> None:
        """The block for future versions that ends most sections (version 2+)."""
        if version >= 2:
            try:
                self.block(name, False)
            except _SkipToEnd:
                pass

    def hash_alg(self, field: str, *, none: bool) -> int:
        """A hash algorithm; with *none*, also TPM_ALG_ERROR (0, libtpms' "no
        policy yet") or TPM_ALG_NULL."""
        alg = self.u16()
        if alg not in HASH_SIZES and not (none and alg in _NO_ALG):
            allowed = "a hash algorithm" + (", TPM_ALG_ERROR or TPM_ALG_NULL" if none else "")
            raise StateError(
                f"{_WHAT}: {field} is algorithm 0x{alg:04X}, not {allowed} this libtpms implements; "
                "the blob is corrupt"
            )
        return alg

    def digest_of(self, field: str, alg: int) -> None:
        n = self.tpm2b()
        want = HASH_SIZES.get(alg, 0)
        if n != want:
            raise StateError(f"{_WHAT}: {field} is {n} bytes, but its algorithm makes {want}")

    def pcr_selection(self, field: str) -> None:
        for _ in range(self.u32()):
            self.hash_alg(field, none=False)
            self.skip(self.u8())

    # -- sections, in libtpms' order ------------------------------------------------
    def persistent_all(self) -> None:
        version = self.header("PERSISTENT_ALL", _PERSISTENT_ALL)
        self.compile_constants()
        orderly_state = self.persistent_data()
        self.section(self.orderly_data)
        if version < 3 or orderly_state & _TPM_SU_STATE_MASK == _TPM_SU_STATE:
            self.section(self.state_reset_data)
            self.section(self.state_clear_data)
        self.section(self.index_orderly_ram)
        self.section(self.user_nvram)
        self.tail("PERSISTENT_ALL", version)
        if self.u32() != _PERSISTENT_ALL[0]:
            raise StateError(f"{_WHAT} does not end with libtpms' PERSISTENT_ALL magic; it is corrupt")

    @staticmethod
    def section(parse: Callable[[], object]) -> None:
        try:
            parse()
        except _SkipToEnd:
            pass

    def compile_constants(self) -> None:
        version = self.header("PA_COMPILE_CONSTANTS", _PA_COMPILE_CONSTANTS)
        if version > _PA_COMPILE_CONSTANTS[1]:
            raise _Stop("PA_COMPILE_CONSTANTS of a newer libtpms")
        self.u32()  # the writer's count; libtpms reads as many as its version had
        self.skip(4 * (88 if version < 3 else 120))
        self.tail("PA_COMPILE_CONSTANTS", version)

    def persistent_data(self) -> int:
        name = "PERSISTENT_DATA"
        version = self.header(name, _PERSISTENT_DATA)
        self.u8()  # disableClear
        algs = [self.hash_alg(f"{name}.{h}Alg", none=True) for h in ("owner", "endorsement", "lockout")]
        for h, alg in zip(("owner", "endorsement", "lockout"), algs):
            self.digest_of(f"{name}.{h}Policy", alg)
        for _ in range(9):  # three authValues, three seeds, three proofs
            self.tpm2b()
        self.u64()  # totalResetCount
        self.u32()  # resetCount
        if self.block(name, True):  # NUM_POLICY_PCR_GROUP > 0 in libtpms 0.9
            self.section(self.pcr_policy)
        self.pcr_selection(f"{name}.pcrAllocated")
        self.skip(self.u16())  # ppList
        self.skip(4 * 4 + 1)  # failedTries, maxTries, recoveryTime, lockoutRecovery, lockOutAuthEnabled
        orderly_state = self.u16()
        audited = any(self.data[self.pos + 2 : self.pos + 2 + self.u16()])  # auditCommands
        self.pos -= 2
        self.skip(self.u16())
        alg = self.hash_alg(f"{name}.auditHashAlg", none=True)
        if audited and alg not in HASH_SIZES:
            raise StateError(
                f"{_WHAT}: {name}.auditHashAlg is 0x{alg:04X} while commands are audited; libtpms "
                "needs a hash algorithm it implements there"
            )
        self.skip(8 + 4 + 4 + 4)  # auditCounter, algorithmSet, firmwareV1, firmwareV2
        clock_size = self.u8()
        if clock_size not in (4, 8):
            raise StateError(f"{_WHAT}: {name}.timeEpoch is {clock_size} bytes, not 4 or 8")
        self.skip(clock_size)
        if version >= 2:
            try:
                self.block(name, version >= 3)
                self.pcr_selection(f"{name}.pcrAllocated (shadow)")
                self.block(name, version >= 4)
                self.skip(3)  # seed compatibility levels
                self.block(name, False)
            except _SkipToEnd:
                pass
        return orderly_state

    def pcr_policy(self) -> None:
        name = "PCR_POLICY"
        version = self.header(name, _PCR_POLICY)
        for i in range(self.u16()):
            alg = self.hash_alg(f"{name}.hashAlg[{i}]", none=True)
            self.digest_of(f"{name}.policy[{i}]", alg)
        self.tail(name, version)

    def orderly_data(self) -> None:
        name = "ORDERLY_DATA"
        version = self.header(name, _ORDERLY_DATA)
        self.skip(8 + 1)  # clock, clockSafe
        self.section(self.drbg_state)
        self.opaque_block()  # selfHealTimer, lockoutTimer, time (a compile option)
        self.tail(name, version)

    def drbg_state(self) -> None:
        name = "DRBG_STATE"
        version = self.header(name, _DRBG_STATE)
        self.skip(8 + 4)  # reseedCounter, magic
        self.skip(self.u16())  # seed
        self.skip(4 * self.u16())  # lastValue
        self.tail(name, version)

    def state_reset_data(self) -> None:
        name = "STATE_RESET_DATA"
        version = self.header(name, _STATE_RESET_DATA)
        self.tpm2b()  # nullProof
        self.tpm2b()  # nullSeed
        self.skip(4 + 8)  # clearCount, objectContextID
        slots = self.u16()
        self.skip(slots if version <= 3 else 2 * slots + 2)  # contextArray (+ slot mask)
        self.u64()  # contextCounter
        self.tpm2b()  # commandAuditDigest
        self.skip(4 + 4)  # restartCount, pcrCounter
        if self.block(name, True):  # ALG_ECC in libtpms 0.9
            self.u64()  # commitCounter
            self.tpm2b()  # commitNonce
            self.skip(self.u16())  # commitArray
        if version >= 2:
            self.block(name, version >= 3)
            self.u8()  # nullSeed compatibility level
            self.block(name, False)

    def state_clear_data(self) -> None:
        name = "STATE_CLEAR_DATA"
        version = self.header(name, _STATE_CLEAR_DATA)
        self.skip(3)  # shEnable, ehEnable, phEnableNV
        alg = self.hash_alg(f"{name}.platformAlg", none=True)
        self.digest_of(f"{name}.platformPolicy", alg)
        self.tpm2b()  # platformAuth
        self.section(self.pcr_save)
        self.section(self.pcr_authvalue)
        self.tail(name, version)

    def pcr_save(self) -> None:
        name = "PCR_SAVE"
        version = self.header(name, _PCR_SAVE)
        self.u16()  # NUM_STATIC_PCR (libtpms checks it)
        while True:
            alg = self.hash_alg(f"{name} bank", none=True)
            if alg == _ALG_NULL:
                break
            self.skip(self.u16())
        self.tail(name, version)

    def pcr_authvalue(self) -> None:
        name = "PCR_AUTHVALUE"
        version = self.header(name, _PCR_AUTHVALUE)
        for _ in range(self.u16()):
            self.tpm2b()
        self.tail(name, version)

    def index_orderly_ram(self) -> None:
        name = "INDEX_ORDERLY_RAM"
        version = self.header(name, _INDEX_ORDERLY_RAM)
        source_size = self.u32()
        offset = 0  # where libtpms puts the entry in its RAM array
        while offset + _NV_RAM_HEADER_SIZE <= source_size:
            if self.u32() == 0:
                break
            handle = self.u32()
            self.u32()  # attributes
            size = self.u16()
            self.skip(size)
            self.orderly_ram[handle] = size
            offset += _NV_RAM_HEADER_SIZE + size
        self.tail(name, version)

    def user_nvram(self) -> None:
        name = "USER_NVRAM"
        version = self.header(name, _USER_NVRAM)
        self.u64()  # the writer's NV size (libtpms checks what fits)
        while True:
            entry_size = self.u32()
            if entry_size == 0:
                break
            handle = self.u32()
            kind = handle >> 24
            if kind == _HT_PERSISTENT:
                raise _Stop("a persistent object (objects are left to libtpms)")
            if kind != _HT_NV_INDEX:
                raise StateError(
                    f"{_WHAT}: the NV area holds handle 0x{handle:08X}, neither index nor object"
                )
            self.nv_index(handle, entry_size)
        self.u64()  # maxCount
        self.tail(name, version)

    def nv_index(self, handle: int, entry_size: int) -> None:
        where = f"NV index 0x{handle:08X}"
        version = self.header(where, _NV_INDEX)
        nv_index = self.u32()
        name_alg = self.hash_alg(f"{where} nameAlg", none=False)
        attributes = self.u32()
        policy = self.tpm2b()
        data_size = self.u16()
        self.tpm2b()  # authValue
        self.tail(where, version)
        reserved = self.u32()
        if reserved > 0x10000 + 0x100:  # libtpms refuses it; do not walk past it
            raise StateError(f"{_WHAT}: {where} reserves {reserved} bytes")
        self.skip(reserved)
        if nv_index != handle:
            raise StateError(f"{_WHAT}: the NV entry of handle 0x{handle:08X} describes 0x{nv_index:08X}")
        kind = (attributes >> 4) & 0xF
        if kind not in _NT_NAMES:
            raise StateError(f"{_WHAT}: {where} has NV type {kind}, which no TPM 2.0 defines")
        digest_size = HASH_SIZES[name_alg]
        if kind in _NT_EIGHT_BYTES and data_size != 8:
            raise StateError(f"{_WHAT}: {where} is a {_NT_NAMES[kind]} index of {data_size} bytes, not 8")
        if kind == _NT_EXTEND and data_size != digest_size:
            raise StateError(
                f"{_WHAT}: {where} is an extend index of {data_size} bytes, not its digest size {digest_size}"
            )
        if policy not in (0, digest_size):
            raise StateError(f"{_WHAT}: {where} has a {policy}-byte authPolicy for a {digest_size}-byte hash")
        if attributes & _TPMA_NV_ORDERLY:
            ram = self.orderly_ram.get(handle)
            if reserved != 0 or ram != data_size:
                raise StateError(
                    f"{_WHAT}: orderly {where} of {data_size} bytes has {reserved} bytes of NV and "
                    f"{'no' if ram is None else ram} bytes of RAM copy (expected 0 and {data_size})"
                )
        elif reserved != data_size:
            raise StateError(f"{_WHAT}: {where} of {data_size} bytes has {reserved} bytes of NV space")
        if reserved == 0 and entry_size != 4 + _NV_INDEX_SIZE:
            raise StateError(
                f"{_WHAT}: {where} has NV entry size {entry_size}, not {4 + _NV_INDEX_SIZE} (libtpms "
                "would walk its NV area from the wrong place)"
            )
