"""A TPM 2.0 command engine: what a firmware and an OS boot need, and more.

TCG TPM 2.0 Library, Part 1 (architecture: command processing order, PCRs,
password sessions, dictionary-attack protection), Part 2 (structures) and
Part 3 (commands), rev. 1.59, with the PC Client profile for PCR attributes
(:mod:`._pcr`). Behaviour the specification leaves open follows libtpms 0.9
as driven by swtpm 0.7.1, and the tests compare the two field by field.

Commands (see :data:`COMMANDS`):

* start-up and tests: Startup, Shutdown, SelfTest, IncrementalSelfTest,
  GetTestResult;
* random numbers: GetRandom, StirRandom;
* PCRs: PCR_Read, PCR_Extend, PCR_Event, PCR_Reset, PCR_Allocate (SHA-1,
  SHA-256, SHA-384, SHA-512 banks; a new allocation takes effect at the next
  power-on, ``_TPM_Init``, as in the reference implementation);
* hashing: Hash, HashSequenceStart, SequenceUpdate, SequenceComplete,
  EventSequenceComplete; sequence objects live in :data:`MAX_LOADED_OBJECTS
  <._constants.MAX_LOADED_OBJECTS>` object slots (handles 0x80000000 + slot)
  and are released by the complete commands or FlushContext;
* NV storage (:mod:`._nv`): NV_DefineSpace, NV_UndefineSpace, NV_ReadPublic,
  NV_Write, NV_Read, NV_Increment, NV_Extend, NV_SetBits, NV_WriteLock,
  NV_ReadLock;
* objects: ReadPublic and FlushContext. There are no keys: the only objects
  are sequence objects, so ReadPublic answers TPM_RC_SEQUENCE for a loaded
  slot, TPM_RC_REFERENCE_H0 for an empty one and TPM_RC_HANDLE for any
  persistent handle. Loading or creating keys is out of scope;
* hierarchies: HierarchyChangeAuth (owner, endorsement, platform and
  lockout authValues), Clear and ClearControl (what firmware sends for a
  Physical Presence "clear" request), ChangeEPS;
* ReadClock, GetCapability (algorithms, handles, commands, PCRs, properties).

Everything else answers TPM_RC_COMMAND_CODE.

Command processing (Part 1 section 18, "Command Processing"), in order; the
first failing check decides the response code:

1. fewer than 10 bytes: TPM_RC_INSUFFICIENT (swtpm's answer; libtpms never
   sees such a command);
2. tag: not a TPM_ST value -> TPM_RC_VALUE, a TPM_ST but neither
   TPM_ST_NO_SESSIONS nor TPM_ST_SESSIONS -> TPM_RC_BAD_TAG;
3. commandSize differs from the length or exceeds MAX_COMMAND_SIZE ->
   TPM_RC_COMMAND_SIZE;
4. command code not implemented -> TPM_RC_COMMAND_CODE;
5. before TPM2_Startup anything but TPM2_Startup, and TPM2_Startup after it
   -> TPM_RC_INITIALIZE;
6. handle area: each handle's type and range (TPM_RC_VALUE + ``TPM_RC_H +
   N``), then whether each entity exists: an undefined NV index or a
   persistent handle is TPM_RC_HANDLE + H N, an empty object slot
   TPM_RC_REFERENCE_H0 + (N - 1);
7. session area when tagged TPM_ST_SESSIONS (errors carry the session
   number, ``TPM_RC_S + N``); only password sessions (TPM_RS_PW) exist here,
   so an HMAC or policy session handle is TPM_RC_REFERENCE_S0 + index;
8. authorization, session N for the N-th handle that needs one: no session
   -> TPM_RC_AUTH_MISSING; a session with no handle to authorize ->
   TPM_RC_HANDLE + S N; a DA-protected entity (an NV index without
   TPMA_NV_NO_DA, the lockout hierarchy) while the TPM is locked out ->
   TPM_RC_LOCKOUT; an entity whose authValue may not be used for this
   command (an NV index without TPMA_NV_AUTHREAD/AUTHWRITE) ->
   TPM_RC_AUTH_UNAVAILABLE; a wrong password -> TPM_RC_BAD_AUTH + S N, or
   TPM_RC_AUTH_FAIL + S N when it counts as a dictionary-attack failure
   (3 failures lock the TPM out; one is forgiven every 1000 s);
9. parameters (errors carry the parameter number, ``TPM_RC_P + N``), then
   bytes left over -> TPM_RC_SIZE;
10. the command's action (locality checks, NV access checks, ...).

Every error response is the 10-byte header with tag TPM_ST_NO_SESSIONS. A
successful response to a TPM_ST_SESSIONS command carries the response
handle (HashSequenceStart), ``parameterSize`` and one response session per
command session (empty nonce, continueSession set, empty HMAC), as a
password session answers.

State: all of it is in :class:`Tpm2State` (plain data; :mod:`._state`
serialises it). The engine never reads the host clock itself: ``now_ms`` is
injected.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable

from tpmdev.backends.builtin import _constants as c
from tpmdev.backends.builtin import _crypto
from tpmdev.backends.builtin import _nv as nvm
from tpmdev.backends.builtin._marshal import Reader, TpmError, rc_with, tpm2b, u8, u16, u32, u64
from tpmdev.backends.builtin._nv import NvIndex
from tpmdev.backends.builtin._pcr import NO_INCREMENT_PCRS, PCR_ATTRIBUTES, initial_value
from tpmdev.backends.builtin._rng import Rng

__all__ = [
    "COMMANDS",
    "DA_MAX_TRIES",
    "DA_RECOVERY_MS",
    "DEFAULT_BANKS",
    "PCR_SIZE_AVAILABLE",
    "Sequence",
    "TPM2_PROPERTIES_FIXED",
    "Tpm2",
    "Tpm2State",
    "full_allocation",
]

#: PCR banks allocated on a new TPM (by hash algorithm id).
DEFAULT_BANKS: tuple[int, ...] = (c.TPM_ALG_SHA1, c.TPM_ALG_SHA256)

_HASH_COUNT = len(c.HASH_ALGS)  # TPML_DIGEST_VALUES / TPML_PCR_SELECTION limit
_MAX_ALG_LIST_SIZE = 64
_MAX_TPM_PROPERTIES = (c.MAX_CAP_BUFFER - 8) // 8  # 127
_MAX_CAP_ALGS = (c.MAX_CAP_BUFFER - 8) // 6
_MAX_CAP_CC = (c.MAX_CAP_BUFFER - 8) // 4
_MAX_CAP_HANDLES = (c.MAX_CAP_BUFFER - 8) // 4
_MAX_SENSITIVE_DATA = 128
_TPMA_ALGORITHM_HASH = 0x00000004
_ALL_PCRS = (1 << c.IMPLEMENTATION_PCR) - 1
_CLOCK_UPDATE_INTERVAL = 12  # the clock is saved every 2**12 ms
_HCRTM_PCR = 0
_DRTM_PCR = 17
#: PCR_Allocate's sizeAvailable: room for every PCR in every implemented bank.
PCR_SIZE_AVAILABLE = c.IMPLEMENTATION_PCR * sum(size for _name, size in c.HASH_ALGS.values())

#: Dictionary-attack parameters (the reference defaults; no DictionaryAttackParameters).
DA_MAX_TRIES = 3
DA_RECOVERY_MS = 1000 * 1000
_DA_LOCKOUT_RECOVERY_MS = 1000 * 1000

# TPMA_CC bits (Part 2 9.21)
_CC_NV = 1 << 22
_CC_EXTENSIVE = 1 << 23
_CC_FLUSHED = 1 << 24
_CC_HANDLES_SHIFT = 25
_CC_RHANDLE = 1 << 28

# Handle kinds of a command's handle area (the TPMI_ type that unmarshals it).
_H_PCR = "TPMI_DH_PCR"
_H_PCR_NULL = "TPMI_DH_PCR+"
_H_PROVISION = "TPMI_RH_PROVISION"
_H_PLATFORM = "TPMI_RH_PLATFORM"
_H_HIERARCHY_AUTH = "TPMI_RH_HIERARCHY_AUTH"
_H_CLEAR = "TPMI_RH_CLEAR"
_H_NV_AUTH = "TPMI_RH_NV_AUTH"
_H_NV_INDEX = "TPMI_RH_NV_INDEX"
_H_OBJECT = "TPMI_DH_OBJECT"

_HIERARCHIES = (c.TPM_RH_OWNER, c.TPM_RH_ENDORSEMENT, c.TPM_RH_PLATFORM)


def _rc(err: TpmError, which: int, number: int) -> TpmError:
    return TpmError(rc_with(err.rc, which, number))


@contextlib.contextmanager
def _numbered(which: int, number: int) -> Iterator[None]:
    """Add ``which + number`` to a format-one error raised inside the block."""
    try:
        yield
    except TpmError as err:
        raise _rc(err, which, number) from None


def _param(number: int) -> contextlib.AbstractContextManager[None]:
    return _numbered(c.TPM_RC_P, number)


def _fail(rc: int, which: int = 0, number: int = 0) -> TpmError:
    return TpmError(rc_with(rc, which, number) if number else rc)


def full_allocation(banks: tuple[int, ...] | list[int]) -> dict[int, int]:
    """A PCR allocation with every PCR of *banks* and none of the others."""
    return {alg: (_ALL_PCRS if alg in banks else 0) for alg in c.HASH_ALGS}


@dataclass
class Sequence:
    """A hash or event sequence object (Part 1 "Hash, HMAC and Event Sequences").

    The data is kept rather than a running hash state, so that a sequence can
    be saved and restored with the rest of the state.
    """

    event: bool
    hash_alg: int  # TPM_ALG_NULL for an event sequence
    auth: bytes
    data: bytearray = field(default_factory=bytearray)
    first_block: bool = False  # a first block was received
    ticket_safe: bool = False  # that first block cannot be a TPM-generated structure


@dataclass
class Tpm2State:
    """Everything the TPM remembers, as plain data (see :mod:`._state`).

    Permanent (survives power loss): ``allocation`` (in use) and
    ``pending_allocation`` (after the next power-on), ``reset_count``,
    ``clock_ms``, the hierarchy ``proofs`` and ``hierarchy_auth``, ``nv``,
    ``max_counter``, dictionary-attack counters, and the orderly state
    (``shutdown_type``) with what a TPM2_Shutdown(STATE) saved. Volatile:
    the rest, rebuilt by power-on and TPM2_Startup.
    """

    #: PCR allocation in use: hash algorithm -> bit mask of allocated PCRs.
    allocation: dict[int, int] = field(default_factory=lambda: full_allocation(DEFAULT_BANKS))
    pending_allocation: dict[int, int] = field(default_factory=lambda: full_allocation(DEFAULT_BANKS))
    #: A successful PCR_Allocate since power-on (Shutdown(STATE) is then refused).
    pcr_reconfig: bool = False
    pcrs: dict[int, list[bytes]] = field(default_factory=dict)
    pcr_update_counter: int = 0
    started: bool = False
    #: TPM_SU of the last TPM2_Shutdown not yet consumed by a Startup, or None
    #: after a disorderly power loss. A new TPM counts as cleanly shut down.
    shutdown_type: int | None = c.TPM_SU_CLEAR
    saved_pcrs: dict[int, list[bytes]] = field(default_factory=dict)
    saved_pcr_update_counter: int = 0
    #: TPMA_STARTUP_CLEAR.orderly: the last Startup followed an orderly shutdown.
    orderly: bool = True
    #: TPMS_CLOCK_INFO.safe: clear after a disorderly shutdown until the clock
    #: is next saved (every 4096 ms of TPM time, when it passes a multiple).
    clock_safe: bool = True
    clock_unsafe_epoch: int = 0
    reset_count: int = 0
    restart_count: int = 0
    clock_ms: int = 0  # TPMS_CLOCK_INFO.clock at the last power-on
    power_on_ms: int = 0  # host time of the last power-on
    proofs: dict[int, bytes] = field(default_factory=dict)
    hierarchy_auth: dict[int, bytes] = field(default_factory=dict)
    nv: dict[int, NvIndex] = field(default_factory=dict)
    #: The largest value a deleted counter index had (new counters start above it).
    max_counter: int = 0
    failed_tries: int = 0
    da_heal_ms: int = 0  # TPM time from which the next DA recovery is counted
    lockout_auth_enabled: bool = True
    #: A DA-protected authorization happened since the last Shutdown (the
    #: reference SU_DA_USED orderly state): a power loss now counts as a failure.
    da_used_pending: bool = False
    #: The same, since the last Startup (the reference g_daUsed).
    da_used: bool = False
    lockout_failed_ms: int = 0
    #: TPMA_PERMANENT.disableClear (TPM2_ClearControl): TPM2_Clear is refused.
    disable_clear: bool = False
    #: Loaded sequence objects by handle (TRANSIENT_FIRST + slot).
    objects: dict[int, Sequence] = field(default_factory=dict)

    @property
    def banks(self) -> list[int]:
        """The hash algorithms with at least one PCR allocated."""
        return [alg for alg, mask in self.allocation.items() if mask]


@dataclass(frozen=True)
class Command:
    """One implemented command: its handle area and its action.

    ``handles`` names the TPMI_ type of each handle; the first ``auth`` of
    them need an authorization (USER role). ``nv_write`` says whether the
    command writes an NV index (decides which of AUTHREAD/AUTHWRITE makes the
    index's authValue usable). ``nv``, ``extensive``, ``flushed`` and ``r_handle`` are
    the TPMA_CC bits.
    """

    code: int
    handler: str
    handles: tuple[str, ...] = ()
    auth: int = 0
    nv: bool = False
    flushed: bool = False
    r_handle: bool = False
    nv_write: bool = False
    extensive: bool = False

    @property
    def tpma_cc(self) -> int:
        """TPMA_CC as TPM2_GetCapability(TPM_CAP_COMMANDS) reports it."""
        return (
            self.code
            | (_CC_NV if self.nv else 0)
            | (_CC_EXTENSIVE if self.extensive else 0)
            | (_CC_FLUSHED if self.flushed else 0)
            | (len(self.handles) << _CC_HANDLES_SHIFT)
            | (_CC_RHANDLE if self.r_handle else 0)
        )


_NV_AUTH = (_H_NV_AUTH, _H_NV_INDEX)

COMMANDS: dict[int, Command] = {
    cmd.code: cmd
    for cmd in (
        Command(c.TPM_CC_NV_UndefineSpace, "nv_undefine_space", (_H_PROVISION, _H_NV_INDEX), 1, nv=True),
        Command(c.TPM_CC_ChangeEPS, "change_eps", (_H_PLATFORM,), 1, nv=True, extensive=True),
        Command(c.TPM_CC_Clear, "clear", (_H_CLEAR,), 1, nv=True, extensive=True),
        Command(c.TPM_CC_ClearControl, "clear_control", (_H_CLEAR,), 1, nv=True),
        Command(c.TPM_CC_HierarchyChangeAuth, "hierarchy_change_auth", (_H_HIERARCHY_AUTH,), 1, nv=True),
        Command(c.TPM_CC_NV_DefineSpace, "nv_define_space", (_H_PROVISION,), 1, nv=True),
        Command(c.TPM_CC_PCR_Allocate, "pcr_allocate", (_H_PLATFORM,), 1, nv=True),
        Command(c.TPM_CC_NV_Increment, "nv_increment", _NV_AUTH, 1, nv=True, nv_write=True),
        Command(c.TPM_CC_NV_SetBits, "nv_set_bits", _NV_AUTH, 1, nv=True, nv_write=True),
        Command(c.TPM_CC_NV_Extend, "nv_extend", _NV_AUTH, 1, nv=True, nv_write=True),
        Command(c.TPM_CC_NV_Write, "nv_write", _NV_AUTH, 1, nv=True, nv_write=True),
        Command(c.TPM_CC_NV_WriteLock, "nv_write_lock", _NV_AUTH, 1, nv=True, nv_write=True),
        Command(c.TPM_CC_PCR_Event, "pcr_event", (_H_PCR_NULL,), 1, nv=True),
        Command(c.TPM_CC_PCR_Reset, "pcr_reset", (_H_PCR,), 1, nv=True),
        Command(c.TPM_CC_SequenceComplete, "sequence_complete", (_H_OBJECT,), 1, flushed=True),
        Command(c.TPM_CC_IncrementalSelfTest, "incremental_self_test", nv=True),
        Command(c.TPM_CC_SelfTest, "self_test", nv=True),
        Command(c.TPM_CC_Startup, "startup", nv=True),
        Command(c.TPM_CC_Shutdown, "shutdown", nv=True),
        Command(c.TPM_CC_StirRandom, "stir_random", nv=True),
        Command(c.TPM_CC_NV_Read, "nv_read", _NV_AUTH, 1),
        Command(c.TPM_CC_NV_ReadLock, "nv_read_lock", _NV_AUTH, 1, nv=True),
        Command(c.TPM_CC_SequenceUpdate, "sequence_update", (_H_OBJECT,), 1),
        Command(c.TPM_CC_FlushContext, "flush_context"),
        Command(c.TPM_CC_NV_ReadPublic, "nv_read_public", (_H_NV_INDEX,)),
        Command(c.TPM_CC_ReadPublic, "read_public", (_H_OBJECT,)),
        Command(c.TPM_CC_GetCapability, "get_capability"),
        Command(c.TPM_CC_GetRandom, "get_random"),
        Command(c.TPM_CC_GetTestResult, "get_test_result"),
        Command(c.TPM_CC_Hash, "hash"),
        Command(c.TPM_CC_PCR_Read, "pcr_read"),
        Command(c.TPM_CC_ReadClock, "read_clock"),
        Command(c.TPM_CC_PCR_Extend, "pcr_extend", (_H_PCR_NULL,), 1, nv=True),
        Command(
            c.TPM_CC_EventSequenceComplete,
            "event_sequence_complete",
            (_H_PCR_NULL, _H_OBJECT),
            2,
            nv=True,
            flushed=True,
        ),
        Command(c.TPM_CC_HashSequenceStart, "hash_sequence_start", r_handle=True),
    )
}


def _chars(text: str) -> int:
    """Four ASCII characters as a big-endian UINT32 (vendor strings)."""
    return int.from_bytes(text.encode("ascii").ljust(4, b"\0")[:4], "big")


#: TPM_PT_FIXED properties (Part 2 6.13). Vendor-specific entries (manufacturer,
#: vendor strings, firmware version, spec date) are ours; limits describe what
#: this TPM really has: three object slots (for sequences), NV indices, no
#: HMAC/policy sessions and no persistent objects.
TPM2_PROPERTIES_FIXED: dict[int, int] = {
    c.TPM_PT_FAMILY_INDICATOR: _chars("2.0"),
    c.PT_FIXED + 1: 0,  # TPM_PT_LEVEL
    c.PT_FIXED + 2: 159,  # TPM_PT_REVISION: 1.59
    c.PT_FIXED + 3: 312,  # TPM_PT_DAY_OF_YEAR
    c.PT_FIXED + 4: 2019,  # TPM_PT_YEAR
    c.TPM_PT_MANUFACTURER: _chars("TPMD"),
    c.PT_FIXED + 6: _chars("tpmd"),  # TPM_PT_VENDOR_STRING_1
    c.PT_FIXED + 7: _chars("ev-b"),
    c.PT_FIXED + 8: _chars("uilt"),
    c.PT_FIXED + 9: _chars("in"),
    c.PT_FIXED + 10: 1,  # TPM_PT_VENDOR_TPM_TYPE
    c.PT_FIXED + 11: 0x00000001,  # TPM_PT_FIRMWARE_VERSION_1 (tpmdev 0.1)
    c.PT_FIXED + 12: 0,  # TPM_PT_FIRMWARE_VERSION_2
    c.TPM_PT_INPUT_BUFFER: c.MAX_DIGEST_BUFFER,
    c.PT_FIXED + 14: c.MAX_LOADED_OBJECTS,  # TPM_PT_HR_TRANSIENT_MIN
    c.PT_FIXED + 15: 0,  # TPM_PT_HR_PERSISTENT_MIN
    c.PT_FIXED + 16: 0,  # TPM_PT_HR_LOADED_MIN
    c.PT_FIXED + 17: 0,  # TPM_PT_ACTIVE_SESSIONS_MAX
    c.TPM_PT_PCR_COUNT: c.IMPLEMENTATION_PCR,
    c.TPM_PT_PCR_SELECT_MIN: c.PCR_SELECT_MAX,
    c.PT_FIXED + 20: 0,  # TPM_PT_CONTEXT_GAP_MAX
    c.PT_FIXED + 22: 0,  # TPM_PT_NV_COUNTERS_MAX: no separate limit
    c.PT_FIXED + 23: c.MAX_NV_INDEX_SIZE,  # TPM_PT_NV_INDEX_MAX
    c.PT_FIXED + 24: 0,  # TPM_PT_MEMORY
    c.PT_FIXED + 25: 0x1000,  # TPM_PT_CLOCK_UPDATE
    c.PT_FIXED + 26: c.TPM_ALG_SHA256,  # TPM_PT_CONTEXT_HASH
    c.PT_FIXED + 27: c.TPM_ALG_NULL,  # TPM_PT_CONTEXT_SYM
    c.PT_FIXED + 28: 0,  # TPM_PT_CONTEXT_SYM_SIZE
    c.PT_FIXED + 29: nvm.MAX_ORDERLY_COUNT,  # TPM_PT_ORDERLY_COUNT
    c.TPM_PT_MAX_COMMAND_SIZE: c.MAX_COMMAND_SIZE,
    c.TPM_PT_MAX_RESPONSE_SIZE: c.MAX_COMMAND_SIZE,
    c.TPM_PT_MAX_DIGEST: c.MAX_DIGEST_SIZE,
    c.PT_FIXED + 33: 0,  # TPM_PT_MAX_OBJECT_CONTEXT
    c.PT_FIXED + 34: 0,  # TPM_PT_MAX_SESSION_CONTEXT
    c.PT_FIXED + 35: 1,  # TPM_PT_PS_FAMILY_INDICATOR: PC Client
    c.PT_FIXED + 36: 0,  # TPM_PT_PS_LEVEL
    c.PT_FIXED + 37: 105,  # TPM_PT_PS_REVISION: PTP 1.05
    c.PT_FIXED + 38: 0,  # TPM_PT_PS_DAY_OF_YEAR
    c.PT_FIXED + 39: 0,  # TPM_PT_PS_YEAR
    c.PT_FIXED + 40: 0,  # TPM_PT_SPLIT_MAX
    c.TPM_PT_TOTAL_COMMANDS: len(COMMANDS),
    c.PT_FIXED + 42: len(COMMANDS),  # TPM_PT_LIBRARY_COMMANDS
    c.PT_FIXED + 43: 0,  # TPM_PT_VENDOR_COMMANDS
    c.PT_FIXED + 44: c.MAX_NV_BUFFER_SIZE,  # TPM_PT_NV_BUFFER_MAX
    c.PT_FIXED + 45: 0,  # TPM_PT_MODES
    c.PT_FIXED + 46: c.MAX_CAP_BUFFER,  # TPM_PT_MAX_CAP_BUFFER
}


def _digest(alg: int, data: bytes) -> bytes:
    return _crypto.digest(c.HASH_ALGS[alg][0], data)


def _unmarshal_hash_alg(r: Reader, allow_null: bool = False) -> int:
    """TPMI_ALG_HASH (+ TPM_ALG_NULL): TPM_RC_HASH if not implemented."""
    alg = r.u16()
    if alg not in c.HASH_ALGS and not (allow_null and alg == c.TPM_ALG_NULL):
        raise TpmError(c.TPM_RC_HASH)
    return alg


def _unmarshal_pcr_selection(r: Reader) -> list[tuple[int, bytearray]]:
    """TPML_PCR_SELECTION (Part 2 10.9.7)."""
    count = r.u32()
    if count > _HASH_COUNT:
        raise TpmError(c.TPM_RC_SIZE)
    out = []
    for _ in range(count):
        alg = _unmarshal_hash_alg(r)
        size = r.u8()
        if size != c.PCR_SELECT_MAX:  # PCR_SELECT_MIN == PCR_SELECT_MAX == 3
            raise TpmError(c.TPM_RC_VALUE)
        out.append((alg, bytearray(r.take(size))))
    return out


def _marshal_pcr_selection(selection: list[tuple[int, bytearray]]) -> bytes:
    return u32(len(selection)) + b"".join(u16(alg) + u8(len(s)) + bytes(s) for alg, s in selection)


def _unmarshal_hierarchy(r: Reader) -> int:
    """TPMI_RH_HIERARCHY+ (TPM_RH_NULL allowed)."""
    hierarchy = r.u32()
    if hierarchy not in (*_HIERARCHIES, c.TPM_RH_NULL):
        raise TpmError(c.TPM_RC_VALUE)
    return hierarchy


_GENERATED = c.TPM_GENERATED_VALUE.to_bytes(4, "big")


def _ticket_safe(data: bytes) -> bool:
    """The reference TicketIsSafe: a first block of at least 4 bytes that does
    not start with TPM_GENERATED_VALUE cannot be a TPM-generated structure, so
    the digest of a sequence starting with it may get a ticket. (TPM2_Hash is
    more lenient: there, shorter data is safe too.)"""
    return len(data) >= 4 and data[:4] != _GENERATED


class Tpm2:
    """The TPM 2.0 engine. Sans-IO: bytes in, bytes out, time from *now_ms*."""

    def __init__(self, rng: Rng, now_ms: Callable[[], int], banks: tuple[int, ...] = DEFAULT_BANKS) -> None:
        self.rng = rng
        self.now_ms = now_ms
        self.state = Tpm2State(allocation=full_allocation(banks), pending_allocation=full_allocation(banks))
        for hierarchy in _HIERARCHIES:
            self.state.proofs[hierarchy] = rng.generate(32)
        self._reset_pcrs(startup_locality=0, restore=False)
        self.state.pcr_update_counter = 0
        self.state.power_on_ms = now_ms()
        self._rsp_handle = b""

    # -- power ------------------------------------------------------------
    def power_on(self) -> None:
        """_TPM_Init: the TPM needs TPM2_Startup again. PCRs keep their values
        until that Startup decides what they become; objects (sequences) are
        lost; a PCR allocation made since the last power-on takes effect."""
        s = self.state
        now = self.now_ms()
        s.clock_ms += max(0, now - s.power_on_ms)
        s.power_on_ms = now
        s.started = False
        s.objects.clear()
        s.pcr_reconfig = False
        s.allocation = dict(s.pending_allocation)

    def tpm_time_ms(self) -> int:
        """TPMS_CLOCK_INFO.clock: milliseconds the TPM has been powered."""
        return self.state.clock_ms + max(0, self.now_ms() - self.state.power_on_ms)

    # -- the command pipeline --------------------------------------------
    def execute(self, command: bytes, locality: int) -> bytes:
        try:
            return self._execute(command, locality)
        except TpmError as err:
            return u16(c.TPM_ST_NO_SESSIONS) + u32(10) + u32(err.rc)

    def _execute(self, command: bytes, locality: int) -> bytes:
        if len(command) < 10:
            raise TpmError(c.TPM_RC_INSUFFICIENT)
        r = Reader(command)
        tag = r.u16()
        if tag not in c.TPM_ST_DEFINED:
            raise TpmError(c.TPM_RC_VALUE)
        if tag not in (c.TPM_ST_NO_SESSIONS, c.TPM_ST_SESSIONS):
            raise TpmError(c.TPM_RC_BAD_TAG)
        size = r.u32()
        if size != len(command) or size > c.MAX_COMMAND_SIZE:
            raise TpmError(c.TPM_RC_COMMAND_SIZE)
        cmd = COMMANDS.get(r.u32())
        if cmd is None:
            raise TpmError(c.TPM_RC_COMMAND_CODE)
        if self.state.started == (cmd.code == c.TPM_CC_Startup):
            raise TpmError(c.TPM_RC_INITIALIZE)
        if locality > 4:
            raise TpmError(c.TPM_RC_LOCALITY)

        handles: list[int] = []
        if cmd.handles:
            for number, kind in enumerate(cmd.handles, 1):
                with _numbered(c.TPM_RC_H, number):
                    handles.append(self._unmarshal_handle(r, kind))
            for number, handle in enumerate(handles, 1):
                self._check_loaded(handle, number)

        sessions = 0
        if tag == c.TPM_ST_SESSIONS:
            sessions = self._parse_sessions(r, cmd, handles[: cmd.auth])
        elif cmd.auth:
            raise TpmError(c.TPM_RC_AUTH_MISSING)

        self._rsp_handle = b""
        handler: Callable[[Reader, list[int], int], bytes] = getattr(self, "_cmd_" + cmd.handler)
        params = handler(r, handles, locality)
        if tag == c.TPM_ST_SESSIONS:
            body = (
                self._rsp_handle
                + u32(len(params))
                + params
                + (u16(0) + u8(c.TPMA_SESSION_CONTINUESESSION) + u16(0)) * sessions
            )
        else:
            body = self._rsp_handle + params
        return u16(tag) + u32(10 + len(body)) + u32(c.TPM_RC_SUCCESS) + body

    @staticmethod
    def _unmarshal_handle(r: Reader, kind: str) -> int:
        """One handle of the handle area, checked against its TPMI_ type."""
        handle = r.u32()
        if kind in (_H_PCR_NULL, _H_PCR):
            ok = handle < c.IMPLEMENTATION_PCR or (kind == _H_PCR_NULL and handle == c.TPM_RH_NULL)
        elif kind == _H_NV_INDEX:
            ok = c.NV_INDEX_FIRST <= handle <= c.NV_INDEX_LAST
        elif kind == _H_NV_AUTH:
            ok = (
                handle in (c.TPM_RH_OWNER, c.TPM_RH_PLATFORM) or c.NV_INDEX_FIRST <= handle <= c.NV_INDEX_LAST
            )
        elif kind == _H_OBJECT:
            ok = (
                c.TRANSIENT_FIRST <= handle <= c.TRANSIENT_LAST
                or c.PERSISTENT_FIRST <= handle <= c.PERSISTENT_LAST
            )
        elif kind == _H_PROVISION:
            ok = handle in (c.TPM_RH_OWNER, c.TPM_RH_PLATFORM)
        elif kind == _H_PLATFORM:
            ok = handle == c.TPM_RH_PLATFORM
        elif kind == _H_CLEAR:
            ok = handle in (c.TPM_RH_LOCKOUT, c.TPM_RH_PLATFORM)
        else:  # _H_HIERARCHY_AUTH
            ok = handle in (c.TPM_RH_LOCKOUT, *_HIERARCHIES)
        if not ok:
            raise TpmError(c.TPM_RC_VALUE)
        return handle

    def _check_loaded(self, handle: int, number: int) -> None:
        """The entity behind a well-formed handle must exist (the reference
        EntityGetLoadStatus): NV indices, object slots, persistent objects."""
        kind = handle >> 24
        if kind == c.TPM_HT_NV_INDEX:
            if handle not in self.state.nv:
                raise _fail(c.TPM_RC_HANDLE, c.TPM_RC_H, number)
        elif kind == c.TPM_HT_TRANSIENT:
            if handle not in self.state.objects:
                raise TpmError(c.TPM_RC_REFERENCE_H0 + number - 1)
        elif kind == c.TPM_HT_PERSISTENT:
            # A persistent object would be loaded into a free slot first; none
            # can exist here, so it is "not found" once a slot is free.
            if len(self.state.objects) >= c.MAX_LOADED_OBJECTS:
                raise TpmError(c.TPM_RC_OBJECT_MEMORY)
            raise _fail(c.TPM_RC_HANDLE, c.TPM_RC_H, number)

    def _parse_sessions(self, r: Reader, cmd: Command, auth_handles: list[int]) -> int:
        """Parse and check the authorization area; return the session count."""
        auth_size = r.u32()
        if auth_size < 9 or auth_size > r.remaining:
            raise TpmError(c.TPM_RC_SIZE)
        area = Reader(r.data, r.pos, r.pos + auth_size)
        r.pos += auth_size
        # First unmarshal every session (structure errors), then check each
        # one against the handle it authorizes, as the reference code does.
        sessions: list[tuple[int, bytes, int, bytes]] = []
        while area.remaining:
            number = len(sessions) + 1
            if len(sessions) == c.MAX_SESSION_NUM:
                raise _rc(TpmError(c.TPM_RC_SIZE), c.TPM_RC_S, number)
            with _numbered(c.TPM_RC_S, number):
                handle = area.u32()
                if (
                    handle >> 24 not in (c.TPM_HT_HMAC_SESSION, c.TPM_HT_POLICY_SESSION)
                    and handle != c.TPM_RS_PW
                ):
                    raise TpmError(c.TPM_RC_VALUE)
                nonce = area.tpm2b(c.MAX_DIGEST_SIZE)
                attributes = area.u8()
                if attributes & c.TPMA_SESSION_RESERVED:
                    raise TpmError(c.TPM_RC_RESERVED_BITS)
                password = area.tpm2b(c.MAX_DIGEST_SIZE)
            sessions.append((handle, nonce, attributes, password))
        for index, (handle, nonce, attributes, password) in enumerate(sessions):
            if handle != c.TPM_RS_PW:
                # No HMAC or policy session is ever loaded in this TPM.
                raise TpmError(c.TPM_RC_REFERENCE_S0 + index)
            with _numbered(c.TPM_RC_S, index + 1):
                if nonce:
                    raise TpmError(c.TPM_RC_NONCE)
                if attributes & ~c.TPMA_SESSION_CONTINUESESSION:
                    raise TpmError(c.TPM_RC_ATTRIBUTES)
                if index >= len(auth_handles):
                    raise TpmError(c.TPM_RC_HANDLE)
                self._check_password(auth_handles[index], password, cmd)
        if len(sessions) < len(auth_handles):
            raise TpmError(c.TPM_RC_AUTH_MISSING)
        return len(sessions)

    # -- authorization ------------------------------------------------------
    def _da_exempt(self, entity: int) -> bool:
        """Part 1 19.8.3: PCRs, sequences, hierarchies other than lockout and
        NV indices with TPMA_NV_NO_DA are exempt from DA protection."""
        if entity >> 24 == c.TPM_HT_NV_INDEX:
            return self.state.nv[entity].has(nvm.TPMA_NV_NO_DA)
        return entity != c.TPM_RH_LOCKOUT

    def _da_heal(self) -> None:
        """Forgive one failure per DA_RECOVERY_MS of TPM time, and re-enable
        lockoutAuth _DA_LOCKOUT_RECOVERY_MS after its failure."""
        s = self.state
        now = self.tpm_time_ms()
        if s.failed_tries:
            healed = max(0, now - s.da_heal_ms) // DA_RECOVERY_MS
            if healed:
                s.failed_tries = max(0, s.failed_tries - healed)
                s.da_heal_ms += healed * DA_RECOVERY_MS
        else:
            s.da_heal_ms = now
        if not s.lockout_auth_enabled and now - s.lockout_failed_ms >= _DA_LOCKOUT_RECOVERY_MS:
            s.lockout_auth_enabled = True

    def _auth_value_available(self, entity: int, cmd: Command) -> bool:
        if entity >> 24 != c.TPM_HT_NV_INDEX:
            return True  # hierarchies, PCRs and sequence objects
        index = self.state.nv[entity]
        if cmd.nv_write:
            return index.has(nvm.TPMA_NV_AUTHWRITE)
        if index.type in (nvm.TPM_NT_PIN_PASS, nvm.TPM_NT_PIN_FAIL):
            if not index.has(nvm.TPMA_NV_WRITTEN):
                return False
            return int.from_bytes(index.data[:4], "big") < int.from_bytes(index.data[4:8], "big")
        return index.has(nvm.TPMA_NV_AUTHREAD)

    def _auth_value(self, entity: int) -> bytes:
        kind = entity >> 24
        if kind == c.TPM_HT_NV_INDEX:
            return self.state.nv[entity].auth
        if kind == c.TPM_HT_TRANSIENT:
            return self.state.objects[entity].auth
        if kind == c.TPM_HT_PERMANENT:
            return self.state.hierarchy_auth.get(entity, b"")
        return b""  # a PCR's authValue is empty

    def _check_password(self, entity: int, password: bytes, cmd: Command) -> None:
        """A password session for *entity* (the reference CheckAuthSession)."""
        s = self.state
        exempt = self._da_exempt(entity)
        if not exempt:
            self._da_heal()
            if (entity == c.TPM_RH_LOCKOUT and not s.lockout_auth_enabled) or (
                entity != c.TPM_RH_LOCKOUT and s.failed_tries >= DA_MAX_TRIES
            ):
                raise TpmError(c.TPM_RC_LOCKOUT)
            if entity != c.TPM_RH_LOCKOUT and not s.da_used:
                # The first DA-protected authorization since Startup leaves the
                # orderly state first and asks for a retry (reference
                # CheckLockedOut with USE_DA_USED, as libtpms 0.9 does).
                s.da_used = s.da_used_pending = True
                s.shutdown_type = None
                raise TpmError(c.TPM_RC_RETRY)
        if not self._auth_value_available(entity, cmd):
            raise TpmError(c.TPM_RC_AUTH_UNAVAILABLE)
        # Trailing zeros are not part of an authValue (Part 1 19.6.4).
        ok = hmac.compare_digest(password.rstrip(b"\0"), self._auth_value(entity).rstrip(b"\0"))
        if entity >> 24 == c.TPM_HT_NV_INDEX:
            self._pin_count(s.nv[entity], ok)
        if ok:
            return
        if exempt:
            raise TpmError(c.TPM_RC_BAD_AUTH)
        if entity == c.TPM_RH_LOCKOUT:
            s.lockout_auth_enabled = False
            s.lockout_failed_ms = self.tpm_time_ms()
        else:
            s.failed_tries += 1
            s.da_heal_ms = self.tpm_time_ms()
        raise TpmError(c.TPM_RC_AUTH_FAIL)

    @staticmethod
    def _pin_count(index: NvIndex, ok: bool) -> None:
        """PIN indices count uses of their authValue (Part 2 13.2): a pass
        index counts successes, a fail index failures (reset on success)."""
        if not index.has(nvm.TPMA_NV_WRITTEN):
            return
        count = int.from_bytes(index.data[:4], "big")
        if index.type == nvm.TPM_NT_PIN_FAIL:
            count = 0 if ok else count + 1
        elif index.type == nvm.TPM_NT_PIN_PASS and ok:
            count += 1
        else:
            return
        index.data[:4] = u32(count)

    @staticmethod
    def _end(r: Reader) -> None:
        """All parameters were read: anything left is TPM_RC_SIZE."""
        if r.remaining:
            raise TpmError(c.TPM_RC_SIZE)

    # -- PCR helpers ------------------------------------------------------
    def _reset_pcrs(self, startup_locality: int, restore: bool) -> None:
        """Set every PCR as TPM2_Startup does; on a resume, restore the saved
        values of the state-saved PCRs. Counts each PCR that changed."""
        s = self.state
        banks = s.banks
        for alg in list(s.pcrs):
            if alg not in banks:
                del s.pcrs[alg]
        for pcr in range(c.IMPLEMENTATION_PCR):
            restored = restore and PCR_ATTRIBUTES[pcr].state_save
            for alg in banks:
                size = c.HASH_ALGS[alg][1]
                bank = s.pcrs.setdefault(alg, [bytes(size)] * c.IMPLEMENTATION_PCR)
                saved = s.saved_pcrs.get(alg)
                if restored and saved is not None:
                    bank[pcr] = saved[pcr]
                else:
                    bank[pcr] = initial_value(pcr, size, startup_locality)
            if not restored:
                self._pcr_changed(pcr)

    def _pcr_changed(self, pcr: int) -> None:
        if pcr not in NO_INCREMENT_PCRS:
            self.state.pcr_update_counter = (self.state.pcr_update_counter + 1) & 0xFFFFFFFF

    def _extend(self, pcr: int, alg: int, data: bytes) -> None:
        bank = self.state.pcrs.get(alg)
        if bank is None or not self.state.allocation[alg] >> pcr & 1:
            return  # an implemented but unallocated PCR: nothing to do
        bank[pcr] = _digest(alg, bank[pcr] + data)
        self._pcr_changed(pcr)

    def _invalidate_saved_state(self) -> None:
        # A PCR changed after TPM2_Shutdown: the saved state is stale, so the
        # next Startup(STATE) must fail and the shutdown no longer counts as
        # orderly (Part 1 36.x: the TPM leaves the orderly state).
        self.state.shutdown_type = None

    # -- commands: start-up, self test ----------------------------------
    def _cmd_startup(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            startup_type = r.u16()
            if startup_type not in (c.TPM_SU_CLEAR, c.TPM_SU_STATE):
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        if locality not in (0, 3):
            raise TpmError(c.TPM_RC_LOCALITY)
        s = self.state
        if startup_type == c.TPM_SU_STATE and s.shutdown_type != c.TPM_SU_STATE:
            raise _rc(TpmError(c.TPM_RC_VALUE), c.TPM_RC_P, 1)
        s.orderly = s.shutdown_type is not None
        if not s.orderly:
            s.clock_safe = False
            s.clock_unsafe_epoch = self.tpm_time_ms() >> _CLOCK_UPDATE_INTERVAL
        resume = startup_type == c.TPM_SU_STATE
        if s.shutdown_type == c.TPM_SU_STATE:
            # TPM Resume (STATE) or TPM Restart (CLEAR): counter survives
            s.restart_count += 1
            s.pcr_update_counter = s.saved_pcr_update_counter
        else:
            # TPM Reset
            s.reset_count += 1
            s.restart_count = 0
            s.pcr_update_counter = 0
        if not s.orderly and s.da_used_pending and s.failed_tries < DA_MAX_TRIES:
            # Power was lost after a DA-protected authorization: it may have
            # been a failure that was never recorded.
            s.failed_tries += 1
        s.da_used = s.da_used_pending = False
        self._reset_pcrs(locality, restore=resume)
        if not resume:
            self._nv_startup(reset=s.shutdown_type != c.TPM_SU_STATE, orderly=s.orderly)
        s.shutdown_type = None
        s.saved_pcrs = {}
        s.started = True
        return b""

    def _nv_startup(self, reset: bool, orderly: bool) -> None:
        """NV index attributes at a TPM Reset or Restart (Part 1 37.x)."""
        for index in self.state.nv.values():
            index.attributes = nvm.startup_attributes(index.attributes, reset)
            if (
                index.has(nvm.TPMA_NV_ORDERLY)
                and index.type == nvm.TPM_NT_COUNTER
                and not orderly
                and index.has(nvm.TPMA_NV_WRITTEN)
            ):
                # An orderly counter may have lost increments: skip ahead.
                value = int.from_bytes(index.data, "big") | nvm.MAX_ORDERLY_COUNT
                index.data[:] = value.to_bytes(8, "big")

    def _cmd_shutdown(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            shutdown_type = r.u16()
            if shutdown_type not in (c.TPM_SU_CLEAR, c.TPM_SU_STATE):
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        s = self.state
        if s.pcr_reconfig and shutdown_type == c.TPM_SU_STATE:
            # A new PCR allocation needs a TPM Reset: nothing to resume.
            raise _fail(c.TPM_RC_TYPE, c.TPM_RC_P, 1)
        s.shutdown_type = shutdown_type
        s.da_used = s.da_used_pending = False
        if shutdown_type == c.TPM_SU_STATE:
            s.saved_pcrs = {alg: list(bank) for alg, bank in s.pcrs.items()}
            s.saved_pcr_update_counter = s.pcr_update_counter
        return b""

    def _cmd_self_test(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            if r.u8() > 1:  # TPMI_YES_NO
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        return b""  # every algorithm is tested before Startup answers

    def _cmd_incremental_self_test(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            count = r.u32()
            if count > _MAX_ALG_LIST_SIZE:
                raise TpmError(c.TPM_RC_SIZE)
            for _ in range(count):
                if r.u16() not in c.HASH_ALGS:
                    raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        return u32(0)  # toDoList: nothing left to test

    def _cmd_get_test_result(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        return tpm2b(b"") + u32(c.TPM_RC_SUCCESS)

    # -- commands: random numbers ----------------------------------------
    def _cmd_get_random(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            requested = r.u16()
        self._end(r)
        # Part 3 16.1: at most the size of the largest digest (TPMU_HA).
        return tpm2b(self.rng.generate(min(requested, c.MAX_DIGEST_SIZE)))

    def _cmd_stir_random(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(_MAX_SENSITIVE_DATA)
        self._end(r)
        self.rng.stir(data)
        return b""

    # -- commands: PCRs ---------------------------------------------------
    def _cmd_pcr_read(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            selection = _unmarshal_pcr_selection(r)
        self._end(r)
        # Part 3 22.4 / reference PCRRead(): drop PCRs not allocated, return
        # at most 8 digests and clear the selection bits of the rest.
        digests: list[bytes] = []
        for alg, select in selection:
            bank = self.state.pcrs.get(alg)
            allocated = self.state.allocation[alg]
            for pcr in range(len(select) * 8):
                bit = 1 << (pcr % 8)
                if not select[pcr // 8] & bit:
                    continue
                if bank is None or not allocated >> pcr & 1 or len(digests) == 8:
                    select[pcr // 8] &= ~bit
                    continue
                digests.append(bank[pcr])
        body = u32(self.state.pcr_update_counter) + _marshal_pcr_selection(selection)
        return body + u32(len(digests)) + b"".join(tpm2b(d) for d in digests)

    def _check_extend_locality(self, pcr: int, locality: int) -> None:
        if pcr != c.TPM_RH_NULL and not PCR_ATTRIBUTES[pcr].extend_localities >> locality & 1:
            raise TpmError(c.TPM_RC_LOCALITY)

    def _cmd_pcr_extend(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            count = r.u32()
            if count > _HASH_COUNT:
                raise TpmError(c.TPM_RC_SIZE)
            digests = []
            for _ in range(count):
                alg = _unmarshal_hash_alg(r)
                digests.append((alg, r.take(c.HASH_ALGS[alg][1])))
        self._end(r)
        pcr = handles[0]
        self._check_extend_locality(pcr, locality)
        if pcr != c.TPM_RH_NULL:
            for alg, digest in digests:
                self._extend(pcr, alg, digest)
            self._invalidate_saved_state()
        return b""

    def _extend_all(self, pcr: int, data: bytes) -> bytes:
        """The digests of *data* for every implemented hash (TPML_DIGEST_VALUES),
        extended into the allocated banks of *pcr* unless it is TPM_RH_NULL."""
        digests = [(alg, _digest(alg, data)) for alg in c.HASH_ALGS]
        if pcr != c.TPM_RH_NULL:
            for alg, digest in digests:
                self._extend(pcr, alg, digest)
            self._invalidate_saved_state()
        return u32(len(digests)) + b"".join(u16(alg) + digest for alg, digest in digests)

    def _cmd_pcr_event(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        self._end(r)
        pcr = handles[0]
        self._check_extend_locality(pcr, locality)
        return self._extend_all(pcr, data)

    def _cmd_pcr_reset(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        pcr = handles[0]
        # Locality 4 never resets a PCR: it belongs to the DRTM sequence.
        if locality == 4 or not PCR_ATTRIBUTES[pcr].reset_localities >> locality & 1:
            raise TpmError(c.TPM_RC_LOCALITY)
        for alg, bank in self.state.pcrs.items():
            if self.state.allocation[alg] >> pcr & 1:
                bank[pcr] = bytes(c.HASH_ALGS[alg][1])
        self._pcr_changed(pcr)
        self._invalidate_saved_state()
        return b""

    def _cmd_pcr_allocate(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            selection = _unmarshal_pcr_selection(r)
        self._end(r)
        s = self.state
        # Banks not named keep the allocation in use (not a pending one: each
        # PCR_Allocate replaces the last); the last selection of a bank wins
        # (Part 3 22.5).
        new = dict(s.allocation)
        for alg, select in selection:
            new[alg] = int.from_bytes(bytes(select), "little") & _ALL_PCRS
        size_needed = sum(bin(mask).count("1") * c.HASH_ALGS[alg][1] for alg, mask in new.items())
        # The PC Client profile needs an H-CRTM (0) and a D-RTM (17) PCR somewhere.
        if not any(mask >> _HCRTM_PCR & 1 for mask in new.values()) or not any(
            mask >> _DRTM_PCR & 1 for mask in new.values()
        ):
            raise TpmError(c.TPM_RC_PCR)
        s.pending_allocation = new
        s.pcr_reconfig = True
        return u8(1) + u32(c.IMPLEMENTATION_PCR) + u32(size_needed) + u32(PCR_SIZE_AVAILABLE)

    # -- commands: hashing and time --------------------------------------
    def _ticket(self, hierarchy: int, digest: bytes) -> bytes:
        """TPMT_TK_HASHCHECK: an HMAC under the hierarchy's proof (our own
        construction, as every TPM's is), or a NULL ticket."""
        if hierarchy == c.TPM_RH_NULL:
            return u16(c.TPM_ST_HASHCHECK) + u32(c.TPM_RH_NULL) + tpm2b(b"")
        mac = _crypto.hmac("sha256", self.state.proofs[hierarchy], u16(c.TPM_ST_HASHCHECK) + digest)
        return u16(c.TPM_ST_HASHCHECK) + u32(hierarchy) + tpm2b(mac)

    def _cmd_hash(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        with _param(2):
            alg = _unmarshal_hash_alg(r)
        with _param(3):
            hierarchy = _unmarshal_hierarchy(r)
        self._end(r)
        digest = _digest(alg, data)
        # Part 3 15.4: a NULL ticket for the NULL hierarchy or for data that
        # could be a TPM-generated structure (starts with TPM_GENERATED_VALUE).
        return tpm2b(digest) + self._ticket(hierarchy if data[:4] != _GENERATED else c.TPM_RH_NULL, digest)

    def _cmd_hash_sequence_start(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            auth = r.tpm2b(c.MAX_DIGEST_SIZE)
        with _param(2):
            alg = _unmarshal_hash_alg(r, allow_null=True)
        self._end(r)
        objects = self.state.objects
        for handle in range(c.TRANSIENT_FIRST, c.TRANSIENT_LAST + 1):
            if handle not in objects:
                objects[handle] = Sequence(event=alg == c.TPM_ALG_NULL, hash_alg=alg, auth=auth)
                self._rsp_handle = u32(handle)
                return b""
        raise TpmError(c.TPM_RC_OBJECT_MEMORY)

    def _cmd_sequence_update(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        self._end(r)
        self._update(self.state.objects[handles[0]], data)
        return b""

    @staticmethod
    def _update(seq: Sequence, data: bytes) -> None:
        if not seq.event and not seq.first_block:
            seq.first_block = True
            seq.ticket_safe = _ticket_safe(data)
        seq.data += data

    def _cmd_sequence_complete(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        with _param(2):
            hierarchy = _unmarshal_hierarchy(r)
        self._end(r)
        seq = self.state.objects[handles[0]]
        if seq.event:
            raise _fail(c.TPM_RC_MODE, c.TPM_RC_H, 1)
        self._update(seq, data)
        digest = _digest(seq.hash_alg, bytes(seq.data))
        del self.state.objects[handles[0]]
        if hierarchy != c.TPM_RH_NULL and not seq.ticket_safe:
            hierarchy = c.TPM_RH_NULL
        return tpm2b(digest) + self._ticket(hierarchy, digest)

    def _cmd_event_sequence_complete(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        self._end(r)
        pcr, handle = handles
        seq = self.state.objects[handle]
        if not seq.event:
            raise _fail(c.TPM_RC_MODE, c.TPM_RC_H, 2)
        self._check_extend_locality(pcr, locality)
        del self.state.objects[handle]
        return self._extend_all(pcr, bytes(seq.data) + data)

    def _cmd_flush_context(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            handle = r.u32()
            kind = handle >> 24
            if not (
                c.TRANSIENT_FIRST <= handle <= c.TRANSIENT_LAST
                or (
                    kind in (c.TPM_HT_HMAC_SESSION, c.TPM_HT_POLICY_SESSION)
                    and handle & 0xFFFFFF < c.MAX_ACTIVE_SESSIONS
                )
            ):
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        if handle not in self.state.objects:  # sessions are never loaded here
            raise _fail(c.TPM_RC_HANDLE, c.TPM_RC_P, 1)
        del self.state.objects[handle]
        return b""

    def _cmd_read_public(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        # Every loaded object is a sequence, whose public area cannot be read.
        raise TpmError(c.TPM_RC_SEQUENCE)

    def _cmd_read_clock(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        s = self.state
        elapsed = max(0, self.now_ms() - s.power_on_ms)
        clock = s.clock_ms + elapsed
        if not s.clock_safe and clock >> _CLOCK_UPDATE_INTERVAL > s.clock_unsafe_epoch:
            s.clock_safe = True
        # TPMS_TIME_INFO: time since power-on, then TPMS_CLOCK_INFO.
        return u64(elapsed) + u64(clock) + u32(s.reset_count) + u32(s.restart_count) + u8(int(s.clock_safe))

    # -- commands: hierarchies ----------------------------------------------
    def _cmd_hierarchy_change_auth(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            auth = r.tpm2b(c.MAX_DIGEST_SIZE)
        self._end(r)
        self.state.hierarchy_auth[handles[0]] = auth.rstrip(b"\0")
        return b""

    def _cmd_clear_control(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            disable = r.u8()
            if disable > 1:  # TPMI_YES_NO
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        # Part 3 24.7: only the platform may enable TPM2_Clear again.
        if handles[0] == c.TPM_RH_LOCKOUT and not disable:
            raise TpmError(c.TPM_RC_AUTH_FAIL)
        self.state.disable_clear = bool(disable)
        return b""

    def _cmd_clear(self, r: Reader, handles: list[int], locality: int) -> bytes:
        """Part 3 24.6: the owner's and the endorsement hierarchy's secrets,
        authorizations and NV indices go; the platform's stay."""
        self._end(r)
        s = self.state
        if s.disable_clear:
            raise TpmError(c.TPM_RC_DISABLED)
        s.proofs[c.TPM_RH_OWNER] = self.rng.generate(32)  # new SPS and shProof
        s.proofs[c.TPM_RH_ENDORSEMENT] = self.rng.generate(32)  # new ehProof
        for hierarchy in (c.TPM_RH_OWNER, c.TPM_RH_ENDORSEMENT, c.TPM_RH_LOCKOUT):
            s.hierarchy_auth.pop(hierarchy, None)
        for handle in [h for h, index in s.nv.items() if not index.has(nvm.TPMA_NV_PLATFORMCREATE)]:
            index = s.nv.pop(handle)
            if index.type == nvm.TPM_NT_COUNTER and index.has(nvm.TPMA_NV_WRITTEN):
                s.max_counter = max(s.max_counter, int.from_bytes(index.data, "big"))
        # Dictionary-attack state back to its initial values.
        s.failed_tries = 0
        s.lockout_auth_enabled = True
        # The clock starts again at 0 (time since power-on is not touched),
        # safe; the reset and restart counts too.
        s.clock_ms = -max(0, self.now_ms() - s.power_on_ms)
        s.clock_safe = True
        s.da_heal_ms = 0
        s.lockout_failed_ms = 0
        s.reset_count = s.restart_count = 0
        self._pcr_changed(0)
        return b""

    def _cmd_change_eps(self, r: Reader, handles: list[int], locality: int) -> bytes:
        """Part 3 24.5: a new endorsement seed (here: its proof); the
        endorsement authValue is emptied."""
        self._end(r)
        s = self.state
        s.proofs[c.TPM_RH_ENDORSEMENT] = self.rng.generate(32)
        s.hierarchy_auth.pop(c.TPM_RH_ENDORSEMENT, None)
        return b""

    # -- commands: NV storage ---------------------------------------------
    def _cmd_nv_define_space(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            auth = r.tpm2b(c.MAX_DIGEST_SIZE)
        with _param(2):
            handle, name_alg, attributes, policy, data_size = nvm.unmarshal_nv_public(r)
        self._end(r)
        nvm.check_define(handles[0], auth, name_alg, attributes, policy, data_size)
        nv = self.state.nv
        if handle in nv:
            raise TpmError(c.TPM_RC_NV_DEFINED)
        used = sum(index.cost for index in nv.values())
        if used + data_size + nvm.NV_INDEX_OVERHEAD > nvm.NV_MEMORY_SIZE:
            raise TpmError(c.TPM_RC_NV_SPACE)
        nv[handle] = NvIndex(
            handle,
            name_alg,
            attributes,
            policy,
            data_size,
            auth.rstrip(b"\0"),
            bytearray(b"\xff" * data_size),
        )
        return b""

    def _cmd_nv_undefine_space(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        auth_handle, handle = handles
        index = self.state.nv[handle]
        if index.has(nvm.TPMA_NV_POLICY_DELETE):
            raise _fail(c.TPM_RC_ATTRIBUTES, c.TPM_RC_H, 2)
        if auth_handle == c.TPM_RH_OWNER and index.has(nvm.TPMA_NV_PLATFORMCREATE):
            raise TpmError(c.TPM_RC_NV_AUTHORIZATION)
        if index.type == nvm.TPM_NT_COUNTER and index.has(nvm.TPMA_NV_WRITTEN):
            self.state.max_counter = max(self.state.max_counter, int.from_bytes(index.data, "big"))
        del self.state.nv[handle]
        return b""

    def _cmd_nv_read_public(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        index = self.state.nv[handles[0]]
        return tpm2b(index.public()) + tpm2b(index.name())

    @staticmethod
    def _write_access(auth_handle: int, index: NvIndex) -> None:
        """The reference NvWriteAccessChecks."""
        if index.has(nvm.TPMA_NV_WRITELOCKED):
            raise TpmError(c.TPM_RC_NV_LOCKED)
        if auth_handle == c.TPM_RH_OWNER:
            allowed = index.has(nvm.TPMA_NV_OWNERWRITE)
        elif auth_handle == c.TPM_RH_PLATFORM:
            allowed = index.has(nvm.TPMA_NV_PPWRITE)
        else:
            allowed = auth_handle == index.handle
        if not allowed:
            raise TpmError(c.TPM_RC_NV_AUTHORIZATION)

    @staticmethod
    def _read_access(auth_handle: int, index: NvIndex) -> None:
        """The reference NvReadAccessChecks (NV_UNINITIALIZED comes last so
        that NV_ReadLock can tell it from an authorization error)."""
        if index.has(nvm.TPMA_NV_READLOCKED):
            raise TpmError(c.TPM_RC_NV_LOCKED)
        if auth_handle == c.TPM_RH_OWNER:
            allowed = index.has(nvm.TPMA_NV_OWNERREAD)
        elif auth_handle == c.TPM_RH_PLATFORM:
            allowed = index.has(nvm.TPMA_NV_PPREAD)
        else:
            allowed = auth_handle == index.handle
        if not allowed:
            raise TpmError(c.TPM_RC_NV_AUTHORIZATION)
        if not index.has(nvm.TPMA_NV_WRITTEN):
            raise TpmError(c.TPM_RC_NV_UNINITIALIZED)

    @staticmethod
    def _store(index: NvIndex, offset: int, data: bytes) -> None:
        index.data[offset : offset + len(data)] = data
        index.attributes |= nvm.TPMA_NV_WRITTEN

    def _cmd_nv_write(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_NV_BUFFER_SIZE)
        with _param(2):
            offset = r.u16()
        self._end(r)
        index = self.state.nv[handles[1]]
        self._write_access(handles[0], index)
        if index.type in (nvm.TPM_NT_COUNTER, nvm.TPM_NT_BITS, nvm.TPM_NT_EXTEND):
            raise TpmError(c.TPM_RC_ATTRIBUTES)
        if offset > index.data_size:
            raise _fail(c.TPM_RC_VALUE, c.TPM_RC_P, 2)
        if len(data) > index.data_size - offset:
            raise TpmError(c.TPM_RC_NV_RANGE)
        if index.has(nvm.TPMA_NV_WRITEALL) and len(data) < index.data_size:
            raise TpmError(c.TPM_RC_NV_RANGE)
        self._store(index, offset, data)
        return b""

    def _cmd_nv_read(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            size = r.u16()
        with _param(2):
            offset = r.u16()
        self._end(r)
        index = self.state.nv[handles[1]]
        self._read_access(handles[0], index)
        if size > c.MAX_NV_BUFFER_SIZE:
            raise _fail(c.TPM_RC_VALUE, c.TPM_RC_P, 1)
        if offset > index.data_size:
            raise _fail(c.TPM_RC_VALUE, c.TPM_RC_P, 2)
        if size > index.data_size - offset:
            raise TpmError(c.TPM_RC_NV_RANGE)
        return tpm2b(bytes(index.data[offset : offset + size]))

    def _typed_index(self, handles: list[int], kind: int) -> NvIndex:
        """Write access to an index that must be of TPM_NT *kind*."""
        index = self.state.nv[handles[1]]
        self._write_access(handles[0], index)
        if index.type != kind:
            raise _fail(c.TPM_RC_ATTRIBUTES, c.TPM_RC_H, 2)
        return index

    def _cmd_nv_increment(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        index = self._typed_index(handles, nvm.TPM_NT_COUNTER)
        if index.has(nvm.TPMA_NV_WRITTEN):
            value = int.from_bytes(index.data, "big")
        else:  # a new counter starts above every counter that existed
            value = self.state.max_counter
        self._store(index, 0, ((value + 1) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big"))
        return b""

    def _cmd_nv_set_bits(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            bits = r.u64()
        self._end(r)
        index = self._typed_index(handles, nvm.TPM_NT_BITS)
        old = int.from_bytes(index.data, "big") if index.has(nvm.TPMA_NV_WRITTEN) else 0
        self._store(index, 0, (old | bits).to_bytes(8, "big"))
        return b""

    def _cmd_nv_extend(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_NV_BUFFER_SIZE)
        self._end(r)
        index = self._typed_index(handles, nvm.TPM_NT_EXTEND)
        old = bytes(index.data) if index.has(nvm.TPMA_NV_WRITTEN) else bytes(index.data_size)
        self._store(index, 0, _digest(index.name_alg, old + data))
        return b""

    def _cmd_nv_write_lock(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        index = self.state.nv[handles[1]]
        try:
            self._write_access(handles[0], index)
        except TpmError as err:
            if err.rc == c.TPM_RC_NV_AUTHORIZATION:
                raise
            return b""  # already locked: not an error
        if not index.has(nvm.TPMA_NV_WRITEDEFINE | nvm.TPMA_NV_WRITE_STCLEAR):
            raise _fail(c.TPM_RC_ATTRIBUTES, c.TPM_RC_H, 2)
        index.attributes |= nvm.TPMA_NV_WRITELOCKED
        return b""

    def _cmd_nv_read_lock(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        index = self.state.nv[handles[1]]
        try:
            self._read_access(handles[0], index)
        except TpmError as err:
            if err.rc == c.TPM_RC_NV_AUTHORIZATION:
                raise
            if err.rc == c.TPM_RC_NV_LOCKED:
                return b""  # already locked: not an error
            # an unwritten index may be read-locked
        if not index.has(nvm.TPMA_NV_READ_STCLEAR):
            raise _fail(c.TPM_RC_ATTRIBUTES, c.TPM_RC_H, 2)
        index.attributes |= nvm.TPMA_NV_READLOCKED
        return b""

    # -- commands: capabilities ------------------------------------------
    def _cmd_get_capability(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            capability = r.u32()
        with _param(2):
            prop = r.u32()
        with _param(3):
            count = r.u32()
        self._end(r)
        if capability == c.TPM_CAP_TPM_PROPERTIES:
            more, data = self._cap_properties(prop, count)
        elif capability == c.TPM_CAP_ALGS:
            algs = sorted(a for a in c.HASH_ALGS if a >= prop)
            more, algs = _limit(algs, count, _MAX_CAP_ALGS)
            data = u32(len(algs)) + b"".join(u16(a) + u32(_TPMA_ALGORITHM_HASH) for a in algs)
        elif capability == c.TPM_CAP_COMMANDS:
            codes = sorted(cc for cc in COMMANDS if cc >= (prop & 0xFFFF))
            more, codes = _limit(codes, count, _MAX_CAP_CC)
            data = u32(len(codes)) + b"".join(u32(COMMANDS[cc].tpma_cc) for cc in codes)
        elif capability == c.TPM_CAP_PCRS:
            if prop != 0:
                raise _rc(TpmError(c.TPM_RC_VALUE), c.TPM_RC_P, 2)
            more = False
            data = _marshal_pcr_selection(
                [
                    (alg, bytearray(self.state.allocation[alg].to_bytes(c.PCR_SELECT_MAX, "little")))
                    for alg in c.HASH_ALGS
                ]
            )
        elif capability == c.TPM_CAP_HANDLES:
            more, found = _limit(self._handles(prop), count, _MAX_CAP_HANDLES)
            data = u32(len(found)) + b"".join(u32(h) for h in found)
        else:
            raise _rc(TpmError(c.TPM_RC_VALUE), c.TPM_RC_P, 1)
        return u8(int(more)) + u32(capability) + data

    def _handles(self, prop: int) -> list[int]:
        """TPM_CAP_HANDLES: the handles of *prop*'s type from *prop* on."""
        kind = prop >> 24
        if kind == c.TPM_HT_PCR:
            found: list[int] = list(range(c.IMPLEMENTATION_PCR))
        elif kind == c.TPM_HT_NV_INDEX:
            found = sorted(self.state.nv)
        elif kind == c.TPM_HT_TRANSIENT:
            found = sorted(self.state.objects)
        elif kind == c.TPM_HT_PERMANENT:
            found = list(c.PERMANENT_HANDLES)
        elif kind in (c.TPM_HT_HMAC_SESSION, c.TPM_HT_POLICY_SESSION, c.TPM_HT_PERSISTENT):
            found = []  # no sessions and no persistent objects here
        else:
            raise _fail(c.TPM_RC_HANDLE, c.TPM_RC_P, 2)
        return [h for h in found if h >= prop]

    def _cap_properties(self, prop: int, count: int) -> tuple[bool, bytes]:
        """TPML_TAGGED_TPM_PROPERTY starting at *prop*, within its group
        (fixed or variable) only, as the reference implementation does."""
        if prop < c.PT_VAR:
            table = TPM2_PROPERTIES_FIXED
        elif prop < c.PT_VAR + 0x100:
            table = self._variable_properties()
        else:
            table = {}
        keys = sorted(k for k in table if k >= prop)
        more, keys = _limit(keys, count, _MAX_TPM_PROPERTIES)
        return more, u32(len(keys)) + b"".join(u32(k) + u32(table[k]) for k in keys)

    def _tpma_permanent(self) -> int:
        """TPMA_PERMANENT (Part 2 8.6)."""
        s = self.state
        auth = s.hierarchy_auth
        return (
            (1 if auth.get(c.TPM_RH_OWNER) else 0)  # ownerAuthSet
            | (2 if auth.get(c.TPM_RH_ENDORSEMENT) else 0)  # endorsementAuthSet
            | (4 if auth.get(c.TPM_RH_LOCKOUT) else 0)  # lockoutAuthSet
            | (0x100 if s.disable_clear else 0)  # disableClear
            | (0x200 if s.failed_tries >= DA_MAX_TRIES else 0)  # inLockout
            | 0x400  # tpmGeneratedEPS: this TPM made its endorsement seed itself
        )

    def _variable_properties(self) -> dict[int, int]:
        """TPM_PT_VAR properties (Part 2 6.13)."""
        s = self.state
        startup_clear = 0x0000000F | (0x80000000 if s.orderly else 0)  # ph/sh/eh/phEnableNV, orderly
        used = sum(index.cost for index in s.nv.values())
        counters = sum(1 for index in s.nv.values() if index.type == nvm.TPM_NT_COUNTER)
        self._da_heal()
        return {
            c.PT_VAR + 0: self._tpma_permanent(),  # TPM_PT_PERMANENT
            c.PT_VAR + 1: startup_clear,  # TPM_PT_STARTUP_CLEAR
            c.PT_VAR + 2: len(s.nv),  # TPM_PT_HR_NV_INDEX
            c.PT_VAR + 3: 0,  # TPM_PT_HR_LOADED (sessions)
            c.PT_VAR + 4: 0,  # TPM_PT_HR_LOADED_AVAIL
            c.PT_VAR + 5: 0,  # TPM_PT_HR_ACTIVE
            c.PT_VAR + 6: 0,  # TPM_PT_HR_ACTIVE_AVAIL
            c.PT_VAR + 7: c.MAX_LOADED_OBJECTS - len(s.objects),  # TPM_PT_HR_TRANSIENT_AVAIL
            c.PT_VAR + 8: 0,  # TPM_PT_HR_PERSISTENT
            c.PT_VAR + 9: 0,  # TPM_PT_HR_PERSISTENT_AVAIL
            c.PT_VAR + 10: counters,  # TPM_PT_NV_COUNTERS
            # TPM_PT_NV_COUNTERS_AVAIL: how many more 8-byte indices fit
            c.PT_VAR + 11: max(0, nvm.NV_MEMORY_SIZE - used) // (8 + nvm.NV_INDEX_OVERHEAD),
            c.PT_VAR + 12: 0,  # TPM_PT_ALGORITHM_SET
            c.PT_VAR + 13: 0,  # TPM_PT_LOADED_CURVES
            c.PT_VAR + 14: s.failed_tries,  # TPM_PT_LOCKOUT_COUNTER
            c.PT_VAR + 15: DA_MAX_TRIES,  # TPM_PT_MAX_AUTH_FAIL
            c.PT_VAR + 16: DA_RECOVERY_MS // 1000,  # TPM_PT_LOCKOUT_INTERVAL (s)
            c.PT_VAR + 17: _DA_LOCKOUT_RECOVERY_MS // 1000,  # TPM_PT_LOCKOUT_RECOVERY (s)
            c.PT_VAR + 18: 0,  # TPM_PT_NV_WRITE_RECOVERY
            c.PT_VAR + 19: 0,  # TPM_PT_AUDIT_COUNTER_0
            c.PT_VAR + 20: 0,  # TPM_PT_AUDIT_COUNTER_1
        }


def _limit(items: list[int], count: int, maximum: int) -> tuple[bool, list[int]]:
    """Return (moreData, the first min(count, maximum) items)."""
    n = min(count, maximum)
    return len(items) > n, items[:n]
