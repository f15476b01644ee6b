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

Errors: a backend raises :class:`tpmdev.BackendError` when a command cannot
be run (dead process, timeout, garbled reply). A device layer turns that into
:data:`tpmdev.wire.FATAL_RESPONSE` for the guest, as QEMU does.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TypeVar

from tpmdev.errors import ConfigurationError, StateError

__all__ = ["Backend", "DEFAULT_BUFFER_SIZE", "MAX_RESPONSE_SIZE", "STATE_KEYS", "check_timeout"]

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

_B = TypeVar("_B", bound="Backend")


class Backend(abc.ABC):
    """Base class of every TPM backend.

    Subclasses implement :meth:`execute` and :attr:`tpm_version`; the other
    methods have the neutral behaviour QEMU's base class has (no cancel, flag
    not established, 4096-byte buffer).
    """

    _closed: bool = False

    # -- identity -------------------------------------------------------
    @property
    @abc.abstractmethod
    def tpm_version(self) -> int:
        """1 for TPM 1.2, 2 for TPM 2.0, 0 if it could not be determined."""

    # -- commands -------------------------------------------------------
    @abc.abstractmethod
    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """Run one TPM command at *locality* and return its response.

        Raises :class:`tpmdev.BackendError` if the TPM could not run it.
        """

    def cancel(self) -> None:
        """Ask the TPM to cancel the command in flight, if it can."""

    # -- power and reset ------------------------------------------------
    def startup(self, buffer_size: int = 0) -> None:
        """Power the TPM on with *buffer_size* (0 leaves it as it is)."""

    def reset(self) -> None:
        """Machine reset: finish or cancel whatever is in flight."""

    def get_buffer_size(self) -> int:
        """The largest command/response the TPM accepts, in bytes."""
        return DEFAULT_BUFFER_SIZE

    # -- the TPM established flag (TIS ACCESS bit 0, CRB tpmEstablished) --
    def get_established_flag(self) -> bool:
        """Whether a dynamic root of trust was established (TPM_HASH_START)."""
        return False

    def reset_established_flag(self, locality: int) -> None:
        """Clear the established flag (TPM 2.0, locality 3 or 4)."""

    # -- state save/restore (migration, snapshots) -------------------------
    def get_state(self) -> dict[str, bytes]:
        """The TPM's state as ``{"permanent", "volatile", "savestate"}`` blobs.

        An empty blob means "nothing of that kind" (as swtpm's 0x800 result).
        A command in flight must have finished. Backends without state
        support raise :class:`tpmdev.StateError`.
        """
        raise StateError(f"{type(self).__name__} cannot save its state (no migration support)")

    def set_state(self, state: dict[str, bytes]) -> None:
        """Load blobs from :meth:`get_state` (of this kind of backend) and restart
        the TPM from them, as QEMU does on the destination of a migration."""
        raise StateError(f"{type(self).__name__} cannot load a saved state (no migration support)")

    # -- lifetime -------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release what the backend holds (processes, sockets). Idempotent."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{type(self).__name__} is closed; create a new backend")

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_timeout(timeout: float) -> float:
    """*timeout* as a positive number of seconds, or a ConfigurationError."""
    try:
        t = float(timeout)
    except (TypeError, ValueError):
        t = 0.0
    if not t > 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return t
