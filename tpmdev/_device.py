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
  handed to the core with ``core.post`` and applied on the thread that drives
  the device (at the core's next access, :meth:`Device.poll` or
  :meth:`Device.wait`), as QEMU applies completions on its main loop;
* the backend-error policy: the guest reads QEMU's fatal response
  (``00 C4 00 00 00 0A 00 00 00 09``), the core is told the command failed,
  the error is logged, kept in :attr:`Device.backend_error` and passed to
  ``on_backend_error``;
* host callbacks contained: an exception from ``irq``, ``on_complete`` or
  ``on_backend_error`` is logged and kept in :attr:`Device.callback_error`,
  never raised into the guest's access;
* selftest detection (a successful TPM 1.2 ContinueSelfTest).

The core contract (what :meth:`Device._make_core` returns): an object with
``reset(tpm_version, bufsize)``, ``pending_command -> (locality, bytes) |
None``, ``complete(response, selftest_done=False, failed=False)``,
``post(...)`` with the same arguments, ``poll() -> bool`` and
``set_established(bool)``; it calls the ``request`` callable it was given with
one of the ``REQUEST_*`` kinds. A core with ``set_established_source`` is
given a zero-argument callable answering the established flag instead of
asking with ``REQUEST_ESTABLISHED`` (one call per read); ``complete`` and ``poll`` may be called from
inside ``request`` (synchronous mode completes a command there). A core may
ask for a command while one is in flight (the TIS does when a locality gave up
the TPM without cancelling and another one sends a command): the device drops
it, as QEMU does. A core that asks for REQUEST_RESET_ESTABLISHED also has
``active_locality``.

Asynchronous mode, in detail. One command at a time is a :class:`_Job`. The
worker runs it on the backend, then (under a lock) marks it ``ran`` and posts
the completion to the core, then sets ``done``. The job stays the device's
until the driving thread retires it, when its completion is applied: in
:meth:`Device.wait` / :meth:`Device.poll`, or when the core asks for the next
command and the completion turns out to be applied already (QEMU likewise
clears its pending request on the main loop, when it applies the completion).
A command is dropped ("request pending", as QEMU) only while the previous
completion is not applied; what the worker does after posting never matters.

Lifetime. The worker thread holds the device only weakly between commands,
and what must be released (the job queue, the backend the device owns) lives
in a small object the device's finalizer holds. A device that is dropped
without :meth:`Device.close` is therefore collected: its worker ends and its
backend is closed (a spawned swtpm with it).
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from types import TracebackType
from typing import Any, Callable, ClassVar, Optional, TypeVar

from tpmdev import _state
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
    "check_flag",
    "check_int",
    "check_callback",
]

log = logging.getLogger(__name__)

_VERSION_NAMES = {1: "TPM 1.2", 2: "TPM 2.0"}

_D = TypeVar("_D", bound="Device")
_F = TypeVar("_F", bound=Callable[..., object])


# -- option checks: one rule for every frontend's constructor -----------------
def check_flag(name: str, value: object) -> bool:
    """*value* if it is a bool, else a :class:`ConfigurationError`."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def check_int(name: str, value: object, low: int, high: int, what: str = "an int") -> int:
    """*value* if it is an int (not a bool) in ``low..high``, else a
    :class:`ConfigurationError` naming *what* was expected."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be {what} {low}..{high}, got {value!r}")
    return value


def check_callback(name: str, value: Optional[_F], takes: str = "") -> Optional[_F]:
    """*value* if it is callable or None, else a :class:`ConfigurationError`."""
    if value is not None and not callable(value):
        raise ConfigurationError(f"{name} must be a callable{takes} or None, got {value!r}")
    return value


def _check_version(value: object) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2)):
        raise ConfigurationError(f"tpm_version must be 1 (TPM 1.2), 2 (TPM 2.0) or None, got {value!r}")
    return value


def _check_timeout(timeout: object) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ConfigurationError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    return None if timeout > threading.TIMEOUT_MAX else float(timeout)


# -- asynchronous mode ---------------------------------------------------------
class _Job:
    """One command handed to the worker."""

    __slots__ = ("command", "done", "locality", "ran")

    def __init__(self, command: bytes, locality: int) -> None:
        self.command = command
        self.locality = locality
        #: the backend has answered (set before the completion is posted)
        self.ran = False
        #: the completion is posted to the core (set after)
        self.done = threading.Event()


class _Owned:
    """What a device must release, reachable without the device itself, so
    that its finalizer can release it when a forgotten device is collected."""

    __slots__ = ("backend", "jobs", "owns_backend", "worker")

    def __init__(self, backend: Backend, owns_backend: bool) -> None:
        self.backend = backend
        self.owns_backend = owns_backend
        self.jobs: Optional[queue.SimpleQueue[Optional[_Job]]] = None
        self.worker: Optional[threading.Thread] = None

    def release(self, join: bool) -> None:
        """Stop the worker (after the command it runs), close an owned backend."""
        jobs, self.jobs = self.jobs, None
        if jobs is not None:
            jobs.put(None)
            worker = self.worker
            if join and worker is not None and worker is not threading.current_thread():
                worker.join()  # it ends at once: no command is in flight when close() joins
        if self.owns_backend:
            self.owns_backend = False
            self.backend.close()


def _finalize(owned: _Owned) -> None:
    try:
        owned.release(join=False)
    except Exception:  # a finalizer has nobody to raise to
        log.exception("releasing a device that was not closed failed")


def _worker_main(device_ref: weakref.ref[Device], jobs: queue.SimpleQueue[Optional[_Job]]) -> None:
    # Holds the device only while it runs a command, so that a device dropped
    # without close() can be collected (its finalizer then stops this loop).
    while True:
        job = jobs.get()
        if job is None:
            return
        device = device_ref()
        if device is None:
            return
        device._run_job(job)
        del device


class Device:
    """One TPM frontend: a sans-IO core, a backend, and the plumbing between.

    Not instantiated directly: a frontend subclasses it (see the module doc
    and ``_make_core``). The methods here are for the thread that drives the
    device (the simulator's main loop); only the worker of asynchronous mode
    runs elsewhere, and from it (inside ``on_complete`` or
    ``on_backend_error``) :meth:`attach` and :meth:`close` may be called, but
    not :meth:`wait` or :meth:`reset`.

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

    #: The last error a backend reported (cleared by :meth:`attach`).
    backend_error: Optional[BackendError]

    #: The last exception a host callback (``irq``, ``on_complete``,
    #: ``on_backend_error``, ...) raised; it was logged and contained.
    callback_error: Optional[Exception]

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
        self._forced_version = _check_version(tpm_version)
        self.asynchronous = check_flag("asynchronous", asynchronous)
        check_flag("close_backend", close_backend)
        self._on_complete = check_callback("on_complete", on_complete)
        self._on_backend_error = check_callback("on_backend_error", on_backend_error, " taking the error")
        self.backend_error = None
        self.callback_error = None
        self._version = 0
        self._bufsize = 0
        self._closed = False
        self._job: Optional[_Job] = None
        self._post_lock = threading.RLock()
        self._owned = _Owned(backend, close_backend)
        self._finalizer = weakref.finalize(self, _finalize, self._owned)
        try:
            self.core = self._make_core(self._on_request)
            set_source = getattr(self.core, "set_established_source", None)
            if set_source is not None:
                set_source(self._established_flag)
            self._bind_core()
            self.reset()
        except BaseException:
            self._finalizer.detach()
            self._owned.release(join=False)
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

    def _contain(self, name: str, callback: Callable[..., object]) -> Callable[..., None]:
        """*callback* wrapped so that an exception from it is logged and kept
        in :attr:`callback_error` instead of escaping into the core (a host's
        ``irq`` raising during a locality hand-over must not leave the core
        half switched). Wrap every host callable a core calls."""

        def contained(*args: object) -> None:
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - a host callback bug must not reach the guest
                self._callback_failed(name, exc)

        return contained

    # -- lifecycle ------------------------------------------------------
    def reset(self) -> None:
        """Machine reset, in QEMU's order: learn the backend's version and
        buffer size, reset the backend, reset the core, power the TPM on.

        A command in flight is finished (and its response applied) first; that
        wait is as long as the backend takes (each backend bounds a command by
        its own timeout). Raises :class:`BackendError` if the backend cannot
        start (QEMU exits), :class:`StateError` on the worker thread.
        """
        self._check_open()
        self._check_not_worker("reset")
        self.wait()
        backend = self._owned.backend
        version = self._forced_version or backend.tpm_version
        bufsize = min(backend.get_buffer_size(), self.buffer_max)
        backend.reset()
        self._version = version
        self._bufsize = bufsize
        self._core_reset(version, bufsize)
        backend.startup(bufsize)

    def attach(self, backend: Backend, *, close_old: Optional[bool] = None) -> Backend:
        """Put *backend* behind the device in place of the current one.

        For recovery after a backend failure (a dead swtpm; it may be called
        from ``on_backend_error``, also in asynchronous mode) or to move a
        running guest to another TPM. A command in flight is finished first.
        The new backend is powered on with the device's buffer size; if that
        fails the error is raised and nothing changed (the new backend is
        still the caller's). Otherwise the new backend is owned from now on
        and the old one is closed if the device owned it (``close_old``
        overrides). The core is left as it is: the guest just sees its next
        command answered by the new TPM (which, like any freshly powered TPM,
        expects TPM(2)_Startup). Call :meth:`reset` to re-read the version and
        buffer size as at machine start.

        The backend already attached, a closed backend or one of another TPM
        version (unless ``tpm_version`` was forced) is refused before anything
        changes. Returns the old backend.
        """
        self._check_open()
        self._check_backend(backend)
        if close_old is not None:
            check_flag("close_old", close_old)
        old = self._owned.backend
        if backend is old:
            raise ConfigurationError(
                f"attach() got the backend that is already attached to this {self._name}: "
                "to restart it call reset(), to replace it pass a new backend"
            )
        if backend.closed:
            raise StateError(f"attach() got a closed {type(backend).__name__}: create a new backend")
        if self._forced_version is None and backend.tpm_version not in (0, self.tpm_version):
            raise ConfigurationError(
                f"attach() needs a backend of the version the {self._name} presents "
                f"({_VERSION_NAMES.get(self.tpm_version, 'unknown')}), got "
                f"{_VERSION_NAMES.get(backend.tpm_version, repr(backend.tpm_version))}: "
                f"create a new {self._name} for it"
            )
        if not self._on_worker():
            # (on the worker, inside on_backend_error, the command is already answered)
            self.wait()
        backend.startup(self._bufsize)
        owned = self._owned
        close = owned.owns_backend if close_old is None else close_old
        owned.backend = backend
        owned.owns_backend = True
        self.backend_error = None
        if close:
            old.close()
        return old

    def close(self) -> None:
        """Finish the command in flight (its response is applied, so the guest
        reads it), stop the worker, close the backend the device owns.

        Idempotent. The wait is as long as the backend takes (each backend
        bounds a command by its own timeout). Called on the worker (inside
        ``on_backend_error``), it does not wait for the worker itself: the
        worker ends after the command it is answering.
        """
        if self._closed:
            return
        if self._on_worker():
            self._closed = True
        else:
            self.wait()
            self._closed = True
        self._finalizer.detach()
        self._owned.release(join=not self._on_worker())

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def backend(self) -> Backend:
        """The backend running the commands (replace it with :meth:`attach`)."""
        return self._owned.backend

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"the {self._name} device is closed")

    def _check_backend(self, backend: object) -> None:
        if not isinstance(backend, Backend):
            raise ConfigurationError(
                f"{self._name} needs a tpmdev.backends.Backend, got {type(backend).__name__}"
            )

    def _on_worker(self) -> bool:
        return threading.current_thread() is self._owned.worker

    def _check_not_worker(self, what: str) -> None:
        if self._on_worker():
            raise StateError(
                f"{what}() cannot run on the {self._name} worker thread (inside on_complete or "
                f"on_backend_error): it would wait for itself; call it from the thread that drives "
                f"the device (attach() and close() are allowed there)"
            )

    # -- asynchronous completion ------------------------------------------
    def poll(self) -> bool:
        """Apply a response that arrived from the worker. True if there was one."""
        job = self._job
        if job is not None and job.done.is_set():
            self._job = None
        return bool(self.core.poll())

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until no command is in flight, then apply its response.

        Returns False if *timeout* (seconds) passed first. Without a timeout
        the wait is as long as the backend takes (each backend bounds a
        command by its own timeout). Raises :class:`StateError` on the worker
        thread (it would wait for itself).
        """
        limit = _check_timeout(timeout)
        self._check_not_worker("wait")
        job = self._job
        if job is not None:
            if not job.done.wait(limit):
                return False
            if self._job is job:
                self._job = None
        self.core.poll()
        return True

    @property
    def busy(self) -> bool:
        """True while the backend is running a command (its response not yet
        handed to the core)."""
        job = self._job
        return job is not None and not job.done.is_set()

    # -- inspection -----------------------------------------------------
    @property
    def tpm_version(self) -> int:
        """The TPM version the interface presents (1 or 2; 0 unknown)."""
        return self._version

    # -- requests from the core ---------------------------------------------
    def _on_request(self, kind: int) -> None:
        # (the established flag first: a core may ask at every ACCESS read)
        if kind == REQUEST_ESTABLISHED:  # (a core without an established-flag source)
            self.core.set_established(self._established_flag())
        elif kind == REQUEST_COMMAND:
            self._command_ready()
        elif kind == REQUEST_CANCEL:
            if self.busy:
                self._backend_call(self._owned.backend.cancel)
        elif kind == REQUEST_RESET_ESTABLISHED:
            locality = self._established_locality()
            if locality is None:  # pragma: no cover - a core asks only for an active locality
                return
            backend = self._owned.backend
            self._backend_call(lambda: backend.reset_established_flag(locality))

    def _established_flag(self) -> bool:
        """The backend's established flag, asked at each guest read that shows it.

        QEMU caches only an answer (in the backend): after a failure the flag
        reads as "not established", the error is reported, and the next read
        asks again."""
        try:
            if self._owned.backend.get_established_flag():
                return True
        except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
            self._report(exc)
        return False

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
        self.core.complete(response, selftest_done, failed=failed)

    def _post(self, response: bytes, selftest_done: bool, failed: bool) -> None:
        self.core.post(response, selftest_done, failed=failed)

    def _command_ready(self) -> None:
        pending = self.core.pending_command
        if pending is None:  # pragma: no cover - the core only asks with a command
            return
        locality, command = pending
        if not self.asynchronous or self._closed:
            # (a closed device has no worker: its backend is gone, TPM_FAIL at once)
            self._complete(*self._run(command, locality))
            return
        previous = self._job
        if previous is not None:
            # Is the previous command's completion applied? The worker marks a
            # job ``ran`` and posts its completion under the lock, so here it
            # is either not posted yet, or posted and pending (apply it now),
            # or applied by an earlier access (the job is retired: QEMU clears
            # its pending request when the main loop applies the completion).
            with self._post_lock:
                applied_now = previous.ran and bool(self.core.poll())
                pending = not previous.ran or applied_now
            if pending:
                # QEMU: "There is a TPM request pending" (a TIS locality gave up
                # the TPM without cancelling and another one sent a command).
                # The core has already made this locality the command's
                # locality, so the running command's response lands here.
                if applied_now:
                    self._job = None
                log.warning(
                    "%s: command at locality %d while a command is in flight; request dropped",
                    self._name,
                    locality,
                )
                return
        job = self._job = _Job(command, locality)
        owned = self._owned
        if owned.jobs is None:
            owned.jobs = queue.SimpleQueue()
            owned.worker = threading.Thread(
                target=_worker_main,
                args=(weakref.ref(self), owned.jobs),
                name=f"tpmdev-{self._name.lower()}-worker",
                daemon=True,
            )
            owned.worker.start()
        owned.jobs.put(job)

    def _run(self, command: bytes, locality: int) -> tuple[bytes, bool, bool]:
        """Run *command* on the backend: ``(response, selftest_done, failed)``."""
        try:
            if self._closed:
                raise BackendError(f"the {self._name} device is closed")
            response = self._owned.backend.execute(command, locality)
        except Exception as exc:  # noqa: BLE001 - guest gets TPM_FAIL, the host the error
            self._report(exc)
            return FATAL_RESPONSE, False, True
        return response, is_selftest_done(command, response), False

    def _run_job(self, job: _Job) -> None:
        """The worker's part of one command; never raises."""
        try:
            try:
                response, selftest_done, failed = self._run(job.command, job.locality)
            except BaseException:  # pragma: no cover - _run contains backend failures itself
                log.exception("%s: worker failed", self._name)
                response, selftest_done, failed = FATAL_RESPONSE, False, True
            with self._post_lock:
                job.ran = True
                self._post(response, selftest_done, failed)
        finally:
            job.done.set()
        if self._on_complete is not None:
            try:
                self._on_complete()
            except Exception as exc:  # noqa: BLE001 - a host callback bug must not stop the worker
                self._callback_failed("on_complete", exc)

    def _report(self, exc: Exception) -> None:
        error = exc if isinstance(exc, BackendError) else BackendError(f"backend raised {exc!r}")
        if error is not exc:
            error.__cause__ = exc
        log.error("%s: backend failure: %s", self._name, error)
        self.backend_error = error
        if self._on_backend_error is not None:
            try:
                self._on_backend_error(error)
            except Exception as exc2:  # noqa: BLE001 - a host callback bug must not reach the guest
                self._callback_failed("on_backend_error", exc2)

    def _callback_failed(self, name: str, exc: Exception) -> None:
        log.error("%s: the %s callback raised %r (contained)", self._name, name, exc, exc_info=exc)
        self.callback_error = exc

    # -- state capture: save / load, snapshot / rollback (format: tpmdev._state) --
    def save(self) -> bytes:
        """The device's whole state and its backend's TPM state as one blob
        (versioned, self-describing, SHA-256 checked; see :mod:`tpmdev._state`).

        A command in flight completes first, as QEMU completes it before it
        migrates. Raises :class:`StateError` for a backend without state
        (Passthrough), :class:`BackendError` if the backend cannot give it.
        """
        return _state.save(self)

    def load(self, blob: bytes) -> None:
        """Continue from a :meth:`save` blob, possibly made in another process.

        The device must be of the same frontend kind and configuration and
        present the same TPM version; its backend of a compatible kind
        (Builtin for Builtin states; Libtpms and Emulator load each other's).
        Everything is checked before anything changes: a refused blob raises
        :class:`StateError` naming the problem and leaves the device and the
        backend as they were. Afterwards the TPM version, the buffer size
        and the established flag are asked from the backend again.
        """
        _state.load(self, blob)

    def snapshot(self) -> _state.DeviceSnapshot:
        """An in-memory copy of the device and its backend for :meth:`rollback`.

        A command in flight completes first. Registers cost a copy of the
        register image; the backend's state what the backend allows
        (Builtin: a pickled copy; Libtpms, Emulator: ``get_state``)."""
        return _state.snapshot(self)

    def rollback(self, snapshot: _state.DeviceSnapshot) -> None:
        """Put the device and its backend back as they were at *snapshot*
        (of this device, with the same backend attached). Any number of
        times; for fuzzers and simulators that restart often. The IRQ
        callable is told if the line level changes."""
        _state.rollback(self, snapshot)

    def _state_config(self) -> dict[str, object]:
        """The options a loaded state must have been saved with (none by default)."""
        return {}

    def _capture_bus(self) -> Optional[tuple[object, ...]]:
        """Bus state kept outside the core (None: there is none)."""
        return None

    def _restore_bus(self, state: tuple[object, ...]) -> None:
        """Put back :meth:`_capture_bus`'s state (checked)."""


class MmioDevice(Device):
    """A frontend the guest reaches through a memory-mapped region.

    The core's entry points are bound on the device, so the hot path has no
    Python frame: ``dev.read(offset, size=4)``, ``dev.write(offset, value,
    size=4)``, ``dev.read_many(offset, count, size=1)``, ``dev.write_many(offset,
    data, size=1)``, ``dev.execute(ops)`` (a batch, see :mod:`tpmdev.hw.ops`)
    and ``dev.mmio`` (the register image, a numpy uint8 array
    of :attr:`region_size` bytes). Offsets are relative to the region's base.
    """

    #: Size of the MMIO region in bytes (a frontend sets it).
    region_size: ClassVar[int]

    read: Callable[..., int]
    write: Callable[..., None]
    read_many: Callable[..., bytes]
    write_many: Callable[..., None]
    execute: Callable[..., Any]
    mmio: Any

    def _bind_core(self) -> None:
        core = self.core
        self.read = core.read
        self.write = core.write
        self.read_many = core.read_many
        self.write_many = core.write_many
        self.execute = core.execute
        self.mmio = core.mmio
