"""TIS over a real swtpm (the Emulator backend), including swtpm failing.

A swtpm that stalls or dies mid-command gives the guest QEMU's TPM failure
response within the backend's timeout, and the host a BackendError.
"""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import tpmdev
from tpmdev.backends.emulator import Emulator
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.hw import regs as R
from tpmdev.wire import FATAL_RESPONSE, response_code

pytestmark = pytest.mark.swtpm


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    backend = Emulator.spawn(tmp_path / "state", tpm_version=2, timeout=0.5)
    yield backend
    if backend.pid is not None:
        try:
            os.kill(backend.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    backend.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_commands_over_swtpm(tis_class: type[tpmdev.TIS], emulator: Emulator, asynchronous: bool) -> None:
    with tis_class(emulator, asynchronous=asynchronous) as dev:
        assert dev.tpm_version == 2
        assert (
            response_code(TisDriver(dev, locality=1, timeout=10).transmit(C.tpm2_startup())) == 0x907
        )  # TPM_RC_LOCALITY
        assert response_code(TisDriver(dev, locality=0, timeout=10).transmit(C.tpm2_startup())) == 0
        driver = TisDriver(dev, locality=1, timeout=10)
        digest = hashlib.sha256(b"x").digest()
        assert response_code(driver.transmit(C.tpm2_pcr_extend(16, digest))) == 0
        _, values = C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]
        assert dev.backend_error is None


def test_tpm12_over_swtpm(tis_class: type[tpmdev.TIS], tmp_path: Path) -> None:
    with tis_class(Emulator.spawn(tmp_path / "state", tpm_version=1)) as dev:
        assert dev.read(R.TPM_INTF_CAPABILITY) == R.TPM_INTF_CAPABILITY_TPM12
        driver = TisDriver(dev)
        assert response_code(driver.transmit(C.tpm12_startup())) == 0
        response = driver.transmit(C.tpm12_extend(10, hashlib.sha1(b"x").digest()))
        assert (
            C.decode_tpm12_digest(response) == hashlib.sha1(bytes(20) + hashlib.sha1(b"x").digest()).digest()
        )


def _tpmgo(dev: tpmdev.TIS, command: bytes) -> None:
    dev.write(R.TPM_ACCESS, 2, 1)
    dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
    for byte in command:
        dev.write(R.TPM_DATA_FIFO, byte, 1)
    dev.write(R.TPM_STS, R.TPM_STS_GO, 1)


@pytest.mark.parametrize("fault", ["stall", "kill"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_swtpm_fault_gives_guest_tpm_fail(
    tis_class: type[tpmdev.TIS], emulator: Emulator, fault: str, asynchronous: bool
) -> None:
    errors: list[tpmdev.BackendError] = []
    with tis_class(emulator, asynchronous=asynchronous, on_backend_error=errors.append) as dev:
        driver = TisDriver(dev, timeout=5)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        assert emulator.pid is not None
        os.kill(emulator.pid, signal.SIGSTOP if fault == "stall" else signal.SIGKILL)
        start = time.monotonic()
        _tpmgo(dev, C.tpm2_get_random(8))
        assert dev.wait(5)
        elapsed = time.monotonic() - start
        assert dev.read(R.TPM_STS) & 0xFF == 0x90
        assert bytes(dev.read(R.TPM_DATA_FIFO, 1) for _ in range(10)) == FATAL_RESPONSE
        assert elapsed < 0.5 + 1.0  # the backend's timeout, plus scheduling slack
        assert errors and dev.backend_error is errors[-1]
        # later commands fail fast too, never hang
        start = time.monotonic()
        assert driver.transmit(C.tpm2_get_random(8)) == FATAL_RESPONSE
        assert time.monotonic() - start < 1.5


def test_forgotten_async_device_ends_its_swtpm(tis_class: type[tpmdev.TIS], tmp_path: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    threads = set(threading.enumerate())
    backend = Emulator.spawn(tmp_path / "state", tpm_version=2)
    pid = backend.pid
    assert pid is not None
    dev = tis_class(backend, asynchronous=True)
    assert response_code(TisDriver(dev, timeout=5).transmit(C.tpm2_startup())) == 0
    ref = weakref.ref(dev)
    del dev
    gc.collect()
    assert ref() is None and backend.closed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # swtpm ended and was reaped
    for thread in set(threading.enumerate()) - threads:
        thread.join(10)
    assert set(threading.enumerate()) <= threads
    assert len(os.listdir("/proc/self/fd")) == fds
