"""The TIS device: the compiled register model joined to a backend.

This is the thin driver around the sans-IO core in :mod:`tpmdev.hw.tis`
(h11's shape): the core decides what the registers do and asks for a TPM
command to be run; this layer runs it on the backend and hands the response
back. ``dev.read`` and ``dev.write`` are the core's compiled methods
themselves, bound on the instance, so the hot path has no Python frame.

Completion modes:

* synchronous (default): the backend runs inside the tpmGo write, so the
  response is in place when ``write`` returns. Deterministic: good for
  fuzzing and unit tests.
* ``asynchronous=True``: the command runs on a worker thread; STS shows the
  locality executing until the response is applied, which happens on the
  caller's thread at the next register access, :meth:`TIS.poll` or
  :meth:`TIS.wait` (as QEMU applies completions on its main loop).
  ``on_complete`` is called from the worker when a response is ready to be
  applied, for hosts that want to poll then.

Backend failures never reach the guest as exceptions: the guest reads QEMU's
fatal response (``00 C4 00 00 00 0A 00 00 00 09``), the error is logged and
kept in :attr:`TIS.backend_error`, and ``on_backend_error`` is called.
"""

from __future__ import annotations

import logging
import queue
import threading
from types import TracebackType
from typing import Callable, Optional

from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError, ConfigurationError, StateError
from tpmdev.hw import tis as _hw_tis
from tpmdev.hw.regs import TIS_BUFFER_MAX, TIS_REGION_SIZE
from tpmdev.wire import FATAL_RESPONSE, is_selftest_done

__all__ = ["TIS"]

log = logging.getLogger(__name__)

_REQUEST_COMMAND = _hw_tis.REQUEST_COMMAND
_REQUEST_CANCEL = _hw_tis.REQUEST_CANCEL
_REQUEST_RESET_ESTABLISHED = _hw_tis.REQUEST_RESET_ESTABLISHED
_REQUEST_ESTABLISHED = _hw_tis.REQUEST_ESTABLISHED

IrqCallback = Callable[[int], object]


class TIS:
    """A TPM TIS (FIFO) device at register level, as QEMU's ``tpm-tis``.

    :param backend: the TPM that runs commands (:mod:`tpmdev.backends`).
    :param tpm_version: 1 (TPM 1.2) or 2 (TPM 2.0) for the interface
        registers; None asks the backend.
    :param irq: called with the new level (0 or 1) of the interrupt line,
        only when it changes.
    :param ppi: whether the platform has the Physical Presence Interface page
        (QEMU's ``ppi`` property; used by the firmware descriptions).
    :param asynchronous: run commands on a worker thread (see module doc).
    :param irq_num: the interrupt number reported in TPM_INT_VECTOR (QEMU's
        ``irq`` property, 0..15, default 5).
    :param close_backend: close the backend when the device is closed.
    :param on_complete: with ``asynchronous``, called (from the worker) when
        a response is ready to be applied.
    :param on_backend_error: called with the :class:`BackendError` when the
        backend failed a command (the guest got a TPM failure response).

    Offsets given to :meth:`read` and :meth:`write` are relative to the
    device base (0 .. 0x4FFF; the PC platform maps it at 0xFED40000).
    """

    #: The register model class (compiled when available).
    _Core = _hw_tis.TisCore

    #: Size of the MMIO region.
    region_size = TIS_REGION_SIZE

    read: Callable[..., int]
    write: Callable[..., None]
    read_many: Callable[..., bytes]
    write_many: Callable[..., None]

    def __init__(
        self,
        backend: Backend,
        *,
        tpm_version: Optional[int] = None,
        irq: Optional[IrqCallback] = None,
        ppi: bool = True,
        asynchronous: bool = False,
        irq_num: int = 5,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
    ) -> None:
        if not isinstance(backend, Backend):
            raise ConfigurationError(f"TIS needs a tpmdev.backends.Backend, got {type(backend).__name__}")
        if tpm_version not in (None, 1, 2):
            raise ConfigurationError(
                f"tpm_version must be 1 (TPM 1.2), 2 (TPM 2.0) or None, got {tpm_version!r}"
            )
        if isinstance(irq_num, bool) or not isinstance(irq_num, int) or not 0 <= irq_num <= 15:
            raise ConfigurationError(f"irq_num must be an ISA interrupt 0..15, got {irq_num!r}")
        if irq is not None and not callable(irq):
            raise ConfigurationError("irq must be a callable taking the new line level, or None")
        self.backend = backend
        self.ppi = bool(ppi)
        self.asynchronous = bool(asynchronous)
        self.irq_num = irq_num
        self.backend_error: Optional[BackendError] = None
        self._forced_version = tpm_version
        self._close_backend = close_backend
        self._on_complete = on_complete
        self._on_backend_error = on_backend_error
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._jobs: Optional[queue.SimpleQueue[Optional[tuple[bytes, int]]]] = None
        self._worker: Optional[threading.Thread] = None
        self.core = self._Core(tpm_version or 0, TIS_BUFFER_MAX, irq_num, irq, self._on_request)
        # The hot path: the compiled methods themselves, bound on the instance.
        self.read = self.core.read
        self.write = self.core.write
        self.read_many = self.core.read_many
        self.write_many = self.core.write_many
        self.mmio = self.core.mmio
        try:
            self.reset()
        except BaseException:
            if close_backend:
                backend.close()
            raise

    # -- lifecycle ------------------------------------------------------
    def reset(self) -> None:
        """Machine reset, in QEMU's order: learn the backend's version and
        buffer size, reset the backend, reset the registers, power the TPM on.

        A command in flight is finished (and its response applied) first.
        Raises :class:`BackendError` if the backend cannot start (QEMU exits).
        """
        self._check_open()
        self.wait()
        version = self._forced_version or self.backend.tpm_version
        bufsize = min(self.backend.get_buffer_size(), TIS_BUFFER_MAX)
        self.backend.reset()
        self.core.reset(version, bufsize)
        self.backend.startup(bufsize)

    def attach(self, backend: Backend, *, close_old: Optional[bool] = None) -> Backend:
        """Put *backend* behind the device in place of the current one.

        For recovery after a backend failure (a dead swtpm) or to move a
        running guest to another TPM. A command in flight is finished first;
        the old backend is closed if the device owned it (``close_old``
        overrides); the new one is powered on with the device's buffer size
        and owned from now on. The registers are left as they are: the guest
        just sees its next command answered by the new TPM (which, like any
        freshly powered TPM, expects TPM(2)_Startup). Call :meth:`reset` to
        re-read the version and buffer size as at machine start.

        Returns the old backend.
        """
        self._check_open()
        if not isinstance(backend, Backend):
            raise ConfigurationError(f"TIS needs a tpmdev.backends.Backend, got {type(backend).__name__}")
        if self._forced_version is None and backend.tpm_version not in (0, self.tpm_version):
            names = {1: "TPM 1.2", 2: "TPM 2.0"}
            raise ConfigurationError(
                f"attach() needs a backend of the version the registers present ({names[self.tpm_version]}), "
                f"got {names[backend.tpm_version]}: create a new TIS for it"
            )
        self.wait()
        old = self.backend
        if self._close_backend if close_old is None else close_old:
            old.close()
        self.backend = backend
        self._close_backend = True
        self.backend_error = None
        self.core.invalidate_established()
        backend.startup(self.core.bufsize)
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

    def __enter__(self) -> TIS:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("the TIS device is closed")

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
        """The TPM version the interface registers present (1 or 2; 0 unknown)."""
        return int(self.core.tpm_version)

    @property
    def irq_level(self) -> int:
        """The current level of the interrupt line."""
        return int(self.core.irq_level)

    @property
    def active_locality(self) -> Optional[int]:
        locality: Optional[int] = self.core.active_locality
        return locality

    # -- requests from the register model ----------------------------------
    def _on_request(self, kind: int) -> None:
        if kind == _REQUEST_COMMAND:
            self._deliver()
        elif kind == _REQUEST_CANCEL:
            if self.busy:
                self._backend_call(self.backend.cancel)
        elif kind == _REQUEST_ESTABLISHED:
            # QEMU caches only an answer: after a failure ACCESS shows "not
            # established" and the next read asks again.
            try:
                flag = self.backend.get_established_flag()
            except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
                self._report(exc)
            else:
                self.core.set_established(bool(flag))
        elif kind == _REQUEST_RESET_ESTABLISHED:
            locality = self.core.active_locality
            if locality is None:  # pragma: no cover - the core asks only for the active locality
                return
            if self._backend_call(lambda: self.backend.reset_established_flag(locality)):
                self.core.invalidate_established()

    def _backend_call(self, fn: Callable[[], object]) -> bool:
        """Run a control operation; True if it worked. A failure is logged and
        reported, never raised."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
            self._report(exc)
            return False
        return True

    def _deliver(self) -> None:
        pending = self.core.pending_command
        if pending is None:  # pragma: no cover - the core only asks with a command
            return
        locality, command = pending
        if not self.asynchronous or self._closed:
            # (a closed device has no worker: its backend is gone, TPM_FAIL at once)
            self.core.complete(*self._run(command, locality))
            return
        if self.busy:
            # QEMU: "There is a TPM request pending". The core has already
            # moved this locality to EXECUTION and made it the command's
            # locality, so the running command's response will land there.
            log.warning("TIS: tpmGo at locality %d while a command is in flight; request dropped", locality)
            return
        self._idle.clear()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            self._worker = threading.Thread(target=self._work, name="tpmdev-tis-worker", daemon=True)
            self._worker.start()
        self._jobs.put((command, locality))

    def _run(self, command: bytes, locality: int) -> tuple[bytes, bool]:
        try:
            if self._closed:
                raise BackendError("the TIS device is closed")
            response = self.backend.execute(command, locality)
        except Exception as exc:  # noqa: BLE001 - guest gets TPM_FAIL, the host the error
            self._report(exc)
            return FATAL_RESPONSE, False
        return response, is_selftest_done(command, response)

    def _report(self, exc: Exception) -> None:
        error = exc if isinstance(exc, BackendError) else BackendError(f"backend raised {exc!r}")
        if error is not exc:
            error.__cause__ = exc
        log.error("TIS: backend failure: %s", error)
        self.backend_error = error
        if self._on_backend_error is not None:
            try:
                self._on_backend_error(error)
            except Exception:  # a host callback bug must not reach the guest
                log.exception("TIS: on_backend_error callback failed")

    def _work(self) -> None:
        assert self._jobs is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                response, selftest_done = self._run(*job)
            except BaseException:  # pragma: no cover - _run contains backend failures itself
                log.exception("TIS: worker failed")
                response, selftest_done = FATAL_RESPONSE, False
            self.core.post(response, selftest_done)
            self._idle.set()
            if self._on_complete is not None:
                try:
                    self._on_complete()
                except Exception:  # pragma: no cover - host callback bug
                    log.exception("TIS: on_complete callback failed")
