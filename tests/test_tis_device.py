"""The TIS device layer: a register model joined to a real backend.

Runs on both variants (``tis_class``) over the built-in TPM, in synchronous
and asynchronous completion, and with backends that fail (fault injection).
"""

from __future__ import annotations

import gc
import hashlib
import sys
import threading
import weakref
from collections.abc import Iterator

import pytest

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.hw import regs as R
from tpmdev.wire import FATAL_RESPONSE, response_code


def test_api_names(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        assert dev.read.__self__ is dev.core and dev.write.__self__ is dev.core  # type: ignore[attr-defined]
        assert dev.mmio.shape == (0x5000,) and str(dev.mmio.dtype) == "uint8"
        assert dev.tpm_version == 2
        assert issubclass(tpmdev.AccessError, ValueError)


@pytest.mark.parametrize("version", [1, 2])
def test_version_from_backend_or_forced(tis_class: type[tpmdev.TIS], version: int) -> None:
    with tis_class(tpmdev.backends.Builtin(tpm_version=version)) as dev:
        assert dev.read(R.TPM_INTF_CAPABILITY) == R.intf_capability(version)
    with tis_class(tpmdev.backends.Builtin(tpm_version=2), tpm_version=version) as dev:
        assert dev.read(R.TPM_INTERFACE_ID) == R.interface_id(version)


@pytest.mark.parametrize(
    "kwargs",
    [{"tpm_version": 3}, {"irq_num": 16}, {"irq_num": -1}, {"irq": 5}],
    ids=["version", "irq16", "irq-1", "irq-not-callable"],
)
def test_bad_configuration(tis_class: type[tpmdev.TIS], kwargs: dict[str, object]) -> None:
    with pytest.raises(tpmdev.TpmDevError):
        tis_class(tpmdev.backends.Builtin(), **kwargs)  # type: ignore[arg-type]


def test_irq_num_in_int_vector(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin(), irq_num=11) as dev:
        assert [dev.read((n << 12) + R.TPM_INT_VECTOR) for n in range(5)] == [11] * 5


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_commands_through_registers(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    with tis_class(tpmdev.backends.Builtin(), asynchronous=asynchronous) as dev:
        driver = TisDriver(dev, locality=0, timeout=10)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        assert len(C.decode_get_random(driver.transmit(C.tpm2_get_random(20)))) == 20
        digest = hashlib.sha256(b"measured").digest()
        assert response_code(driver.transmit(C.tpm2_pcr_extend(16, digest))) == 0
        _, values = C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]


def test_sync_response_in_place_when_tpmgo_returns(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        dev.write(R.TPM_ACCESS, 2, 1)
        dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
        for byte in C.tpm2_startup():
            dev.write(R.TPM_DATA_FIFO, byte, 1)
        dev.write(R.TPM_STS, R.TPM_STS_GO, 1)
        assert dev.read(R.TPM_STS) == 0x04000A90


class Gate(Backend):
    """Fault injection: a Builtin whose commands wait until the test opens the gate."""

    def __init__(self) -> None:
        self.inner = tpmdev.backends.Builtin()
        self.gate = threading.Event()
        self.cancels = 0

    @property
    def tpm_version(self) -> int:
        return 2

    def _execute(self, command: bytes, locality: int) -> bytes:
        assert self.gate.wait(10)
        return self.inner.execute(command, locality)

    def cancel(self) -> None:
        self.cancels += 1


@pytest.fixture
def gated(tis_class: type[tpmdev.TIS]) -> Iterator[tuple[tpmdev.TIS, Gate]]:
    gate = Gate()
    dev = tis_class(gate, asynchronous=True)
    yield dev, gate
    gate.gate.set()
    dev.close()


def _start(dev: tpmdev.TIS, command: bytes, locality: int = 0) -> None:
    base = locality << 12
    dev.write(base + R.TPM_ACCESS, 2, 1)
    dev.write(base + R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
    for byte in command:
        dev.write(base + R.TPM_DATA_FIFO, byte, 1)
    dev.write(base + R.TPM_STS, R.TPM_STS_GO, 1)


def test_async_executes_until_applied(gated: tuple[tpmdev.TIS, Gate]) -> None:
    dev, gate = gated
    _start(dev, C.tpm2_startup())
    assert dev.busy and dev.read(R.TPM_STS) == 0x040FF480
    gate.gate.set()
    assert dev.wait(10)
    assert not dev.busy
    assert dev.read(R.TPM_STS) == 0x04000A90


def test_async_cancel_reaches_backend(gated: tuple[tpmdev.TIS, Gate]) -> None:
    dev, gate = gated
    _start(dev, C.tpm2_startup())
    dev.write(R.TPM_STS, R.TPM_STS_COMMAND_CANCEL)
    assert gate.cancels == 1
    dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)  # abort: cancel again, READY on completion
    assert gate.cancels == 2
    gate.gate.set()
    dev.wait(10)
    assert dev.read(R.TPM_STS) == 0x04100040


def test_async_completion_hook_and_poll(tis_class: type[tpmdev.TIS]) -> None:
    ready = threading.Event()
    with tis_class(tpmdev.backends.Builtin(), asynchronous=True, on_complete=ready.set) as dev:
        _start(dev, C.tpm2_startup())
        assert ready.wait(10)
        assert dev.poll() is True
        assert dev.poll() is False
        assert dev.read(R.TPM_STS) & 0xFF == 0x90


def test_reset_finishes_command_in_flight(gated: tuple[tpmdev.TIS, Gate]) -> None:
    dev, gate = gated
    _start(dev, C.tpm2_startup())
    threading.Timer(0.05, gate.gate.set).start()
    dev.reset()
    assert not dev.busy
    assert dev.read(R.TPM_ACCESS, 1) == 0x81


class Broken(Backend):
    """Fault injection: every command fails."""

    tpm_version = 2

    def _execute(self, command: bytes, locality: int) -> bytes:
        raise tpmdev.BackendError("swtpm went away")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_backend_failure_gives_guest_tpm_fail(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    errors: list[tpmdev.BackendError] = []
    with tis_class(Broken(), asynchronous=asynchronous, on_backend_error=errors.append) as dev:
        response = TisDriver(dev, timeout=5).transmit(C.tpm2_startup())
        assert response == FATAL_RESPONSE
        assert dev.backend_error is errors[0] and "went away" in str(errors[0])


def test_backend_bug_is_contained(tis_class: type[tpmdev.TIS]) -> None:
    class Buggy(Broken):
        def _execute(self, command: bytes, locality: int) -> bytes:
            raise ZeroDivisionError

    with tis_class(Buggy()) as dev:
        assert TisDriver(dev).transmit(C.tpm2_startup()) == FATAL_RESPONSE
        assert isinstance(dev.backend_error, tpmdev.BackendError)
        assert isinstance(dev.backend_error.__cause__, ZeroDivisionError)


def test_close_closes_owned_backend(tis_class: type[tpmdev.TIS]) -> None:
    backend = tpmdev.backends.Builtin()
    dev = tis_class(backend)
    dev.close()
    dev.close()  # idempotent
    assert backend.closed
    with pytest.raises(tpmdev.StateError):
        dev.reset()
    kept = tpmdev.backends.Builtin()
    with tis_class(kept, close_backend=False):
        pass
    assert not kept.closed


def test_established_flag_read_from_backend(tis_class: type[tpmdev.TIS]) -> None:
    class Established(Broken):
        def get_established_flag(self) -> bool:
            return True

    with tis_class(Established()) as dev:
        assert dev.read(R.TPM_ACCESS, 1) == 0x80


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_attach_new_backend_after_failure(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    broken = Broken()
    with tis_class(broken, asynchronous=asynchronous) as dev:
        driver = TisDriver(dev, timeout=5)
        assert driver.transmit(C.tpm2_startup()) == FATAL_RESPONSE
        assert dev.backend_error is not None
        fresh = tpmdev.backends.Builtin()
        assert dev.attach(fresh) is broken and broken.closed
        assert dev.backend is fresh and dev.backend_error is None
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        assert len(C.decode_get_random(driver.transmit(C.tpm2_get_random(8)))) == 8
    assert fresh.closed


def test_attach_keeps_registers_and_can_keep_old_backend(tis_class: type[tpmdev.TIS]) -> None:
    first = tpmdev.backends.Builtin()
    with tis_class(first) as dev:
        dev.write(R.TPM_ACCESS, 2, 1)
        dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
        dev.attach(tpmdev.backends.Builtin(), close_old=False)
        assert not first.closed
        assert dev.read(R.TPM_ACCESS, 1) == 0xA1 and dev.read(R.TPM_STS) == 0x04100040
        with pytest.raises(tpmdev.ConfigurationError):
            dev.attach(object())  # type: ignore[arg-type]
    first.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_failing_host_callback_never_reaches_guest(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    def bad_callback(error: tpmdev.BackendError) -> None:
        raise RuntimeError("host bug")

    with tis_class(Broken(), asynchronous=asynchronous, on_backend_error=bad_callback) as dev:
        driver = TisDriver(dev, timeout=5)
        assert driver.transmit(C.tpm2_startup()) == FATAL_RESPONSE
        assert driver.transmit(C.tpm2_startup()) == FATAL_RESPONSE  # the worker survived
        assert not dev.busy


def test_failed_established_read_is_not_cached(tis_class: type[tpmdev.TIS]) -> None:
    class Flaky(Broken):
        calls = 0

        def get_established_flag(self) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise tpmdev.BackendError("control channel hiccup")
            return True

    backend = Flaky()
    with tis_class(backend) as dev:
        assert dev.read(R.TPM_ACCESS, 1) == 0x81  # QEMU: a failure reads as not established
        assert dev.read(R.TPM_ACCESS, 1) == 0x80  # ... and the next read asks again
        assert dev.read(R.TPM_ACCESS, 1) == 0x80 and backend.calls == 3  # asked at every read


def test_guest_after_close_gets_tpm_fail(tis_class: type[tpmdev.TIS]) -> None:
    dev = tis_class(tpmdev.backends.Builtin(), asynchronous=True)
    dev.close()
    _start(dev, C.tpm2_startup())  # the guest does not know the host closed it
    assert dev.read(R.TPM_STS) & 0xFF == 0x90
    assert dev.read_many(R.TPM_DATA_FIFO, 10) == FATAL_RESPONSE


def test_construction_failure_closes_owned_backend(tis_class: type[tpmdev.TIS]) -> None:
    class NoStart(Broken):
        def startup(self, buffer_size: int = 0) -> None:
            raise tpmdev.BackendError("cannot power on")

    backend = NoStart()
    with pytest.raises(tpmdev.BackendError, match="power on"):
        tis_class(backend)
    assert backend.closed


def test_attach_refuses_other_tpm_version(tis_class: type[tpmdev.TIS]) -> None:
    with (
        tis_class(tpmdev.backends.Builtin(tpm_version=2)) as dev,
        pytest.raises(tpmdev.ConfigurationError, match=r"TPM 1\.2"),
    ):
        dev.attach(tpmdev.backends.Builtin(tpm_version=1))
    with tis_class(tpmdev.backends.Builtin(tpm_version=2), tpm_version=2) as dev:
        dev.attach(tpmdev.backends.Builtin(tpm_version=1))  # forced registers: the host's call


# -- asynchronous mode: completion, close, recovery, lifetime ------------------


def _slow_post_tis(tis_class: type[tpmdev.TIS], posted: threading.Event, applied: threading.Event) -> type:
    """A TIS whose worker, after handing its first completion to the core,
    waits until the guest has applied it before going on."""

    class SlowPostCore(tis_class._Core):  # type: ignore[name-defined,misc]
        def post(self, *args: object, **kwargs: object) -> None:
            super().post(*args, **kwargs)
            if not posted.is_set():
                posted.set()
                assert applied.wait(10)

    class SlowPostTIS(tis_class):  # type: ignore[valid-type,misc]
        _Core = SlowPostCore

    return SlowPostTIS


def test_async_next_command_right_after_completion_runs(tis_class: type[tpmdev.TIS]) -> None:
    # The guest applies a completion (any register access) and sends its next
    # command before the worker has gone on from handing the completion over:
    # the command must run, not be dropped as "request pending".
    posted, applied = threading.Event(), threading.Event()
    with _slow_post_tis(tis_class, posted, applied)(tpmdev.backends.Builtin(), asynchronous=True) as dev:
        _start(dev, C.tpm2_startup())
        assert posted.wait(10)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1.0)  # the worker does not run again before this thread blocks
        try:
            sts = dev.read(R.TPM_STS)  # applies the response on this thread
            applied.set()
            response = dev.read_many(R.TPM_DATA_FIFO, 10)
            dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
            dev.write_many(R.TPM_DATA_FIFO, C.tpm2_get_random(8))
            dev.write(R.TPM_STS, R.TPM_STS_GO, 1)
        finally:
            sys.setswitchinterval(interval)
        assert sts & 0xFF == 0x90 and response_code(response) == 0
        assert dev.wait(10)
        assert dev.read(R.TPM_STS) & 0xFF == 0x90
        size = int.from_bytes(dev.read_many(R.TPM_DATA_FIFO, 6)[2:6], "big")
        assert size == 20 and not dev.busy


def test_async_completion_arriving_during_another_localitys_tpmgo(tis_class: type[tpmdev.TIS]) -> None:
    # Locality 0 gives up the TPM with its command in flight (no cancel);
    # locality 1 sends a command, and the first response is handed over just
    # as that tpmGo reaches the device: QEMU's "request pending". The second
    # command is dropped, the first response lands at locality 1, locality 0
    # stays in EXECUTION.
    gate = Gate()
    posted = threading.Event()
    armed: list[bool] = []

    class Core(tis_class._Core):  # type: ignore[name-defined,misc]
        def post(self, *args: object, **kwargs: object) -> None:
            super().post(*args, **kwargs)
            posted.set()

        @property
        def pending_command(self) -> object:
            if armed:  # the worker answers now, after this access began
                armed.clear()
                gate.gate.set()
                assert posted.wait(10)
            return tis_class._Core.pending_command.__get__(self)  # type: ignore[attr-defined]

    class Tis(tis_class):  # type: ignore[valid-type,misc]
        _Core = Core

    executed: list[bytes] = []

    class Recording(tpmdev.backends.Builtin):
        def execute(self, command: bytes, locality: int = 0) -> bytes:
            executed.append(command)
            return super().execute(command, locality)

    gate.inner = Recording()
    with Tis(gate, asynchronous=True) as dev:
        _start(dev, C.tpm2_startup())
        dev.write(R.TPM_ACCESS, R.TPM_ACCESS_ACTIVE_LOCALITY, 1)  # relinquish, nobody waiting
        loc1 = 0x1000
        dev.write(loc1 + R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        dev.write(loc1 + R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
        dev.write_many(loc1 + R.TPM_DATA_FIFO, C.tpm2_get_random(8))
        armed.append(True)
        dev.write(loc1 + R.TPM_STS, R.TPM_STS_GO, 1)
        assert dev.wait(10) and not dev.busy
        assert executed == [C.tpm2_startup()]
        assert dev.core.locality_state(0) == R.TIS_STATE_EXECUTION
        assert dev.read(loc1 + R.TPM_STS) & 0xFF == 0x90
        assert response_code(dev.read_many(loc1 + R.TPM_DATA_FIFO, 10)) == 0  # Startup's answer
        # and the device takes the next command
        dev.write(loc1 + R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
        dev.write_many(loc1 + R.TPM_DATA_FIFO, C.tpm2_get_random(8))
        dev.write(loc1 + R.TPM_STS, R.TPM_STS_GO, 1)
        assert dev.wait(10)
        assert len(executed) == 2 and dev.read(loc1 + R.TPM_STS) & 0xFF == 0x90


def test_async_close_finishes_the_command_just_sent(tis_class: type[tpmdev.TIS]) -> None:
    backend = tpmdev.backends.Builtin()
    dev = tis_class(backend, asynchronous=True, close_backend=False)
    TisDriver(dev, timeout=5).transmit(C.tpm2_get_random(1))  # the worker is running and idle
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # the worker gets no chance to start before close() runs
    try:
        _start(dev, C.tpm2_startup())
        dev.close()
    finally:
        sys.setswitchinterval(interval)
    assert dev.read(R.TPM_STS) & 0xFF == 0x90
    assert response_code(dev.read_many(R.TPM_DATA_FIFO, 10)) == 0  # not TPM_FAIL
    assert response_code(backend.execute(C.tpm2_startup())) == 0x100  # TPM_RC_INITIALIZE: it ran
    assert dev.backend_error is None
    backend.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_attach_inside_on_backend_error(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    fresh = tpmdev.backends.Builtin()
    devices: list[tpmdev.TIS] = []

    def recover(error: tpmdev.BackendError) -> None:
        devices[0].attach(fresh)

    broken = Broken()
    with tis_class(broken, asynchronous=asynchronous, on_backend_error=recover) as dev:
        devices.append(dev)
        driver = TisDriver(dev, timeout=5)
        assert driver.transmit(C.tpm2_startup()) == FATAL_RESPONSE
        assert dev.wait(10)
        assert dev.backend is fresh and broken.closed and dev.callback_error is None
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        dev.reset()
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
    assert fresh.closed


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_close_and_wait_inside_host_callbacks(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    devices: list[tpmdev.TIS] = []
    backend = Broken()
    dev = tis_class(backend, asynchronous=asynchronous, on_backend_error=lambda e: devices[0].close())
    devices.append(dev)
    assert TisDriver(dev, timeout=5).transmit(C.tpm2_startup()) == FATAL_RESPONSE
    assert dev.wait(10) and dev.closed and backend.closed
    dev.close()
    if asynchronous:  # on the worker, wait() and reset() would wait for themselves
        refused: list[Exception] = []

        def waits() -> None:
            for call in (dev.wait, dev.reset):
                try:
                    call()
                except tpmdev.StateError as exc:
                    refused.append(exc)
            dev.wait()

        with tis_class(tpmdev.backends.Builtin(), asynchronous=True, on_complete=waits) as dev:
            TisDriver(dev, timeout=5).transmit(C.tpm2_startup())
            assert dev.wait(10)
        # close() joined the worker: the callback has run to its end
        assert len(refused) == 2 and all("worker thread" in str(exc) for exc in refused)
        assert isinstance(dev.callback_error, tpmdev.StateError)


def test_attach_refuses_the_attached_backend(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        driver = TisDriver(dev, timeout=5)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        with pytest.raises(tpmdev.ConfigurationError, match="already attached"):
            dev.attach(dev.backend)
        closed = tpmdev.backends.Builtin()
        closed.close()
        with pytest.raises(tpmdev.StateError, match="closed"):
            dev.attach(closed)
        assert not dev.backend.closed and dev.backend_error is None
        assert len(C.decode_get_random(driver.transmit(C.tpm2_get_random(8)))) == 8


def test_attach_keeps_everything_when_the_new_backend_cannot_start(tis_class: type[tpmdev.TIS]) -> None:
    class NoStart(Broken):
        def startup(self, buffer_size: int = 0) -> None:
            raise tpmdev.BackendError("cannot power on")

    first, dud = tpmdev.backends.Builtin(), NoStart()
    with tis_class(first) as dev:
        with pytest.raises(tpmdev.BackendError, match="power on"):
            dev.attach(dud)
        assert dev.backend is first and not first.closed and not dud.closed
        assert response_code(TisDriver(dev, timeout=5).transmit(C.tpm2_startup())) == 0
    assert first.closed and not dud.closed


def _worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tpmdev-") and t.name.endswith("-worker")}


def test_forgotten_async_device_is_collected(tis_class: type[tpmdev.TIS]) -> None:
    backend = tpmdev.backends.Builtin()
    before = _worker_threads()
    dev = tis_class(backend, asynchronous=True)
    assert response_code(TisDriver(dev, timeout=5).transmit(C.tpm2_startup())) == 0
    (worker,) = _worker_threads() - before
    ref = weakref.ref(dev)
    del dev
    gc.collect()
    assert ref() is None
    worker.join(10)
    assert not worker.is_alive() and backend.closed


def test_forgotten_async_device_keeps_a_backend_it_does_not_own(tis_class: type[tpmdev.TIS]) -> None:
    backend = tpmdev.backends.Builtin()
    dev = tis_class(backend, asynchronous=True, close_backend=False)
    assert response_code(TisDriver(dev, timeout=5).transmit(C.tpm2_startup())) == 0
    ref = weakref.ref(dev)
    del dev
    gc.collect()
    assert ref() is None and not backend.closed
    backend.close()


# -- host callbacks and options ----------------------------------------------------


def test_irq_callback_failure_during_hand_over_is_contained(tis_class: type[tpmdev.TIS]) -> None:
    levels: list[int] = []

    def irq(level: int) -> None:
        levels.append(level)
        raise RuntimeError("host irq bug")

    with tis_class(tpmdev.backends.Builtin(), irq=irq) as dev:
        loc1 = 0x1000
        dev.write(loc1 + R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        dev.write(loc1 + R.TPM_INT_ENABLE, R.TPM_INT_GLOBAL_ENABLE | R.TPM_INT_LOCALITY_CHANGE)
        dev.write(loc1 + R.TPM_ACCESS, R.TPM_ACCESS_ACTIVE_LOCALITY, 1)
        dev.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        dev.write(loc1 + R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        dev.write(R.TPM_ACCESS, R.TPM_ACCESS_ACTIVE_LOCALITY, 1)  # hand-over to 1 raises the line
        assert levels == [1] and dev.irq_level == 1
        assert isinstance(dev.callback_error, RuntimeError)
        assert dev.active_locality == 1
        assert dev.read(R.TPM_ACCESS, 1) == 0x81 and dev.read(loc1 + R.TPM_ACCESS, 1) == 0xA1
        assert response_code(TisDriver(dev, locality=1, timeout=5).transmit(C.tpm2_get_random(4))) == 0x100


def test_irq_callback_failure_on_completion_is_contained(gated: tuple[tpmdev.TIS, Gate]) -> None:
    dev, gate = gated
    failures: list[int] = []

    def irq(level: int) -> None:
        failures.append(level)
        raise RuntimeError("host irq bug")

    dev2 = type(dev)(gate, asynchronous=True, irq=irq, close_backend=False)
    try:
        dev2.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
        dev2.write(R.TPM_INT_ENABLE, R.TPM_INT_GLOBAL_ENABLE | R.TPM_INT_DATA_AVAIL)
        _start(dev2, C.tpm2_startup())
        gate.gate.set()
        assert dev2.wait(10)  # the completion raises the line: the callback fails, wait() does not
        assert failures == [1] and dev2.irq_level == 1
        assert isinstance(dev2.callback_error, RuntimeError)
        assert response_code(dev2.read_many(R.TPM_DATA_FIFO, 10)) == 0
    finally:
        dev2.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tpm_version": True},
        {"tpm_version": 2.0},
        {"irq_num": True},
        {"asynchronous": "yes"},
        {"asynchronous": 1},
        {"ppi": "no"},
        {"close_backend": None},
        {"on_complete": 5},
        {"on_backend_error": "log"},
    ],
    ids=lambda kwargs: "-".join(f"{k}={v!r}" for k, v in kwargs.items()),
)
def test_options_of_the_wrong_type_are_refused(
    tis_class: type[tpmdev.TIS], kwargs: dict[str, object]
) -> None:
    backend = tpmdev.backends.Builtin()
    name = next(iter(kwargs))
    with pytest.raises(tpmdev.ConfigurationError, match=name):
        tis_class(backend, **kwargs)  # type: ignore[arg-type]
    backend.close()


def test_host_call_arguments_of_the_wrong_type_are_refused(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        for timeout in (True, "1", -1.0, float("nan")):
            with pytest.raises(tpmdev.ConfigurationError, match="timeout"):
                dev.wait(timeout)  # type: ignore[arg-type]
        assert dev.wait(float("inf")) and dev.wait(0)
        with pytest.raises(tpmdev.ConfigurationError, match="close_old"):
            dev.attach(tpmdev.backends.Builtin(), close_old="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["source", "request"])
def test_established_flag_one_policy_on_both_paths(tis_class: type[tpmdev.TIS], path: str) -> None:
    # The device answers the core through a direct source (one call per read);
    # a core without one asks with REQUEST_ESTABLISHED. Same answers, same policy.
    class Flag(Broken):
        answers: list[object] = [True, tpmdev.BackendError("control channel hiccup"), False, 1]
        calls = 0

        def get_established_flag(self) -> bool:
            answer = self.answers[self.calls]
            self.calls += 1
            if isinstance(answer, Exception):
                raise answer
            return bool(answer)

    errors: list[tpmdev.BackendError] = []
    backend = Flag()
    with tis_class(backend, on_backend_error=errors.append) as dev:
        if path == "request":
            dev.core.set_established_source(None)
        reads = [dev.read(R.TPM_ACCESS, 1) for _ in Flag.answers]
        assert reads == [0x80, 0x81, 0x81, 0x80] and backend.calls == 4
        assert len(errors) == 1 and dev.backend_error is errors[0] and "hiccup" in str(errors[0])
