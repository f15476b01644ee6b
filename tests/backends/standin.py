"""A stand-in for the kernel's TPM character device, bridged to a real swtpm.

The Linux TPM device takes one whole command per write() and gives the whole
response to one read(); reading before the response is ready blocks (or, on
a non-blocking descriptor, poll() says not yet). A unix SOCK_SEQPACKET
socketpair has exactly those semantics: :attr:`StandIn.device_fd` is the end
a :class:`tpmdev.backends.Passthrough` gets as ``fd=``; a bridge thread reads
each command from the far end, runs it on a real ``swtpm socket --server``
and writes the response back as one message.

The sysfs cancel file is a FIFO (:attr:`StandIn.cancel_path`). A watcher
thread reads it; every ``-`` is recorded in :attr:`StandIn.cancels` with
whether a command was in flight at that moment, and forwarded to swtpm as
CMD_CANCEL_TPM_CMD (the kernel likewise passes the cancel to the chip).

The swtpm runs with ``--flags not-need-init`` and, when ``started`` (the
default), ``startup-clear``: like a host's TPM after boot, it is powered and
TPM(2)_Startup has been sent. The constructor returns once swtpm has
finished initialising the TPM (see there), so the first command is answered
as quickly as a booted host's TPM answers it.

Fault injection (what a real TPM behind a real kernel might do, and swtpm
does not): :meth:`StandIn.fault` queues answers that replace swtpm's for the
next commands (``None``: swallow the command and never answer), and
:attr:`StandIn.latency` holds each response back, like a slow chip, until
the time is up or a cancel arrives.
"""

from __future__ import annotations

import collections
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tpmdev.backends.swtpm import Control, recv_exactly

__all__ = ["CancelRecord", "StandIn"]

_IO_TIMEOUT = 30.0


@dataclass(frozen=True)
class CancelRecord:
    """One ``-`` read from the cancel file."""

    in_flight: bool  # a command was between write and response at the device
    command: Optional[bytes]  # that command, if any


class StandIn:
    """A kernel-like TPM device on a socketpair, with a real swtpm behind it.

    :param swtpm_bin: the swtpm executable.
    :param workdir: a short directory (unix socket paths) for the state,
        sockets and the cancel FIFO.
    :param tpm_version: 1 or 2.
    :param started: whether TPM(2)_Startup was already sent (a booted host).
    """

    def __init__(self, swtpm_bin: str, workdir: Path, tpm_version: int = 2, *, started: bool = True) -> None:
        self.workdir = workdir
        self.tpm_version = tpm_version
        self.latency = 0.0
        self.commands: list[bytes] = []
        self.cancels: list[CancelRecord] = []
        self.in_flight = threading.Event()
        self.peer_closed = threading.Event()
        self._faults: collections.deque[Optional[bytes]] = collections.deque()
        self._current: Optional[bytes] = None
        self._cancel_seen = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        self._threads: list[threading.Thread] = []

        state = workdir / "state"
        state.mkdir()
        server, ctrl = str(workdir / "srv"), str(workdir / "ctrl")
        flags = "not-need-init,startup-clear" if started else "not-need-init"
        args = [swtpm_bin, "socket", "--tpmstate", f"dir={state}", "--flags", flags]
        args += ["--server", f"type=unixio,path={server}", "--ctrl", f"type=unixio,path={ctrl}"]
        if tpm_version == 2:
            args.append("--tpm2")
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._data = connect_when_listening(server, self.process)
            self._ctrl_sock = connect_when_listening(ctrl, self.process)
            self.control = Control(self._ctrl_sock, timeout=_IO_TIMEOUT)
            # Hand the device out only once the TPM is up, like a host's TPM
            # after boot. swtpm binds its sockets first and initialises the TPM
            # (not-need-init) afterwards, answering neither socket meanwhile;
            # for TPM 1.2 libtpms's start-up self-test generates an RSA key,
            # 0.2-0.6 s of CPU, well over a second of waiting on a busy machine.
            # A first command would sit behind that and miss the backend's
            # 1 s version probe (QEMU's limit, meant for a running TPM). Any
            # answer on the control channel comes from swtpm's main loop, i.e.
            # after the initialisation, and sends the TPM no command.
            self.control.get_capability()

            ours, self._far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.device_fd = ours.detach()

            self.cancel_path = str(workdir / "cancel")
            os.mkfifo(self.cancel_path)
            # Read end first (non-blocking), then a writer of our own so the
            # reader never sees end-of-file when the backend closes its end.
            self._cancel_r = os.open(self.cancel_path, os.O_RDONLY | os.O_NONBLOCK)
            self._cancel_keep = os.open(self.cancel_path, os.O_WRONLY)
        except BaseException:
            self._kill()
            raise
        for target in (self._bridge, self._watch_cancel):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- test controls ------------------------------------------------------
    def fault(self, *answers: Optional[bytes]) -> None:
        """Answer the next commands with *answers* instead of swtpm (None: never answer)."""
        self._faults.extend(answers)

    def wait_in_flight(self, timeout: float = 10.0) -> None:
        assert self.in_flight.wait(timeout), "no command reached the stand-in device"

    def wait_cancels(self, count: int, timeout: float = 5.0) -> list[CancelRecord]:
        """:attr:`cancels` once it holds *count* records (the watcher is a thread)."""
        deadline = time.monotonic() + timeout
        while len(self.cancels) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.cancels

    # -- threads ------------------------------------------------------------
    def _bridge(self) -> None:
        poller = select.poll()
        poller.register(self._far, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            events = poller.poll()
            if any(fd == self._stop_r for fd, _ in events):
                return
            try:
                command = self._far.recv(0x10000)
            except OSError:
                return
            if not command:  # the device end was closed
                self.peer_closed.set()
                return
            self.commands.append(command)
            self._current = command
            self._cancel_seen.clear()
            self.in_flight.set()
            if self._faults:
                answer = self._faults.popleft()
                if answer is None:
                    continue  # swallowed: stays in flight for ever
            else:
                self._data.sendall(command)
                deadline = time.monotonic() + _IO_TIMEOUT
                header = recv_exactly(self._data, 10, deadline, _IO_TIMEOUT, "response header")
                size = int.from_bytes(header[2:6], "big")
                answer = header + recv_exactly(self._data, size - 10, deadline, _IO_TIMEOUT, "response")
            if self.latency:
                self._cancel_seen.wait(self.latency)
            self.in_flight.clear()
            self._current = None
            try:
                self._far.send(answer)
            except OSError:
                return

    def _watch_cancel(self) -> None:
        poller = select.poll()
        poller.register(self._cancel_r, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            events = poller.poll()
            if any(fd == self._stop_r for fd, _ in events):
                return
            try:
                data = os.read(self._cancel_r, 64)
            except BlockingIOError:
                continue
            for byte in data:
                in_flight = self.in_flight.is_set()
                self.cancels.append(CancelRecord(in_flight, self._current if in_flight else None))
                if byte == ord("-"):
                    try:
                        self.control.cancel_tpm_cmd()
                    except Exception:  # swtpm's verdict does not matter here
                        pass
                    self._cancel_seen.set()

    # -- lifetime -----------------------------------------------------------
    def take_fd(self) -> int:
        """The device end, for ``Passthrough(fd=...)`` (which then owns it)."""
        fd, self.device_fd = self.device_fd, -1
        assert fd >= 0, "the device end was already handed out"
        return fd

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._cancel_seen.set()
        for thread in self._threads:
            thread.join(10)
        self._kill()
        for fd in (
            self._stop_r,
            self._stop_w,
            getattr(self, "_cancel_r", -1),
            getattr(self, "_cancel_keep", -1),
        ):
            if fd >= 0:
                os.close(fd)
        if self.device_fd >= 0:
            os.close(self.device_fd)
            self.device_fd = -1
        for name in ("_far", "_data", "_ctrl_sock"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close()

    def _kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)


def connect_when_listening(path: str, process: subprocess.Popen[bytes] | None = None) -> socket.socket:
    """Connect to a unix socket of a swtpm just started: its socket file
    appears before it listens, so a missing file or a refusal is retried."""
    deadline = time.monotonic() + 10
    while True:
        assert process is None or process.poll() is None, "swtpm exited at start"
        if os.path.exists(path):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
        assert time.monotonic() < deadline, f"swtpm did not open {path}"
        time.sleep(0.005)


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
