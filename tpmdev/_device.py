"""The device layer shared by every frontend: a core joined to a backend.

QEMU writes its backend plumbing once (``tpm_backend_*``) and keeps each
frontend (TIS, CRB, TIS over I2C, SPAPR) to register semantics. This module
is that plumbing. A frontend is a subclass of :class:`Device` that builds its
sans-IO core (:meth:`Device._make_core`) and adds bus glue; everything else
lives here:

* the machine reset in QEMU's order: learn the TPM version and the buffer
  size (capped at the frontend's :attr:`Device.buffer_max`), reset the
  backend, reset the core, power the TPM on;
* :meth:`Device.attach` (another backend behind a running device),
  :meth:`Device.close` and the context manager;
* the requests of the core (``request(kind)`` with the ``REQUEST_*`` kinds):
  run a command, cancel it, read or reset the established flag;
* asynchronous mode: the command runs on a worker thread and its response is
  handed to the core with ``core.post`` and applied on the caller's thread
  (at the core's next access, :meth:`Device.poll` or :meth:`Device.wait`), as
  QEMU applies completions on its main loop;
* the backend-error policy: the guest reads QEMU's fatal response
  (``00 C4 00 00 00 0A 00 00 00 09``), the core is told the command failed,
  the error is logged, kept in :attr:`Device.backend_error` and passed to
  ``on_backend_error``;
* selftest detection (a successful TPM 1.2 ContinueSelfTest).

The core contract (what :meth:`Device._make_core` must return): an object with
``reset(tpm_version, bufsize)``, ``pending_command -> (locality, bytes) |
None``, ``complete(response, selftest_done=False[, failed=False])``,
``post(...)`` with the same arguments, ``poll() -> bool`` and
``set_established(bool)``; it calls the ``request`` callable it was given with
one of the ``REQUEST_*`` kinds. A core with ``set_established_source`` is
given a zero-argument callable answering the established flag instead of
``REQUEST_ESTABLISHED`` (one call per read). A core asks for a command only
when no command of its own is in flight (its previous completion was
applied). A core that asks for REQUEST_RESET_ESTABLISHED also has
``active_locality``.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
from types import TracebackType
from typing import Any, Callable, ClassVar, Optional, TypeVar

from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError, ConfigurationError, StateError
from tpmdev.hw.core import (
    REQUEST_CANCEL,
    REQUEST_COMMAND,
    REQUEST_ESTABLISHED,
    REQUEST_RESET_ESTABLISHED,
)
from tpmdev.wire import FATAL_RESPONSE, is_selftest_done

__all__ = [
    "Device",
    "MmioDevice",
    "REQUEST_COMMAND",
    "REQUEST_CANCEL",
    "REQUEST_RESET_ESTABLISHED",
    "REQUEST_ESTABLISHED",
]

log = logging.getLogger(__name__)

_VERSION_NAMES = {1: "TPM 1.2", 2: "TPM 2.0"}

_D = TypeVar("_D", bound="Device")


def _takes_failed(complete: Callable[..., object]) -> bool:
    """Whether a core's ``complete`` has the ``failed`` parameter (the shared
    core contract has it; a core that predates it is called without it)."""
    try:
        return "failed" in inspect.signature(complete).parameters
    except (TypeError, ValueError):  # pragma: no cover - every core has a signature
        return False


class Device:
    """One TPM frontend: a sans-IO core, a backend, and the plumbing between.

    Not instantiated directly: a frontend subclasses it (see the module doc
    and ``_make_core``). The methods here are for the thread that drives the
    device (the simulator's main loop); only the worker of asynchronous mode
    runs elsewhere.

    :param backend: the TPM that runs commands (:mod:`tpmdev.backends`).
    :param tpm_version: 1 (TPM 1.2) or 2 (TPM 2.0) for the interface; None
        asks the backend.
    :param asynchronous: run commands on a worker thread (see module doc).
    :param close_backend: close the backend when the device is closed.
    :param on_complete: with ``asynchronous``, called (from the worker) when
        a response is ready to be applied.
    :param on_backend_error: called with the :class:`BackendError` when the
        backend failed a command (the guest got a TPM failure response).
    """

    #: The core class (a frontend sets it; compiled when available).
    _Core: ClassVar[Any]

    #: The largest buffer the frontend offers the TPM (QEMU: TIS 4096,
    #: CRB 3968, SPAPR 4096); the buffer size is min(backend's, this).
    buffer_max: ClassVar[int] = 4096

    #: The frontend's name in messages, logs and the worker thread's name.
    _name: ClassVar[str] = "TPM"

    def __init__(
        self,
        backend: Backend,
        *,
        tpm_version: Optional[int] = None,
        asynchronous: bool = False,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
    ) -> None:
        self._check_backend(backend)
        if tpm_version not in (None, 1, 2):
            raise ConfigurationError(
                f"tpm_version must be 1 (TPM 1.2), 2 (TPM 2.0) or None, got {tpm_version!r}"
            )
        self.backend = backend
        self.asynchronous = bool(asynchronous)
        self.backend_error: Optional[BackendError] = None
        self._forced_version = tpm_version
        self._version = 0
        self._bufsize = 0
        self._close_backend = close_backend
        self._on_complete = on_complete
        self._on_backend_error = on_backend_error
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._jobs: Optional[queue.SimpleQueue[Optional[tuple[bytes, int]]]] = None
        self._worker: Optional[threading.Thread] = None
        self.core = self._make_core(self._on_request)
        self._core_failed = _takes_failed(self.core.complete)
        set_source = getattr(self.core, "set_established_source", None)
        if set_source is not None:
            set_source(self._established_flag)
        self._bind_core()
        try:
            self.reset()
        except BaseException:
            if close_backend:
                backend.close()
            raise

    # -- what a frontend provides ----------------------------------------
    def _make_core(self, request: Callable[[int], object]) -> Any:
        """Build the core; *request* is the callable it must call with the
        ``REQUEST_*`` kinds. Called once, before the first :meth:`reset`
        (which calls :meth:`_core_reset` at once)."""
        raise NotImplementedError(f"{type(self).__name__} must build its core in _make_core")

    def _bind_core(self) -> None:
        """Expose the core's entry points on the device (after ``_make_core``).

        Nothing by default; :class:`MmioDevice` binds the MMIO methods."""

    def _core_reset(self, tpm_version: int, bufsize: int) -> None:
        """Machine reset of the core (step 4 of :meth:`reset`). A frontend
        with bus state outside its core resets that here too."""
        self.core.reset(tpm_version, bufsize)

    def _established_locality(self) -> Optional[int]:
        """The locality asking to reset the established flag (None: nobody)."""
        locality: Optional[int] = self.core.active_locality
        return locality

    # -- lifecycle ------------------------------------------------------
    def reset(self) -> None:
        """Machine reset, in QEMU's order: learn the backend's version and
        buffer size, reset the backend, reset the core, power the TPM on.

        A command in flight is finished (and its response applied) first.
        Raises :class:`BackendError` if the backend cannot start (QEMU exits).
        """
        self._check_open()
        self.wait()
        version = self._forced_version or self.backend.tpm_version
        bufsize = min(self.backend.get_buffer_size(), self.buffer_max)
        self.backend.reset()
        self._version = version
        self._bufsize = bufsize
        self._core_reset(version, bufsize)
        self.backend.startup(bufsize)

    def attach(self, backend: Backend, *, close_old: Optional[bool] = None) -> Backend:
        """Put *backend* behind the device in place of the current one.

        For recovery after a backend failure (a dead swtpm) or to move a
        running guest to another TPM. A command in flight is finished first;
        the old backend is closed if the device owned it (``close_old``
        overrides); the new one is powered on with the device's buffer size
        and owned from now on. The core is left as it is: the guest just sees
        its next command answered by the new TPM (which, like any freshly
        powered TPM, expects TPM(2)_Startup). Call :meth:`reset` to re-read the
        version and buffer size as at machine start.

        Returns the old backend.
        """
        self._check_open()
        self._check_backend(backend)
        if self._forced_version is None and backend.tpm_version not in (0, self.tpm_version):
            raise ConfigurationError(
                f"attach() needs a backend of the version the {self._name} presents "
                f"({_VERSION_NAMES.get(self.tpm_version, 'unknown')}), got "
                f"{_VERSION_NAMES[backend.tpm_version]}: create a new {self._name} for it"
            )
        self.wait()
        old = self.backend
        if self._close_backend if close_old is None else close_old:
            old.close()
        self.backend = backend
        self._close_backend = True
        self.backend_error = None
        self._invalidate_established()
        backend.startup(self._bufsize)
        return old

    def close(self) -> None:
        """Finish any command in flight, stop the worker, close the backend it owns."""
        if self._closed:
            return
        self._closed = True
        self.wait()
        if self._jobs is not None:
            self._jobs.put(None)
            assert self._worker is not None
            self._worker.join()
        if self._close_backend:
            self.backend.close()

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"the {self._name} device is closed")

    def _check_backend(self, backend: object) -> None:
        if not isinstance(backend, Backend):
            raise ConfigurationError(
                f"{self._name} needs a tpmdev.backends.Backend, got {type(backend).__name__}"
            )

    # -- asynchronous completion ------------------------------------------
    def poll(self) -> bool:
        """Apply a response that arrived from the worker. True if there was one."""
        return bool(self.core.poll())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until no command is in flight, then apply its response.

        Returns False if *timeout* (seconds) passed first.
        """
        if not self._idle.wait(timeout):
            return False
        self.core.poll()
        return True

    @property
    def busy(self) -> bool:
        """True while the backend is running a command."""
        return not self._idle.is_set()

    # -- inspection -----------------------------------------------------
    @property
    def tpm_version(self) -> int:
        """The TPM version the interface presents (1 or 2; 0 unknown)."""
        return self._version

    # -- requests from the core ---------------------------------------------
    def _on_request(self, kind: int) -> None:
        if kind == REQUEST_COMMAND:
            self._deliver()
        elif kind == REQUEST_CANCEL:
            if self.busy:
                self._backend_call(self.backend.cancel)
        elif kind == REQUEST_ESTABLISHED:  # (a core without an established-flag source)
            self.core.set_established(self._established_flag())
        elif kind == REQUEST_RESET_ESTABLISHED:
            locality = self._established_locality()
            if locality is None:  # pragma: no cover - a core asks only for an active locality
                return
            if self._backend_call(lambda: self.backend.reset_established_flag(locality)):
                self._invalidate_established()

    def _established_flag(self) -> bool:
        """The backend's established flag, asked at each guest read that shows it.

        QEMU caches only an answer (in the backend): after a failure the flag
        reads as "not established", the error is reported, and the next read
        asks again."""
        try:
            if self.backend.get_established_flag():
                return True
        except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
            self._report(exc)
        return False

    def _invalidate_established(self) -> None:
        # A core that still caches the flag forgets it; cores that ask the
        # backend at every read have nothing to forget.
        invalidate = getattr(self.core, "invalidate_established", None)
        if invalidate is not None:
            invalidate()

    def _backend_call(self, fn: Callable[[], object]) -> bool:
        """Run a control operation; True if it worked. A failure is logged and
        reported, never raised."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
            self._report(exc)
            return False
        return True

    def _complete(self, response: bytes, selftest_done: bool, failed: bool) -> None:
        if self._core_failed:
            self.core.complete(response, selftest_done, failed=failed)
        else:
            self.core.complete(response, selftest_done)

    def _post(self, response: bytes, selftest_done: bool, failed: bool) -> None:
        if self._core_failed:
            self.core.post(response, selftest_done, failed=failed)
        else:
            self.core.post(response, selftest_done)

    def _deliver(self) -> None:
        pending = self.core.pending_command
        if pending is None:  # pragma: no cover - the core only asks with a command
            return
        locality, command = pending
        if not self.asynchronous or self._closed:
            # (a closed device has no worker: its backend is gone, TPM_FAIL at once)
            self._complete(*self._run(command, locality))
            return
        if self.busy:
            # QEMU: "There is a TPM request pending". The core has already
            # moved this locality to EXECUTION and made it the command's
            # locality, so the running command's response will land there.
            log.warning(
                "%s: command at locality %d while a command is in flight; request dropped",
                self._name,
                locality,
            )
            return
        self._idle.clear()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._worker = threading.Thread(
                target=self._work, name=f"tpmdev-{self._name.lower()}-worker", daemon=True
            )
            self._worker.start()
        self._jobs.put((command, locality))

    def _run(self, command: bytes, locality: int) -> tuple[bytes, bool, bool]:
        """Run *command* on the backend: ``(response, selftest_done, failed)``."""
        try:
            if self._closed:
                raise BackendError(f"the {self._name} device is closed")
            response = self.backend.execute(command, locality)
        except Exception as exc:  # noqa: BLE001 - guest gets TPM_FAIL, the host the error
            self._report(exc)
            return FATAL_RESPONSE, False, True
        return response, is_selftest_done(command, response), False

    def _report(self, exc: Exception) -> None:
        error = exc if isinstance(exc, BackendError) else BackendError(f"backend raised {exc!r}")
        if error is not exc:
            error.__cause__ = exc
        log.error("%s: backend failure: %s", self._name, error)
        self.backend_error = error
        if self._on_backend_error is not None:
            try:
                self._on_backend_error(error)
            except Exception:  # a host callback bug must not reach the guest
                log.exception("%s: on_backend_error callback failed", self._name)

    def _work(self) -> None:
        assert self._jobs is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                response, selftest_done, failed = self._run(*job)
            except BaseException:  # pragma: no cover - _run contains backend failures itself
                log.exception("%s: worker failed", self._name)
                response, selftest_done, failed = FATAL_RESPONSE, False, True
            self._post(response, selftest_done, failed)
            self._idle.set()
            if self._on_complete is not None:
                try:
                    self._on_complete()
                except Exception:  # pragma: no cover - host callback bug
                    log.exception("%s: on_complete callback failed", self._name)


class MmioDevice(Device):
    """A frontend the guest reaches through a memory-mapped region.

    The core's entry points are bound on the device, so the hot path has no
    Python frame: ``dev.read(offset, size=4)``, ``dev.write(offset, value,
    size=4)``, ``dev.read_many(offset, count, size=1)``, ``dev.write_many(offset,
    data, size=1)`` and ``dev.mmio`` (the register image, a numpy uint8 array
    of :attr:`region_size` bytes). Offsets are relative to the region's base.
    """

    #: Size of the MMIO region in bytes (a frontend sets it).
    region_size: ClassVar[int]

    read: Callable[..., int]
    write: Callable[..., None]
    read_many: Callable[..., bytes]
    write_many: Callable[..., None]
    mmio: Any

    def _bind_core(self) -> None:
        core = self.core
        self.read = core.read
        self.write = core.write
        self.read_many = core.read_many
        self.write_many = core.write_many
        self.mmio = core.mmio
