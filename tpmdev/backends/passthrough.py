"""The host's TPM character device as a backend, as QEMU's ``-tpmdev passthrough``.

Theory of operation
-------------------
The Linux TPM device (``/dev/tpmN``) takes one whole command per write()
and gives the whole response to one read(); it admits one opener at a time
(a second open fails with EBUSY). :class:`Passthrough` uses it the way QEMU
does:

1. open the device read/write (or take an already open file descriptor, see
   *fd*);
2. probe the TPM family: TPM2_ReadClock, then TPM_GetTicks, one second each
   (:func:`tpmdev.backends._probe.probe_version`); no answer that fits means
   the file is not a TPM and construction fails;
3. open the sysfs cancel file: *cancel_path*, else
   ``/sys/class/tpm/<name>/device/cancel``, then
   ``/sys/class/misc/<name>/device/cancel`` (kernels before 4.0), where
   ``<name>`` is the device path's last component; none opens -> construction
   fails.

At every machine reset the frontend asks :meth:`Passthrough.get_buffer_size`
(TPM(2)_GetCapability sent to the device, 4096 if the answer is unusable),
calls :meth:`Passthrough.reset` (a cancel) and :meth:`Passthrough.startup`,
which only checks that the frontend's buffer is not smaller than the host
TPM's. The host's TPM is already running: the guest's TPM(2)_Startup reaches
it like any other command (and a started TPM refuses it).

A command is one write() of all its bytes and one read() of the response.
The response is invalid -- :class:`tpmdev.BackendError`, which a device layer
turns into :data:`tpmdev.wire.FATAL_RESPONSE` -- when it is shorter than a
header, its size field differs from the bytes read, or it is larger than the
frontend's buffer. The device keeps message boundaries, so an invalid
response leaves it usable for the next command.

Cancel: while a command is in flight, :meth:`Passthrough.cancel` (callable
from another thread) writes ``-`` to the cancel file; the kernel then asks
the TPM to abort. Idle, it writes nothing, so a command the host itself runs
is never cancelled. If the device then reports ECANCELED, that is not an
error: the guest gets the fatal response, as with QEMU. If the TPM answers
instead (finished anyway, or its own cancel response), that answer is
returned.

Locality is ignored, the established flag is always clear and resetting it
does nothing; there is no state to save or load (:class:`tpmdev.StateError`).

Threads: a lock serialises device exchanges; a second lock guards the
"in flight" flag and the cancel write, so a cancel never lands between
commands. :meth:`Passthrough.close` cancels a command in flight and wakes a
thread waiting for its response (self-pipe), then closes the files.

Where we differ from QEMU, on purpose
-------------------------------------
* Every wait is bounded. The device is opened with O_NONBLOCK, so on Linux
  >= 4.20 the write only queues the command and the wait for the response is
  a poll() bounded by ``timeout`` (default :data:`DEFAULT_TIMEOUT`); QEMU
  opens it blocking and waits in write() as long as the kernel does. Older
  kernels ignore O_NONBLOCK on this device; then the write blocks as in QEMU.
  When the wait runs out we write ``-`` to the cancel file, raise
  :class:`tpmdev.BackendError` and mark the backend failed: the late response
  could otherwise be taken for the next command's. Every later command
  raises at once; create a new backend (reopen the device) to recover. A
  probe that gets no answer within its second does the same.
* The version and buffer-size probes take the whole answer and apply QEMU's
  length checks to it (see :mod:`tpmdev.backends._probe`); QEMU reads at most
  1024, 18 or 35 bytes. Same verdicts, nothing left unread in the device.
* A response is read whole (up to :data:`READ_LIMIT` bytes) and refused when
  larger than the frontend's buffer; QEMU reads at most the buffer and refuses
  the truncated response, which a kernel with partial reads would then hand
  over, out of step, to the next read.
* Commands shorter than a header are refused before anything is written (the
  kernel refuses them with EINVAL; the guest sees the same failure).
* The cancel file is opened with O_NONBLOCK: a FIFO nobody reads fails at
  once (ENXIO) instead of blocking the constructor.
* :meth:`startup` with a buffer size before any :meth:`get_buffer_size` asks
  the TPM first; QEMU compares with 0 then (its frontends always ask first).
* Migration: QEMU's passthrough code registers no blocker (its documentation
  says migration is not supported); :meth:`get_state` and :meth:`set_state`
  refuse plainly.
* A file descriptor may be given instead of a path (*fd*): for a device
  opened elsewhere, or a stand-in with the device's message semantics (a unix
  SOCK_SEQPACKET socket, which open() cannot open). *path* then only names it
  and derives the cancel file.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Optional, Union

from tpmdev.backends._probe import probe_buffer_size, probe_version
from tpmdev.backends.base import DEFAULT_BUFFER_SIZE, MAX_RESPONSE_SIZE, Backend, check_path, check_timeout
from tpmdev.errors import BackendError, ConfigurationError, StateError
from tpmdev.wire import FATAL_RESPONSE, HEADER_SIZE, header_size, is_whole_message

__all__ = ["DEFAULT_DEVICE", "DEFAULT_TIMEOUT", "PROBE_TIMEOUT", "READ_LIMIT", "Passthrough"]

log = logging.getLogger(__name__)

#: QEMU's default device.
DEFAULT_DEVICE = "/dev/tpm0"

#: Seconds a command may take: the longest duration the Linux driver grants
#: a TPM 2.0 command (TPM2_DURATION_LONG_LONG), so the kernel's own timeout
#: gives its verdict first.
DEFAULT_TIMEOUT = 300.0

#: Seconds QEMU waits for the answer to each probe.
PROBE_TIMEOUT = 1.0

#: Largest response read; the kernel's own buffer is 4096 bytes.
READ_LIMIT = MAX_RESPONSE_SIZE

_CANCEL_PATHS = ("/sys/class/tpm/{}/device/cancel", "/sys/class/misc/{}/device/cancel")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class _Files:
    """The descriptors a Passthrough holds, kept apart for the finalizer."""

    device: int = -1
    cancel: int = -1
    wake_r: int = -1
    wake_w: int = -1

    def close(self) -> None:
        for name in ("device", "cancel", "wake_r", "wake_w"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass


class _Canceled(Exception):
    """The device reported ECANCELED after our cancel (not an error)."""


class Passthrough(Backend):
    """The host's TPM 1.2 or 2.0 device, used as QEMU's ``-tpmdev passthrough``.

    :param path: the TPM character device (QEMU's ``path``, default
        ``/dev/tpm0``). With *fd*, only its last component is used, to derive
        the cancel file.
    :param cancel_path: the sysfs cancel file (QEMU's ``cancel-path``);
        derived from *path* when None.
    :param fd: an open file descriptor with the device's semantics to use
        instead of opening *path*. The backend owns it from now on and closes
        it, also when construction fails.
    :param timeout: seconds a command may take, write to last response byte
        (default :data:`DEFAULT_TIMEOUT`); the version probe waits at most
        :data:`PROBE_TIMEOUT` (or *timeout*, if shorter), as QEMU's.

    Raises :class:`tpmdev.BackendError` when the device cannot be opened (a
    busy device says so), is not a TPM, or has no cancel file, and
    :class:`tpmdev.ConfigurationError` for an argument of the wrong kind.
    """

    state_kind: ClassVar[str] = "passthrough"

    def __init__(
        self,
        path: PathLike = DEFAULT_DEVICE,
        cancel_path: Optional[PathLike] = None,
        *,
        fd: Optional[int] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._files = files = _Files()
        self._finalizer = weakref.finalize(self, files.close)
        try:
            if fd is not None:
                if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
                    raise ConfigurationError(f"fd must be an open file descriptor (an int >= 0), got {fd!r}")
                try:
                    os.fstat(fd)
                except OSError as exc:
                    raise BackendError(f"fd {fd} is not an open file descriptor ({exc.strerror})") from None
                files.device = fd
            self.timeout = check_timeout(timeout)
            if isinstance(path, int):
                raise ConfigurationError(f"path must be a path, got {path!r}; pass a descriptor as fd=")
            self.path = check_path(path, "path")
            if cancel_path is not None:
                cancel_path = check_path(cancel_path, "cancel_path")
            self._lock = threading.Lock()  # one exchange with the device at a time
            self._flight = threading.Lock()  # guards the two flags and the cancel write
            self._executing = False
            self._canceled = False
            self._host_buffer_size = 0  # 0: not asked yet (QEMU's initial value)
            self._out_len = 0  # the frontend's buffer, from startup(n); 0: not given
            files.wake_r, files.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd is None:
                files.device = _open_device(self.path)
            self._version = probe_version(self._version_probe_transact)
            if not self._version:
                why = f" ({self._failure})" if self._failure else ""
                raise BackendError(
                    f"{self.path!r} is not a TPM device: it answered neither TPM2_ReadClock nor "
                    f"TPM_GetTicks with a valid response{why}"
                )
            files.cancel, self.cancel_path = _open_cancel(self.path, cancel_path)
        except BaseException:
            self._closed = True
            self._finalizer()
            raise
        log.debug("passthrough %s: TPM %d, cancel file %s", self.path, self._version, self.cancel_path)

    # -- identity -----------------------------------------------------------
    @property
    def tpm_version(self) -> int:
        """1 (TPM 1.2) or 2 (TPM 2.0), as the probe found at construction."""
        return self._version

    # -- power and reset ----------------------------------------------------
    def _get_buffer_size(self) -> int:
        """Ask the host TPM (TPM(2)_GetCapability) for its buffer size.

        4096 when it gives no usable answer, as QEMU. Remembered for
        :meth:`startup`.
        """
        with self._lock:
            self._check_open()
            if self._failure is not None:
                log.warning(
                    "passthrough failed earlier (%s); assuming %d", self._failure, DEFAULT_BUFFER_SIZE
                )
                size = DEFAULT_BUFFER_SIZE
            else:
                size = probe_buffer_size(self._probe_transact, self._version)
        self._host_buffer_size = size
        return size

    def _startup(self, buffer_size: int) -> None:
        """Accept the frontend's buffer size; the host's TPM is already running.

        Raises :class:`tpmdev.BackendError` when *buffer_size* is not 0 and
        smaller than the host TPM's buffer (QEMU then refuses to start).
        """
        if not buffer_size:
            return
        if not self._host_buffer_size:
            self._get_buffer_size()
        if buffer_size < self._host_buffer_size:
            raise BackendError(
                f"requested buffer size of {buffer_size} bytes is smaller than the host TPM's fixed "
                f"buffer size of {self._host_buffer_size} bytes; the frontend needs a larger buffer"
            )
        self._out_len = buffer_size

    def _reset(self) -> None:
        """Machine reset: cancel the command in flight, if any (QEMU's reset)."""
        self._cancel_in_flight()

    # -- commands -------------------------------------------------------------
    def _execute(self, cmd: bytes, locality: int) -> bytes:
        """Write *cmd* to the device, read and return the response.

        *locality* is ignored (a host device has no locality for us to set).
        Raises :class:`tpmdev.BackendError` for a device error, an invalid
        response or a timeout. After a cancel, a device reporting ECANCELED
        gives :data:`~tpmdev.wire.FATAL_RESPONSE`, not an error (as QEMU).
        """
        del locality  # a passthrough TPM ignores it, as QEMU
        if len(cmd) < HEADER_SIZE:
            raise BackendError(
                f"TPM command of {len(cmd)} bytes is shorter than a header; not sent (the device refuses it)"
            )
        with self._lock:
            self._check_usable()  # closed or failed while we waited for the lock
            capacity = self._out_len or max(self._host_buffer_size, DEFAULT_BUFFER_SIZE)
            try:
                response = self._exchange(cmd, self.timeout, "command")
            except _Canceled:
                log.info("passthrough: command 0x%s canceled; the guest gets TPM_FAIL", cmd[6:10].hex())
                return FATAL_RESPONSE
        if not is_whole_message(response):
            raise BackendError(
                f"received an invalid response from the TPM: {len(response)} bytes read, size field "
                f"{header_size(response)} (starts {response[:HEADER_SIZE].hex() or 'empty'})"
            )
        if len(response) > capacity:
            raise BackendError(
                f"the TPM's response of {len(response)} bytes does not fit the {capacity}-byte buffer"
            )
        return response

    def _cancel(self) -> None:
        """Write ``-`` to the cancel file if a command is in flight; else nothing.

        Callable from any thread while :meth:`execute` waits. Never raises: a
        failed write is logged, as QEMU reports it and carries on.
        """
        self._cancel_in_flight()

    # -- established flag, state ---------------------------------------------
    # The established flag is always clear (QEMU does not pass the host TPM's
    # flag through) and resetting it does nothing: the base class's defaults.

    def _get_state(self) -> dict[str, bytes]:
        """Refused: the state is in the host's TPM, which cannot be saved or moved."""
        raise StateError(
            "a passthrough TPM has no state to save: it lives in the host's TPM chip, which cannot "
            "be copied or moved (QEMU does not migrate passthrough TPMs either); use an emulated "
            "TPM (swtpm, libtpms, builtin) for snapshots or migration"
        )

    def _set_state(self, state: dict[str, Any]) -> None:
        """Refused: a host TPM cannot be loaded with another TPM's state."""
        raise StateError(
            "a passthrough TPM cannot load a saved state: the host's TPM chip keeps its own "
            "(QEMU does not migrate passthrough TPMs either); use an emulated TPM for that"
        )

    # -- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Cancel a command in flight, wake its waiter, close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cancel_in_flight()
        try:
            os.write(self._files.wake_w, b"x")
        except OSError:
            pass
        got = self._lock.acquire(timeout=self.timeout)
        if not got:
            log.error("passthrough: a thread is still blocked on %s; closing it anyway", self.path)
        try:
            self._finalizer()
        finally:
            if got:
                self._lock.release()

    # -- internals ------------------------------------------------------------
    def _probe_transact(self, command: bytes, wait: float | None = None) -> bytes:
        """One probe exchange (the caller holds the lock, or is the constructor).

        *wait* defaults to the backend's timeout: only the version probe has
        QEMU's 1 s limit (see :meth:`_version_probe_transact`).
        """
        if self._failure is not None:
            raise BackendError(f"passthrough failed earlier ({self._failure})")
        try:
            return self._exchange(command, self.timeout if wait is None else wait, "probe")
        except _Canceled:
            raise BackendError("the probe was canceled") from None

    def _version_probe_transact(self, command: bytes) -> bytes:
        return self._probe_transact(command, min(PROBE_TIMEOUT, self.timeout))

    def _exchange(self, command: bytes, wait: float, what: str) -> bytes:
        """Write *command*, wait up to *wait* seconds, return what one read gives."""
        fd = self._files.device
        with self._flight:
            self._executing = True
            self._canceled = False
        try:
            deadline = time.monotonic() + wait
            try:
                written = os.write(fd, command)
            except OSError as exc:
                self._raise_io(exc, "transmitting the command to")
            if written != len(command):
                raise BackendError(f"the TPM device took {written} of the command's {len(command)} bytes")
            return self._read(fd, deadline, wait, what)
        finally:
            with self._flight:
                self._executing = False

    def _read(self, fd: int, deadline: float, wait: float, what: str) -> bytes:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._files.wake_r, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(wait, what)
            events = poller.poll(max(1, int(remaining * 1000 + 0.999)))
            if self._closed:
                raise BackendError("the backend was closed while a command was running")
            if not any(ev_fd == fd for ev_fd, _ in events):
                continue
            try:
                return os.read(fd, READ_LIMIT)
            except BlockingIOError:
                continue  # woken without a response after all
            except OSError as exc:
                self._raise_io(exc, "reading the response from")

    def _raise_io(self, exc: OSError, doing: str) -> NoReturn:
        if exc.errno == errno.ECANCELED and self._canceled:
            raise _Canceled from None
        hint = " (a response is still pending)" if exc.errno == errno.EBUSY else ""
        raise BackendError(
            f"error while {doing} the TPM device {self.path!r}: {exc.strerror}{hint}"
        ) from None

    def _timed_out(self, wait: float, what: str) -> NoReturn:
        # The device still owes the answer: cancel it, and never take a late
        # answer for the next command's.
        self._cancel_in_flight()
        reason = f"the TPM did not answer the {what} within {wait:g} s"
        if self._failure is None:
            log.error("passthrough %s failed: %s", self.path, reason)
        self._fail(reason)
        raise BackendError(f"{reason}; the backend is now unusable, create a new one")

    def _cancel_in_flight(self) -> bool:
        with self._flight:
            if not self._executing or self._files.cancel < 0:
                return False
            self._canceled = True
            try:
                os.write(self._files.cancel, b"-")
            except OSError as exc:
                log.error("canceling the TPM command failed: %s", exc.strerror)
            return True

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failure else "open")
        return f"<Passthrough {getattr(self, 'path', '?')} TPM {getattr(self, '_version', 0)} {state}>"


def _open_device(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise BackendError(
                f"TPM device {path!r} is busy: another user holds it (the kernel lets one process "
                "open it at a time; a TPM resource manager such as tpm2-abrmd, or another VM, may "
                "have it); stop that user first"
            ) from None
        if exc.errno == errno.ENOENT:
            hint = "; is a TPM driver loaded (ls /dev/tpm*)?"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            hint = "; read/write access is needed (root, or the TPM device's group)"
        else:
            hint = ""
        raise BackendError(f"cannot access TPM device {path!r}: {exc.strerror}{hint}") from None


def _open_cancel(device_path: str, cancel_path: Optional[PathLike]) -> tuple[int, str]:
    """Open the sysfs cancel file as QEMU finds it; return (fd, path)."""
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if cancel_path is not None:
        given = os.fspath(cancel_path)
        try:
            return os.open(given, flags), given
        except OSError as exc:
            raise BackendError(
                f"cannot open the TPM cancel file {given!r} given as cancel_path: {exc.strerror}"
            ) from None
    _head, slash, name = device_path.rpartition("/")
    if not slash or not name:
        raise BackendError(
            f"cannot derive the TPM cancel file from the device path {device_path!r} (no "
            "'<dir>/<name>' form); pass cancel_path"
        )
    tried = []
    for pattern in _CANCEL_PATHS:
        candidate = pattern.format(name)
        try:
            return os.open(candidate, flags), candidate
        except OSError as exc:
            tried.append(f"{candidate} ({exc.strerror})")
    raise BackendError(
        "cannot find the TPM cancel file; tried "
        + ", ".join(tried)
        + "; pass cancel_path (QEMU's cancel-path) naming the sysfs 'cancel' file of this TPM"
    )
