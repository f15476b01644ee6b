"""Fixtures for the swtpm backend tests.

Real swtpm processes (``swtpm_proc``, ``emulator``) for everything that can
run against the real thing, and :class:`FakeSwtpm` -- a minimal control
server whose data side the test plays -- only for fault injection
(garbled, truncated or oversized replies, missing capabilities).

A missing swtpm binary fails these tests; it is never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from standin import connect_when_listening

from tpmdev.backends.emulator import Emulator
from tpmdev.backends.swtpm import Control


# -- process hygiene ---------------------------------------------------------
def swtpm_children() -> set[int]:
    """Pids of swtpm processes that are (possibly zombie) children of ours."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm == "swtpm":
            found.add(int(entry))
    return found


@pytest.fixture
def no_leaked_swtpm() -> Iterator[None]:
    """Fail a test that leaves a swtpm child running (use with ``usefixtures``)."""
    before = swtpm_children()
    yield
    leaked = swtpm_children() - before
    for pid in leaked:  # clean up so one failure does not cascade
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
    assert not leaked, f"swtpm processes left behind: {sorted(leaked)}"


@pytest.fixture(scope="session")
def swtpm_bin() -> str:
    path = shutil.which("swtpm")
    if path is None:
        pytest.fail("swtpm is not installed (apt-get install swtpm); these tests need it")
    return path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (test tmp paths can exceed 107 bytes)."""
    d = tempfile.mkdtemp(prefix="tpmdev-t-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# -- a raw swtpm process ------------------------------------------------------
@dataclass
class SwtpmProc:
    process: subprocess.Popen[bytes]
    ctrl_path: str
    state_dir: str

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)


@pytest.fixture
def swtpm_proc(swtpm_bin: str, short_dir: Path) -> Iterator[Callable[..., SwtpmProc]]:
    """Factory: start ``swtpm socket`` (QEMU's way, no --server) for TPM 1 or 2."""
    procs: list[SwtpmProc] = []

    def start(version: int = 2, *extra: str, ctrl: str | None = None) -> SwtpmProc:
        """*extra* are more swtpm arguments; *ctrl* replaces the --ctrl value."""
        state = short_dir / f"state{len(procs)}"
        state.mkdir()
        ctrl_path = str(short_dir / f"ctrl{len(procs)}")
        ctrl_arg = ctrl or f"type=unixio,path={ctrl_path}"
        args = [swtpm_bin, "socket", "--tpmstate", f"dir={state}", "--ctrl", ctrl_arg, *extra]
        if version == 2:
            args.append("--tpm2")
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        sp = SwtpmProc(proc, ctrl_path, str(state))
        procs.append(sp)
        deadline = time.monotonic() + 10
        while ctrl is None and not os.path.exists(ctrl_path):
            assert proc.poll() is None, "swtpm exited at start"
            assert time.monotonic() < deadline, "swtpm did not create its control socket"
            time.sleep(0.005)
        return sp

    yield start
    for sp in procs:
        sp.stop()


@pytest.fixture
def control_for(
    swtpm_proc: Callable[..., SwtpmProc],
) -> Iterator[Callable[..., tuple[Control, SwtpmProc]]]:
    """Factory: a :class:`Control` connected to a fresh swtpm (*extra* arguments)."""
    socks: list[socket.socket] = []

    def make(version: int = 2, *extra: str) -> tuple[Control, SwtpmProc]:
        sp = swtpm_proc(version, *extra)
        sock = connect_when_listening(sp.ctrl_path)
        socks.append(sock)
        return Control(sock, timeout=5.0), sp

    yield make
    for s in socks:
        s.close()


@pytest.fixture
def spawn(swtpm_bin: str, tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Factory: ``Emulator.spawn`` in the test's tmp dir; closed and checked afterwards."""
    emus: list[Emulator] = []

    def make(tpm_version: int = 2, **kw: object) -> Emulator:
        kw.setdefault("timeout", 5.0)
        emu = Emulator.spawn(tmp_path / f"tpm{len(emus)}", tpm_version, **kw)  # type: ignore[arg-type]
        emus.append(emu)
        return emu

    yield make
    for emu in emus:
        proc = emu.process
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        emu.close()
        assert emu.process is None
        if proc is not None:
            assert proc.returncode is not None


# -- a fake swtpm for fault injection ----------------------------------------
# Request body sizes after the command code, for the commands the fake knows.
_BODY = {0x01: 0, 0x02: 4, 0x03: 0, 0x04: 0, 0x05: 4, 0x09: 0, 0x0B: 4, 0x0E: 0, 0x10: 0, 0x11: 4}


@dataclass
class FakeSwtpm:
    """A control server that answers like swtpm and lets the test be the data side.

    After CMD_SET_DATAFD it keeps the received end as :attr:`data` and, if
    :attr:`probe_answer` is set, writes it at once so the Emulator's first
    version probe finds it. The test then writes whatever replies it wants
    to :attr:`data` before calling ``execute``.
    """

    path: str
    caps: int = 0xFFFF
    probe_answer: bytes | None = bytes.fromhex("80010000000a00000101")
    codes: list[int] = field(default_factory=list)
    data: socket.socket | None = None
    got_data: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(10)
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conn = conn
        conn.settimeout(30)
        try:
            while True:
                msg, fds, _, _ = socket.recv_fds(conn, 4, 4)
                if len(msg) < 4:
                    return
                (code,) = struct.unpack(">I", msg)
                self.codes.append(code)
                n = _BODY.get(code, 0)
                if n:
                    conn.recv(n, socket.MSG_WAITALL)
                if code == 0x10:
                    self.data = socket.socket(fileno=fds[0])
                    for extra in fds[1:]:
                        os.close(extra)
                    conn.sendall(bytes(4))
                    if self.probe_answer is not None:
                        self.data.sendall(self.probe_answer)
                    self.got_data.set()
                elif code == 0x01:
                    conn.sendall(struct.pack(">II", 0, self.caps))
                elif code == 0x04:
                    conn.sendall(bytes(8))
                elif code == 0x11:
                    conn.sendall(struct.pack(">IIII", 0, 4096, 2808, 4096))
                elif code in _BODY:
                    conn.sendall(bytes(4))
                else:
                    conn.sendall(struct.pack(">I", 0x0A))
        except OSError:
            return

    def close(self) -> None:
        for sock in (self._listener, self._conn):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(10)
        self._listener.close()
        if self._conn is not None:
            self._conn.close()
        if self.data is not None:
            self.data.close()


@pytest.fixture
def fake_swtpm(short_dir: Path) -> Iterator[Callable[..., FakeSwtpm]]:
    fakes: list[FakeSwtpm] = []

    def make(**kw: object) -> FakeSwtpm:
        fake = FakeSwtpm(str(short_dir / f"fake{len(fakes)}"), **kw)  # type: ignore[arg-type]
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        fake.close()
