"""swtpm as a backend, driven the way QEMU's ``-tpmdev emulator`` drives it.

Theory of operation
-------------------
swtpm runs as ``swtpm socket --ctrl type=unixio,path=CTRL --tpmstate dir=...``
without ``--server``: it has a control socket and no data socket of its own.
Connecting takes the steps QEMU takes when it creates the backend:

1. connect to the control socket;
2. make a unix stream socketpair and hand one end to swtpm with
   CMD_SET_DATAFD (SCM_RIGHTS); the other end is our data channel
   (alternatives, which QEMU does not have: connect to swtpm's own data
   socket, ``--server type=unixio,path=...`` or ``--server type=tcp,port=N``
   on the loopback, and then no SET_DATAFD is sent -- swtpm serving both
   gets confused by it);
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
* The established flag is cached as QEMU caches it (asked once, asked again
  after a successful CMD_RESET_TPMESTABLISHED), and also dropped by every
  other control command that may change it (INIT, STOP, HASH_*,
  SET_STATEBLOB, ...; :attr:`Control.changes
  <tpmdev.backends.swtpm.Control.changes>`), even one sent through
  :attr:`Emulator.control` directly, and by a TPM 1.2
  TSC_ResetEstablishmentBit command. QEMU's cache outlives a machine reset
  and a state load, and can then show a flag the TPM no longer has.
* Localities are 0..4 (the backend contract); QEMU hands swtpm whatever
  its frontend gives, which is never more than 4.
* A swtpm started by :meth:`Emulator.spawn` runs with ``--terminate`` and
  has a guard process (a few lines of shell in a session of its own): when
  the host dies without closing the backend -- SIGKILL, SIGTERM, a crash --
  swtpm ends and its private directory and sockets are removed. QEMU leaves
  starting swtpm to libvirt.
* Convenience: a host that never calls :meth:`Emulator.startup` gets one
  implicitly (buffer size query, then ``startup(0)``) before its first
  command, established-flag request or hash sequence. A swtpm spawned with
  ``startup=...`` (``--flags not-need-init,startup-*``) runs without
  CMD_INIT, so it gets none.
* The control channel may be TCP (``ctrl_address=``, swtpm's
  ``--ctrl type=tcp``), which QEMU cannot use; SET_DATAFD cannot pass a
  descriptor over TCP (swtpm 0.7.1 answers 0x03, or 0x1F when it has a
  ``--server`` socket), so TCP control needs one of the ``--server`` data
  channels. Addresses must be loopback: neither
  channel is authenticated.

State (migration, snapshots)
----------------------------
:meth:`Emulator.get_state` is QEMU's save: with no command in flight,
GET_STATEBLOB (decrypted) for the permanent, volatile and savestate blobs,
in that order; a result with bit 0x800 is an empty blob. Asking for the
volatile blob makes swtpm store its volatile state first.
:meth:`Emulator.set_state` is QEMU's load: CMD_STOP, SET_STATEBLOB for each
non-empty blob in the same order, then CMD_INIT with the delete-volatile
flag; the TPM resumes where the saved one was, without TPM(2)_Startup. (A
later plain :meth:`startup` -- a machine reset -- starts it afresh: the
volatile copy is gone and the guest sends Startup as after a reboot.)
Blobs from a swtpm with ``--migration-key`` are encrypted and load only into
a swtpm with the same key; a wrong or missing key is swtpm's result 0x21
(or 0x0D), raised as :class:`~tpmdev.backends.swtpm.ControlError`, and the
TPM stays stopped.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, IO, Union

from tpmdev.backends.base import (
    DEFAULT_BUFFER_SIZE,
    MAX_RESPONSE_SIZE,
    STATE_KEYS,
    Backend,
    as_bytes,
    check_locality,
    check_path,
    check_timeout,
    check_tpm_version,
)
from tpmdev.backends.swtpm import (
    BLOB_TYPE_NAMES,
    PTM_BLOB_TYPE_PERMANENT,
    PTM_BLOB_TYPE_SAVESTATE,
    PTM_BLOB_TYPE_VOLATILE,
    PTM_CAP_CANCEL_TPM_CMD,
    PTM_CAP_GET_TPMESTABLISHED,
    PTM_CAP_INIT,
    PTM_CAP_RESET_TPMESTABLISHED,
    PTM_CAP_SET_BUFFERSIZE,
    PTM_CAP_SET_DATAFD,
    PTM_CAP_SET_LOCALITY,
    PTM_CAP_SHUTDOWN,
    PTM_CAP_STOP,
    PTM_INIT_FLAG_DELETE_VOLATILE,
    PTM_STATE_FLAG_DECRYPTED,
    SWTPM_INFO_TPMSPECIFICATION,
    Control,
    ControlError,
    StateBlob,
    binary_features,
    capability_names,
)
from tpmdev.backends._probe import VERSION_PROBE_READ_SIZE, probe_version
from tpmdev.errors import BackendError, ConfigurationError, StateError
from tpmdev.wire import (
    HEADER_SIZE,
)

__all__ = [
    "MAX_RESPONSE_SIZE",
    "REQUIRED_CAPS_TPM2",
    "REQUIRED_CAPS_TPM12",
    "STARTUP_MODES",
    "DATA_CHANNELS",
    "Emulator",
]

log = logging.getLogger(__name__)


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

#: ``spawn(startup=...)`` values: the ``--flags startup-*`` swtpm sends
#: TPM(2)_Startup with at process start (``"none"``: runs without CMD_INIT
#: but sends no Startup).
STARTUP_MODES = ("clear", "state", "deactivated", "none")

#: ``spawn(data_channel=...)`` values.
DATA_CHANNELS = ("socketpair", "unix", "tcp")

# The blobs of a saved state, in QEMU's save and load order.
_BLOB_ORDER = (PTM_BLOB_TYPE_PERMANENT, PTM_BLOB_TYPE_VOLATILE, PTM_BLOB_TYPE_SAVESTATE)
_BLOB_TYPES = {name: code for code, name in BLOB_TYPE_NAMES.items()}
assert tuple(BLOB_TYPE_NAMES[t] for t in _BLOB_ORDER) == STATE_KEYS

#: One value of :meth:`Emulator.set_state`'s mapping.
StateValue = Union[bytes, bytearray, memoryview, StateBlob]

_AF_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_CTRL_NAME = "swtpm-ctrl.sock"
_DATA_NAME = "swtpm-data.sock"
_NO_LOCALITY = 0xFF  # QEMU starts with an all-ones locality: none used yet
_TSC_RESET_ESTABLISHMENT_BIT = bytes.fromhex("4000000b")  # TPM 1.2 ordinal
_KILL_GRACE = 2.0  # seconds a process gets to exit after SIGTERM
_REFUSED_GRACE = 0.5  # seconds a refused connection is retried (swtpm binds, then listens)


@dataclass
class _Resources:
    """What an Emulator holds, kept apart so a finalizer can free it."""

    ctrl: socket.socket | None = None
    data: socket.socket | None = None
    process: subprocess.Popen[bytes] | None = None
    output: IO[bytes] | None = None
    tmpdir: str | None = None
    state_tmpdir: str | None = None  # a private state directory (spawn(None)), removed last
    ctrl_path: str | None = None  # removed on release when we spawned swtpm
    data_path: str | None = None  # likewise, for --server type=unixio
    state_dir: str | None = None  # the state directory of a spawned swtpm
    guard: subprocess.Popen[bytes] | None = None  # see _start_guard
    guard_fd: int = -1  # our end of the guard's pipe


# The guard of a spawned swtpm: a tiny shell process in its own session that
# waits for end of file on a pipe only this process can write to. The host
# closes the pipe in _release after "done" (it has ended swtpm and removed
# the files itself); a host that dies however it dies (SIGKILL, SIGTERM, a
# crash) closes it without "done", and the guard then gives swtpm -- which
# ends by itself with --terminate once its data peer is gone -- two seconds,
# kills its process group, waits, and removes what spawn created: the private
# directories and the socket files. $1 is swtpm's pid; then "dir:PATH" and
# "sock:PATH" arguments.
_GUARD_SCRIPT = """
read -r word
[ "$word" = done ] && exit 0
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
kill -s KILL -- "-$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
shift
for p do
    case $p in
        dir:*) rm -rf -- "${p#dir:}" ;;
        sock:*) if [ -S "${p#sock:}" ]; then rm -f -- "${p#sock:}"; fi ;;
    esac
done
"""
_GUARD_WAIT = 5.0  # seconds close() waits for the guard to take "done"


def _start_guard(res: _Resources) -> None:
    """Start the guard of the swtpm just spawned (see _GUARD_SCRIPT)."""
    proc = res.process
    assert proc is not None
    paths = [f"dir:{d}" for d in (res.tmpdir, res.state_tmpdir) if d is not None]
    paths += [f"sock:{p}" for p in (res.ctrl_path, res.data_path) if p is not None]
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        res.guard = subprocess.Popen(
            ["/bin/sh", "-c", _GUARD_SCRIPT, "tpmdev-swtpm-guard", str(proc.pid), *paths],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        os.close(write_end)
        raise BackendError(f"cannot start the guard process of swtpm ({exc.strerror or exc})") from None
    finally:
        os.close(read_end)
    res.guard_fd = write_end


def _release_guard(res: _Resources, swtpm_ended: bool) -> None:
    """Dismiss the guard: "done" when swtpm has ended and the files are gone."""
    fd, res.guard_fd = res.guard_fd, -1
    guard, res.guard = res.guard, None
    if fd < 0:
        return
    try:
        if swtpm_ended:
            os.write(fd, b"done\n")
    except OSError:
        pass
    finally:
        os.close(fd)
    if guard is not None and swtpm_ended:
        try:
            guard.wait(_GUARD_WAIT)
        except subprocess.TimeoutExpired:
            log.warning("the guard of swtpm (pid %d) did not exit", guard.pid)


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
    if res.state_tmpdir is not None and (proc is None or proc.poll() is not None):
        shutil.rmtree(res.state_tmpdir, ignore_errors=True)
        res.state_tmpdir = None
    elif proc is not None:
        for path in (res.ctrl_path, res.data_path):
            if path is None:
                continue
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass
    _release_guard(res, proc is None or proc.poll() is not None)


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

    Other ways to reach a running swtpm (not QEMU's):

    * ``ctrl_address=("127.0.0.1", port)`` instead of *ctrl_path*: the
      control channel over TCP (``--ctrl type=tcp,port=N``); needs one of:
    * ``data_path=PATH``: swtpm's own data socket, ``--server
      type=unixio,path=PATH``;
    * ``data_address=("127.0.0.1", port)``: ``--server type=tcp,port=N``.

    TCP addresses must be loopback (:class:`tpmdev.ConfigurationError`
    otherwise). Raises :class:`tpmdev.BackendError` if swtpm cannot be
    reached, its TPM family cannot be told, or it lacks a capability QEMU
    requires.
    """

    state_kind: ClassVar[str] = "swtpm"

    def __init__(
        self,
        ctrl_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 10.0,
        ctrl_address: tuple[str, int] | None = None,
        data_path: str | os.PathLike[str] | None = None,
        data_address: tuple[str, int] | None = None,
    ) -> None:
        timeout = check_timeout(timeout)
        if (ctrl_path is None) == (ctrl_address is None):
            raise ConfigurationError("give exactly one of ctrl_path (unix socket) and ctrl_address (TCP)")
        if data_path is not None and data_address is not None:
            raise ConfigurationError("give at most one of data_path and data_address")
        if ctrl_address is not None and data_path is None and data_address is None:
            raise ConfigurationError(
                "a TCP control channel cannot pass the data socket (SET_DATAFD needs a unix socket); "
                "start swtpm with --server and give data_path or data_address"
            )
        ctrl_end = _endpoint(ctrl_path, ctrl_address, "ctrl_address")
        data_end = _endpoint(data_path, data_address, "data_address")
        assert ctrl_end is not None
        deadline = time.monotonic() + timeout
        res = _Resources(ctrl_path=ctrl_end[1] if ctrl_path is not None else None)
        try:
            ctrl = _connect(ctrl_end, deadline, "control")
            res.ctrl = ctrl
            if data_end is not None:
                res.data = _connect(data_end, deadline, "data")
        except BaseException:
            _release(res, 0.0)
            raise
        self._setup(ctrl, timeout, res, own_data=data_end is not None)

    def _setup(self, sock: socket.socket, timeout: float, res: _Resources, *, own_data: bool = False) -> None:
        """Connect the data channel (unless swtpm serves its own), probe, check caps."""
        self.timeout = timeout
        self._res = res
        res.ctrl = sock
        self._finalizer = weakref.finalize(self, _release, res, 0.0)
        self._data_lock = threading.Lock()
        self._control = Control(sock, timeout=timeout)
        self._locality = _NO_LOCALITY
        self._started = False  # startup() ran (explicitly or implicitly)
        self._initialised = False  # a CMD_INIT succeeded: SHUTDOWN at close
        self._buffer_size = 0  # 0 = not learned yet
        self._established: tuple[int, bool] | None = None  # (control.changes, flag)
        self._caps = 0
        self._version = 0
        try:
            if not own_data:
                self._connect_data_channel()
            self._version = self._probe_version()
            self._arm_data_channel()
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

    def _arm_data_channel(self) -> None:
        """Put the data socket in blocking mode with kernel send/receive timeouts.

        Every send and receive is then one system call bounded by ``timeout``
        (SO_SNDTIMEO / SO_RCVTIMEO), with no poll and no mode switch per
        command: the command path costs what a bare socket exchange costs.
        """
        sock = self._res.data
        assert sock is not None
        sock.settimeout(None)
        seconds = int(self.timeout)
        timeval = struct.pack("@ll", seconds, int((self.timeout - seconds) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self._rbuf = bytearray(MAX_RESPONSE_SIZE + 1)
        self._rview = memoryview(self._rbuf)

    def _exchange(self, cmd: bytes) -> bytes:
        """Send one command and receive its whole response (data lock held).

        Normally one send and one receive. The response is read into a
        buffer one byte larger than the largest valid response, so bytes
        beyond the announced size are seen and refused (they would be taken
        for the next response) rather than left in the socket.
        """
        sock = self._res.data
        assert sock is not None
        view = self._rview
        deadline = time.monotonic() + self.timeout
        got = 0
        size = 0
        try:
            sock.sendall(cmd)
        except (socket.timeout, BlockingIOError):
            raise BackendError(f"swtpm did not take the command within {self.timeout} s") from None
        except OSError as exc:
            raise BackendError(f"cannot send the command to swtpm ({exc.strerror or exc})") from None
        try:
            n = sock.recv_into(view)  # bounded by SO_RCVTIMEO
            while True:
                if n == 0:
                    if size == 0:
                        came = f"after {got} of {HEADER_SIZE} bytes"
                        what = "response header"
                    else:
                        came = f"after {got - HEADER_SIZE} of {size - HEADER_SIZE} bytes"
                        what = "response"
                    raise BackendError(f"swtpm closed the connection while sending its {what} {came}")
                got += n
                if size == 0 and got >= HEADER_SIZE:
                    size = int.from_bytes(view[2:6], "big")
                    if size < HEADER_SIZE or size > MAX_RESPONSE_SIZE:
                        header = bytes(view[:HEADER_SIZE]).hex()
                        raise BackendError(
                            f"swtpm sent a response header announcing {size} bytes "
                            f"(valid: {HEADER_SIZE}..{MAX_RESPONSE_SIZE}); header {header}"
                        )
                if size and got >= size:
                    break
                # a response in pieces: the whole exchange stays within the timeout
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    raise socket.timeout
                n = sock.recv_into(view[got:])
        except (socket.timeout, BlockingIOError):
            if size == 0:
                came = f" ({got} of {HEADER_SIZE} bytes came)" if got else ""
                raise BackendError(
                    f"no complete response header from swtpm within {self.timeout} s{came}"
                ) from None
            came = f" ({got - HEADER_SIZE} of {size - HEADER_SIZE} bytes came)"
            raise BackendError(f"no complete response from swtpm within {self.timeout} s{came}") from None
        except OSError as exc:
            raise BackendError(f"cannot read the response from swtpm ({exc.strerror or exc})") from None
        if got > size:
            raise BackendError(f"swtpm sent {got - size} unexpected bytes after a {size}-byte response")
        return bytes(view[:size])

    def _probe_version(self) -> int:
        """Tell the family as QEMU does (:func:`tpmdev.backends._probe.probe_version`):
        TPM2_ReadClock, then TPM_GetTicks, one read of up to 1024 bytes each."""
        sock = self._res.data
        assert sock is not None
        failures: list[str] = []

        def transact(probe: bytes) -> bytes:
            try:
                sock.settimeout(self.timeout)
                sock.sendall(probe)
                answer = sock.recv(VERSION_PROBE_READ_SIZE)  # swtpm answers in one piece
            except (socket.timeout, BlockingIOError):
                failures.append(f"no answer within {self.timeout} s")
                raise BackendError(failures[-1]) from None
            except OSError as exc:
                failures.append(f"data channel failed ({exc})")
                raise BackendError(failures[-1]) from None
            if not answer:
                failures.append("swtpm closed the data channel")
                raise BackendError(failures[-1])
            return answer

        version = probe_version(transact)
        if version == 0:
            why = f" ({'; '.join(failures)})" if failures else ""
            raise BackendError(f"swtpm answered neither TPM version probe (ReadClock, GetTicks){why}")
        return version

    # -- spawning ---------------------------------------------------------
    @classmethod
    def spawn(
        cls,
        state_dir: str | os.PathLike[str] | None,
        tpm_version: int = 2,
        *,
        timeout: float = 10.0,
        startup: str | None = None,
        migration_key: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        log_file: str | os.PathLike[str] | None = None,
        log_level: int | None = None,
        data_channel: str = "socketpair",
        swtpm: str = "swtpm",
        extra_args: Sequence[str] = (),
    ) -> Emulator:
        """Start ``swtpm socket`` on *state_dir* and connect to it.

        The returned Emulator owns the process (its own session and process
        group): :meth:`close` ends it, and so does interpreter exit if close
        was never called. *state_dir* is created if missing; ``None`` gives
        the TPM a private temporary directory, removed when the process has
        ended (a TPM that lives as long as the backend); the sockets
        live in it, or in a short temporary directory when a path would
        exceed the AF_UNIX limit.

        * *startup* (one of :data:`STARTUP_MODES`): ``--flags
          not-need-init,startup-MODE``; swtpm runs at once and sends
          TPM(2)_Startup(MODE) itself (``"none"``: no Startup). No implicit
          CMD_INIT follows; a frontend's reset still sends one, as QEMU does.
        * *migration_key*: ``--migration-key file=PATH,mode=aes-cbc``: state
          blobs handed out are encrypted with this key (hex, 32 digits).
        * *key*: ``--key file=PATH,mode=aes-cbc``: the state files are
          encrypted (:meth:`get_state` still asks for plaintext blobs).
        * *log_file* / *log_level*: ``--log file=...,level=N``.
        * *data_channel* (one of :data:`DATA_CHANNELS`): ``"socketpair"``
          (QEMU's way, SET_DATAFD), ``"unix"`` (``--server type=unixio``) or
          ``"tcp"`` (``--server type=tcp`` on a free loopback port).
        * *extra_args* are appended as they are.

        The executable's ``--print-capabilities`` is read once
        (:func:`~tpmdev.backends.swtpm.binary_features`) and options it
        lacks are refused: TPM 1.2 / 2.0 need ``tpm-1.2`` / ``tpm-2.0``,
        *startup* needs ``flags-opt-startup``. *migration_key*, *key* and
        the ``--server`` channels have no feature name (swtpm has had them,
        with ``file=``, since its first socket releases), so nothing is
        checked for them.
        """
        tpm_version = check_tpm_version(tpm_version)
        timeout = check_timeout(timeout)
        if startup is not None and startup not in STARTUP_MODES:
            raise ConfigurationError(f"startup must be None or one of {STARTUP_MODES}, got {startup!r}")
        if data_channel not in DATA_CHANNELS:
            raise ConfigurationError(f"data_channel must be one of {DATA_CHANNELS}, got {data_channel!r}")
        if log_level is not None and (isinstance(log_level, bool) or not isinstance(log_level, int)):
            raise ConfigurationError(f"log_level must be an int or None, got {log_level!r}")
        if isinstance(extra_args, (str, bytes)) or not all(isinstance(a, str) for a in extra_args):
            raise ConfigurationError(f"extra_args must be a sequence of str, got {extra_args!r}")
        state_path = check_path(state_dir, "state_dir") if state_dir is not None else None
        key_files = {
            name: os.path.abspath(check_path(path, name))
            for name, path in (("migration_key", migration_key), ("key", key))
            if path is not None
        }
        log_path = check_path(log_file, "log_file") if log_file is not None else None
        if not isinstance(swtpm, str) or not swtpm:
            raise ConfigurationError(f"swtpm must be the name or path of the swtpm executable, got {swtpm!r}")
        exe = shutil.which(swtpm)
        if exe is None:
            raise BackendError(
                f"swtpm executable {swtpm!r} not found; install swtpm "
                "(Debian/Ubuntu: apt-get install swtpm) or pass swtpm=<path>"
            )
        _check_features(exe, tpm_version, startup)
        private_state = state_path is None
        for name, path in key_files.items():
            if not os.path.isfile(path):
                raise ConfigurationError(f"{name} {path!r} is not a file")
        if state_path is None:
            state = tempfile.mkdtemp(prefix="tpmdev-swtpm-")
        else:
            state = os.path.abspath(state_path)
            try:
                os.makedirs(state, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot use {state!r} as the TPM state directory ({exc.strerror or exc}); "
                    "give a directory (created if missing)"
                ) from None
        res = _Resources(state_dir=state, state_tmpdir=state if private_state else None)
        try:
            ctrl_path = os.path.join(state, _CTRL_NAME)
            data_path = os.path.join(state, _DATA_NAME)
            if len(os.fsencode(data_path)) > _AF_UNIX_PATH_MAX:
                res.tmpdir = tempfile.mkdtemp(prefix="tpmdev-")
                ctrl_path = os.path.join(res.tmpdir, "ctrl")
                data_path = os.path.join(res.tmpdir, "data")
                if len(os.fsencode(data_path)) > _AF_UNIX_PATH_MAX:
                    raise BackendError(
                        f"no short enough directory for the swtpm control socket ({ctrl_path!r}); "
                        "set TMPDIR to a shorter path"
                    )
            for path in (state, ctrl_path, *key_files.values(), log_path or ""):
                if "," in path:
                    # swtpm splits option values at commas and has no escape.
                    raise BackendError(f"swtpm cannot take a path containing ',': {path!r}")
            res.ctrl_path = ctrl_path
            _remove_stale_socket(ctrl_path)
            args = [exe, "socket", "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={ctrl_path}"]
            if tpm_version == 2:
                args.append("--tpm2")
            data_end: tuple[int, Any] | None = None
            if data_channel == "unix":
                res.data_path = data_path
                _remove_stale_socket(data_path)
                args += ["--server", f"type=unixio,path={data_path}"]
                data_end = (socket.AF_UNIX, data_path)
            elif data_channel == "tcp":
                port = _free_loopback_port()
                args += ["--server", f"type=tcp,port={port},bindaddr=127.0.0.1"]
                data_end = (socket.AF_INET, ("127.0.0.1", port))
            if startup is not None:
                args += ["--flags", f"not-need-init,startup-{startup}"]
            if "migration_key" in key_files:
                args += ["--migration-key", f"file={key_files['migration_key']},mode=aes-cbc"]
            if "key" in key_files:
                args += ["--key", f"file={key_files['key']},mode=aes-cbc"]
            if log_path is not None or log_level is not None:
                opts = [f"file={log_path}" if log_path is not None else "fd=2"]
                if log_level is not None:
                    opts.append(f"level={log_level}")
                args += ["--log", ",".join(opts)]
            # End when our end of the data channel goes away, so a host that
            # dies (even by SIGKILL) leaves no TPM behind; the guard below
            # removes the files.
            args.append("--terminate")
            args += list(extra_args)
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
            _start_guard(res)
            deadline = time.monotonic() + timeout
            sock = _wait_connect(res, (socket.AF_UNIX, ctrl_path), deadline, "control", timeout)
            res.ctrl = sock
            if data_end is not None:
                res.data = _wait_connect(res, data_end, deadline, "data", timeout)
            emu = cls.__new__(cls)
            emu._setup(sock, timeout, res, own_data=data_end is not None)
            if startup is not None:
                # swtpm already runs the TPM (not-need-init): a CMD_INIT now
                # would restart it and undo the Startup swtpm sent.
                emu._started = emu._initialised = True
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
    def state_dir(self) -> str | None:
        """The state directory of the swtpm :meth:`spawn` started (a private
        temporary one for ``spawn(None)``), None if not spawned here."""
        return self._res.state_dir

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
    def _get_buffer_size(self) -> int:
        """CMD_STOP + CMD_SET_BUFFERSIZE(0); 4096 if swtpm cannot say.

        As in QEMU's reset sequence, this stops the TPM: :meth:`startup`
        powers it on again (or the next command does, implicitly).
        """
        try:
            self._control.stop()
            self._started = False
            size, _, _ = self._control.set_buffersize(0)
        except BackendError as exc:
            log.warning("cannot ask swtpm for its buffer size, assuming %d: %s", DEFAULT_BUFFER_SIZE, exc)
            return DEFAULT_BUFFER_SIZE
        self._buffer_size = size
        return size

    def _startup(self, buffer_size: int) -> None:
        """Power on: CMD_STOP + CMD_SET_BUFFERSIZE(n) (n != 0), CMD_INIT(0).

        The TPM then waits for TPM(2)_Startup from the guest. Raises
        :class:`tpmdev.BackendError` if swtpm refuses.
        """
        if buffer_size:
            self._control.stop()
            self._buffer_size, _, _ = self._control.set_buffersize(buffer_size)
        self._control.init(0)
        self._initialised = True
        self._started = True

    def _reset(self) -> None:
        """Machine reset: wait for a command in flight to finish (bounded by
        the command's own timeout), as QEMU's backend reset does."""
        with self._data_lock:
            pass

    def _implicit_startup(self) -> None:
        # Convenience for hosts that skip the reset sequence; see module doc.
        log.debug("no startup() before first use; powering the TPM on implicitly")
        self._get_buffer_size()
        self._startup(0)

    # -- commands -------------------------------------------------------------
    def _execute(self, cmd: bytes, locality: int) -> bytes:
        """Run one TPM command at *locality*; return the whole response.

        Raises :class:`tpmdev.BackendError` if it cannot run (see the module
        documentation).
        """
        n = len(cmd)
        if n < HEADER_SIZE:
            raise BackendError(
                f"TPM command of {n} bytes is shorter than a header; not sent "
                "(swtpm would wait for more bytes)"
            )
        with self._data_lock:
            if self._closed or self._failure is not None or self._control.broken is not None:
                self._check_usable()  # closed or failed while we waited for the lock
            if not self._started:
                self._implicit_startup()
            limit = self._buffer_size or DEFAULT_BUFFER_SIZE
            if n > limit:
                raise BackendError(f"TPM command of {n} bytes exceeds the buffer size {limit}; not sent")
            if locality != self._locality:
                self._control_call(self._control.set_locality, locality)
                self._locality = locality
            try:
                response = self._exchange(cmd)
            except BackendError as exc:
                if self._closed:
                    raise BackendError("the backend was closed while a command was running") from None
                self._fail(str(exc))
                raise
            if cmd[6:10] == _TSC_RESET_ESTABLISHMENT_BIT and self._version == 1:
                self._established = None  # TPM 1.2 resets the flag with a command
            return response

    def _cancel(self) -> None:
        """CMD_CANCEL_TPM_CMD, if swtpm can; callable while execute() waits.

        Never raises for swtpm's answer: a refused or failed cancel is
        logged (QEMU reports it and carries on).
        """
        if not self._caps & PTM_CAP_CANCEL_TPM_CMD:
            return
        try:
            self._control.cancel_tpm_cmd()
        except BackendError as exc:
            log.warning("swtpm could not cancel the command: %s", exc)

    # -- established flag ---------------------------------------------------
    def _get_established_flag(self) -> bool:
        """CMD_GET_TPMESTABLISHED, then the cached answer while it is current.

        The cache is QEMU's, kept current where QEMU's is not: it holds only
        while no control command that may change the TPM's state has been
        sent since (:attr:`Control.changes <tpmdev.backends.swtpm.Control.
        changes>`: INIT, STOP, HASH_*, SET_STATEBLOB, RESET_TPMESTABLISHED,
        ..., also sent through :attr:`control` directly), and a TPM 1.2
        TSC_ResetEstablishmentBit command drops it. A machine reset (INIT)
        or a state load therefore makes the next read ask swtpm again.

        Raises :class:`tpmdev.BackendError` if swtpm cannot answer; nothing
        is cached then, so the next call asks again (QEMU reports the flag as
        not established and asks again at the next read; the TIS does that
        with this error).
        """
        cached = self._established
        if cached is not None and cached[0] == self._control.changes:
            return cached[1]
        if not self._started:
            with self._data_lock:
                if not self._started:
                    self._check_usable()
                    self._implicit_startup()
        changes = self._control.changes
        flag = self._control.get_tpm_established()
        self._established = (changes, flag)
        return flag

    def _reset_established_flag(self, locality: int) -> None:
        """CMD_RESET_TPMESTABLISHED (TPM 2.0; nothing for TPM 1.2).

        QUIRK (QEMU): the locality sent is the one of the last command run,
        not *locality*; before any command it is 0xFF, which swtpm refuses.
        swtpm accepts only 3 and 4. A refusal is logged, not raised, and
        keeps the cached flag; success makes the next read ask swtpm again.
        The padding bytes are zeros where QEMU 7.2 sends garbage; swtpm
        0.7.1 ignores them, but results could differ with another swtpm.
        """
        if self._version != 2:
            return
        del locality  # deliberately unused, see the docstring
        try:
            self._control.reset_tpm_established(self._locality)
        except BackendError as exc:
            log.warning("swtpm did not reset the TPM established flag: %s", exc)

    # -- state (migration, snapshots) ------------------------------------------
    def get_state_blobs(self) -> dict[str, StateBlob]:
        """QEMU's save: the three blobs with their flags and results.

        Waits for a command in flight to finish, then GET_STATEBLOB with
        the DECRYPTED flag for permanent, volatile and savestate. A missing
        blob (result with bit 0x800) is an empty :class:`StateBlob` that
        keeps the result. The TPM must be running (else ControlError 0x0A).
        """
        self._check_usable()
        with self._data_lock:
            self._check_usable()
            blobs: dict[str, StateBlob] = {}
            for blob_type in _BLOB_ORDER:
                blob = self._control.get_stateblob(blob_type, PTM_STATE_FLAG_DECRYPTED)
                log.debug("state blob %s", blob)
                blobs[blob.name] = blob
            return blobs

    def _get_state(self) -> dict[str, bytes]:
        """``{"permanent", "volatile", "savestate"}`` blobs, as :meth:`get_state_blobs`.

        The flags are dropped: blobs asked for decrypted come back with
        flags 0 (a ``--migration-key`` encryption is inside the blob).
        """
        return {name: blob.data for name, blob in self.get_state_blobs().items()}

    def set_state(self, state: Mapping[str, StateValue]) -> None:
        """QEMU's load: CMD_STOP, SET_STATEBLOB per non-empty blob, CMD_INIT(1).

        *state* maps ``"permanent"``, ``"volatile"``, ``"savestate"`` (any
        may be missing or empty) to bytes, or to the :class:`StateBlob`
        objects of :meth:`get_state_blobs` (their flags are sent back).
        The TPM then runs from the loaded state, as if it had never
        stopped; no TPM(2)_Startup is needed. If swtpm refuses a blob
        (:class:`~tpmdev.backends.swtpm.ControlError`, e.g. 0x21 for a
        wrong migration key) the TPM is left stopped: load another state
        or call :meth:`startup`.
        """
        super().set_state(state)

    def _state_value(self, key: str, value: object) -> StateBlob:
        blob_type = _BLOB_TYPES[key]
        if isinstance(value, StateBlob):
            if value.type != blob_type:
                raise StateError(f"state[{key!r}] is a {value.name} blob")
            return value
        return StateBlob(blob_type, 0, super()._state_value(key, value))

    def _set_state(self, state: dict[str, Any]) -> None:
        blobs = [state.get(BLOB_TYPE_NAMES[t], StateBlob(t, 0, b"")) for t in _BLOB_ORDER]
        with self._data_lock:
            self._check_usable()
            self._started = False
            self._control.stop()
            for blob in blobs:
                if blob.data:
                    self._control.set_stateblob(blob.type, blob.data, blob.state_flags)
            self._control.init(PTM_INIT_FLAG_DELETE_VOLATILE)
            self._started = self._initialised = True
            self._locality = _NO_LOCALITY

    def store_volatile(self) -> None:
        """CMD_STORE_VOLATILE: write the volatile state into the state directory."""
        self._check_open()
        self._control.store_volatile()

    # -- dynamic root of trust (TPM_HASH_START / DATA / END) --------------------
    def hash_start(self) -> None:
        """CMD_HASH_START at the current locality (see :meth:`hash_sequence`)."""
        self._check_open()
        self._control.hash_start()

    def hash_data(self, data: bytes) -> None:
        """CMD_HASH_DATA, chunked as the protocol allows."""
        data = as_bytes(data, "data")
        self._check_open()
        self._control.hash_data(data)

    def hash_end(self) -> None:
        """CMD_HASH_END; the established flag is asked again afterwards."""
        self._check_open()
        self._control.hash_end()

    def hash_sequence(self, data: bytes, locality: int = 4) -> None:
        """A dynamic root of trust measurement: HASH_START, DATA, END at *locality*.

        At locality 4 the TPM resets PCR 17 and extends it with the digest
        of *data* (TPM 2.0: SHA-256 bank ``H(0..0 || H(data))``), and sets
        the established flag. Waits for a command in flight first.
        """
        data = as_bytes(data, "data")
        locality = check_locality(locality)
        with self._data_lock:
            self._check_usable()
            if not self._started:
                self._implicit_startup()
            if locality != self._locality:
                self._control_call(self._control.set_locality, locality)
                self._locality = locality
            self._control.hash_start()
            self._control.hash_data(data)
            self._control.hash_end()

    # -- information --------------------------------------------------------
    def get_config(self) -> int:
        """CMD_GET_CONFIG: ``PTM_CONFIG_FLAG_*`` (file key, migration key)."""
        self._check_open()
        return self._control.get_config()

    def get_info(self, flags: int = SWTPM_INFO_TPMSPECIFICATION) -> dict[str, Any]:
        """CMD_GET_INFO: swtpm's JSON description for ``SWTPM_INFO_*`` *flags*."""
        self._check_open()
        return self._control.get_info(flags)

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
    def _fail(self, reason: str) -> None:
        if self._failure is None:
            log.error("swtpm backend failed: %s", reason)
        super()._fail(reason)

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


def _check_features(exe: str, tpm_version: int, startup: str | None) -> None:
    """Refuse spawn options the swtpm executable does not list."""
    info = binary_features(exe)
    features = set(info.get("features", ()))
    needed = {"tpm-2.0" if tpm_version == 2 else "tpm-1.2": f"TPM {'2.0' if tpm_version == 2 else '1.2'}"}
    if startup is not None:
        needed["flags-opt-startup"] = f"startup={startup!r} (--flags startup-{startup})"
    missing = [f"{what} needs feature {name!r}" for name, what in needed.items() if name not in features]
    if missing:
        raise BackendError(
            f"{exe} (swtpm {info.get('version', 'of unknown version')}) cannot do this: "
            + "; ".join(missing)
            + f". It lists: {', '.join(sorted(features)) or 'nothing'}"
        )


_Endpoint = tuple[int, Any]  # (address family, address)


def _endpoint(
    path: str | os.PathLike[str] | None, address: tuple[str, int] | None, name: str
) -> _Endpoint | None:
    if path is not None:
        return (socket.AF_UNIX, check_path(path, name.replace("address", "path")))
    if address is None:
        return None
    try:
        host, port = address
        ip = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be (loopback IP, port), got {address!r}") from None
    if not ip.is_loopback:
        raise ConfigurationError(
            f"{name} {host!r} is not a loopback address; swtpm's channels are unauthenticated, "
            "so tpmdev only connects to 127.0.0.1 / ::1"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"{name} port must be 1..65535, got {port!r}")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return (family, (str(ip), port))


def _connect(end: _Endpoint, deadline: float, what: str) -> socket.socket:
    family, address = end
    # swtpm binds its socket before it listens: a refusal right after it
    # started is retried briefly (a swtpm that is not running still fails fast)
    refused_until = min(deadline, time.monotonic() + _REFUSED_GRACE)
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            sock.connect(address)
            break
        except OSError as exc:
            sock.close()
            if isinstance(exc, ConnectionRefusedError) and time.monotonic() < refused_until:
                time.sleep(0.005)
                continue
            hint = "--ctrl" if what == "control" else "--server"
            raise BackendError(
                f"cannot connect to the swtpm {what} socket {address!r} ({exc.strerror or exc}); "
                f"is swtpm running with {hint} for it?"
            ) from None
    if family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _free_loopback_port() -> int:
    # A short race with other programs picking the same port; swtpm then
    # exits with "Address already in use", which spawn reports.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_connect(
    res: _Resources, end: _Endpoint, deadline: float, what: str, timeout: float
) -> socket.socket:
    """Connect to a socket of the swtpm just started, retrying until it listens."""
    proc = res.process
    assert proc is not None
    family, address = end
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
                f"swtpm exited with status {status} before its {what} socket appeared"
                + (f": {text}" if text else "")
            )
        if family != socket.AF_UNIX or os.path.exists(address):
            try:
                return _connect(end, deadline, what)
            except BackendError:
                if time.monotonic() >= deadline:
                    raise
        if time.monotonic() >= deadline:
            raise BackendError(f"swtpm did not open its {what} socket {address!r} within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
