"""The guest drivers on every frontend and backend: a full command, TPM 2.0 /
1.2 probing, the kernel's timeouts firing against a backend that stalls, the
cancel reaching the backend (swtpm: CMD_CANCEL_TPM_CMD), responseRetry."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from guests import FRONTENDS, TPM_RC_CANCELED, Gate, make_device

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.backends.emulator import Emulator
from tpmdev.drivers import (
    TIMEOUT_ERRORS,
    TPM2_TIMEOUTS,
    TPM12_TIMEOUTS,
    CrbDriver,
    IbmvtpmDriver,
    TisDriver,
    TisI2CDriver,
    Timeouts,
    for_device,
)
from tpmdev.drivers import commands as C
from tpmdev.hw.regs import TPM_DATA_FIFO
from tpmdev.wire import response_code

BACKENDS: dict[str, Callable[[], Backend]] = {
    "builtin": lambda: tpmdev.backends.Builtin(),
    "libtpms": lambda: tpmdev.backends.Libtpms(),
    "swtpm": lambda: Emulator.spawn(None, tpm_version=2),
}
DRIVER_OF = {
    "tis": TisDriver,
    "tis-sysbus": TisDriver,
    "crb": CrbDriver,
    "tis-i2c": TisI2CDriver,
    "spapr": IbmvtpmDriver,
}


@pytest.fixture(scope="module")
def swtpm() -> Iterator[Emulator]:
    """One swtpm for the module (each device resets it: CMD_INIT, as QEMU)."""
    with Emulator.spawn(None, tpm_version=2) as emu:
        yield emu


def _backend(kind: str, swtpm: Emulator) -> tuple[Backend, bool]:
    if kind == "swtpm":
        return swtpm, False
    return BACKENDS[kind](), True


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("kind", list(BACKENDS))
def test_full_command_on_every_frontend_and_backend(
    impl: str, frontend: str, kind: str, swtpm: Emulator
) -> None:
    backend, owned = _backend(kind, swtpm)
    with make_device(frontend, backend, impl, close_backend=owned) as dev:
        driver = for_device(dev)
        assert type(driver) is DRIVER_OF[frontend]
        assert driver.tpm_version == 2
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        digest = hashlib.sha256(frontend.encode()).digest()
        assert response_code(driver.transmit(C.tpm2_pcr_extend(16, digest))) == 0
        _, values = C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]
        random = C.decode_get_random(driver.transmit(C.tpm2_get_random(32)))
        assert len(random) == 32
        assert driver.cancels == 0
        assert dev.backend_error is None


@pytest.mark.parametrize("frontend", ["tis", "tis-sysbus"])
def test_tis_probe_tells_tpm12_from_tpm20(impl: str, frontend: str) -> None:
    with make_device(frontend, tpmdev.backends.Builtin(tpm_version=1), impl) as dev:
        driver = for_device(dev)
        assert isinstance(driver, TisDriver) and driver.tpm_version == 1
        assert driver.timeouts == TPM12_TIMEOUTS
        assert response_code(driver.transmit(C.tpm12_startup())) == 0
        assert len(C.decode_get_random(driver.transmit(C.tpm12_get_random(8)), 1)) == 8
    with make_device(frontend, tpmdev.backends.Builtin(tpm_version=2), impl) as dev:
        driver = for_device(dev)
        assert driver.tpm_version == 2 and driver.timeouts == TPM2_TIMEOUTS
        assert driver.did_vid not in (0, 0xFFFFFFFF)


def test_command_durations_are_the_kernels() -> None:
    t = TPM2_TIMEOUTS
    assert (t.a, t.b, t.c, t.d) == (0.75, 2.0, 0.2, 0.03)
    assert t.duration(C.tpm2_startup()) == 0.02
    assert t.duration(C.tpm2_pcr_extend(0, bytes(32))) == 0.75
    assert t.duration(C.tpm2_get_random(8)) == 2.0
    assert t.duration(bytes.fromhex("8001 0000000a 00000131")) == 300.0  # CreatePrimary
    assert t.duration(C.tpm2_hash(b"x")) == 120.0  # no class: the default
    assert t.duration(C.tpm12_startup()) == 0.75
    assert t.duration(bytes.fromhex("00c1 0000000a 0000001f")) == 120.0  # TPM_CreateWrapKey
    assert t.scaled(2).short == 0.04
    assert Timeouts().uniform(5).long_long == 5


def test_for_device_refuses_what_is_not_a_frontend() -> None:
    with pytest.raises(tpmdev.ConfigurationError, match="no driver for Builtin"):
        for_device(tpmdev.backends.Builtin())


def test_transmit_at_a_locality(impl: str) -> None:
    with make_device("tis", tpmdev.backends.Libtpms(), impl) as dev:
        driver = for_device(dev)
        assert response_code(driver.transmit(C.tpm2_startup(), locality=1)) == 0x907  # TPM_RC_LOCALITY
        assert response_code(driver.transmit(C.tpm2_startup(), 0)) == 0
        assert response_code(driver.transmit(C.tpm2_get_random(4), locality=3)) == 0
        with pytest.raises(tpmdev.ConfigurationError, match="locality"):
            driver.transmit(C.tpm2_get_random(4), locality=5)
    with make_device("spapr", tpmdev.backends.Builtin(), impl) as dev:
        spapr = for_device(dev)
        with pytest.raises(tpmdev.ConfigurationError, match="locality 0 only"):
            spapr.transmit(C.tpm2_startup(), locality=1)


# -- timeouts and cancel -------------------------------------------------------


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("kind", ["builtin", "swtpm"])
def test_timeout_fires_and_cancel_reaches_the_backend(
    impl: str, frontend: str, kind: str, tmp_path: Any
) -> None:
    """A backend that stalls: the command's duration (TPM2_Startup: Linux's
    short class, 20 ms) runs out, the driver raises a timeout and cancels; the
    cancel reaches the backend on every frontend but the sPAPR vTPM (neither
    Linux's ibmvtpm nor QEMU's vTPM has one)."""
    backend: Backend = (
        tpmdev.backends.Builtin() if kind == "builtin" else Emulator.spawn(tmp_path / "st", tpm_version=2)
    )
    control_cancels: list[int] = []
    if isinstance(backend, Emulator):
        real = backend._control.cancel_tpm_cmd

        def spy() -> Any:
            control_cancels.append(1)
            return real()

        backend._control.cancel_tpm_cmd = spy  # type: ignore[method-assign]
    gate = Gate(backend)
    with make_device(frontend, backend, impl, asynchronous=True) as dev:
        driver = for_device(dev)
        gate.arm()
        with pytest.raises(TIMEOUT_ERRORS) as info:
            driver.transmit(C.tpm2_startup())
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, tpmdev.TpmDevError)
        assert gate.held.is_set() and driver.cancels == 1
        if frontend == "spapr":
            assert gate.cancels == 0
            gate.release()
        else:
            assert gate.cancels == 1
            if kind == "swtpm":
                assert control_cancels == [1]  # CMD_CANCEL_TPM_CMD went to swtpm
        assert dev.wait(30)
        # the device recovers: the next commands run (bounds generous for a loaded host)
        driver.timeouts = driver.timeouts.uniform(10)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        assert response_code(driver.transmit(C.tpm2_get_random(8))) == 0


@pytest.mark.parametrize("frontend", ["tis", "crb", "tis-i2c"])
def test_a_slow_command_within_its_duration_is_not_cancelled(impl: str, frontend: str) -> None:
    """GetRandom is in Linux's long class (2 s): a 50 ms stall is waited out."""
    backend = tpmdev.backends.Builtin()
    gate = Gate(backend)
    with make_device(frontend, backend, impl, asynchronous=True) as dev:
        driver = for_device(dev)
        gate.arm()
        timer = threading.Timer(0.05, gate.release)
        timer.start()
        try:
            response = driver.transmit(C.tpm2_get_random(8))
        finally:
            timer.join()
        assert response_code(response) == TPM_RC_CANCELED  # what the gate answers when released
        assert gate.cancels == 0 and driver.cancels == 0


# -- responseRetry ---------------------------------------------------------------


class _Garble:
    """The TIS seen through a bus that corrupts one byte of the first response read."""

    def __init__(self, dev: Any, nth: int) -> None:
        self.dev = dev
        self.nth = nth  # which DATA_FIFO read to corrupt (1-based)
        self.reads = 0
        self.tpm_version = dev.tpm_version

    def read(self, offset: int, size: int = 4) -> int:
        value = int(self.dev.read(offset, size))
        if offset & 0xFFF == TPM_DATA_FIFO and size == 1:
            self.reads += 1
            if self.reads == self.nth:
                return 0xFF
        return value

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self.dev.write(offset, value, size)


def test_tis_reads_a_garbled_response_again_after_response_retry(impl: str) -> None:
    with make_device("tis", tpmdev.backends.Builtin(), impl) as dev:
        driver = TisDriver(_Garble(dev, nth=3))  # the first byte of the size: 0xFF... > 4096
        response = driver.transmit(C.tpm2_startup())
        assert response == bytes.fromhex("80010000000a00000000")
        assert driver.retries == 1


def test_a_locality_asked_for_one_command_is_for_that_command(tis_class: type[tpmdev.TIS]) -> None:
    with (
        tis_class(tpmdev.backends.Builtin()) as tis,
        tpmdev.CRB(tpmdev.backends.Builtin(), localities=5) as crb,
    ):
        for driver in (TisDriver(tis), CrbDriver(crb)):
            assert driver.transmit(C.tpm2_startup(), locality=3)[6:10] == bytes(4)
            assert driver.locality == 0  # the driver's own is unchanged
            assert driver.transmit(C.tpm2_get_random(4))[6:10] == bytes(4)
