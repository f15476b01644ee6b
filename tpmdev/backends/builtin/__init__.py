"""The builtin backend: a software TPM in pure Python.

Works with nothing but the package's own dependencies. It speaks the real
wire formats -- TPM 2.0 (TCG TPM 2.0 Library rev. 1.59, Parts 2 and 3) or a
TPM 1.2 subset (TPM Main 1.2 rev. 116) -- for the commands firmware, QEMU's
version probe and an OS boot use, and answers everything else with the error
a TPM gives (TPM_RC_COMMAND_CODE / TPM_BAD_ORDINAL).

TPM 2.0 commands (details in :mod:`._tpm2`): Startup, Shutdown, SelfTest,
IncrementalSelfTest, GetTestResult, GetRandom, StirRandom, GetCapability,
ReadClock, PCR_Read, PCR_Extend, PCR_Event, PCR_Reset, PCR_Allocate, Hash,
HashSequenceStart, SequenceUpdate, SequenceComplete, EventSequenceComplete,
FlushContext, ReadPublic (no keys: only sequence objects exist),
HierarchyChangeAuth, Clear, ClearControl, ChangeEPS, NV_DefineSpace, NV_UndefineSpace, NV_ReadPublic,
NV_Write, NV_Read, NV_Increment, NV_Extend, NV_SetBits, NV_WriteLock,
NV_ReadLock. Authorization is by password session only (TPM_RS_PW); HMAC and
policy sessions, keys and persistent objects are out of scope.

TPM 1.2 commands (:mod:`._tpm12`): TPM_Startup, TPM_PcrRead, TPM_Extend,
TPM_GetRandom, TPM_GetCapability (a subset), TPM_ContinueSelfTest,
TPM_GetTicks.

Theory of operation
-------------------

:class:`Builtin` is a thin :class:`~tpmdev.backends.Backend` around one
engine, :class:`~._tpm2.Tpm2` or :class:`~._tpm12.Tpm12`. An engine is a
sans-IO state machine: ``execute(command, locality) -> response`` reads
nothing but its arguments, its state and two injected sources -- an
:class:`~._rng.Rng` and a millisecond clock -- and never raises for any byte
string. Malformed input gets the response code a TPM gives (the order of the
checks is documented at the top of each engine module and cross-checked
against swtpm 0.7.1 / libtpms 0.9.2 in the tests).

Power: a new Builtin is a TPM that was just powered on; :meth:`startup` is
another power-on (``_TPM_Init``). Either way the guest must send
TPM(2)_Startup before anything else, and the TPM answers TPM_RC_INITIALIZE
(TPM 1.2: TPM_INVALID_POSTINIT) until it does.

State: everything a TPM remembers lives in one dataclass per engine
(``Tpm2State`` / ``Tpm12State``: PCR banks and allocation, NV indices,
hierarchy proofs and authValues, sequence objects, dictionary-attack
counters, saved state, clock), plain Python values only.
:meth:`Builtin.get_state` turns it into swtpm's three blobs (``permanent``,
``volatile``, ``savestate``) in our own versioned, integrity-checked format
(:mod:`._state`), and :meth:`Builtin.set_state` loads them into another
Builtin of the same TPM family, which then carries on as if it had never
stopped -- like swtpm after SET_STATEBLOB and INIT. A bad blob raises
:class:`tpmdev.StateError` and changes nothing.

Determinism: ``Builtin(seed=...)`` makes random bytes and secrets come from a
seeded DRBG and time from a virtual clock that advances one millisecond each
time the TPM reads it; the same command sequence then gives the same bytes. Without a seed,
``os.urandom`` and the host's monotonic clock are used.

Localities: ``execute(command, locality)`` runs the command at *locality*
(0-4); it decides which PCRs may be extended or reset (PC Client rules, see
:mod:`._pcr`) and where TPM2_Startup is allowed (0 and 3; at 3 PCR 0 starts
as ``00..03``). Other localities are a host error (the backend contract,
:mod:`tpmdev.backends.base`); the engine alone, given one, answers
TPM_RC_LOCALITY / TPM_BAD_LOCALITY.

Digests and MACs come from ``cryptography`` (:mod:`._crypto`), for SHA-1,
SHA-256, SHA-384 and SHA-512. PCR banks SHA-1 and SHA-256 are allocated by
default (``pcr_banks=`` chooses others; the guest may change the allocation
with TPM2_PCR_Allocate, which takes effect at the next power-on).

Threads: :meth:`execute` may run on a worker while :meth:`cancel` is called
from another thread. A command runs synchronously to its end in
microseconds, with no point at which it could stop early, so there is
nothing for :meth:`cancel` to stop: it does nothing (as QEMU's backends
that cannot cancel), and the guest gets the command's own response.

Established flag: this TPM has no dynamic-root-of-trust interface
(_TPM_Hash_Start), so the flag is never set; :meth:`get_established_flag`
answers False at once, from nothing that could go stale.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from typing import Any, Callable, ClassVar

from tpmdev.backends.base import Backend, check_tpm_version
from tpmdev.backends.builtin import _constants, _state
from tpmdev.backends.builtin._rng import Rng
from tpmdev.backends.builtin._tpm2 import Tpm2
from tpmdev.backends.builtin._tpm12 import Tpm12
from tpmdev.errors import ConfigurationError

__all__ = ["Builtin"]

_BANK_NAMES = {name: alg for alg, (name, _size) in _constants.HASH_ALGS.items()}


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _VirtualClock:
    """Milliseconds that advance by one each time they are read."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        self.ms += 1
        return self.ms


class Builtin(Backend):
    """A software TPM (TPM 2.0 by default, or TPM 1.2) running in-process.

    :param tpm_version: 2 for TPM 2.0, 1 for TPM 1.2.
    :param seed: make random numbers and time deterministic (see the module
        docstring): an int >= 0 or bytes; ``None`` uses ``os.urandom`` and
        the host clock.
    :param pcr_banks: TPM 2.0 PCR banks to allocate, by hash name
        (``"sha1"``, ``"sha256"``, ``"sha384"``, ``"sha512"``).

    Raises :class:`tpmdev.ConfigurationError` for an unusable option.
    """

    state_kind: ClassVar[str] = "builtin"

    def __init__(
        self,
        tpm_version: int = 2,
        seed: int | bytes | None = None,
        pcr_banks: Iterable[str] = ("sha1", "sha256"),
    ) -> None:
        tpm_version = check_tpm_version(tpm_version)
        seed = _check_seed(seed)
        if isinstance(pcr_banks, (str, bytes)) or not isinstance(pcr_banks, Iterable):
            raise ConfigurationError(
                f"pcr_banks must be a collection of hash names such as ('sha256',), not {pcr_banks!r}"
            )
        banks = tuple(pcr_banks)
        unknown = [b for b in banks if not isinstance(b, str) or b not in _BANK_NAMES]
        if unknown or not banks:
            raise ConfigurationError(
                f"pcr_banks must be a non-empty subset of {sorted(_BANK_NAMES)}, not {banks!r}"
            )
        self._version = tpm_version
        self._rng = Rng(seed)
        self._clock: Callable[[], int] = _VirtualClock() if seed is not None else _monotonic_ms
        self._engine: Tpm2 | Tpm12
        if tpm_version == 2:
            algs = tuple(sorted({_BANK_NAMES[b] for b in banks}))
            self._engine = Tpm2(self._rng, self._clock, algs)
        else:
            self._engine = Tpm12(self._rng, self._clock)
        #: the snapshot whose state the TPM still has (None once anything ran)
        self._clean: object = None

    @property
    def tpm_version(self) -> int:
        return self._version

    @property
    def engine(self) -> Tpm2 | Tpm12:
        """The command engine (its ``state`` holds all TPM state)."""
        return self._engine

    def _execute(self, command: bytes, locality: int) -> bytes:
        # Always a well-formed response: the engine never raises for any bytes.
        self._clean = None
        return self._engine.execute(command, locality)

    def _cancel(self) -> None:
        """Nothing to stop: a command runs synchronously to its end (see the
        module documentation), so the guest gets its own response."""

    def _startup(self, buffer_size: int) -> None:
        """Power the TPM on (_TPM_Init); the guest then sends TPM(2)_Startup.

        The buffer is 4096 bytes whatever *buffer_size* says (the engine has
        no smaller limit to apply).
        """
        self._clean = None
        self._engine.power_on()

    # -- state save/restore ---------------------------------------------------
    def _virtual_ms(self) -> int | None:
        return self._clock.ms if isinstance(self._clock, _VirtualClock) else None

    def _now_after_restore(self, virtual_ms: int | None) -> int:
        if isinstance(self._clock, _VirtualClock):
            return self._clock.ms if virtual_ms is None else virtual_ms
        return self._clock()

    def _get_state(self) -> dict[str, bytes]:
        """The TPM's state as ``permanent`` / ``volatile`` / ``savestate`` blobs
        (format and contents: :mod:`tpmdev.backends.builtin._state`)."""
        dump = _state.tpm2_dump if isinstance(self._engine, Tpm2) else _state.tpm12_dump
        return dump(self._engine, self._rng.get_key(), self._virtual_ms)

    def _set_state(self, state: dict[str, Any]) -> None:
        """Load blobs from :meth:`get_state` of a Builtin of the same TPM family.

        The TPM then continues as if it had never stopped (no new Startup is
        needed), like swtpm after SET_STATEBLOB and INIT; with an empty
        ``volatile`` blob it is a TPM that lost power and waits for Startup.
        Bad blobs raise :class:`tpmdev.StateError` and change nothing.
        """
        load = _state.tpm2_load if isinstance(self._engine, Tpm2) else _state.tpm12_load
        self._clean = None
        drbg, virtual_ms = load(self._engine, state, self._now_after_restore)
        if self._rng.deterministic and drbg is not None:
            self._rng.set_key(drbg)
        if isinstance(self._clock, _VirtualClock) and virtual_ms is not None:
            self._clock.ms = virtual_ms

    def close(self) -> None:
        self._closed = True

    # -- in-memory snapshots ----------------------------------------------------
    def _snapshot(self) -> object:
        """The engine's state pickled (plain data), the DRBG key and the
        virtual clock: a copy taken in microseconds, for a device's
        ``snapshot()``."""
        self._check_usable()
        state = pickle.dumps(self._engine.state, pickle.HIGHEST_PROTOCOL)
        token = (state, self._rng.get_key(), self._virtual_ms())
        self._clean = token
        return token

    def _rollback(self, snapshot: Any) -> None:
        """Back to a :meth:`_snapshot` of this Builtin. Free when nothing ran
        since that snapshot was taken or last rolled back to (the TPM still
        has its state); else one unpickling of the engine's state."""
        self._check_usable()
        if self._clean is snapshot:
            return
        self._engine.state = pickle.loads(snapshot[0])
        self._rng.set_key(snapshot[1])
        if isinstance(self._clock, _VirtualClock) and snapshot[2] is not None:
            self._clock.ms = snapshot[2]
        self._clean = snapshot


def _check_seed(seed: object) -> int | bytes | None:
    if seed is None:
        return None
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    if isinstance(seed, (bytes, bytearray, memoryview)):
        return bytes(seed)
    raise ConfigurationError(f"seed must be None, an int >= 0 or bytes, not {seed!r}")
