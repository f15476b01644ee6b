"""A TPM 1.2 command engine: the subset firmware and QEMU's probes use.

TCG TPM Main Specification 1.2 rev. 116, Part 2 (structures) and Part 3
(commands), with the PC Client profile's PCR attributes (:mod:`._pcr`; the
extend localities of TPM 1.2 PCRs are the same as TPM 2.0's). Commands:
TPM_Startup, TPM_PcrRead, TPM_Extend, TPM_GetRandom, TPM_GetCapability
(a subset), TPM_ContinueSelfTest, TPM_GetTicks.

Processing order (as libtpms 0.9 behind swtpm 0.7.1 answers; each step's
error wins over the later ones):

1. fewer than 10 bytes, or paramSize differing from the length:
   TPM_BAD_PARAM_SIZE;
2. unknown ordinal: TPM_BAD_ORDINAL;
3. before TPM_Startup anything else, and TPM_Startup after it:
   TPM_INVALID_POSTINIT. A TPM_Startup that gets this far ends the
   post-initialisation state even if its parameters are then refused;
4. failure mode (after a TPM_Startup(ST_STATE) with nothing saved): every
   command but TPM_GetCapability of the version answers TPM_FAILEDSELFTEST
   until power-on;
5. deactivated (TPM_Startup(ST_DEACTIVATED)): TPM_PcrRead, TPM_GetRandom and
   TPM_GetTicks answer TPM_DEACTIVATED; TPM_Extend extends but returns zeros;
6. a tag other than TPM_TAG_RQU_COMMAND (none of these commands takes an
   authorization): TPM_BADTAG;
7. parameters of the wrong length: TPM_BAD_PARAM_SIZE; bad values:
   TPM_BAD_PARAMETER, TPM_BADINDEX (PCR index), TPM_BAD_MODE (capability);

Responses, errors included, carry tag TPM_TAG_RSP_COMMAND.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tpmdev.backends.builtin import _constants as c
from tpmdev.backends.builtin import _crypto
from tpmdev.backends.builtin._marshal import Reader, TpmError, u16, u32, u64
from tpmdev.backends.builtin._pcr import PCR_ATTRIBUTES
from tpmdev.backends.builtin._rng import Rng

__all__ = ["ORDINALS", "Tpm12", "Tpm12State"]

_TPM_FAILEDSELFTEST = 0x1C
_TPM_BAD_MODE = 0x2C
_NUM_PCRS = 24
_BUFFER_SIZE = 4096
_VENDOR_ID = b"TPMD"
#: TPM_CAP_PROP_TIS_TIMEOUT: TIMEOUT_A..D in microseconds (PC Client TIS defaults).
_TIS_TIMEOUTS = (750_000, 2_000_000, 750_000, 750_000)
#: TPM_CAP_PROP_TIS_DURATION: short, medium, long command durations in microseconds.
_TIS_DURATIONS = (2_000_000, 20_000_000, 60_000_000)
_TPM_CAP_VERSION = 0x00000006
_TPM_CAP_PROP_DIR = 0x00000102
_TPM_CAP_PROP_TIS_TIMEOUT = 0x00000115
_TPM_CAP_PROP_DURATION = 0x00000120

_REFUSED_WHEN_DEACTIVATED = frozenset({c.TPM_ORD_PcrRead, c.TPM_ORD_GetRandom, c.TPM_ORD_GetTicks})

ORDINALS = frozenset(
    {
        c.TPM_ORD_Startup,
        c.TPM_ORD_PcrRead,
        c.TPM_ORD_Extend,
        c.TPM_ORD_GetRandom,
        c.TPM_ORD_GetCapability,
        c.TPM_ORD_ContinueSelfTest,
        c.TPM_ORD_GetTicks,
    }
)


@dataclass
class Tpm12State:
    """Everything the TPM 1.2 remembers, as plain data."""

    pcrs: list[bytes] = field(default_factory=lambda: [bytes(20)] * _NUM_PCRS)
    post_initialise: bool = True
    deactivated: bool = False
    failure_mode: bool = False
    #: PCR values saved by a TPM_SaveState (not implemented, so always None).
    saved_pcrs: list[bytes] | None = None
    power_on_us: int = 0
    tick_nonce: bytes = bytes(20)


class Tpm12:
    """The TPM 1.2 engine. Sans-IO: bytes in, bytes out, time from *now_ms*."""

    def __init__(self, rng: Rng, now_ms: Callable[[], int]) -> None:
        self.rng = rng
        self.now_ms = now_ms
        self.state = Tpm12State()
        self.power_on()

    def power_on(self) -> None:
        """TPM_Init: wait for TPM_Startup; a new tick session begins.

        PCRs get their initial values here (TPM_Init), so a TPM whose
        TPM_Startup failed still has them; TPM_Startup(ST_STATE) may then
        restore saved ones. PCRs that only the DRTM (locality 4) may reset
        start as all ones.
        """
        s = self.state
        s.pcrs = [
            b"\xff" * 20 if PCR_ATTRIBUTES[i].reset_localities & 0x10 else bytes(20) for i in range(_NUM_PCRS)
        ]
        s.post_initialise = True
        s.failure_mode = False
        s.deactivated = False
        s.power_on_us = self.now_ms() * 1000
        s.tick_nonce = self.rng.generate(20)

    def execute(self, command: bytes, locality: int) -> bytes:
        try:
            body = self._execute(command, locality)
            return u16(c.TPM_TAG_RSP_COMMAND) + u32(10 + len(body)) + u32(c.TPM_SUCCESS) + body
        except TpmError as err:
            return u16(c.TPM_TAG_RSP_COMMAND) + u32(10) + u32(err.rc)

    def _execute(self, command: bytes, locality: int) -> bytes:
        if len(command) < 10:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)
        r = Reader(command)
        tag = r.u16()
        if r.u32() != len(command) or len(command) > _BUFFER_SIZE:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)
        ordinal = r.u32()
        if ordinal not in ORDINALS:
            raise TpmError(c.TPM_BAD_ORDINAL)
        s = self.state
        if s.post_initialise != (ordinal == c.TPM_ORD_Startup):
            raise TpmError(c.TPM_INVALID_POSTINIT)
        if s.failure_mode and not self._allowed_in_failure_mode(ordinal, command):
            raise TpmError(_TPM_FAILEDSELFTEST)
        if s.deactivated and ordinal in _REFUSED_WHEN_DEACTIVATED:
            raise TpmError(c.TPM_DEACTIVATED)
        if tag != c.TPM_TAG_RQU_COMMAND:
            raise TpmError(c.TPM_BADTAG)
        if locality > 4:
            raise TpmError(c.TPM_BAD_LOCALITY)
        if ordinal == c.TPM_ORD_Startup:
            s.post_initialise = False
            return self._startup(r)
        if ordinal == c.TPM_ORD_GetCapability:
            return self._get_capability(r)
        if ordinal == c.TPM_ORD_ContinueSelfTest:
            self._end(r)
            return b""
        if ordinal == c.TPM_ORD_Extend:
            return self._extend(r, locality)
        if ordinal == c.TPM_ORD_PcrRead:
            index = self._pcr_index(r)
            self._end(r)
            return s.pcrs[index]
        if ordinal == c.TPM_ORD_GetRandom:
            requested = self._u32(r)
            self._end(r)
            # as many bytes as fit in a response buffer (14 bytes of header
            # and randomBytesSize)
            return u32(n := min(requested, _BUFFER_SIZE - 14)) + self.rng.generate(n)
        # TPM_GetTicks: TPM_CURRENT_TICKS (Part 2 15.1), tickRate 1 µs per tick
        self._end(r)
        ticks = max(0, self.now_ms() * 1000 - s.power_on_us)
        return u16(c.TPM_TAG_CURRENT_TICKS) + u64(ticks) + u16(1) + s.tick_nonce

    @staticmethod
    def _allowed_in_failure_mode(ordinal: int, command: bytes) -> bool:
        """Part 1 "Self-Test Failure": only the version may still be read."""
        cap_area = int.from_bytes(command[10:14], "big")
        return ordinal == c.TPM_ORD_GetCapability and cap_area in (_TPM_CAP_VERSION, c.TPM_CAP_VERSION_VAL)

    # -- helpers ------------------------------------------------------------
    @staticmethod
    def _u32(r: Reader) -> int:
        if r.remaining < 4:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)
        return r.u32()

    @staticmethod
    def _end(r: Reader) -> None:
        if r.remaining:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)

    def _pcr_index(self, r: Reader) -> int:
        index = self._u32(r)
        if index >= _NUM_PCRS:
            raise TpmError(c.TPM_BADINDEX)
        return index

    # -- commands -----------------------------------------------------------
    def _startup(self, r: Reader) -> bytes:
        if r.remaining != 2:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)
        startup_type = r.u16()
        s = self.state
        if startup_type == c.TPM_ST_STATE:
            if s.saved_pcrs is None:
                # Part 3 3.2: nothing to restore is a fatal error.
                s.failure_mode = True
                raise TpmError(_TPM_FAILEDSELFTEST)
            s.pcrs = list(s.saved_pcrs)
        elif startup_type in (c.TPM_ST_CLEAR, c.TPM_ST_DEACTIVATED):
            s.deactivated = startup_type == c.TPM_ST_DEACTIVATED
        else:
            raise TpmError(c.TPM_BAD_PARAMETER)
        s.saved_pcrs = None
        return b""

    def _extend(self, r: Reader, locality: int) -> bytes:
        index = self._pcr_index(r)
        if r.remaining != 20:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)
        digest = r.take(20)
        if not PCR_ATTRIBUTES[index].extend_localities >> locality & 1:
            raise TpmError(c.TPM_BAD_LOCALITY)
        s = self.state
        s.pcrs[index] = _crypto.digest("sha1", s.pcrs[index] + digest)
        # Part 3 16.1: a deactivated TPM extends but does not reveal the value.
        return bytes(20) if s.deactivated else s.pcrs[index]

    def _get_capability(self, r: Reader) -> bytes:
        cap_area = self._u32(r)
        sub_cap_size = self._u32(r)
        if r.remaining != sub_cap_size:
            raise TpmError(c.TPM_BAD_PARAM_SIZE)
        sub_cap = r.take(sub_cap_size)
        if cap_area == c.TPM_CAP_PROPERTY:
            if len(sub_cap) != 4:
                raise TpmError(_TPM_BAD_MODE)
            data = self._property(int.from_bytes(sub_cap, "big"))
        elif cap_area == _TPM_CAP_VERSION:
            data = bytes((1, 1, 0, 0))  # TPM_STRUCT_VER, fixed at 1.1.0.0
        elif cap_area == c.TPM_CAP_VERSION_VAL:
            # TPM_CAP_VERSION_INFO: tag, TPM_VERSION 1.2 + firmware 0.1,
            # specLevel 2, errataRev 3 (rev 116), vendor id, no vendor data
            data = (
                u16(c.TPM_TAG_CAP_VERSION_INFO)
                + bytes((1, 2, 0, 1))
                + u16(2)
                + bytes((3,))
                + _VENDOR_ID
                + u16(0)
            )
        else:
            raise TpmError(_TPM_BAD_MODE)
        return u32(len(data)) + data

    @staticmethod
    def _property(prop: int) -> bytes:
        if prop == c.TPM_CAP_PROP_PCR:
            return u32(_NUM_PCRS)
        if prop == _TPM_CAP_PROP_DIR:
            return u32(1)
        if prop == c.TPM_CAP_PROP_MANUFACTURER:
            return _VENDOR_ID
        if prop == c.TPM_CAP_PROP_INPUT_BUFFER:
            return u32(_BUFFER_SIZE)
        if prop == _TPM_CAP_PROP_TIS_TIMEOUT:
            return b"".join(u32(t) for t in _TIS_TIMEOUTS)
        if prop == _TPM_CAP_PROP_DURATION:
            return b"".join(u32(t) for t in _TIS_DURATIONS)
        raise TpmError(_TPM_BAD_MODE)
