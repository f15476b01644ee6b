"""The backend interface: what a frontend needs from a TPM.

Shaped like QEMU's TPM backend class. A frontend (TIS, CRB, ...) never talks
to a TPM directly: its device layer calls these methods. All of them are
synchronous; the device layer decides whether a command runs on the caller's
thread (deterministic, the default) or on a worker thread. :meth:`cancel` and
the established-flag methods may be called from another thread while
:meth:`execute` runs.

Lifecycle, as QEMU drives it at every machine reset::

    size = backend.get_buffer_size()      # what the TPM can take
    backend.reset()                        # finish/cancel anything in flight
    backend.startup(min(size, 4096))       # power the TPM on (TPM_Init)

The guest (firmware) then sends TPM(2)_Startup itself; a backend never does.

The contract, enforced here once
--------------------------------
The public methods are written in this class; a backend implements the
inner steps (``_execute``, ``_startup``, ``_set_state``, ...). Before an
inner step runs, the base class has checked:

* the arguments. A command is a bytes-like object (``bytes``,
  ``bytearray``, ``memoryview`` or anything else with the buffer protocol)
  of at most :data:`MAX_COMMAND_SIZE` bytes; a locality is an ``int``
  (``bool`` is refused) in :data:`LOCALITIES`, the five localities of the
  TCG PC Client platform (0..4), for every backend; a buffer size is an
  ``int`` 0..2**32-1 (each TPM clamps it to what it can do); a state is a
  mapping of some of :data:`STATE_KEYS` to bytes-like values. Anything else
  is host misuse: :class:`tpmdev.AccessError` for an argument,
  :class:`tpmdev.StateError` for the shape of a state. What a command
  *says* is never checked here: that is the guest's business, and the TPM
  answers malformed commands itself (a backend whose transport cannot carry
  a command shorter than a header refuses it with
  :class:`tpmdev.BackendError`, as the guest's TPM_FAIL).
* the latch. After :meth:`close` every method except :meth:`close` and
  :meth:`cancel` raises :class:`tpmdev.StateError`. A backend that lost
  track of its TPM (a timeout, a garbled stream, a restart that failed)
  calls :meth:`_fail`; from then on :meth:`execute`, :meth:`startup`,
  :meth:`get_state` and :meth:`set_state` raise
  :class:`tpmdev.BackendError` at once, naming the first failure, and
  :attr:`failure` says why. Create a new backend to recover.

Errors: a backend raises :class:`tpmdev.BackendError` when a command cannot
be run (dead process, timeout, garbled reply). A device layer turns that into
:data:`tpmdev.wire.FATAL_RESPONSE` for the guest, as QEMU does.

The established flag (TIS ACCESS.tpmEstablishment, CRB tpmEstablished) is
asked with :meth:`get_established_flag` on every read of the register that
shows it, so a backend answers it cheaply and never from a stale copy: the
TPM's own flag (Builtin, Libtpms), or a cache that is dropped by everything
that can change the flag (Emulator, as QEMU keeps it).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from tpmdev.errors import AccessError, BackendError, ConfigurationError, StateError

__all__ = [
    "Backend",
    "DEFAULT_BUFFER_SIZE",
    "LOCALITIES",
    "MAX_COMMAND_SIZE",
    "MAX_RESPONSE_SIZE",
    "STATE_KEYS",
    "as_bytes",
    "check_locality",
    "check_path",
    "check_timeout",
    "check_tpm_version",
]

#: The keys of :meth:`Backend.get_state`: swtpm's three state blobs.
STATE_KEYS = ("permanent", "volatile", "savestate")

#: Buffer size assumed when a backend cannot say (QEMU's default).
DEFAULT_BUFFER_SIZE = 4096

#: Largest response a backend reads from a TPM process or device. QEMU trusts
#: the size a TPM announces; backends refuse anything bigger, so a garbled
#: header cannot make them allocate or wait without bound. Fixed rather than
#: the negotiated buffer size, so it does not depend on the order of calls; a
#: frontend still decides what to do with a response larger than its buffer.
MAX_RESPONSE_SIZE = 0x10000

#: Largest command :meth:`Backend.execute` takes. No frontend buffer comes
#: near it (TIS: 4096 bytes); a longer one is a host error, not a command.
MAX_COMMAND_SIZE = MAX_RESPONSE_SIZE

#: The localities a command, a flag reset or a hash sequence may name: the
#: five of the TCG PC Client platform. swtpm and libtpms know no others, and
#: every frontend QEMU has stays inside them.
LOCALITIES = range(5)

_MAX_LOCALITY = LOCALITIES[-1]
_MAX_U32 = 0xFFFFFFFF

_B = TypeVar("_B", bound="Backend")


def as_bytes(data: object, what: str) -> bytes:
    """*data* (any bytes-like object) as bytes, or an AccessError naming *what*.

    ``int`` is refused although ``bytes(12)`` would take it (twelve zeros),
    and so is ``str`` (which has no one encoding of a TPM command).
    """
    if type(data) is bytes:
        return data
    if not isinstance(data, (int, str)):
        try:
            with memoryview(data) as view:  # type: ignore[arg-type]
                return view.tobytes()
        except TypeError:
            pass
    raise AccessError(f"{what} must be bytes-like (bytes, bytearray, memoryview), got {type(data).__name__}")


def check_locality(locality: object) -> int:
    """*locality* as an int in :data:`LOCALITIES`, or an AccessError."""
    if isinstance(locality, int) and not isinstance(locality, bool) and 0 <= locality <= _MAX_LOCALITY:
        return int(locality)
    raise AccessError(f"locality must be an int 0..{_MAX_LOCALITY} (the TPM localities), got {locality!r}")


def check_tpm_version(tpm_version: object) -> int:
    """*tpm_version* as 1 (TPM 1.2) or 2 (TPM 2.0), or a ConfigurationError."""
    if isinstance(tpm_version, int) and not isinstance(tpm_version, bool) and tpm_version in (1, 2):
        return int(tpm_version)
    raise ConfigurationError(f"tpm_version must be 1 (TPM 1.2) or 2 (TPM 2.0), got {tpm_version!r}")


def check_path(path: object, name: str) -> str:
    """*path* (a str or ``os.PathLike`` of str) as str, or a ConfigurationError
    naming the argument *name*."""
    try:
        value = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        value = None
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigurationError(f"{name} must be a path (str or os.PathLike), got {path!r}")
    return value


def check_timeout(timeout: float) -> float:
    """*timeout* as a positive number of seconds, or a ConfigurationError."""
    if isinstance(timeout, bool):
        t = 0.0
    else:
        try:
            t = float(timeout)
        except (TypeError, ValueError):
            t = 0.0
    if not t > 0 or t == float("inf"):
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return t


class Backend(abc.ABC):
    """Base class of every TPM backend.

    Subclasses implement :attr:`tpm_version` and :meth:`_execute`, and the
    other inner steps where they differ from QEMU's base class (no cancel,
    flag not established, 4096-byte buffer, no state). The public methods
    check arguments and the closed / failed latch, then call the inner step
    (see the module documentation).
    """

    #: Which device states the backend takes (:mod:`tpmdev._state`): ``"builtin"``,
    #: ``"libtpms"`` or ``"swtpm"`` (the two libtpms kinds load each other's),
    #: ``"passthrough"`` (no state), ``"other"`` (a class of the host's own: only
    #: states of the same class). Written into a saved state; subclasses inherit it.
    state_kind: ClassVar[str] = "other"

    _closed: bool = False
    _failure: str | None = None

    # -- identity -------------------------------------------------------
    @property
    @abc.abstractmethod
    def tpm_version(self) -> int:
        """1 for TPM 1.2, 2 for TPM 2.0, 0 if it could not be determined."""

    # -- commands -------------------------------------------------------
    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """Run one TPM command at *locality* (0..4) and return its response.

        *command* is any bytes-like object of at most
        :data:`MAX_COMMAND_SIZE` bytes. Raises :class:`tpmdev.AccessError`
        for a bad argument, :class:`tpmdev.StateError` after :meth:`close`,
        and :class:`tpmdev.BackendError` if the TPM could not run it.
        """
        # The hot path: the common case passes two type tests and a compare.
        cmd = command if type(command) is bytes else as_bytes(command, "command")
        if type(locality) is not int or not 0 <= locality <= _MAX_LOCALITY:
            locality = check_locality(locality)
        if len(cmd) > MAX_COMMAND_SIZE:
            raise AccessError(f"a TPM command is at most {MAX_COMMAND_SIZE} bytes, got {len(cmd)}")
        if self._closed or self._failure is not None:
            self._check_usable()
        return self._execute(cmd, locality)

    @abc.abstractmethod
    def _execute(self, command: bytes, locality: int) -> bytes:
        """Run *command* (bytes) at *locality* (0..4), arguments and latch checked."""

    def cancel(self) -> None:
        """Ask the TPM to cancel the command in flight, if it can.

        Callable from any thread; never raises, and does nothing after close.
        """
        if not self._closed:
            self._cancel()

    def _cancel(self) -> None:
        """Cancel the command in flight (default: cannot, as QEMU's base class)."""

    # -- power and reset ------------------------------------------------
    def startup(self, buffer_size: int = 0) -> None:
        """Power the TPM on with *buffer_size* (0 leaves it as it is).

        *buffer_size* is an int 0..2**32-1; the TPM clamps it to what it can do.
        """
        if (
            isinstance(buffer_size, bool)
            or not isinstance(buffer_size, int)
            or not 0 <= buffer_size <= _MAX_U32
        ):
            raise AccessError(f"buffer_size must be an int 0..2**32-1 (0: keep it), got {buffer_size!r}")
        self._check_usable()
        self._startup(int(buffer_size))

    def _startup(self, buffer_size: int) -> None:
        """Power on; *buffer_size* checked (default: nothing to do)."""

    def reset(self) -> None:
        """Machine reset: finish or cancel whatever is in flight."""
        self._check_open()
        self._reset()

    def _reset(self) -> None:
        """Finish or cancel the command in flight (default: nothing in flight)."""

    def get_buffer_size(self) -> int:
        """The largest command/response the TPM accepts, in bytes."""
        self._check_open()
        return self._get_buffer_size()

    def _get_buffer_size(self) -> int:
        return DEFAULT_BUFFER_SIZE

    # -- the TPM established flag (TIS ACCESS bit 0, CRB tpmEstablished) --
    def get_established_flag(self) -> bool:
        """Whether a dynamic root of trust was established (TPM_HASH_START).

        Asked on every read of the register that shows it: cheap, and right
        after anything that changed the flag.
        """
        if self._closed:
            self._check_open()
        return self._get_established_flag()

    def _get_established_flag(self) -> bool:
        return False

    def reset_established_flag(self, locality: int) -> None:
        """Clear the established flag as if asked from *locality* (TPM 2.0:
        the TPM takes it from locality 3 or 4 only)."""
        locality = check_locality(locality)
        self._check_open()
        self._reset_established_flag(locality)

    def _reset_established_flag(self, locality: int) -> None:
        """Clear the flag; *locality* checked (default: nothing to clear)."""

    # -- state save/restore (migration, snapshots) -------------------------
    def get_state(self) -> dict[str, bytes]:
        """The TPM's state as ``{"permanent", "volatile", "savestate"}`` blobs.

        An empty blob means "nothing of that kind" (as swtpm's 0x800 result).
        A command in flight must have finished. Backends without state
        support raise :class:`tpmdev.StateError`.
        """
        self._check_usable()
        return self._get_state()

    def _get_state(self) -> dict[str, bytes]:
        raise StateError(f"{type(self).__name__} cannot save its state (no migration support)")

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Load blobs from :meth:`get_state` (of this kind of backend) and restart
        the TPM from them, as QEMU does on the destination of a migration.

        *state* maps some of :data:`STATE_KEYS` to bytes-like blobs (a
        missing key is an empty blob). Raises :class:`tpmdev.StateError`
        for anything else, or for blobs the TPM cannot use.
        """
        if not isinstance(state, Mapping):
            raise StateError(
                f"state must be a mapping (a dict of blobs) of some of {list(STATE_KEYS)} to bytes, "
                f"got {type(state).__name__}"
            )
        unknown = [key for key in state if key not in STATE_KEYS]
        if unknown:
            raise StateError(f"unknown state keys {unknown!r}; the keys are {list(STATE_KEYS)}")
        blobs = {key: self._state_value(key, state[key]) for key in STATE_KEYS if key in state}
        self._check_usable()
        self._set_state(blobs)

    def _state_value(self, key: str, value: object) -> Any:
        """One value of a :meth:`set_state` mapping, checked (default: bytes-like)."""
        if isinstance(value, (int, str)) or value is None:
            raise StateError(f"state[{key!r}] must be bytes-like, got {type(value).__name__}")
        try:
            with memoryview(value) as view:  # type: ignore[arg-type]
                return view.tobytes()
        except TypeError:
            raise StateError(f"state[{key!r}] must be bytes-like, got {type(value).__name__}") from None

    def _set_state(self, state: dict[str, Any]) -> None:
        """Load *state*: keys among STATE_KEYS, values from :meth:`_state_value`."""
        raise StateError(f"{type(self).__name__} cannot load a saved state (no migration support)")

    # -- in-memory snapshots (a device's snapshot() / rollback()) -------------
    def _snapshot(self) -> object:
        """An in-memory copy of the TPM's state for :meth:`_rollback`
        (default: :meth:`get_state`; a backend with a cheaper copy overrides
        both)."""
        return self.get_state()

    def _rollback(self, snapshot: Any) -> None:
        """Put the TPM back in the state of a :meth:`_snapshot` of this
        backend (default: :meth:`set_state`)."""
        self.set_state(snapshot)

    # -- lifetime and the failed latch ----------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failure(self) -> str | None:
        """Why the backend stopped taking commands, or None."""
        return self._failure

    def close(self) -> None:
        """Release what the backend holds (processes, sockets). Idempotent."""
        self._closed = True

    def _fail(self, reason: str) -> None:
        """Latch the backend as failed (the first reason is kept)."""
        if self._failure is None:
            self._failure = reason

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{type(self).__name__} is closed; create a new backend")

    def _check_usable(self) -> None:
        """StateError after close; BackendError once failed."""
        if self._closed:
            self._check_open()
        reason = self.failure
        if reason is not None:
            raise BackendError(f"{type(self).__name__} failed earlier ({reason}); create a new backend")

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
