"""tpmdev.backends.Passthrough: a host TPM device used as QEMU's ``-tpmdev passthrough``.

There is no /dev/tpm0 where these tests run, so the device is the
:class:`~standin.StandIn`: a SOCK_SEQPACKET socketpair (one write = one
command, one read = one response, poll() until the response is ready) whose
far end a thread bridges to a real swtpm, TPM 2.0 or 1.2, and a FIFO as the
sysfs cancel file. The stand-in injects only what swtpm cannot produce:
garbled or missing answers, a slow chip (``latency``).

Two faults no available device can produce are injected into the backend's
own system calls: EBUSY from open() (the kernel device's single-opener rule;
root is exempt from a tty's exclusive mode, the one stand-in that has it)
and ECANCELED from read() (the kernel's report of a canceled command).

Tests against a real host TPM exist only where a usable /dev/tpmN exists;
elsewhere they are not collected at all (no skip).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import shutil
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tpmdev
from tpmdev.backends._probe import TPM2_BUFFER_SIZE_PROBE, TPM12_BUFFER_SIZE_PROBE, probe_version
from tpmdev.backends.passthrough import Passthrough
from tpmdev.drivers import commands as c
from tpmdev.drivers.tis import TisDriver
from tpmdev.errors import BackendError, StateError
from tpmdev.wire import FATAL_RESPONSE, TPM2_READCLOCK_PROBE, TPM12_GETTICKS_PROBE

from standin import CancelRecord, StandIn

pytestmark = [pytest.mark.swtpm, pytest.mark.usefixtures("no_leaked_swtpm")]

TPM_RC_INITIALIZE = 0x100
TPM_RC_CANCELED = 0x909
TPM_INVALID_POSTINIT = 0x26
STANDIN_PATH = "/dev/tpmdev-standin"  # names the device only; never opened

MakePT = Callable[..., "tuple[Passthrough, StandIn]"]


def rc(response: bytes) -> int:
    return int.from_bytes(response[6:10], "big")


def tpm2_create_primary_rsa2048() -> bytes:
    """TPM2_CreatePrimary: an RSA-2048 restricted decryption key under the owner."""
    attributes = 0x00030072  # fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted decrypt
    public = struct.pack(">HHIH", 0x0001, 0x000B, attributes, 0)  # RSA, SHA-256, attrs, no policy
    public += struct.pack(">HHHHHI", 0x0006, 128, 0x0043, 0x0010, 2048, 0)  # AES-128-CFB, RSA 2048
    public += struct.pack(">H", 0)  # unique
    session = struct.pack(">IHBH", 0x40000009, 0, 0, 0)
    body = struct.pack(">I", 0x40000001) + struct.pack(">I", len(session)) + session
    body += struct.pack(">HHH", 4, 0, 0)  # inSensitive: empty userAuth, empty data
    body += struct.pack(">H", len(public)) + public
    body += struct.pack(">HI", 0, 0)  # outsideInfo, creationPCR
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x131) + body


def tpm2_flush(response: bytes) -> bytes:
    return bytes.fromhex("80010000000e00000165") + response[10:14]


def get_random(version: int, n: int = 8) -> bytes:
    return c.tpm2_get_random(n) if version == 2 else c.tpm12_get_random(n)


# -- fixtures -----------------------------------------------------------------------
@pytest.fixture
def standin(swtpm_bin: str) -> Iterator[Callable[..., StandIn]]:
    made: list[tuple[StandIn, Path]] = []

    def make(version: int = 2, *, started: bool = True) -> StandIn:
        workdir = Path(tempfile.mkdtemp(prefix="tpmdev-pt-"))
        try:
            device = StandIn(swtpm_bin, workdir, version, started=started)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        made.append((device, workdir))
        return device

    yield make
    for device, workdir in made:
        device.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def passthrough(standin: Callable[..., StandIn]) -> Iterator[MakePT]:
    """Factory: a Passthrough on a fresh stand-in; closed afterwards."""
    backends: list[Passthrough] = []

    def make(version: int = 2, *, started: bool = True, timeout: float = 5.0) -> tuple[Passthrough, StandIn]:
        device = standin(version, started=started)
        backend = Passthrough(STANDIN_PATH, device.cancel_path, fd=device.take_fd(), timeout=timeout)
        backends.append(backend)
        return backend, device

    yield make
    for backend in backends:
        backend.close()


def run_in_worker(fn: Callable[[], bytes]) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []

    def work() -> None:
        try:
            results.append(fn())
        except Exception as exc:  # reported by the test
            results.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    return worker, results


def settle() -> None:
    """Give the stand-in's cancel watcher time to see a write that should not come."""
    time.sleep(0.1)


# -- construction: version probe, cancel file ----------------------------------------
@pytest.mark.parametrize("started", [True, False], ids=["started", "not-started"])
@pytest.mark.parametrize("version", [1, 2])
def test_version_detection(passthrough: MakePT, version: int, started: bool) -> None:
    backend, device = passthrough(version, started=started)
    assert backend.tpm_version == version
    probes = [TPM2_READCLOCK_PROBE] if version == 2 else [TPM2_READCLOCK_PROBE, TPM12_GETTICKS_PROBE]
    assert device.commands == probes
    assert backend.cancel_path == device.cancel_path
    assert device.cancels == []


def test_probe_reusable_on_the_backend(passthrough: MakePT) -> None:
    backend, _ = passthrough(1)
    assert probe_version(backend.execute) == 1


def test_not_a_tpm(tmp_path: Path) -> None:
    # /dev/null takes the probe and answers nothing: QEMU's "is not a TPM device".
    cancel = tmp_path / "cancel"
    cancel.touch()
    with pytest.raises(BackendError, match=r"'/dev/null' is not a TPM device"):
        Passthrough("/dev/null", cancel)


def test_silent_device_probe_is_bounded(standin: Callable[..., StandIn]) -> None:
    device = standin(2)
    device.fault(None)  # ReadClock is swallowed
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"not a TPM device.*did not answer the probe within 0.3 s"):
        Passthrough(STANDIN_PATH, device.cancel_path, fd=device.take_fd(), timeout=0.3)
    assert time.monotonic() - t0 < 2.0
    assert device.peer_closed.wait(5)  # the fd was closed with the failed backend


def test_missing_device(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"cannot access TPM device .*tpm9.*No such file.*TPM driver"):
        Passthrough(tmp_path / "tpm9", tmp_path / "cancel")


def test_busy_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    device = str(tmp_path / "tpm0")
    real_open = os.open

    def kernel_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == device:  # the kernel's single-opener rule
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), device)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", kernel_open)
    with pytest.raises(BackendError, match=r"TPM device .*tpm0' is busy: another user holds it"):
        Passthrough(device)


def test_missing_cancel_file_names_the_paths(standin: Callable[..., StandIn]) -> None:
    device = standin(2)
    with pytest.raises(BackendError) as info:
        Passthrough("/dev/tpmdev-no-such-tpm", fd=device.take_fd(), timeout=5)
    message = str(info.value)
    assert "/sys/class/tpm/tpmdev-no-such-tpm/device/cancel" in message
    assert "/sys/class/misc/tpmdev-no-such-tpm/device/cancel" in message
    assert "cancel_path" in message
    assert device.commands == [TPM2_READCLOCK_PROBE]  # probed first, as QEMU
    assert device.peer_closed.wait(5)


def test_cancel_path_given_but_missing(standin: Callable[..., StandIn], tmp_path: Path) -> None:
    device = standin(2)
    with pytest.raises(BackendError, match=r"cancel file .*nothere.* given as cancel_path: No such file"):
        Passthrough(STANDIN_PATH, tmp_path / "nothere", fd=device.take_fd(), timeout=5)


def test_cancel_fifo_without_reader_fails_at_once(standin: Callable[..., StandIn], tmp_path: Path) -> None:
    device = standin(2)
    fifo = tmp_path / "cancel"
    os.mkfifo(fifo)
    with pytest.raises(BackendError, match=r"No such device or address"):
        Passthrough(STANDIN_PATH, fifo, fd=device.take_fd(), timeout=5)


def test_device_path_without_directory(standin: Callable[..., StandIn]) -> None:
    device = standin(2)
    with pytest.raises(BackendError, match=r"cannot derive the TPM cancel file from the device path 'tpm0'"):
        Passthrough("tpm0", fd=device.take_fd(), timeout=5)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_bad_timeout_closes_the_fd(standin: Callable[..., StandIn], timeout: float) -> None:
    device = standin(2)
    with pytest.raises(ValueError, match="timeout"):
        Passthrough(STANDIN_PATH, device.cancel_path, fd=device.take_fd(), timeout=timeout)
    assert device.peer_closed.wait(5)


@pytest.mark.parametrize("fd", [-1, True, "3"])
def test_bad_fd(fd: Any) -> None:
    with pytest.raises(ValueError, match="fd must be"):
        Passthrough(fd=fd)


def test_closed_fd() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(BackendError, match=f"fd {r} is not an open file descriptor"):
        Passthrough(fd=r)


# -- buffer size and startup ---------------------------------------------------------
def tpm2_property(backend: Passthrough, prop: int) -> int:
    response = backend.execute(c.tpm2_get_capability(6, prop, 1))
    assert rc(response) == 0
    _more, cap, count, got, value = struct.unpack_from(">BIIII", response, 10)
    assert (cap, count, got) == (6, 1, prop)
    return int(value)


def test_buffer_size_tpm2_matches_getcapability(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    size = backend.get_buffer_size()
    assert device.commands[-1] == TPM2_BUFFER_SIZE_PROBE
    # Asked one property at a time, swtpm gives the same numbers.
    assert size == max(tpm2_property(backend, 0x11E), tpm2_property(backend, 0x11F)) == 4096


def test_buffer_size_tpm12_matches_getcapability(passthrough: MakePT) -> None:
    backend, device = passthrough(1)
    size = backend.get_buffer_size()
    assert device.commands[-1] == TPM12_BUFFER_SIZE_PROBE
    response = backend.execute(TPM12_BUFFER_SIZE_PROBE)
    assert rc(response) == 0 and len(response) == 18
    assert size == struct.unpack_from(">I", response, 14)[0] == 4096


@pytest.mark.parametrize("version", [1, 2])
def test_buffer_size_unstarted_tpm_falls_back(
    passthrough: MakePT, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    backend, device = passthrough(version, started=False)
    assert backend.get_buffer_size() == 4096
    assert "unexpected answer" in caplog.text  # TPM_RC_INITIALIZE / TPM_INVALID_POSTINIT
    device.fault(struct.pack(">HIIBIIIIII", 0x8001, 35, 0, 0, 6, 2, 0x11E, 8192, 0x11F, 1024))
    if version == 2:
        assert backend.get_buffer_size() == 8192  # asked again at every reset
    else:
        assert backend.get_buffer_size() == 4096  # a 2.0-shaped answer does not fit


def test_startup_refuses_smaller_buffer(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    assert backend.get_buffer_size() == 4096
    with pytest.raises(
        BackendError, match=r"2048 bytes is smaller than the host TPM's fixed buffer size of 4096"
    ):
        backend.startup(2048)
    sent = len(device.commands)
    backend.startup(0)
    backend.startup(4096)
    backend.startup(8192)
    assert len(device.commands) == sent  # startup sends nothing to a running host TPM
    with pytest.raises(ValueError):
        backend.startup(-1)


def test_startup_asks_for_the_size_first(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    device.fault(struct.pack(">HIIBIIIIII", 0x8001, 35, 0, 0, 6, 2, 0x11E, 8192, 0x11F, 8192))
    with pytest.raises(BackendError, match="smaller than the host TPM's"):
        backend.startup(4096)
    assert device.commands[-1] == TPM2_BUFFER_SIZE_PROBE


# -- commands -----------------------------------------------------------------------
def test_tpm2_commands(passthrough: MakePT) -> None:
    backend, _ = passthrough(2, started=False)
    assert rc(backend.execute(c.tpm2_startup())) == 0
    random = c.decode_get_random(backend.execute(c.tpm2_get_random(16)), 2)
    assert len(random) == 16
    digest = hashlib.sha256(b"passthrough").digest()
    assert rc(backend.execute(c.tpm2_pcr_extend(16, digest))) == 0
    _, values = c.decode_pcr_read(backend.execute(c.tpm2_pcr_read([16])))
    assert values == [hashlib.sha256(bytes(32) + digest).digest()]


def test_tpm2_started_host_refuses_startup(passthrough: MakePT) -> None:
    backend, _ = passthrough(2)
    assert rc(backend.execute(c.tpm2_startup())) == TPM_RC_INITIALIZE  # the host booted it already


def test_tpm12_commands(passthrough: MakePT) -> None:
    backend, _ = passthrough(1, started=False)
    assert rc(backend.execute(c.tpm12_get_random(8))) == TPM_INVALID_POSTINIT
    assert rc(backend.execute(c.tpm12_startup())) == 0
    assert len(c.decode_get_random(backend.execute(c.tpm12_get_random(16)), 1)) == 16
    digest = hashlib.sha1(b"passthrough").digest()
    expected = hashlib.sha1(bytes(20) + digest).digest()
    assert c.decode_tpm12_digest(backend.execute(c.tpm12_extend(16, digest))) == expected
    assert c.decode_tpm12_digest(backend.execute(c.tpm12_pcr_read(16))) == expected


def test_locality_ignored_and_bytes_unchanged(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    command = c.tpm2_get_random(8)
    for locality in (0, 3, 4):
        assert rc(backend.execute(command, locality)) == 0
        assert device.commands[-1] == command


def test_short_command_not_sent(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    sent = len(device.commands)
    with pytest.raises(BackendError, match="shorter than a header"):
        backend.execute(b"\x80\x01\x00\x00\x00\x09\x00\x00\x01")
    assert len(device.commands) == sent
    assert rc(backend.execute(c.tpm2_get_random(8))) == 0


def test_established_flag(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    sent = len(device.commands)
    assert backend.get_established_flag() is False
    backend.reset_established_flag(3)
    assert backend.get_established_flag() is False
    assert len(device.commands) == sent


# -- invalid responses ----------------------------------------------------------------
INVALID = {
    "short": bytes.fromhex("8001 0000"),
    "9 bytes": bytes.fromhex("8001 0000000a 000000"),
    "size field larger": bytes.fromhex("8001 0000000c 00000000"),
    "size field smaller": bytes.fromhex("8001 0000000a 00000000 0000"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_response(passthrough: MakePT, name: str) -> None:
    backend, device = passthrough(2)
    device.fault(INVALID[name])
    with pytest.raises(BackendError, match="invalid response"):
        backend.execute(c.tpm2_get_random(8))
    # Message boundaries hold: the next command gets its own answer.
    assert backend.failure is None
    assert rc(backend.execute(c.tpm2_get_random(8))) == 0


def test_response_larger_than_the_buffer(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    backend.get_buffer_size()
    backend.startup(4096)
    device.fault(struct.pack(">HII", 0x8001, 4097, 0) + bytes(4087))
    with pytest.raises(BackendError, match="4097 bytes does not fit the 4096-byte buffer"):
        backend.execute(c.tpm2_get_random(8))
    assert rc(backend.execute(c.tpm2_get_random(8))) == 0


def test_no_answer_is_bounded(passthrough: MakePT) -> None:
    backend, device = passthrough(2, timeout=0.5)
    command = c.tpm2_get_random(8)
    device.fault(None)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"did not answer the command within 0.5 s"):
        backend.execute(command)
    assert 0.45 < time.monotonic() - t0 < 2.0
    # The command was still in flight: canceled, and the backend refuses
    # to take a late answer for the next command's.
    assert device.wait_cancels(1) == [CancelRecord(True, command)]
    assert backend.failure is not None
    with pytest.raises(BackendError, match="failed earlier"):
        backend.execute(command)
    assert backend.get_buffer_size() == 4096
    assert device.commands.count(command) == 1


# -- cancel ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["cancel", "reset"])
def test_cancel_during_create_primary(passthrough: MakePT, how: str) -> None:
    backend, device = passthrough(2)
    command = tpm2_create_primary_rsa2048()
    device.latency = 30.0  # a slow chip: the response waits for the cancel
    backend.cancel()
    backend.reset()
    worker, results = run_in_worker(lambda: backend.execute(command))
    device.wait_in_flight()
    assert device.cancels == []
    t0 = time.monotonic()
    getattr(backend, how)()
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - t0 < 5
    (response,) = results
    assert isinstance(response, bytes)
    assert rc(response) in (0, TPM_RC_CANCELED)  # swtpm 0.7.1 finishes primary keys
    assert device.cancels == [CancelRecord(True, command)]
    # Idle again: neither cancel nor reset writes to the cancel file.
    device.latency = 0.0
    backend.cancel()
    backend.reset()
    if rc(response) == 0:
        assert rc(backend.execute(tpm2_flush(response))) == 0
    assert rc(backend.execute(c.tpm2_get_random(8))) == 0  # in step
    settle()
    assert len(device.cancels) == 1


def test_idle_cancel_writes_nothing(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    for _ in range(3):
        backend.cancel()
        backend.reset()
        assert rc(backend.execute(c.tpm2_get_random(8))) == 0
    settle()
    assert device.cancels == []


def test_ecanceled_after_cancel_gives_fatal_response(
    passthrough: MakePT, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, device = passthrough(2)
    fd = backend._files.device
    real_read = os.read

    def kernel_read(f: int, n: int) -> bytes:
        data = real_read(f, n)
        if f == fd and device.cancels:
            # The kernel reports a command aborted by the cancel file as ECANCELED.
            raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
        return data

    monkeypatch.setattr(os, "read", kernel_read)
    device.latency = 30.0
    worker, results = run_in_worker(lambda: backend.execute(c.tpm2_get_random(8)))
    device.wait_in_flight()
    backend.cancel()
    worker.join(10)
    assert results == [FATAL_RESPONSE]  # as QEMU: TPM_FAIL for the guest, no error
    assert backend.failure is None


def test_ecanceled_without_our_cancel_is_an_error(
    passthrough: MakePT, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, _ = passthrough(2)
    fd = backend._files.device
    real_read = os.read

    def kernel_read(f: int, n: int) -> bytes:
        data = real_read(f, n)
        if f == fd:
            raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))  # someone else canceled
        return data

    monkeypatch.setattr(os, "read", kernel_read)
    with pytest.raises(BackendError, match="reading the response from the TPM device"):
        backend.execute(c.tpm2_get_random(8))


# -- migration, close ------------------------------------------------------------------
def test_migration_refused(passthrough: MakePT) -> None:
    backend, _ = passthrough(2)
    with pytest.raises(StateError, match="no state to save"):
        backend.get_state()
    with pytest.raises(StateError, match="cannot load a saved state"):
        backend.set_state({"permanent": b"", "volatile": b"", "savestate": b""})


def test_close(passthrough: MakePT) -> None:
    backend, device = passthrough(2)
    with backend as same:
        assert same is backend
        assert rc(backend.execute(c.tpm2_get_random(8))) == 0
    assert backend.closed
    assert device.peer_closed.wait(5)  # the device fd is closed
    backend.close()  # idempotent
    backend.cancel()  # harmless
    with pytest.raises(StateError):
        backend.execute(c.tpm2_get_random(8))
    with pytest.raises(StateError):
        backend.get_buffer_size()
    with pytest.raises(StateError):
        backend.startup(4096)
    assert "closed" in repr(backend)


def test_close_while_a_command_is_in_flight(passthrough: MakePT) -> None:
    backend, device = passthrough(2, timeout=60)
    command = c.tpm2_get_random(8)
    device.fault(None)
    worker, results = run_in_worker(lambda: backend.execute(command))
    device.wait_in_flight()
    t0 = time.monotonic()
    backend.close()
    worker.join(5)
    assert time.monotonic() - t0 < 2
    (error,) = results
    assert isinstance(error, BackendError) and "closed while a command was running" in str(error)
    assert device.wait_cancels(1) == [CancelRecord(True, command)]  # as QEMU's finalizer
    assert device.peer_closed.wait(5)


# -- through the TIS, as a guest sees it ------------------------------------------------
@pytest.mark.parametrize("version", [1, 2])
def test_through_tis(passthrough: MakePT, version: int) -> None:
    backend, device = passthrough(version)
    with tpmdev.TIS(backend) as dev:
        assert dev.tpm_version == version
        assert (TPM2_BUFFER_SIZE_PROBE if version == 2 else TPM12_BUFFER_SIZE_PROBE) in device.commands
        driver = TisDriver(dev)
        assert len(c.decode_get_random(driver.transmit(get_random(version, 16)), version)) == 16
        device.fault(INVALID["size field larger"])
        assert driver.transmit(get_random(version)) == FATAL_RESPONSE
        assert isinstance(dev.backend_error, BackendError)
        assert rc(driver.transmit(get_random(version))) == 0
    assert backend.closed


def test_through_tis_pcrs(passthrough: MakePT) -> None:
    backend, _ = passthrough(2)
    with tpmdev.TIS(backend, asynchronous=True) as dev:
        driver = TisDriver(dev, timeout=10)
        digest = hashlib.sha256(b"tis").digest()
        assert rc(driver.transmit(c.tpm2_pcr_extend(16, digest))) == 0
        _, values = c.decode_pcr_read(driver.transmit(c.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]


def test_tis_refuses_host_buffer_larger_than_its_own(passthrough: MakePT) -> None:
    # QEMU: TIS buffer 4096 < host 8192 -> "Requested buffer size of 4096 is
    # smaller than host TPM's fixed buffer size of 8192"; the machine does not start.
    backend, device = passthrough(2)
    device.fault(struct.pack(">HIIBIIIIII", 0x8001, 35, 0, 0, 6, 2, 0x11E, 8192, 0x11F, 8192))
    with pytest.raises(
        BackendError, match="4096 bytes is smaller than the host TPM's fixed buffer size of 8192"
    ):
        tpmdev.TIS(backend)


# -- a real host TPM, where there is one ----------------------------------------------
def _usable_host_tpms() -> list[str]:
    found = []
    for path in sorted(glob.glob("/dev/tpm[0-9]*")):
        try:
            if not stat.S_ISCHR(os.stat(path).st_mode):
                continue
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError:
            continue
        os.close(fd)
        name = os.path.basename(path)
        cancels = [
            p.format(name) for p in ("/sys/class/tpm/{}/device/cancel", "/sys/class/misc/{}/device/cancel")
        ]
        if any(os.access(p, os.W_OK) for p in cancels):
            found.append(path)
    return found


HOST_TPMS = _usable_host_tpms()

if HOST_TPMS:  # not collected at all without one: no skip in CI

    @pytest.mark.parametrize("path", HOST_TPMS)
    def test_host_tpm(path: str) -> None:
        # Read-only commands: the host's PCRs and keys are left alone.
        with Passthrough(path, timeout=60) as backend:
            assert backend.tpm_version in (1, 2)
            size = backend.get_buffer_size()
            assert size >= 1024
            backend.startup(max(size, 4096))
            random = backend.execute(get_random(backend.tpm_version, 8))
            assert rc(random) == 0
            backend.cancel()  # idle: nothing written


def test_device_save_load_and_snapshot_refused(passthrough: MakePT) -> None:
    """A device on a passthrough TPM cannot save, load or snapshot: the state
    is in the host's chip. Nothing changes when it refuses."""
    backend, _ = passthrough(2)
    builtin = tpmdev.backends.Builtin(seed=1)
    with tpmdev.TIS(backend, close_backend=False) as dev, tpmdev.TIS(builtin) as other:
        dev.write(0x000, 0x02, 1)
        before = dev.core.capture()
        with pytest.raises(StateError, match="TIS save: a Passthrough backend's state lives in the host"):
            dev.save()
        with pytest.raises(StateError, match="TIS snapshot: a Passthrough backend's state lives in the host"):
            dev.snapshot()
        with pytest.raises(StateError, match="TIS load: a Passthrough backend cannot load a saved TPM state"):
            dev.load(other.save())
        assert dev.core.capture() == before
