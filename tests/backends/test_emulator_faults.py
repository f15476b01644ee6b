"""Emulator faults through a misbehaving relay (``proxy.py``) in front of a real swtpm.

swtpm serves its data channel on ``--server type=unixio``; the backend talks
to it through :class:`proxy.Proxy`, which stalls, truncates, oversizes,
garbles or drops replies on demand. The control channel can be relayed too.
Every fault must give a :class:`tpmdev.BackendError` in bounded time (the
timeout plus slack) and leave no thread or process behind; through the TIS
the guest reads QEMU's failure response, and ``TIS.attach`` recovers.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from proxy import Proxy

import tpmdev
from tpmdev.backends import swtpm as s
from tpmdev.backends.emulator import MAX_RESPONSE_SIZE, Emulator
from tpmdev.drivers.tis import TisDriver
from tpmdev.errors import BackendError
from tpmdev.wire import FATAL_RESPONSE

pytestmark = [pytest.mark.swtpm, pytest.mark.usefixtures("no_leaked_swtpm", "no_leaked_threads")]

TIMEOUT = 0.5
SLACK = 0.5
TPM2_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
TPM2_GETRANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
OK2 = bytes.fromhex("80010000000a00000000")


def rc(response: bytes) -> int:
    return int.from_bytes(response[6:10], "big")


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"threads left behind: {leaked}"


@dataclass
class Rig:
    emu: Emulator
    data: Proxy
    ctrl: Optional[Proxy]
    swtpm: Any  # conftest.SwtpmProc

    def kill_swtpm(self) -> None:
        os.kill(self.swtpm.process.pid, signal.SIGKILL)


@pytest.fixture
def rig(swtpm_proc: Callable[..., Any], short_dir: Path) -> Iterator[Callable[..., Rig]]:
    """Factory: swtpm with --server, relayed; ``proxy_ctrl`` relays the control channel too."""
    made: list[Rig] = []
    proxies: list[Proxy] = []

    def make(version: int = 2, *, proxy_ctrl: bool = False, timeout: float = TIMEOUT) -> Rig:
        i = len(made)
        real = str(short_dir / f"data{i}")
        sp = swtpm_proc(version, "--server", f"type=unixio,path={real}")
        deadline = time.monotonic() + 10
        while not os.path.exists(real):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        data = Proxy(str(short_dir / f"pdata{i}"), real)
        proxies.append(data)
        ctrl = None
        ctrl_path = sp.ctrl_path
        if proxy_ctrl:
            ctrl = Proxy(str(short_dir / f"pctrl{i}"), sp.ctrl_path)
            proxies.append(ctrl)
            ctrl_path = ctrl.listen_path
        emu = Emulator(ctrl_path, data_path=data.listen_path, timeout=timeout)
        r = Rig(emu, data, ctrl, sp)
        made.append(r)
        return r

    yield make
    for r in made:
        r.emu.close()
    for p in proxies:
        p.close()


def powered(emu: Emulator) -> Emulator:
    emu.startup(min(emu.get_buffer_size(), 4096))
    assert emu.execute(TPM2_STARTUP_CLEAR) == OK2
    return emu


def timed_failure(call: Callable[[], object], match: str, limit: float) -> tuple[BackendError, float]:
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=match) as info:
        call()
    elapsed = time.monotonic() - t0
    assert elapsed <= limit, f"took {elapsed:.3f} s (limit {limit} s)"
    return info.value, elapsed


def assert_failed_for_good(emu: Emulator) -> None:
    assert emu.failure is not None
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="failed earlier"):
        emu.execute(TPM2_GETRANDOM_8)
    assert time.monotonic() - t0 < 0.05


# -- the data channel ----------------------------------------------------------------
def test_relay_is_transparent(rig: Callable[..., Rig]) -> None:
    r = rig()
    powered(r.emu)
    assert rc(r.emu.execute(TPM2_GETRANDOM_8)) == 0
    assert r.data.requests[-1] == TPM2_GETRANDOM_8
    assert r.emu.get_state()["permanent"]


@pytest.mark.parametrize(
    ("fault", "n", "data", "match", "waits"),
    [
        ("stall", 0, b"", r"no complete response header from swtpm within 0.5 s", True),
        ("truncate", 6, b"", r"within 0.5 s \(6 of 10 bytes came\)", True),
        ("truncate", 14, b"", r"no complete response from swtpm within 0.5 s \(4 of 10", True),
        ("cut", 12, b"", r"closed the connection while sending its response after 2 of 10", False),
        ("oversize", MAX_RESPONSE_SIZE + 1, b"", f"announcing {MAX_RESPONSE_SIZE + 1} bytes", False),
        ("oversize", 0xFFFFFFFF, b"", "announcing 4294967295 bytes", False),
        ("oversize", 4, b"", r"announcing 4 bytes \(valid: 10", False),
        ("replace", 0, b"GARBAGE!!!", "announcing 1380073799 bytes", False),
        ("drop", 0, b"", "closed the connection|reset by peer|Broken pipe", False),
    ],
)
def test_data_faults(
    rig: Callable[..., Rig], fault: str, n: int, data: bytes, match: str, waits: bool
) -> None:
    r = rig()
    powered(r.emu)
    r.data.inject(fault, n, data)
    err, elapsed = timed_failure(lambda: r.emu.execute(TPM2_GETRANDOM_8), match, TIMEOUT + SLACK)
    if waits:
        assert elapsed >= TIMEOUT * 0.9
    else:
        assert elapsed < TIMEOUT  # no need to wait for the timeout
    assert not isinstance(err, s.ControlError)
    assert_failed_for_good(r.emu)
    t0 = time.monotonic()
    r.emu.close()
    assert time.monotonic() - t0 <= TIMEOUT + SLACK


def test_swtpm_killed_mid_command(rig: Callable[..., Rig]) -> None:
    r = rig(timeout=5.0)
    powered(r.emu)
    os.kill(r.swtpm.process.pid, signal.SIGSTOP)  # hold the command in flight
    errors: list[BaseException] = []

    def work() -> None:
        try:
            r.emu.execute(TPM2_GETRANDOM_8)
        except BackendError as exc:
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    assert r.data.got_request.wait(5)
    t0 = time.monotonic()
    r.kill_swtpm()
    worker.join(10)
    elapsed = time.monotonic() - t0
    assert len(errors) == 1 and "closed the connection" in str(errors[0])
    assert elapsed < 1.0  # end of stream, long before the 5 s timeout
    assert_failed_for_good(r.emu)
    r.swtpm.process.wait(5)


# -- the control channel ------------------------------------------------------------------
def test_control_error_result_is_an_answer(rig: Callable[..., Rig]) -> None:
    r = rig(proxy_ctrl=True)
    powered(r.emu)
    assert r.ctrl is not None
    r.ctrl.inject("replace", data=struct.pack(">I", s.TPM_FAIL))
    t0 = time.monotonic()
    with pytest.raises(s.ControlError) as info:
        r.emu.execute(TPM2_GETRANDOM_8, 3)  # SET_LOCALITY answered with TPM_FAIL
    assert time.monotonic() - t0 < TIMEOUT
    assert (info.value.command, info.value.result) == ("SET_LOCALITY", s.TPM_FAIL)
    assert r.emu.failure is None  # a refusal: the channels are in step
    assert rc(r.emu.execute(TPM2_GETRANDOM_8, 3)) == 0
    # A refused GET_STATEBLOB (0x0A alone) likewise.
    r.ctrl.inject("replace", data=struct.pack(">I", s.TPM_BAD_ORDINAL))
    with pytest.raises(s.ControlError):
        r.emu.get_state()
    assert r.emu.failure is None


@pytest.mark.parametrize(
    ("fault", "n", "data", "match", "waits"),
    [
        ("stall", 0, b"", "within 0.5 s", True),
        ("cut", 2, b"", "closed the connection", False),
        ("extra", 0, b"\0\0\0\0", "unexpected bytes", False),  # reply too long
        ("replace", 0, bytes(12), "GET_STATEBLOB header announces|within", True),  # short header
        ("replace", 0, bytes(8) + b"\x7f" * 8, "garbled", False),
    ],
)
def test_control_faults(
    rig: Callable[..., Rig], fault: str, n: int, data: bytes, match: str, waits: bool
) -> None:
    r = rig(proxy_ctrl=True)
    powered(r.emu)
    assert r.ctrl is not None
    r.ctrl.inject(fault, n, data)
    _, elapsed = timed_failure(r.emu.get_state, match, TIMEOUT + SLACK)
    assert (elapsed >= TIMEOUT * 0.9) == waits
    assert r.emu.failure is not None and r.emu.control.broken is not None
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"unusable|failed earlier"):
        r.emu.get_state()
    with pytest.raises(BackendError, match="failed earlier"):
        r.emu.execute(TPM2_GETRANDOM_8)
    assert time.monotonic() - t0 < 0.05


def test_control_stall_during_set_state(rig: Callable[..., Rig]) -> None:
    r = rig(proxy_ctrl=True)
    powered(r.emu)
    state = r.emu.get_state()
    assert r.ctrl is not None
    r.ctrl.inject("stall")
    timed_failure(lambda: r.emu.set_state(state), "STOP.*within 0.5 s", TIMEOUT + SLACK)
    assert r.emu.failure is not None


# -- through the TIS: the guest sees TPM_FAIL, attach() recovers ---------------------------------
@pytest.mark.parametrize("fault", ["stall", "oversize", "kill", "cut"])
def test_tis_guest_sees_failure_then_attach(
    rig: Callable[..., Rig], spawn: Callable[..., Emulator], fault: str
) -> None:
    r = rig()
    with tpmdev.TIS(r.emu) as dev:
        driver = TisDriver(dev)
        assert driver.transmit(TPM2_STARTUP_CLEAR) == OK2
        assert rc(driver.transmit(TPM2_GETRANDOM_8)) == 0
        if fault == "kill":
            r.kill_swtpm()
            r.swtpm.process.wait(5)
        else:
            r.data.inject(fault, MAX_RESPONSE_SIZE + 1 if fault == "oversize" else 3)
        t0 = time.monotonic()
        assert driver.transmit(TPM2_GETRANDOM_8) == FATAL_RESPONSE
        assert time.monotonic() - t0 <= TIMEOUT + SLACK
        assert isinstance(dev.backend_error, BackendError)
        assert driver.transmit(TPM2_GETRANDOM_8) == FATAL_RESPONSE  # stays failed
        # A new backend behind the same registers.
        fresh = Emulator.spawn(r.swtpm.state_dir + "-new", 2, timeout=5)
        old = dev.attach(fresh)
        assert old is r.emu and old.closed
        assert dev.backend_error is None
        assert driver.transmit(TPM2_STARTUP_CLEAR) == OK2  # a fresh TPM wants Startup
        rsp = driver.transmit(TPM2_GETRANDOM_8)
        assert rc(rsp) == 0 and len(rsp) == 20
    assert fresh.closed and fresh.process is None
