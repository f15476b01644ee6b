"""Backend round trips, directly and through the TIS registers.

Each group has its floor, measured in the same run: the bare round trip of
the backend underneath. For swtpm the floor is a raw socket exchange with a
``swtpm socket --server`` (one send, one receive, no tpmdev code at all).

Targets (issue: backends): TIS over Emulator within 1.15x of the bare swtpm
socket round trip; Libtpms in process at least 3x faster than the swtpm
round trip.

Placement matters more than code for a socket round trip: on this kind of
machine a swtpm that the scheduler leaves on the other CPU answers in about
80 us, one on the same CPU in about 8 us. ``TPMDEV_BENCH_CPU=N`` pins the
benchmark process and every swtpm to CPU N, so both sides of a comparison
run in the same (fast) placement; without it the scheduler decides.

The guest here moves the FIFO in bursts (``write_many`` / ``read_many``:
byte accesses to DATA_FIFO, one Python call per burst); the firmware driver
with one Python call per byte is measured in ``test_tis.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.hw import regs as R
from tpmdev.wire import response_code

GET_RANDOM = C.tpm2_get_random(32)
PCR_EXTEND = C.tpm2_pcr_extend(16, bytes(range(32)))
COMMANDS = {"GetRandom(32)": GET_RANDOM, "PCR_Extend": PCR_EXTEND}


_PIN = os.environ.get("TPMDEV_BENCH_CPU")


def _pin(pid: int) -> None:
    if _PIN is not None:
        os.sched_setaffinity(pid, {int(_PIN)})


class RawSwtpm:
    """swtpm with its own data socket, spoken to without any tpmdev code."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="tpmdev-bench-")
        data = os.path.join(self._dir.name, "data")
        self.proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self._dir.name}",
             "--server", f"type=unixio,path={data}",
             "--ctrl", f"type=unixio,path={os.path.join(self._dir.name, 'ctrl')}",
             "--flags", "not-need-init,startup-clear"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _pin(self.proc.pid)
        deadline = time.monotonic() + 10
        while not os.path.exists(data):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("swtpm did not start")
            time.sleep(0.01)
        while True:  # swtpm creates its socket file before it listens
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(data)
                break
            except ConnectionRefusedError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.sock.settimeout(10)

    def round_trip(self, command: bytes) -> bytes:
        self.sock.sendall(command)
        return self.sock.recv(4096)

    def close(self) -> None:
        self.sock.close()
        self.proc.kill()
        self.proc.wait(10)
        self._dir.cleanup()


def tis_round_trip(dev: tpmdev.TIS) -> Callable[[bytes], bytes]:
    """A guest that moves the FIFO in bursts: commandReady, the command as
    byte writes to DATA_FIFO (one ``write_many``), tpmGo, poll STS, the
    response as byte reads (one ``read_many``). Same register semantics as a
    firmware byte loop, without a Python call per byte."""
    read, write, read_many, write_many = dev.read, dev.write, dev.read_many, dev.write_many
    sts, fifo = R.TPM_STS, R.TPM_DATA_FIFO

    def transact(command: bytes) -> bytes:
        write(sts, R.TPM_STS_COMMAND_READY, 1)
        write_many(fifo, command)
        write(sts, R.TPM_STS_GO, 1)
        status = read(sts)
        while status & 0x90 != 0x90:  # asynchronous backends: poll
            status = read(sts)
        return read_many(fifo, (status >> 8) & 0xFFFF)

    return transact


@pytest.fixture(scope="module", autouse=True)
def pinned() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    _pin(0)
    yield
    os.sched_setaffinity(0, before)


@pytest.fixture(scope="module")
def raw_swtpm() -> Iterator[RawSwtpm]:
    swtpm = RawSwtpm()
    yield swtpm
    swtpm.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="tpmdev-bench-") as state:
        backend = tpmdev.backends.Emulator.spawn(state)
        assert backend.pid is not None
        _pin(backend.pid)
        backend.execute(C.tpm2_startup())
        yield backend
        backend.close()


def _started(backend: Backend) -> Backend:
    assert response_code(backend.execute(C.tpm2_startup())) == 0
    return backend


def _device(backend: Backend) -> tpmdev.TIS:
    dev = tpmdev.TIS(backend, close_backend=False)
    dev.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
    transact = tis_round_trip(dev)
    assert response_code(transact(C.tpm2_startup())) == 0  # TIS reset powered it on again
    return dev


@pytest.mark.parametrize("name", list(COMMANDS))
class TestRoundTrips:
    def test_swtpm_bare_socket(self, benchmark: Callable[..., bytes], raw_swtpm: RawSwtpm, name: str) -> None:
        benchmark.group = f"{name}: swtpm"  # type: ignore[attr-defined]
        assert response_code(benchmark(raw_swtpm.round_trip, COMMANDS[name])) == 0

    def test_emulator_execute(self, benchmark: Callable[..., bytes], emulator: Backend, name: str) -> None:
        benchmark.group = f"{name}: swtpm"  # type: ignore[attr-defined]
        assert response_code(benchmark(emulator.execute, COMMANDS[name])) == 0

    def test_tis_over_emulator(self, benchmark: Callable[..., bytes], emulator: Backend, name: str) -> None:
        benchmark.group = f"{name}: swtpm"  # type: ignore[attr-defined]
        dev = _device(emulator)
        assert response_code(benchmark(tis_round_trip(dev), COMMANDS[name])) == 0

    def test_libtpms_execute(self, benchmark: Callable[..., bytes], name: str) -> None:
        benchmark.group = f"{name}: swtpm"  # type: ignore[attr-defined]
        with _started(tpmdev.backends.Libtpms()) as tpm:
            assert response_code(benchmark(tpm.execute, COMMANDS[name])) == 0

    def test_tis_over_libtpms(self, benchmark: Callable[..., bytes], name: str) -> None:
        benchmark.group = f"{name}: in process"  # type: ignore[attr-defined]
        with tpmdev.backends.Libtpms() as tpm:
            dev = _device(tpm)
            assert response_code(benchmark(tis_round_trip(dev), COMMANDS[name])) == 0

    def test_libtpms_bare(self, benchmark: Callable[..., bytes], name: str) -> None:
        benchmark.group = f"{name}: in process"  # type: ignore[attr-defined]
        with _started(tpmdev.backends.Libtpms()) as tpm:
            assert response_code(benchmark(tpm.execute, COMMANDS[name])) == 0

    def test_builtin_bare(self, benchmark: Callable[..., bytes], name: str) -> None:
        benchmark.group = f"{name}: in process"  # type: ignore[attr-defined]
        with _started(tpmdev.backends.Builtin()) as tpm:
            assert response_code(benchmark(tpm.execute, COMMANDS[name])) == 0

    def test_tis_over_builtin(self, benchmark: Callable[..., bytes], name: str) -> None:
        benchmark.group = f"{name}: in process"  # type: ignore[attr-defined]
        with tpmdev.backends.Builtin() as tpm:
            dev = _device(tpm)
            assert response_code(benchmark(tis_round_trip(dev), COMMANDS[name])) == 0


# The established flag is asked at every read of TIS ACCESS / CRB
# LOC_STATE: what one answer costs, straight from each in-process TPM.
@pytest.mark.parametrize("kind", ["Builtin", "Libtpms"])
def test_get_established_flag(benchmark: Callable[..., bool], kind: str) -> None:
    benchmark.group = "get_established_flag"  # type: ignore[attr-defined]
    backend = tpmdev.backends.Builtin() if kind == "Builtin" else tpmdev.backends.Libtpms()
    with _started(backend) as tpm:
        assert benchmark(tpm.get_established_flag) is False
