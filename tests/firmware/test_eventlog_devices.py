"""The event log built while measuring through a device, checked against the TPM.

Every measurement goes through the frontend's registers with a guest driver
(TIS byte by byte through DATA_FIFO, CRB through its buffer), on both
register-model variants, into the built-in TPM and a real swtpm (one process
per TPM version for the whole module; each device's reset power-cycles it).
The log then parses back to the same records and bytes, and its replay equals
PCR_Read (TPM 1.2: TPM_PcrRead) on every bank.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_eventlog_format import EFI_GLOBAL_VARIABLE, uefi_variable

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.backends.emulator import Emulator
from tpmdev.drivers import commands as C
from tpmdev.drivers.crb import CrbDriver
from tpmdev.drivers.tis import TisDriver
from tpmdev.errors import BackendError, ConfigurationError
from tpmdev.firmware import eventlog as E
from tpmdev.firmware.eventlog import EventType as T
from tpmdev.wire import response_code


@pytest.fixture(scope="module")
def swtpm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator.spawn(tmp_path_factory.mktemp("swtpm2") / "state", 2, timeout=10)
    yield emu
    emu.close()


@pytest.fixture(scope="module")
def swtpm12(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu = Emulator.spawn(tmp_path_factory.mktemp("swtpm12") / "state", 1, timeout=10)
    yield emu
    emu.close()


BACKENDS = ["builtin", pytest.param("swtpm", marks=pytest.mark.swtpm)]


@pytest.fixture(params=BACKENDS)
def backend2(request: pytest.FixtureRequest) -> Backend:
    if request.param == "builtin":
        return tpmdev.backends.Builtin(seed=7)
    emu: Emulator = request.getfixturevalue("swtpm2")
    return emu


@pytest.fixture(params=BACKENDS)
def backend12(request: pytest.FixtureRequest) -> Backend:
    if request.param == "builtin":
        return tpmdev.backends.Builtin(tpm_version=1, seed=7)
    emu: Emulator = request.getfixturevalue("swtpm12")
    return emu


@pytest.fixture(params=["tis", "crb"])
def frontend(request: pytest.FixtureRequest, impl: str) -> type:
    """TIS or CRB of the variant chosen by ``impl``."""
    cls: type = request.getfixturevalue(f"{request.param}_class")
    return cls


def driver_for(dev: Any, locality: int = 0) -> Any:
    return CrbDriver(dev) if isinstance(dev, tpmdev.CRB) else TisDriver(dev, locality=locality)


def start(dev: Any, locality: int = 0) -> None:
    command = C.tpm2_startup() if dev.tpm_version == 2 else C.tpm12_startup()
    assert response_code(driver_for(dev, locality).transmit(command)) == 0


def boot(builder: E.EventLogBuilder) -> None:
    """An UEFI-like measured boot (a TPM 1.2 gets the same records, SHA-1 only)."""
    builder.measure(0, T.EV_S_CRTM_VERSION, "1.0\0".encode("utf-16-le"))
    blob = struct.pack("<QQ", 0xFFC00000, 0x400000)
    builder.measure(0, T.EV_EFI_PLATFORM_FIRMWARE_BLOB, blob, measured=b"firmware volume")
    builder.measure(1, T.EV_EFI_HANDOFF_TABLES, struct.pack("<Q", 1) + bytes(24))
    builder.measure(
        7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, uefi_variable(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\0")
    )
    builder.measure(0, T.EV_NO_ACTION, b"logged, never extended")
    for pcr in range(8):
        builder.measure(pcr, T.EV_SEPARATOR, bytes(4))
    builder.measure(4, T.EV_EFI_BOOT_SERVICES_APPLICATION, bytes(40), measured=b"boot loader image")
    builder.measure(16, T.EV_EVENT_TAG, b"debug PCR")
    builder.measure(23, T.EV_ACTION, b"application PCR")


MEASURED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 16, 23]


def assert_tampering_is_seen(log: E.EventLog, dev: Any) -> None:
    """The check is not vacuous: a changed digest gives a mismatch in that bank and PCR."""
    index = next(i for i, e in enumerate(log.events) if e.pcr == 7 and e.event_type != T.EV_NO_ACTION)
    event = log.events[index]
    bank = next(iter(event.digests))
    digests = dict(event.digests, **{bank: bytes(len(event.digests[bank]))})
    tampered = E.EventLog(list(log.events), log.crypto_agile)
    tampered.events[index] = E.Event(event.pcr, event.event_type, digests, event.data)
    assert [(m.bank, m.pcr) for m in E.check(tampered, dev)] == [(bank, 7)]


def test_tpm2_log_round_trips_and_replays_to_pcr_read(frontend: type, backend2: Backend) -> None:
    with frontend(backend2, close_backend=False) as dev:
        start(dev)
        builder = E.EventLogBuilder(dev)
        allocated = ["sha1", "sha256"] if isinstance(backend2, tpmdev.backends.Builtin) else None
        if allocated is not None:
            assert builder.log.banks == allocated
        assert builder.log.banks[:2] == ["sha1", "sha256"]
        boot(builder)
        data = builder.to_bytes()
        log = E.parse(data)
        assert log == builder.log and log.to_bytes() == data
        assert log.crypto_agile and len(log.events) == 1 + 4 + 1 + 8 + 3
        values = E.replay(log)
        assert list(values) == log.banks
        assert all(list(pcrs) == MEASURED_PCRS for pcrs in values.values())
        assert E.check(log, dev) == [] and builder.check() == []
        assert_tampering_is_seen(log, dev)


def test_tpm12_legacy_log_round_trips_and_replays_to_pcr_read(
    tis_class: type[tpmdev.TIS], backend12: Backend
) -> None:
    with tis_class(backend12, close_backend=False) as dev:
        start(dev)
        builder = E.EventLogBuilder(dev)
        assert builder.tpm_version == 1 and not builder.log.crypto_agile
        boot(builder)
        data = builder.to_bytes()
        log = E.parse(data)
        assert log == builder.log and log.to_bytes() == data and not log.crypto_agile
        assert len(data) == sum(32 + len(e.data) for e in log.events)
        assert list(E.replay(log)) == ["sha1"] and list(E.replay(log)["sha1"]) == MEASURED_PCRS
        assert E.check(log, dev) == []
        assert_tampering_is_seen(log, dev)


def test_startup_locality_3(tis_class: type[tpmdev.TIS], backend2: Backend) -> None:
    with tis_class(backend2, close_backend=False) as dev:
        start(dev, locality=3)
        builder = E.EventLogBuilder(dev, startup_locality=3)
        assert builder.log.events[1].startup_locality == 3
        boot(builder)
        assert E.check(E.parse(builder.to_bytes()), dev) == []
        # the same measurements without the StartupLocality event: PCR 0 disagrees in every bank
        plain = E.EventLog([builder.log.events[0], *builder.log.events[2:]], crypto_agile=True)
        assert [(m.bank, m.pcr) for m in E.check(plain, dev)] == [(bank, 0) for bank in plain.banks]


def test_chosen_banks(tis_class: type[tpmdev.TIS]) -> None:
    backend = tpmdev.backends.Builtin(pcr_banks=("sha1", "sha256", "sha384", "sha512"))
    with tis_class(backend) as dev:
        start(dev)
        assert E.EventLogBuilder(dev).log.banks == ["sha1", "sha256", "sha384", "sha512"]
        builder = E.EventLogBuilder(dev, banks=["sha384"], platform_class=1, vendor_info=b"tpmdev")
        spec = builder.log.spec_id
        assert spec is not None and spec.algorithms == ((0x000C, 48),)
        assert (spec.platform_class, spec.vendor_info) == (1, b"tpmdev")
        boot(builder)
        assert E.check(E.parse(builder.to_bytes()), dev) == []
        for banks in (["sm3_256"], ["sha256", "sha256"], [], "sha256"):
            with pytest.raises(ConfigurationError, match="banks must be"):
                E.EventLogBuilder(dev, banks=banks)


def test_through_drivers(tis_sysbus_class: type[tpmdev.TISSysbus], crb_class: type[tpmdev.CRB]) -> None:
    with tis_sysbus_class(tpmdev.backends.Builtin()) as tis:
        start(tis)
        builder = E.EventLogBuilder(TisDriver(tis, locality=2))
        builder.measure(20, T.EV_COMPACT_HASH, b"locality 2 may extend PCR 20")
        assert builder.check() == [] and E.check(builder.log, TisDriver(tis)) == []
    with crb_class(tpmdev.backends.Builtin()) as crb:
        start(crb)
        driver = CrbDriver(crb, style="edk2")
        builder = E.EventLogBuilder(driver)
        boot(builder)
        assert E.check(builder.log, driver) == []

        class Bare:  # a transport that does not say which TPM it talks to
            transmit = staticmethod(driver.transmit)

        with pytest.raises(ConfigurationError, match="pass tpm_version=1 or 2"):
            E.EventLogBuilder(Bare())
        builder = E.EventLogBuilder(Bare(), tpm_version=2)
        builder.measure(8, T.EV_IPL, b"grub")
        assert builder.check() == []


def test_refused_extend_logs_nothing(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        start(dev)
        builder = E.EventLogBuilder(dev)
        before = list(builder.log.events)
        # PCR 17 belongs to the dynamic launch: locality 0 may not extend it
        with pytest.raises(BackendError, match=r"TPM2_PCR_Extend\(PCR 17\) failed .* 0x907"):
            builder.measure(17, T.EV_COMPACT_HASH, b"x")
        assert builder.log.events == before


def test_host_errors(tis_class: type[tpmdev.TIS]) -> None:
    with pytest.raises(
        ConfigurationError, match=r"neither a device tpmdev.drivers.for_device drives \(.*\) nor a driver"
    ):
        E.EventLogBuilder(object())
    with tis_class(tpmdev.backends.Builtin()) as dev:
        with pytest.raises(BackendError, match=r"TPM2_GetCapability\(TPM_CAP_PCRS\) failed .* 0x100"):
            E.EventLogBuilder(dev)  # no TPM2_Startup yet: TPM_RC_INITIALIZE
        start(dev)
        builder = E.EventLogBuilder(dev)
        for call, words in [
            (lambda: builder.measure(24, T.EV_POST_CODE, b""), "PCR index"),
            (lambda: builder.measure(0, -1, b""), "u32"),
            (lambda: builder.measure(0, T.EV_POST_CODE, "text"), "data must be bytes"),
            (lambda: builder.measure(0, T.EV_POST_CODE, b"", measured=1), "measured must be bytes"),
            (lambda: E.EventLogBuilder(dev, startup_locality=5), "0..4"),
            (lambda: E.EventLogBuilder(dev, tpm_version=3), "tpm_version must be 1 or 2"),
        ]:
            with pytest.raises(ConfigurationError, match=words):
                call()
    with tis_class(tpmdev.backends.Builtin(tpm_version=1)) as dev:
        start(dev)
        with pytest.raises(ConfigurationError, match="no StartupLocality"):
            E.EventLogBuilder(dev, startup_locality=0)


def test_log_area_for_firmware(tmp_path: Path, crb_class: type[tpmdev.CRB]) -> None:
    """The log written into a 64 KiB zero-filled area (QEMU's etc/tpm/log) reads back."""
    with crb_class(tpmdev.backends.Builtin()) as dev:
        start(dev)
        builder = E.EventLogBuilder(dev)
        boot(builder)
        area = builder.to_bytes(pad_to=0x10000)
        assert E.parse(area, padded=True) == builder.log
        assert E.check(E.parse(area, padded=True), dev) == []


@pytest.mark.parametrize("version", [1, 2])
def test_a_pcr_beyond_23_is_reported_not_read(tis_class: type[tpmdev.TIS], version: int) -> None:
    with tis_class(tpmdev.backends.Builtin(tpm_version=version, seed=7)) as dev:
        start(dev)
        builder = E.EventLogBuilder(dev)
        builder.measure(4, T.EV_SEPARATOR, bytes(4))
        log = E.EventLog(list(builder.log.events), builder.log.crypto_agile)
        digests = {bank: bytes(len(d)) for bank, d in log.events[-1].digests.items()}
        log.events.append(E.Event(24, T.EV_EVENT_TAG, digests, b"beyond the PC Client PCRs"))
        mismatches = E.check(log, dev)
        assert [(m.pcr, m.actual) for m in mismatches] == [(24, None)] * len(log.banks)
        assert [m.bank for m in mismatches] == list(E.replay(log))


@pytest.mark.parametrize("pcrs", [[24], [-1], [True], ["0"]])
def test_pcr_selection_refuses_bad_pcr_numbers(pcrs: list[Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"PCR numbers must be 0\.\.23"):
        C.tpm2_pcr_read(pcrs)
