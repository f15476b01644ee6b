"""A TPM 2.0 command engine: the subset a firmware and an OS boot need.

TCG TPM 2.0 Library, Part 1 (architecture: command processing order, PCRs,
password sessions), Part 2 (structures) and Part 3 (commands), rev. 1.59,
with the PC Client profile for PCR attributes (:mod:`._pcr`). Behaviour the
specification leaves open follows libtpms 0.9 as driven by swtpm 0.7.1, and
the tests compare the two byte for byte.

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
6. handle area (errors carry the handle number, ``TPM_RC_H + N``);
7. session area when tagged TPM_ST_SESSIONS (errors carry the session
   number, ``TPM_RC_S + N``); only password sessions (TPM_RS_PW) exist here,
   so an HMAC or policy session handle is TPM_RC_REFERENCE_S0 + index;
8. authorization: a handle that needs one without a session is
   TPM_RC_AUTH_MISSING; a session with no handle to authorize is
   TPM_RC_HANDLE + session; a wrong password is TPM_RC_BAD_AUTH (PCRs are
   exempt from dictionary-attack protection);
9. parameters (errors carry the parameter number, ``TPM_RC_P + N``), then
   bytes left over -> TPM_RC_SIZE;
10. the command's action (locality checks, ...).

Every error response is the 10-byte header with tag TPM_ST_NO_SESSIONS. A
successful response to a TPM_ST_SESSIONS command carries ``parameterSize``
and one response session per command session (empty nonce, continueSession
set, empty HMAC), as a password session answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable

from tpmdev.backends.builtin import _constants as c
from tpmdev.backends.builtin import _crypto
from tpmdev.backends.builtin._marshal import Reader, TpmError, rc_with, tpm2b, u8, u16, u32, u64
from tpmdev.backends.builtin._pcr import NO_INCREMENT_PCRS, PCR_ATTRIBUTES, initial_value
from tpmdev.backends.builtin._rng import Rng

__all__ = ["COMMANDS", "DEFAULT_BANKS", "TPM2_PROPERTIES_FIXED", "Tpm2", "Tpm2State"]

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

# TPMA_CC bits (Part 2 9.21)
_CC_NV = 1 << 22
_CC_HANDLES_SHIFT = 25


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


@dataclass
class Tpm2State:
    """Everything the TPM remembers, as plain data (for a later save/restore).

    Persistent part: ``banks``, ``reset_count``, ``clock_ms``, the hierarchy
    proofs, and the state a TPM2_Shutdown(STATE) saved. Volatile part: the
    rest, rebuilt by TPM2_Startup.
    """

    banks: list[int] = field(default_factory=lambda: list(DEFAULT_BANKS))
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
    reset_count: int = 0
    restart_count: int = 0
    clock_ms: int = 0  # TPMS_CLOCK_INFO.clock at the last power-on
    power_on_ms: int = 0  # host time of the last power-on
    proofs: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One implemented command: its handles and its action.

    ``pcr_handle`` says whether the command has one PCR handle (all the
    commands here that take a handle take exactly one, and it needs an
    authorization); ``allow_null`` lets that handle be TPM_RH_NULL.
    """

    code: int
    handler: str
    pcr_handle: bool = False
    allow_null: bool = False
    nv: bool = False

    @property
    def tpma_cc(self) -> int:
        """TPMA_CC as TPM2_GetCapability(TPM_CAP_COMMANDS) reports it."""
        handles = 1 if self.pcr_handle else 0
        return self.code | (_CC_NV if self.nv else 0) | (handles << _CC_HANDLES_SHIFT)


COMMANDS: dict[int, Command] = {
    cmd.code: cmd
    for cmd in (
        Command(c.TPM_CC_PCR_Event, "pcr_event", pcr_handle=True, allow_null=True, nv=True),
        Command(c.TPM_CC_PCR_Reset, "pcr_reset", pcr_handle=True, nv=True),
        Command(c.TPM_CC_IncrementalSelfTest, "incremental_self_test", nv=True),
        Command(c.TPM_CC_SelfTest, "self_test", nv=True),
        Command(c.TPM_CC_Startup, "startup", nv=True),
        Command(c.TPM_CC_Shutdown, "shutdown", nv=True),
        Command(c.TPM_CC_StirRandom, "stir_random", nv=True),
        Command(c.TPM_CC_GetCapability, "get_capability"),
        Command(c.TPM_CC_GetRandom, "get_random"),
        Command(c.TPM_CC_GetTestResult, "get_test_result"),
        Command(c.TPM_CC_Hash, "hash"),
        Command(c.TPM_CC_PCR_Read, "pcr_read"),
        Command(c.TPM_CC_ReadClock, "read_clock"),
        Command(c.TPM_CC_PCR_Extend, "pcr_extend", pcr_handle=True, allow_null=True, nv=True),
    )
}


def _chars(text: str) -> int:
    """Four ASCII characters as a big-endian UINT32 (vendor strings)."""
    return int.from_bytes(text.encode("ascii").ljust(4, b"\0")[:4], "big")


#: TPM_PT_FIXED properties (Part 2 6.13). Vendor-specific entries (manufacturer,
#: vendor strings, firmware version, spec date) are ours; limits describe what
#: this TPM really has: no objects, NV indices or HMAC/policy sessions.
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
    c.PT_FIXED + 14: 0,  # TPM_PT_HR_TRANSIENT_MIN
    c.PT_FIXED + 15: 0,  # TPM_PT_HR_PERSISTENT_MIN
    c.PT_FIXED + 16: 0,  # TPM_PT_HR_LOADED_MIN
    c.PT_FIXED + 17: 0,  # TPM_PT_ACTIVE_SESSIONS_MAX
    c.TPM_PT_PCR_COUNT: c.IMPLEMENTATION_PCR,
    c.TPM_PT_PCR_SELECT_MIN: c.PCR_SELECT_MAX,
    c.PT_FIXED + 20: 0,  # TPM_PT_CONTEXT_GAP_MAX
    c.PT_FIXED + 22: 0,  # TPM_PT_NV_COUNTERS_MAX
    c.PT_FIXED + 23: 0,  # TPM_PT_NV_INDEX_MAX
    c.PT_FIXED + 24: 0,  # TPM_PT_MEMORY
    c.PT_FIXED + 25: 0x1000,  # TPM_PT_CLOCK_UPDATE
    c.PT_FIXED + 26: c.TPM_ALG_SHA256,  # TPM_PT_CONTEXT_HASH
    c.PT_FIXED + 27: c.TPM_ALG_NULL,  # TPM_PT_CONTEXT_SYM
    c.PT_FIXED + 28: 0,  # TPM_PT_CONTEXT_SYM_SIZE
    c.PT_FIXED + 29: 255,  # TPM_PT_ORDERLY_COUNT
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
    c.PT_FIXED + 44: 0,  # TPM_PT_NV_BUFFER_MAX
    c.PT_FIXED + 45: 0,  # TPM_PT_MODES
    c.PT_FIXED + 46: c.MAX_CAP_BUFFER,  # TPM_PT_MAX_CAP_BUFFER
}


def _digest(alg: int, data: bytes) -> bytes:
    return _crypto.digest(c.HASH_ALGS[alg][0], data)


def _unmarshal_hash_alg(r: Reader) -> int:
    """TPMI_ALG_HASH without TPM_ALG_NULL: TPM_RC_HASH if not implemented."""
    alg = r.u16()
    if alg not in c.HASH_ALGS:
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


class Tpm2:
    """The TPM 2.0 engine. Sans-IO: bytes in, bytes out, time from *now_ms*."""

    def __init__(self, rng: Rng, now_ms: Callable[[], int], banks: tuple[int, ...] = DEFAULT_BANKS) -> None:
        self.rng = rng
        self.now_ms = now_ms
        self.state = Tpm2State(banks=list(banks))
        for hierarchy in (c.TPM_RH_OWNER, c.TPM_RH_ENDORSEMENT, c.TPM_RH_PLATFORM):
            self.state.proofs[hierarchy] = rng.generate(32)
        self._reset_pcrs(startup_locality=0, restore=False)
        self.state.pcr_update_counter = 0
        self.state.power_on_ms = now_ms()

    # -- power ------------------------------------------------------------
    def power_on(self) -> None:
        """_TPM_Init: the TPM needs TPM2_Startup again; PCRs keep their values
        until that Startup decides what they become."""
        s = self.state
        now = self.now_ms()
        s.clock_ms += max(0, now - s.power_on_ms)
        s.power_on_ms = now
        s.started = False

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
        if cmd.pcr_handle:
            with _numbered(c.TPM_RC_H, 1):
                handles.append(self._unmarshal_pcr_handle(r, cmd.allow_null))

        sessions = 0
        if tag == c.TPM_ST_SESSIONS:
            sessions = self._parse_sessions(r, auth_handles=len(handles))
        elif handles:
            raise TpmError(c.TPM_RC_AUTH_MISSING)

        handler: Callable[[Reader, list[int], int], bytes] = getattr(self, "_cmd_" + cmd.handler)
        params = handler(r, handles, locality)
        if tag == c.TPM_ST_SESSIONS:
            body = (
                u32(len(params)) + params + (u16(0) + u8(c.TPMA_SESSION_CONTINUESESSION) + u16(0)) * sessions
            )
        else:
            body = params
        return u16(tag) + u32(10 + len(body)) + u32(c.TPM_RC_SUCCESS) + body

    def _unmarshal_pcr_handle(self, r: Reader, allow_null: bool) -> int:
        """TPMI_DH_PCR (+ TPM_RH_NULL when *allow_null*)."""
        handle = r.u32()
        if handle < c.IMPLEMENTATION_PCR or (allow_null and handle == c.TPM_RH_NULL):
            return handle
        raise TpmError(c.TPM_RC_VALUE)

    def _parse_sessions(self, r: Reader, auth_handles: int) -> int:
        """Parse and check the authorization area; return the session count.

        Each handle needing authorization here is a PCR (or TPM_RH_NULL),
        whose authValue is the empty password.
        """
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
                if index >= auth_handles:
                    raise TpmError(c.TPM_RC_HANDLE)
                if password:  # a PCR's authValue is empty
                    raise TpmError(c.TPM_RC_BAD_AUTH)
        if len(sessions) < auth_handles:
            raise TpmError(c.TPM_RC_AUTH_MISSING)
        return len(sessions)

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
        for alg in c.HASH_ALGS:
            if alg not in s.banks:
                s.pcrs.pop(alg, None)
        for pcr in range(c.IMPLEMENTATION_PCR):
            restored = restore and PCR_ATTRIBUTES[pcr].state_save
            for alg in s.banks:
                size = c.HASH_ALGS[alg][1]
                bank = s.pcrs.setdefault(alg, [bytes(size)] * c.IMPLEMENTATION_PCR)
                if restored:
                    bank[pcr] = s.saved_pcrs[alg][pcr]
                else:
                    bank[pcr] = initial_value(pcr, size, startup_locality)
            if not restored:
                self._pcr_changed(pcr)

    def _pcr_changed(self, pcr: int) -> None:
        if pcr not in NO_INCREMENT_PCRS:
            self.state.pcr_update_counter = (self.state.pcr_update_counter + 1) & 0xFFFFFFFF

    def _extend(self, pcr: int, alg: int, data: bytes) -> None:
        bank = self.state.pcrs.get(alg)
        if bank is None:  # an implemented but unallocated bank: nothing to do
            return
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
        if s.shutdown_type == c.TPM_SU_STATE:
            # TPM Resume (STATE) or TPM Restart (CLEAR): counter survives
            s.restart_count += 1
            s.pcr_update_counter = s.saved_pcr_update_counter
        else:
            # TPM Reset
            s.reset_count += 1
            s.restart_count = 0
            s.pcr_update_counter = 0
        self._reset_pcrs(locality, restore=startup_type == c.TPM_SU_STATE)
        s.shutdown_type = None
        s.saved_pcrs = {}
        s.started = True
        return b""

    def _cmd_shutdown(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            shutdown_type = r.u16()
            if shutdown_type not in (c.TPM_SU_CLEAR, c.TPM_SU_STATE):
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        s = self.state
        s.shutdown_type = shutdown_type
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
            for pcr in range(len(select) * 8):
                bit = 1 << (pcr % 8)
                if not select[pcr // 8] & bit:
                    continue
                if bank is None or pcr >= c.IMPLEMENTATION_PCR or len(digests) == 8:
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

    def _cmd_pcr_event(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        self._end(r)
        pcr = handles[0]
        self._check_extend_locality(pcr, locality)
        # The digests of every implemented hash are returned; only the
        # allocated banks are extended (reference TPM2_PCR_Event()).
        digests = [(alg, _digest(alg, data)) for alg in c.HASH_ALGS]
        if pcr != c.TPM_RH_NULL:
            for alg, digest in digests:
                self._extend(pcr, alg, digest)
            self._invalidate_saved_state()
        return u32(len(digests)) + b"".join(u16(alg) + digest for alg, digest in digests)

    def _cmd_pcr_reset(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        pcr = handles[0]
        # Locality 4 never resets a PCR: it belongs to the DRTM sequence.
        if locality == 4 or not PCR_ATTRIBUTES[pcr].reset_localities >> locality & 1:
            raise TpmError(c.TPM_RC_LOCALITY)
        for alg, bank in self.state.pcrs.items():
            bank[pcr] = bytes(c.HASH_ALGS[alg][1])
        self._pcr_changed(pcr)
        self._invalidate_saved_state()
        return b""

    # -- commands: hashing and time --------------------------------------
    def _cmd_hash(self, r: Reader, handles: list[int], locality: int) -> bytes:
        with _param(1):
            data = r.tpm2b(c.MAX_DIGEST_BUFFER)
        with _param(2):
            alg = _unmarshal_hash_alg(r)
        with _param(3):
            hierarchy = r.u32()
            if hierarchy not in (c.TPM_RH_OWNER, c.TPM_RH_ENDORSEMENT, c.TPM_RH_PLATFORM, c.TPM_RH_NULL):
                raise TpmError(c.TPM_RC_VALUE)
        self._end(r)
        digest = _digest(alg, data)
        # Part 3 15.4: a NULL ticket for the NULL hierarchy or for data that
        # could be a TPM-generated structure (starts with TPM_GENERATED_VALUE).
        if hierarchy == c.TPM_RH_NULL or data[:4] == c.TPM_GENERATED_VALUE.to_bytes(4, "big"):
            ticket = u16(c.TPM_ST_HASHCHECK) + u32(c.TPM_RH_NULL) + tpm2b(b"")
        else:
            mac = _crypto.hmac("sha256", self.state.proofs[hierarchy], u16(c.TPM_ST_HASHCHECK) + digest)
            ticket = u16(c.TPM_ST_HASHCHECK) + u32(hierarchy) + tpm2b(mac)
        return tpm2b(digest) + ticket

    def _cmd_read_clock(self, r: Reader, handles: list[int], locality: int) -> bytes:
        self._end(r)
        s = self.state
        elapsed = max(0, self.now_ms() - s.power_on_ms)
        # TPMS_TIME_INFO: time since power-on, then TPMS_CLOCK_INFO.
        return u64(elapsed) + u64(s.clock_ms + elapsed) + u32(s.reset_count) + u32(s.restart_count) + u8(1)

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
            full = b"\xff" * c.PCR_SELECT_MAX
            data = _marshal_pcr_selection(
                [
                    (alg, bytearray(full if alg in self.state.banks else bytes(c.PCR_SELECT_MAX)))
                    for alg in c.HASH_ALGS
                ]
            )
        elif capability == c.TPM_CAP_HANDLES:
            if prop >> 24 not in (0x00, 0x01, 0x02, 0x03, 0x40, 0x80, 0x81):
                raise _rc(TpmError(c.TPM_RC_VALUE), c.TPM_RC_P, 2)
            more, data = False, u32(0)  # no NV index, session, object or permanent handle to list
            if prop >> 24 == 0x00:  # PCR handles
                pcrs = list(range(prop, c.IMPLEMENTATION_PCR))
                more, pcrs = _limit(pcrs, count, _MAX_CAP_HANDLES)
                data = u32(len(pcrs)) + b"".join(u32(p) for p in pcrs)
        else:
            raise _rc(TpmError(c.TPM_RC_VALUE), c.TPM_RC_P, 1)
        return u8(int(more)) + u32(capability) + data

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

    def _variable_properties(self) -> dict[int, int]:
        """TPM_PT_VAR properties (Part 2 6.13)."""
        s = self.state
        startup_clear = 0x0000000F | (0x80000000 if s.orderly else 0)  # ph/sh/eh/phEnableNV, orderly
        props = {
            c.PT_VAR + 0: 0,  # TPM_PT_PERMANENT
            c.PT_VAR + 1: startup_clear,  # TPM_PT_STARTUP_CLEAR
        }
        # HR_*, NV counters, algorithm set, loaded curves: this TPM has none.
        props.update({c.PT_VAR + i: 0 for i in range(2, 14)})
        props.update(
            {
                c.PT_VAR + 14: 0,  # TPM_PT_LOCKOUT_COUNTER
                c.PT_VAR + 15: 0,  # TPM_PT_MAX_AUTH_FAIL
                c.PT_VAR + 16: 0,  # TPM_PT_LOCKOUT_INTERVAL
                c.PT_VAR + 17: 0,  # TPM_PT_LOCKOUT_RECOVERY
                c.PT_VAR + 18: 0,  # TPM_PT_NV_WRITE_RECOVERY
                c.PT_VAR + 19: 0,  # TPM_PT_AUDIT_COUNTER_0
                c.PT_VAR + 20: 0,  # TPM_PT_AUDIT_COUNTER_1
            }
        )
        return props


def _limit(items: list[int], count: int, maximum: int) -> tuple[bool, list[int]]:
    """Return (moreData, the first min(count, maximum) items)."""
    n = min(count, maximum)
    return len(items) > n, items[:n]
