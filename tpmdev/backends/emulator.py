"""swtpm as a backend, driven the way QEMU's ``-tpmdev emulator`` drives it.

Theory of operation
-------------------
swtpm runs as ``swtpm socket --ctrl type=unixio,path=CTRL --tpmstate dir=...``
without ``--server``: it has a control socket and no data socket of its own.
Connecting takes the steps QEMU takes when it creates the backend:

1. connect to the control socket;
2. make a unix stream socketpair and hand one end to swtpm with
   CMD_SET_DATAFD (SCM_RIGHTS); the other end is our data channel;
3. probe the TPM family on the data channel: TPM2_ReadClock, then
   TPM_GetTicks (:mod:`tpmdev.wire`). No CMD_INIT has been sent yet; swtpm
   0.7.1 answers both probes with a failure response in its own family's
   format (TPM 2.0: ``80 01 .. 00 00 01 01``, TPM 1.2: ``00 C4 .. 00 00 00
   09``), which is enough to tell the family;
4. CMD_GET_CAPABILITY, and refuse a swtpm lacking what QEMU requires
   (TPM 1.2: 0x340F, TPM 2.0: 0x348F).

At every machine reset the frontend asks :meth:`Emulator.get_buffer_size`
(CMD_STOP + CMD_SET_BUFFERSIZE(0)) and calls :meth:`Emulator.startup`
(CMD_STOP + CMD_SET_BUFFERSIZE(n) when n != 0, then CMD_INIT(0)); the guest
sends TPM(2)_Startup itself. A command is CMD_SET_LOCALITY when the locality
changed since the previous command, one write of the command, a read of the
10-byte response header and a read of the rest it announces.

Threads: the data channel and the control channel each have a lock, so
:meth:`Emulator.cancel` (control) can run while :meth:`Emulator.execute`
waits for a response (data). Control messages are serialised by
:class:`tpmdev.backends.swtpm.Control`.

Where we differ from QEMU, on purpose
-------------------------------------
* Every read and write is bounded by ``timeout``; QEMU blocks for ever on a
  stopped swtpm. A timeout, a dead process, an early end of stream, or a
  response header announcing fewer than 10 or more than
  :data:`MAX_RESPONSE_SIZE` bytes raises :class:`tpmdev.BackendError` and
  marks the backend failed: the data stream may be out of step, so every
  later command raises at once (QEMU trusts the header size). Create a new
  backend to recover. A device layer turns the error into
  :data:`tpmdev.wire.FATAL_RESPONSE` for the guest, as QEMU does.
* Commands shorter than a header (10 bytes) or longer than the buffer size
  in force (the last size swtpm reported, 4096 before it said) are refused
  before anything is sent, and the backend stays usable. swtpm 0.7.1 would
  wait for more bytes of a short command (QEMU then hangs) and would read an
  over-long one as two commands, answering twice.
* The 3 padding bytes of CMD_RESET_TPMESTABLISHED are zeros; QEMU 7.2 leaves
  them uninitialised. swtpm 0.7.1 reads only the locality byte (checked with
  garbage padding), so results match there; another swtpm might differ.
* Control replies are read in two passes (result, then the rest when it is
  0), as newer QEMU does; 7.2 waits for 8 bytes of GET_TPMESTABLISHED even
  when swtpm sends only a 4-byte error.
* The version probe waits ``timeout`` seconds for each answer, not 1 s.
* Convenience: a host that never calls :meth:`Emulator.startup` gets one
  implicitly (buffer size query, then ``startup(0)``) before its first
  command or established-flag request.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from tpmdev.backends.base import DEFAULT_BUFFER_SIZE, Backend
from tpmdev.backends.swtpm import (
    PTM_CAP_CANCEL_TPM_CMD,
    PTM_CAP_GET_TPMESTABLISHED,
    PTM_CAP_INIT,
    PTM_CAP_RESET_TPMESTABLISHED,
    PTM_CAP_SET_BUFFERSIZE,
    PTM_CAP_SET_DATAFD,
    PTM_CAP_SET_LOCALITY,
    PTM_CAP_SHUTDOWN,
    PTM_CAP_STOP,
    Control,
    ControlError,
    capability_names,
    recv_exactly,
)
from tpmdev.errors import BackendError
from tpmdev.wire import (
    HEADER_SIZE,
    TPM2_READCLOCK_PROBE,
    TPM12_GETTICKS_PROBE,
    header_size,
    version_from_probe,
)

__all__ = [
    "MAX_RESPONSE_SIZE",
    "REQUIRED_CAPS_TPM2",
    "REQUIRED_CAPS_TPM12",
    "Emulator",
]

log = logging.getLogger(__name__)

#: Largest response size field accepted. QEMU trusts it; we refuse anything
#: bigger so a garbled header cannot make us allocate or wait without bound.
#: Fixed rather than the negotiated buffer size so that it does not depend on
#: the order of calls; a frontend still decides what to do with a response
#: larger than its own buffer.
MAX_RESPONSE_SIZE = 0x10000

#: Capabilities QEMU requires before it uses a swtpm.
REQUIRED_CAPS_TPM12 = (
    PTM_CAP_INIT
    | PTM_CAP_SHUTDOWN
    | PTM_CAP_GET_TPMESTABLISHED
    | PTM_CAP_SET_LOCALITY
    | PTM_CAP_STOP
    | PTM_CAP_SET_DATAFD
    | PTM_CAP_SET_BUFFERSIZE
)
REQUIRED_CAPS_TPM2 = REQUIRED_CAPS_TPM12 | PTM_CAP_RESET_TPMESTABLISHED

_AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_CTRL_NAME = "swtpm-ctrl.sock"
_NO_LOCALITY = 0xFF  # QEMU starts with an all-ones locality: none used yet
_KILL_GRACE = 2.0  # seconds a process gets to exit after SIGTERM


@dataclass
class _Resources:
    """What an Emulator holds, kept apart so a finalizer can free it."""

    ctrl: socket.socket | None = None
    data: socket.socket | None = None
    process: subprocess.Popen[bytes] | None = None
    output: IO[bytes] | None = None
    tmpdir: str | None = None
    ctrl_path: str | None = None  # removed on release when we spawned swtpm


def _release(res: _Resources, wait_exit: float) -> None:
    """Close sockets, end an owned swtpm, remove temporary files.

    Also the weak finalizer: runs at interpreter exit (or garbage
    collection) for an Emulator that was never closed. *wait_exit* is how
    long swtpm may take to exit by itself (after CMD_SHUTDOWN).
    """
    for sock in (res.data, res.ctrl):
        if sock is not None:
            sock.close()
    res.data = res.ctrl = None
    proc = res.process
    if proc is not None:
        _end_process(proc, wait_exit)
        res.process = None
    if res.output is not None:
        res.output.close()
        res.output = None
    if res.tmpdir is not None:
        shutil.rmtree(res.tmpdir, ignore_errors=True)
        res.tmpdir = None
    elif proc is not None and res.ctrl_path is not None:
        try:
            if stat.S_ISSOCK(os.lstat(res.ctrl_path).st_mode):
                os.unlink(res.ctrl_path)
        except OSError:
            pass


def _end_process(proc: subprocess.Popen[bytes], wait_exit: float) -> None:
    try:
        proc.wait(wait_exit)
        return
    except subprocess.TimeoutExpired:
        pass
    # swtpm runs in its own session, so its process group id is its pid.
    # SIGCONT lets a stopped swtpm act on the SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
    try:
        proc.wait(_KILL_GRACE)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(_KILL_GRACE)
    except subprocess.TimeoutExpired:
        log.error("swtpm (pid %d) did not die after SIGKILL", proc.pid)


class Emulator(Backend):
    """A TPM 1.2 or 2.0 run by swtpm, connected as QEMU connects.

    ``Emulator(ctrl_path)`` uses a swtpm somebody else started (``swtpm
    socket --ctrl type=unixio,path=CTRL --tpmstate dir=DIR [--tpm2]``, no
    ``--server``); :meth:`spawn` starts one and owns it. *timeout* (seconds,
    default 10) bounds every exchange with swtpm: connecting, each control
    message, and each TPM command from write to the last response byte.

    Raises :class:`tpmdev.BackendError` if swtpm cannot be reached, its TPM
    family cannot be told, or it lacks a capability QEMU requires.
    """

    def __init__(self, ctrl_path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        timeout = _check_timeout(timeout)
        path = os.fspath(ctrl_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise BackendError(
                f"cannot connect to the swtpm control socket {path!r} ({exc.strerror or exc}); "
                "is swtpm running with --ctrl type=unixio,path=... ?"
            ) from None
        self._setup(sock, timeout, _Resources(ctrl_path=path))

    def _setup(self, sock: socket.socket, timeout: float, res: _Resources) -> None:
        self.timeout = timeout
        self._res = res
        res.ctrl = sock
        self._finalizer = weakref.finalize(self, _release, res, 0.0)
        self._data_lock = threading.Lock()
        self._control = Control(sock, timeout=timeout)
        self._failure: str | None = None
        self._locality = _NO_LOCALITY
        self._started = False  # startup() ran (explicitly or implicitly)
        self._initialised = False  # a CMD_INIT succeeded: SHUTDOWN at close
        self._buffer_size = 0  # 0 = not learned yet
        self._established: bool | None = None  # cached flag
        self._established_last = False  # answered when swtpm cannot be asked
        self._caps = 0
        self._version = 0
        try:
            self._connect_data_channel()
            self._version = self._probe_version()
            self._caps = self._control.get_capability()
            required = REQUIRED_CAPS_TPM2 if self._version == 2 else REQUIRED_CAPS_TPM12
            missing = required & ~self._caps
            if missing:
                raise BackendError(
                    f"swtpm (TPM {'2.0' if self._version == 2 else '1.2'}) lacks required control "
                    f"capabilities {', '.join(capability_names(missing))} (has 0x{self._caps:X}, "
                    f"needs 0x{required:X}); use a newer swtpm"
                )
        except BaseException:
            self._closed = True
            self._finalizer()
            raise

    def _connect_data_channel(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._res.data = ours
        try:
            self._control.set_datafd(theirs.fileno())
        finally:
            # swtpm holds its own copy now; ours must go, or a dead swtpm
            # would never show as end of stream.
            theirs.close()

    def _probe_version(self) -> int:
        """Tell the family as QEMU does: ReadClock, then GetTicks."""
        sock = self._res.data
        assert sock is not None
        for probe in (TPM2_READCLOCK_PROBE, TPM12_GETTICKS_PROBE):
            deadline = time.monotonic() + self.timeout
            try:
                sock.settimeout(self.timeout)
                sock.sendall(probe)
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                # One read of up to 1024 bytes, as QEMU; swtpm writes each
                # response in one piece.
                answer = sock.recv(1024)
            except (socket.timeout, BlockingIOError):
                raise BackendError(
                    f"swtpm did not answer the TPM version probe within {self.timeout} s"
                ) from None
            except OSError as exc:
                raise BackendError(f"swtpm data channel failed during the version probe ({exc})") from None
            if not answer:
                raise BackendError("swtpm closed the data channel during the version probe")
            version = version_from_probe(answer, probe)
            log.debug("version probe %s -> %s (TPM %d)", probe.hex(), answer.hex(), version)
            if version:
                return version
        raise BackendError("swtpm answered neither TPM2_ReadClock nor TPM_GetTicks; TPM version unknown")

    # -- spawning ---------------------------------------------------------
    @classmethod
    def spawn(
        cls,
        state_dir: str | os.PathLike[str],
        tpm_version: int = 2,
        *,
        timeout: float = 10.0,
        log_file: str | os.PathLike[str] | None = None,
        log_level: int | None = None,
        swtpm: str = "swtpm",
        extra_args: Sequence[str] = (),
    ) -> Emulator:
        """Start ``swtpm socket`` on *state_dir* and connect to it.

        The returned Emulator owns the process (its own session and process
        group): :meth:`close` ends it, and so does interpreter exit if close
        was never called. *state_dir* is created if missing; the control
        socket lives in it, or in a short temporary directory when the path
        would exceed the AF_UNIX limit. *log_file* / *log_level* become
        ``--log file=...,level=N``; *extra_args* are appended as they are.
        """
        if tpm_version not in (1, 2):
            raise ValueError(f"tpm_version must be 1 or 2, got {tpm_version!r}")
        timeout = _check_timeout(timeout)
        exe = shutil.which(swtpm)
        if exe is None:
            raise BackendError(
                f"swtpm executable {swtpm!r} not found; install swtpm "
                "(Debian/Ubuntu: apt-get install swtpm) or pass swtpm=<path>"
            )
        state = os.path.abspath(os.fspath(state_dir))
        os.makedirs(state, exist_ok=True)
        res = _Resources()
        try:
            ctrl_path = os.path.join(state, _CTRL_NAME)
            if len(os.fsencode(ctrl_path)) > _AF_UNIX_PATH_MAX:
                res.tmpdir = tempfile.mkdtemp(prefix="tpmdev-")
                ctrl_path = os.path.join(res.tmpdir, "ctrl")
                if len(os.fsencode(ctrl_path)) > _AF_UNIX_PATH_MAX:
                    raise BackendError(
                        f"no short enough directory for the swtpm control socket ({ctrl_path!r}); "
                        "set TMPDIR to a shorter path"
                    )
            if "," in state or "," in ctrl_path:
                # swtpm splits option values at commas and has no escape.
                raise BackendError(f"swtpm cannot take a path containing ',': {state!r}")
            res.ctrl_path = ctrl_path
            _remove_stale_socket(ctrl_path)
            args = [exe, "socket", "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={ctrl_path}"]
            if tpm_version == 2:
                args.append("--tpm2")
            if log_file is not None or log_level is not None:
                opts = [f"file={os.fspath(log_file)}" if log_file is not None else "fd=2"]
                if log_level is not None:
                    opts.append(f"level={int(log_level)}")
                args += ["--log", ",".join(opts)]
            args += [str(a) for a in extra_args]
            # swtpm's own messages go to a temporary file: a pipe nobody
            # drains could block it, and they explain an early exit.
            res.output = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as swtpm)
            try:
                res.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=res.output,
                    stderr=res.output,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BackendError(f"cannot start {exe!r} ({exc.strerror or exc})") from None
            sock = _wait_for_control_socket(res, ctrl_path, timeout)
            emu = cls.__new__(cls)
            emu._setup(sock, timeout, res)
            log.debug("spawned swtpm pid %d: %s", res.process.pid, " ".join(args))
            return emu
        except BaseException:
            _release(res, 0.0)
            raise

    # -- identity -----------------------------------------------------------
    @property
    def tpm_version(self) -> int:
        return self._version

    @property
    def capabilities(self) -> int:
        """The ``PTM_CAP_*`` bits swtpm reported."""
        return self._caps

    @property
    def pid(self) -> int | None:
        """The pid of the swtpm this backend owns, None if not owned."""
        proc = self._res.process
        return proc.pid if proc is not None else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The swtpm process this backend owns, None if not owned."""
        return self._res.process

    @property
    def control(self) -> Control:
        """The control-channel client (for commands the backend does not wrap)."""
        return self._control

    @property
    def failure(self) -> str | None:
        """Why the backend stopped taking commands, or None."""
        if self._failure is None and self._control.broken is not None:
            return f"control channel: {self._control.broken}"
        return self._failure

    # -- power and reset ----------------------------------------------------
    def get_buffer_size(self) -> int:
        """CMD_STOP + CMD_SET_BUFFERSIZE(0); 4096 if swtpm cannot say."""
        self._check_open()
        try:
            self._control.stop()
            size, _, _ = self._control.set_buffersize(0)
        except BackendError as exc:
            log.warning("cannot ask swtpm for its buffer size, assuming %d: %s", DEFAULT_BUFFER_SIZE, exc)
            return DEFAULT_BUFFER_SIZE
        self._buffer_size = size
        return size

    def startup(self, buffer_size: int = 0) -> None:
        """Power on: CMD_STOP + CMD_SET_BUFFERSIZE(n) (n != 0), CMD_INIT(0).

        The TPM then waits for TPM(2)_Startup from the guest. Raises
        :class:`tpmdev.BackendError` if swtpm refuses.
        """
        self._check_open()
        self._check_usable()
        if buffer_size:
            self._control.stop()
            self._buffer_size, _, _ = self._control.set_buffersize(buffer_size)
        self._control.init(0)
        self._initialised = True
        self._started = True

    def reset(self) -> None:
        """Nothing to do: the frontend never has two commands in flight."""

    def _implicit_startup(self) -> None:
        # Convenience for hosts that skip the reset sequence; see module doc.
        log.debug("no startup() before first use; powering the TPM on implicitly")
        self.get_buffer_size()
        self.startup(0)

    # -- commands -------------------------------------------------------------
    def execute(self, command: bytes, locality: int = 0) -> bytes:
        """Run one TPM command at *locality*; return the whole response.

        Raises :class:`tpmdev.BackendError` if it cannot run (see the module
        documentation), :class:`tpmdev.StateError` after :meth:`close`.
        """
        self._check_open()
        cmd = bytes(command)
        if not isinstance(locality, int) or not 0 <= locality <= 0xFF:
            raise ValueError(f"locality must be an int 0..255, got {locality!r}")
        if len(cmd) < HEADER_SIZE:
            raise BackendError(
                f"TPM command of {len(cmd)} bytes is shorter than a header; not sent "
                "(swtpm would wait for more bytes)"
            )
        with self._data_lock:
            self._check_open()
            self._check_usable()
            if not self._started:
                self._implicit_startup()
            limit = self._buffer_size or DEFAULT_BUFFER_SIZE
            if len(cmd) > limit:
                raise BackendError(
                    f"TPM command of {len(cmd)} bytes exceeds the buffer size {limit}; not sent"
                )
            if locality != self._locality:
                self._control_call(self._control.set_locality, locality)
                self._locality = locality
            sock = self._res.data
            assert sock is not None
            deadline = time.monotonic() + self.timeout
            try:
                try:
                    sock.settimeout(self.timeout)
                    sock.sendall(cmd)
                except (socket.timeout, BlockingIOError):
                    raise BackendError(f"swtpm did not take the command within {self.timeout} s") from None
                except OSError as exc:
                    raise BackendError(f"cannot send the command to swtpm ({exc.strerror or exc})") from None
                header = recv_exactly(sock, HEADER_SIZE, deadline, self.timeout, "response header")
                size = header_size(header)
                if size < HEADER_SIZE or size > MAX_RESPONSE_SIZE:
                    raise BackendError(
                        f"swtpm sent a response header announcing {size} bytes "
                        f"(valid: {HEADER_SIZE}..{MAX_RESPONSE_SIZE}); header {header.hex()}"
                    )
                body = recv_exactly(sock, size - HEADER_SIZE, deadline, self.timeout, "response")
            except BackendError as exc:
                if self._closed:
                    raise BackendError("the backend was closed while a command was running") from None
                self._fail(str(exc))
                raise
            return header + body

    def cancel(self) -> None:
        """CMD_CANCEL_TPM_CMD, if swtpm can; callable while execute() waits.

        Never raises for swtpm's answer: a refused or failed cancel is
        logged (QEMU reports it and carries on).
        """
        if self._closed or not self._caps & PTM_CAP_CANCEL_TPM_CMD:
            return
        try:
            self._control.cancel_tpm_cmd()
        except BackendError as exc:
            log.warning("swtpm could not cancel the command: %s", exc)

    # -- established flag ---------------------------------------------------
    def get_established_flag(self) -> bool:
        """CMD_GET_TPMESTABLISHED once, then the cached answer.

        If swtpm cannot answer, the last known value (initially False) is
        returned, nothing is cached, and the failure is logged, as QEMU does.
        """
        self._check_open()
        if self._established is not None:
            return self._established
        try:
            if not self._started:
                with self._data_lock:
                    if not self._started:
                        self._check_usable()
                        self._implicit_startup()
            flag = self._control.get_tpm_established()
        except BackendError as exc:
            log.warning("cannot read the TPM established flag from swtpm: %s", exc)
            return self._established_last
        self._established = self._established_last = flag
        return flag

    def reset_established_flag(self, locality: int) -> None:
        """CMD_RESET_TPMESTABLISHED (TPM 2.0; nothing for TPM 1.2).

        QUIRK (QEMU): the locality sent is the one of the last command run,
        not *locality*; before any command it is 0xFF, which swtpm refuses.
        swtpm accepts only 3 and 4. A refusal is logged, not raised, and
        keeps the cached flag; success makes the next read ask swtpm again.
        The padding bytes are zeros where QEMU 7.2 sends garbage; swtpm
        0.7.1 ignores them, but results could differ with another swtpm.
        """
        self._check_open()
        if self._version != 2:
            return
        del locality  # deliberately unused, see the docstring
        try:
            self._control.reset_tpm_established(self._locality)
        except BackendError as exc:
            log.warning("swtpm did not reset the TPM established flag: %s", exc)
            return
        self._established = None

    # -- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """CMD_SHUTDOWN (if the TPM was initialised), close, reap swtpm.

        Bounded: a stalled swtpm costs at most ``timeout`` for the SHUTDOWN
        answer plus a few seconds for SIGTERM and SIGKILL. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        shut_down = False
        if self._initialised and self.failure is None:
            try:
                self._control.shutdown()
                shut_down = True
            except BackendError as exc:
                log.warning("swtpm did not take CMD_SHUTDOWN: %s", exc)
        data = self._res.data
        if data is not None:
            # Wake a thread blocked reading a response, then wait for it.
            try:
                data.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        got = self._data_lock.acquire(timeout=self.timeout)
        try:
            self._finalizer.detach()
            _release(self._res, self.timeout if shut_down else 0.0)
        finally:
            if got:
                self._data_lock.release()

    # -- internals ------------------------------------------------------------
    def _check_usable(self) -> None:
        reason = self.failure
        if reason is not None:
            raise BackendError(f"swtpm backend failed earlier ({reason}); create a new backend")

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
            log.error("swtpm backend failed: %s", reason)

    def _control_call(self, method: Callable[[int], None], arg: int) -> None:
        # A refusal (ControlError) is an answer; a transport failure is fatal.
        try:
            method(arg)
        except ControlError:
            raise
        except BackendError as exc:
            self._fail(str(exc))
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self.failure else "open")
        owned = f" pid={self.pid}" if self.pid is not None else ""
        return f"<Emulator TPM {self._version}{owned} {state}>"


def _check_timeout(timeout: float) -> float:
    t = float(timeout)
    if not t > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return t


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on (left by a killed swtpm)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    else:
        raise BackendError(f"another swtpm already listens on {path!r}")
    finally:
        probe.close()


def _wait_for_control_socket(res: _Resources, path: str, timeout: float) -> socket.socket:
    proc = res.process
    assert proc is not None
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        status = proc.poll()
        if status is not None:
            output = b""
            if res.output is not None:
                res.output.seek(0)
                output = res.output.read(4000)
            text = output.decode(errors="replace").strip()
            raise BackendError(
                f"swtpm exited with status {status} before its control socket appeared"
                + (f": {text}" if text else "")
            )
        if os.path.exists(path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                sock.connect(path)
                return sock
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
            except OSError as exc:
                sock.close()
                raise BackendError(f"cannot connect to swtpm's control socket {path!r} ({exc})") from None
        if time.monotonic() >= deadline:
            raise BackendError(f"swtpm did not open its control socket {path!r} within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
