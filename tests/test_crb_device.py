"""The CRB device: the CRB register core joined to a real backend.

Runs on both variants (``crb_class``) over the built-in TPM, in synchronous
and asynchronous completion, with whole commands sent the way Linux's
``tpm_crb`` and EDK2 send them, and with backends that fail (fault
injection). The device-layer plumbing itself is tested once, with the TIS.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.drivers.crb import CrbDriver, CrbError
from tpmdev.hw import regs as R
from tpmdev.wire import FATAL_RESPONSE, response_code

START = R.TPM_CRB_CTRL_START
CTRL_STS = R.TPM_CRB_CTRL_STS


def test_api_names(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin()) as dev:
        assert dev.read.__self__ is dev.core and dev.write.__self__ is dev.core  # type: ignore[attr-defined]
        assert dev.read_many.__self__ is dev.core and dev.write_many.__self__ is dev.core  # type: ignore[attr-defined]
        assert dev.mmio.shape == (0x1000,) and str(dev.mmio.dtype) == "uint8"
        assert dev.region_size == 0x1000 and dev.localities == 1 and dev.ppi is not None
        assert dev.buffer.shape == (0xF80,) and dev.buffer.base is not None
        assert dev.tpm_version == 2 and dev.core.bufsize == 0xF80
        assert dev.active_locality is None and not dev.busy
    assert tpmdev.CRB in vars(tpmdev).values() and "CRB" in tpmdev.__all__


def test_five_localities(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin(), localities=5, ppi=False) as dev:
        assert dev.region_size == 0x5000 and dev.mmio.shape == (0x5000,) and dev.ppi is None
        assert dev.read(R.TPM_CRB_INTF_ID) & R.TPM_CRB_INTF_CAP_LOCALITY
        for locality in range(5):
            driver = CrbDriver(dev, locality)
            assert response_code(driver.transmit(C.tpm2_startup())) in (0, 0x100)
            assert dev.active_locality is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tpm_version": 3},
        {"localities": 4},
        {"localities": True},
        {"address": 0x123},
        {"address": -1},
        {"ppi": 1},
        {"asynchronous": "yes"},
    ],
    ids=repr,
)
def test_bad_configuration(crb_class: type[tpmdev.CRB], kwargs: dict[str, object]) -> None:
    backend = tpmdev.backends.Builtin()
    with pytest.raises(tpmdev.ConfigurationError):
        crb_class(backend, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [1, 2])
def test_reset_state_is_qemus_for_both_versions(crb_class: type[tpmdev.CRB], version: int) -> None:
    with crb_class(tpmdev.backends.Builtin(tpm_version=version)) as dev:
        assert dev.tpm_version == version
        assert dev.read(R.TPM_LOC_STATE, 1) == 0x81  # a fresh TPM is not established
        assert dev.read(R.TPM_CRB_INTF_ID, 8) == 0x0000101400025811
        assert dev.read(R.TPM_CRB_CTRL_CMD_LADDR, 8) == 0xFED40080
        assert dev.read(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE


def test_address(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin(), address=0x4_0000_0000) as dev:
        assert dev.read(R.TPM_CRB_CTRL_RSP_ADDR, 8) == 0x4_0000_0080
        driver = CrbDriver(dev, address=0x4_0000_0000, style="edk2")
        assert response_code(driver.transmit(C.tpm2_startup())) == 0


@pytest.mark.parametrize("style", ["linux", "edk2"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_commands_as_the_drivers_send_them(
    crb_class: type[tpmdev.CRB], asynchronous: bool, style: str
) -> None:
    trace: list[tuple[str, int, int, int]] = []
    with crb_class(tpmdev.backends.Builtin(), asynchronous=asynchronous) as dev:
        driver = CrbDriver(dev, style=style, trace=lambda *access: trace.append(access))  # type: ignore[arg-type]
        assert driver.probe() == (0x80, 0xF80, 0x80, 0xF80)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        assert len(C.decode_get_random(driver.transmit(C.tpm2_get_random(20)))) == 20
        digest = hashlib.sha256(b"measured").digest()
        assert response_code(driver.transmit(C.tpm2_pcr_extend(16, digest))) == 0
        _, values = C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]
        assert dev.read(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE and dev.active_locality is None
    if style == "edk2":  # the 64-bit RSP_ADDR store went through the door
        assert ("w", R.TPM_CRB_CTRL_RSP_ADDR, 8, 0xFED40080) in trace
        assert dev.read(R.TPM_CRB_CTRL_RSP_ADDR, 8) == 0xFED40080


def test_sync_response_in_place_when_start_returns(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(tpmdev.backends.Builtin()) as dev:
        dev.write(R.TPM_LOC_CTRL, 1, 1)
        dev.buffer[:12] = list(C.tpm2_startup())
        dev.write(START, 1)
        assert dev.read(START) == 0
        assert bytes(dev.buffer[:10]) == bytes.fromhex("8001 0000000a 00000000")


def test_buffer_mapped_as_ram_by_a_simulator(crb_class: type[tpmdev.CRB]) -> None:
    # The simulator writes the command straight into the array and reads the
    # response from it; only START and the polls go through the registers.
    with crb_class(tpmdev.backends.Builtin()) as dev:
        ram = memoryview(dev.mmio)[0x80:0x1000]
        dev.write(R.TPM_LOC_CTRL, 1)
        command = C.tpm2_startup()
        ram[: len(command)] = command
        dev.write(START, 1)
        assert bytes(ram[:10]) == bytes.fromhex("8001 0000000a 00000000")


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
def gated(crb_class: type[tpmdev.CRB]) -> Iterator[tuple[tpmdev.CRB, Gate]]:
    gate = Gate()
    dev = crb_class(gate, asynchronous=True)
    yield dev, gate
    gate.gate.set()
    dev.close()


def _start(dev: tpmdev.CRB, command: bytes) -> None:
    dev.write(R.TPM_LOC_CTRL, 1)
    dev.write(R.TPM_CRB_CTRL_REQ, 1)
    dev.write_many(0x80, b"")
    for i, byte in enumerate(command):
        dev.write(0x80 + i, byte, 1)
    dev.write(START, 1)


def test_async_start_reads_one_until_applied(gated: tuple[tpmdev.CRB, Gate]) -> None:
    dev, gate = gated
    _start(dev, C.tpm2_startup())
    assert dev.busy and dev.read(START) == 1
    dev.write(START, 1)  # while set: ignored, no second command
    gate.gate.set()
    assert dev.wait(10)
    assert dev.read(START) == 0 and dev.read(CTRL_STS) == 0
    assert bytes(dev.buffer[:10]) == bytes.fromhex("8001 0000000a 00000000")


def test_async_cancel_reaches_backend_only_while_started(gated: tuple[tpmdev.CRB, Gate]) -> None:
    dev, gate = gated
    dev.write(R.TPM_CRB_CTRL_CANCEL, 1)
    assert gate.cancels == 0
    _start(dev, C.tpm2_startup())
    dev.write(R.TPM_CRB_CTRL_CANCEL, 1)
    assert gate.cancels == 1 and dev.read(R.TPM_CRB_CTRL_CANCEL) == 0
    gate.gate.set()
    dev.wait(10)
    dev.write(R.TPM_CRB_CTRL_CANCEL, 1)
    assert gate.cancels == 1


def test_reset_finishes_command_in_flight(gated: tuple[tpmdev.CRB, Gate]) -> None:
    dev, gate = gated
    _start(dev, C.tpm2_startup())
    threading.Timer(0.05, gate.gate.set).start()
    dev.reset()
    assert not dev.busy and dev.read(START) == 0
    assert dev.read(R.TPM_LOC_STATE, 1) == 0x81
    assert bytes(dev.buffer[:10]) == bytes.fromhex("8001 0000000a 00000000")  # RAM survives reset


class Broken(Backend):
    """Fault injection: every command fails."""

    tpm_version = 2

    def _execute(self, command: bytes, locality: int) -> bytes:
        raise tpmdev.BackendError("swtpm went away")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_backend_failure_sets_tpm_sts(crb_class: type[tpmdev.CRB], asynchronous: bool) -> None:
    errors: list[tpmdev.BackendError] = []
    with crb_class(Broken(), asynchronous=asynchronous, on_backend_error=errors.append) as dev:
        driver = CrbDriver(dev, timeout=5)
        with pytest.raises(CrbError, match="fatal error"):
            driver.transmit(C.tpm2_startup())
        assert bytes(dev.buffer[:10]) == FATAL_RESPONSE
        assert dev.read(CTRL_STS) == 0x3  # goIdle keeps tpmSts
        assert dev.backend_error is errors[0] and "went away" in str(errors[0])
        fresh = tpmdev.backends.Builtin()
        dev.attach(fresh)
        assert dev.read(CTRL_STS) & R.TPM_CRB_CTRL_STS_TPM_STS  # sticky until reset
        dev.reset()
        assert dev.read(CTRL_STS) == R.TPM_CRB_CTRL_STS_TPM_IDLE
        assert response_code(driver.transmit(C.tpm2_startup())) == 0


def test_established_flag_is_asked_at_every_read(crb_class: type[tpmdev.CRB]) -> None:
    class Established(Broken):
        flag = True
        calls = 0

        def get_established_flag(self) -> bool:
            self.calls += 1
            return self.flag

    backend = Established()
    with crb_class(backend) as dev:
        assert dev.read(R.TPM_LOC_STATE, 1) == 0x80
        backend.flag = False
        assert dev.read(R.TPM_LOC_STATE) == 0x81
        assert dev.read(R.TPM_LOC_STATE + 1, 1) == 0 and backend.calls == 2


def test_failing_established_read_reads_not_established(crb_class: type[tpmdev.CRB]) -> None:
    class Flaky(Broken):
        def get_established_flag(self) -> bool:
            raise tpmdev.BackendError("control channel hiccup")

    with crb_class(Flaky()) as dev:
        assert dev.read(R.TPM_LOC_STATE, 1) == 0x81
        assert isinstance(dev.backend_error, tpmdev.BackendError)


def test_reset_establishment_from_locality_3_or_4(crb_class: type[tpmdev.CRB]) -> None:
    class Recorder(Broken):
        def __init__(self) -> None:
            self.resets: list[int] = []

        def reset_established_flag(self, locality: int) -> None:
            self.resets.append(locality)

    backend = Recorder()
    with crb_class(backend, localities=5) as dev:
        for locality in range(5):
            base = locality << 12
            dev.write(base + R.TPM_LOC_CTRL, R.TPM_LOC_CTRL_REQUEST_ACCESS)
            dev.write(base + R.TPM_LOC_CTRL, R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT)
            dev.write(base + R.TPM_LOC_CTRL, R.TPM_LOC_CTRL_RELINQUISH)
        assert backend.resets == [3, 4]
    with crb_class(Recorder()) as dev:  # QEMU's device: ignored
        dev.write(R.TPM_LOC_CTRL, R.TPM_LOC_CTRL_REQUEST_ACCESS)
        dev.write(R.TPM_LOC_CTRL, R.TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT)
        assert dev.backend.resets == []  # type: ignore[attr-defined]


def test_small_backend_buffer_caps_the_command(crb_class: type[tpmdev.CRB]) -> None:
    class Small(Backend):
        tpm_version = 2
        seen: list[bytes] = []

        def get_buffer_size(self) -> int:
            return 1024

        def _execute(self, command: bytes, locality: int) -> bytes:
            self.seen.append(command)
            return bytes.fromhex("8001 0000000a 00000000")

    backend = Small()
    with crb_class(backend) as dev:
        assert dev.core.bufsize == 1024
        dev.write(R.TPM_LOC_CTRL, 1)
        dev.buffer[:6] = list(bytes.fromhex("8001 00000f80"))
        dev.write(START, 1)
        assert [len(c) for c in backend.seen] == [1024]


def test_guest_after_close_gets_tpm_fail(crb_class: type[tpmdev.CRB]) -> None:
    dev = crb_class(tpmdev.backends.Builtin(), asynchronous=True)
    dev.close()
    _start(dev, C.tpm2_startup())  # the guest does not know the host closed it
    assert dev.read(START) == 0 and dev.read(CTRL_STS) & R.TPM_CRB_CTRL_STS_TPM_STS
    assert bytes(dev.buffer[:10]) == FATAL_RESPONSE
