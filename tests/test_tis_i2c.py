"""tpmdev.TISI2C with real TPMs: the Builtin backend and a real swtpm.

QEMU 7.2 has no tpm-tis-i2c, so the reference is QEMU's own
tpm-tis-i2c-test (spec 10.3), re-run through the device with a real TPM
behind it (a fresh TPM answers TPM2_Startup with success, where QEMU's fake
emulator answers TPM_RC_FAILURE), and a whole session as Linux's
``tpm_tis_i2c`` driver runs it: probe order, read-as-zero checks, bursts and
the checksum after every command and response. Each runs on both TIS-core
variants, synchronous and asynchronous.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tis_i2c_qtest import QEMU_TESTS, QtestI2C

import tpmdev
import tpmdev.hw
from tpmdev.backends.emulator import Emulator
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis_i2c import TisI2CDriver
from tpmdev.hw import regs as R
from tpmdev.wire import TPM_ST_NO_SESSIONS, build_command, response_code

STARTUP_OK = bytes.fromhex("8001 0000000a 00000000")
TPM_RC_INITIALIZE = 0x100
SELFTEST = build_command(TPM_ST_NO_SESSIONS, C.TPM2_CC["SelfTest"], b"\x00")


@pytest.fixture
def i2c_class(impl: str) -> type[tpmdev.TISI2C]:
    """``tpmdev.TISI2C`` on the TIS core variant chosen by ``impl``."""
    if impl == "c":
        return tpmdev.TISI2C
    core = tpmdev.hw.pure("tis").TisCore

    class PureTISI2C(tpmdev.TISI2C):
        _Core = core

    PureTISI2C.__name__ = PureTISI2C.__qualname__ = "TISI2C"
    return PureTISI2C


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def asynchronous(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=["builtin", pytest.param("swtpm", marks=pytest.mark.swtpm)])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Makes a fresh TPM 2.0: the Builtin backend or a spawned swtpm."""
    made: list[tpmdev.backends.base.Backend] = []

    def make() -> tpmdev.backends.base.Backend:
        backend: tpmdev.backends.base.Backend
        if request.param == "builtin":
            backend = tpmdev.backends.Builtin()
        else:
            backend = Emulator.spawn(tmp_path / f"state{len(made)}", tpm_version=2, timeout=10.0)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def _poll(dev: tpmdev.TISI2C) -> None:
    # the host's event loop while the guest polls STS
    dev.wait(0.001)


# -- QEMU's tpm-tis-i2c-test with a real TPM ------------------------------------------
def test_qemu_tpm_tis_i2c_test(
    i2c_class: type[tpmdev.TISI2C], backend_factory: object, asynchronous: bool
) -> None:
    with i2c_class(backend_factory(), asynchronous=asynchronous) as dev:  # type: ignore[operator]
        qtest = QtestI2C(dev, STARTUP_OK)
        for name in QEMU_TESTS:
            if name == "test_check_transmit":
                qtest.test_check_transmit(lambda: _poll(dev))
            else:
                getattr(qtest, name)()
        assert dev.backend_error is None


# -- Linux's tpm_tis_i2c ------------------------------------------------------------------
def test_linux_driver_session(
    i2c_class: type[tpmdev.TISI2C], backend_factory: object, asynchronous: bool
) -> None:
    trace: list[tuple[str, bytes]] = []
    with i2c_class(backend_factory(), asynchronous=asynchronous) as dev:  # type: ignore[operator]
        driver = TisI2CDriver(dev, timeout=10, trace=lambda op, data: trace.append((op, data)))
        driver.probe()
        # the probe order: I2C capability first (guard times), LOC_SEL = 0,
        # checksum on, then the TIS probe: DID_VID, ACCESS valid, INT_ENABLE
        assert trace[:10] == [
            ("w", bytes([R.TPM_I2C_INTERFACE_CAPABILITY])),
            ("r", R.TPM_I2C_INTERFACE_CAPABILITY_VALUE.to_bytes(4, "little")),
            ("w", bytes([R.TPM_I2C_LOC_SEL, 0])),
            ("w", bytes([R.TPM_I2C_DATA_CSUM_ENABLE, 1])),
            ("w", bytes([R.TPM_I2C_DID_VID])),
            ("r", R.TPM_DID_VID_VALUE.to_bytes(4, "little")),
            ("w", bytes([R.TPM_I2C_ACCESS])),
            ("r", b"\x81"),
            ("w", bytes([R.TPM_I2C_INT_ENABLE])),
            ("r", R.TPM_INT_POLARITY_LOW_LEVEL.to_bytes(4, "little")),
        ]
        assert dev.checksum_enabled
        assert dev.locality == 0
        # QEMU's capability has no guard time: none is kept after the probe
        assert (driver.guard_time_read, driver.guard_time_write, driver.guard_time) == (False, False, 0)
        assert driver.did_vid == R.TPM_DID_VID_VALUE
        assert driver.rid == R.TPM_RID_VALUE
        assert driver.intf_caps == 0  # Linux's INTF_CAPS offset is TPM_I2C_INT_CAPABILITY
        # every INT_ENABLE write over I2C is 0, locality 0 free again
        assert dev.core.read(R.TPM_INT_ENABLE) == 0
        assert dev.core.active_locality is None

        # Linux's TPM 2.0 auto start-up: SelfTest, TPM_RC_INITIALIZE, Startup, SelfTest
        assert response_code(driver.transmit(SELFTEST)) == TPM_RC_INITIALIZE
        assert driver.transmit(C.tpm2_startup()) == STARTUP_OK
        assert response_code(driver.transmit(SELFTEST)) == 0
        random = C.decode_get_random(driver.transmit(C.tpm2_get_random(32)))
        assert len(random) == 32
        digest = hashlib.sha256(b"i2c").digest()
        assert response_code(driver.transmit(C.tpm2_pcr_extend(16, digest))) == 0
        _, values = C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]
        # a long command, written in bursts bigger than a register
        long_command = C.tpm2_hash(bytes(range(256)) * 4)
        response = driver.transmit(long_command)
        assert response_code(response) == 0
        assert hashlib.sha256(bytes(range(256)) * 4).digest() in response

        # the checksum was compared after every command and every response
        # (probe included) and always matched
        assert len(driver.checksums) == 2 * 8
        assert all(device == host for _, device, host in driver.checksums)
        assert [what for what, _, _ in driver.checksums] == ["command", "response"] * 8
        assert dev.backend_error is None
        # each command was one I2C write of burst - 1 bytes, then the last byte
        fifo_writes = [
            data for op, data in trace if op == "w" and data[:1] == bytes([R.TPM_I2C_DATA_FIFO]) and data[1:]
        ]
        assert fifo_writes[-2:] == [
            bytes([R.TPM_I2C_DATA_FIFO]) + long_command[:-1],
            bytes([R.TPM_I2C_DATA_FIFO]) + long_command[-1:],
        ]


def test_linux_driver_detects_checksum_mismatch(i2c_class: type[tpmdev.TISI2C]) -> None:
    """The checksum covers exactly the bytes moved: a byte the TPM did not
    take (written from another locality) shows as a mismatch, as in Linux."""
    with i2c_class(tpmdev.backends.Builtin()) as dev:
        driver = TisI2CDriver(dev)
        driver.probe()
        driver.request_locality()
        driver.ready()
        dev.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + C.tpm2_startup()[:5])
        good = driver.read_int(R.TPM_I2C_DATA_CSUM, 2)
        dev.i2c_write(bytes([R.TPM_I2C_LOC_SEL, 1]))
        dev.i2c_write(bytes([R.TPM_I2C_DATA_FIFO, 0x0C]))  # dropped: locality 1 is not active
        dev.i2c_write(bytes([R.TPM_I2C_LOC_SEL, 0]))
        with pytest.raises(tpmdev.drivers.TisI2CError, match="CRC mismatch"):
            driver.verify_crc("command", C.tpm2_startup()[:5] + b"\x0c")
        assert driver.read_int(R.TPM_I2C_DATA_CSUM, 2) == good


# -- the device's own shape ------------------------------------------------------------
def test_reset_clears_bus_state(i2c_class: type[tpmdev.TISI2C]) -> None:
    with i2c_class(tpmdev.backends.Builtin()) as dev:
        dev.i2c_write(bytes([R.TPM_I2C_LOC_SEL, 2]))
        dev.i2c_write(bytes([R.TPM_I2C_DATA_CSUM_ENABLE, 1]))
        dev.i2c_write(bytes([R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE]))
        dev.i2c_write(bytes([R.TPM_I2C_RID]))
        assert (dev.locality, dev.checksum_enabled, dev.core.active_locality) == (2, True, 2)
        dev.reset()
        assert (dev.locality, dev.checksum_enabled, dev.core.active_locality) == (0, False, None)
        assert dev.i2c_read(1) == b"\x00"
        assert dev.i2c_read_reg(R.TPM_I2C_INT_ENABLE, 4) == R.TPM_INT_POLARITY_LOW_LEVEL.to_bytes(4, "little")


def test_event_interface(i2c_class: type[tpmdev.TISI2C]) -> None:
    """Byte by byte, as a simulator's controller drives it."""
    with i2c_class(tpmdev.backends.Builtin()) as dev:
        assert dev.i2c_start() is True
        assert dev.i2c_send(R.TPM_I2C_DID_VID) is True
        assert dev.i2c_start(recv=True) is True
        assert [dev.i2c_recv() for _ in range(4)] == [0x14, 0x10, 0x01, 0x00]
        dev.i2c_nack()
        dev.i2c_stop()
        assert dev.i2c_start() is True
        assert dev.i2c_send(0x39) is False
        dev.i2c_stop()


def test_tpm_version_from_backend(i2c_class: type[tpmdev.TISI2C]) -> None:
    with i2c_class(tpmdev.backends.Builtin(tpm_version=1)) as dev:
        assert dev.tpm_version == 1
        assert dev.core.read(R.TPM_INTF_CAPABILITY) == R.TPM_INTF_CAPABILITY_TPM12
        # QEMU synthesises the I2C capability: TPM 2.0 family regardless
        assert dev.i2c_read_reg(R.TPM_I2C_INTERFACE_CAPABILITY, 4) == bytes.fromhex("82006002")


def test_host_misuse(i2c_class: type[tpmdev.TISI2C]) -> None:
    with i2c_class(tpmdev.backends.Builtin()) as dev:
        with pytest.raises(tpmdev.AccessError):
            dev.i2c_write("\x04\x02")
        with pytest.raises(tpmdev.AccessError):
            dev.i2c_read(-1)
        with pytest.raises(tpmdev.AccessError):
            dev.i2c_read_reg(0x04, None)
        with pytest.raises(tpmdev.AccessError):
            dev.i2c_send(0x100)


def test_asynchronous_completion_at_next_bus_event(i2c_class: type[tpmdev.TISI2C]) -> None:
    ready = threading.Event()
    with i2c_class(tpmdev.backends.Builtin(), asynchronous=True, on_complete=ready.set) as dev:
        dev.i2c_write(bytes([R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE]))
        dev.i2c_write(bytes([R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY]))
        dev.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + C.tpm2_startup())
        dev.i2c_write(bytes([R.TPM_I2C_STS, R.TPM_STS_GO]))
        ready.wait()
        # posted, not yet applied: the next bus event applies it
        assert dev.core.executing
        assert dev.i2c_read_reg(R.TPM_I2C_STS, 1) == bytes([R.TPM_STS_VALID | R.TPM_STS_DATA_AVAIL])
        assert not dev.core.executing
        assert dev.i2c_read_reg(R.TPM_I2C_DATA_FIFO, 10) == STARTUP_OK
