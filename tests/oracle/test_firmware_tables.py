"""The fw_cfg files and ACPI tables of tpmdev's frontends against QEMU 7.2's.

For each configuration (frontend, TPM version, ``ppi``, OEM ids) one QEMU is
started on swtpm, its fw_cfg read once (the ``etc/tpm/*`` files, the tables
blob ``etc/acpi/tables`` and the loader script ``etc/table-loader``) and
QEMU stopped again; the tests compare what tpmdev builds for the same
settings.

QEMU's blob holds each table before the firmware's table loader ran: the
checksum byte and the log-area address (LASA) are zero, and the loader
script says how to finish them (allocate ``etc/tpm/log``, add its address
into LASA, compute the checksum). The tests check that the script patches
exactly those fields, that the blob equals tpmdev's table built with
``log_address=0`` once tpmdev's checksum byte is zeroed, and that running
the script's steps on the blob for a log at some address gives tpmdev's
table for that address byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tpmdev
from tpmdev.firmware import acpi, tpm_aml

from .fwcfg import FwCfg, aml_named_objects, aml_object, split_tables
from .qtest import Qemu, Swtpm

pytestmark = pytest.mark.oracle

LOG_TABLES = ("TPM2", "TCPA")
#: where the tests pretend the firmware put the event log: a 32-bit and a 64-bit address
LOG_ADDRESSES = (0x07FF0000, 0x0000_0001_2345_6000)


@dataclasses.dataclass(frozen=True)
class Config:
    """One QEMU configuration and the tpmdev device that should match it."""

    device: str
    tpm2: bool
    ppi: bool = True
    oem_id: str = acpi.DEFAULT_OEM_ID
    oem_table_id: str = acpi.DEFAULT_OEM_TABLE_ID

    @property
    def id(self) -> str:
        name = {"tpm-tis": "tis", "tpm-crb": "crb", "tpm-tis-device": "sysbus"}[self.device]
        name += "-tpm2" if self.tpm2 else "-tpm12"
        if not self.ppi:
            name += "-noppi"
        if self.oem_id != acpi.DEFAULT_OEM_ID:
            name += "-oem"
        return name

    def device_props(self) -> str:
        return "" if self.device == "tpm-tis-device" else f",ppi={'on' if self.ppi else 'off'}"

    def machine_opts(self) -> str:
        if self.oem_id == acpi.DEFAULT_OEM_ID and self.oem_table_id == acpi.DEFAULT_OEM_TABLE_ID:
            return ""
        return f",x-oem-id={self.oem_id},x-oem-table-id={self.oem_table_id}"

    def tpmdev_device(self) -> Any:
        backend = tpmdev.backends.open(f"builtin:{'2.0' if self.tpm2 else '1.2'}")
        if self.device == "tpm-tis":
            return tpmdev.TIS(backend, ppi=self.ppi)
        if self.device == "tpm-crb":
            return tpmdev.CRB(backend, ppi=self.ppi)
        return tpmdev.TISSysbus(backend)


CONFIGS = [
    Config("tpm-tis", True),
    Config("tpm-tis", True, ppi=False),
    Config("tpm-tis", False),
    Config("tpm-tis", False, ppi=False),
    Config("tpm-crb", True),
    Config("tpm-crb", False),
    Config("tpm-crb", True, ppi=False),
    Config("tpm-tis", True, oem_id="TPMDEV", oem_table_id="TABLES01"),
    Config("tpm-tis-device", True),
    Config("tpm-tis-device", False),
    Config("tpm-tis-device", True, oem_id="TPMDEV", oem_table_id="TABLES01"),
]


class _Qemu(Qemu):
    """The harness's QEMU with extra device properties and machine options."""

    def __init__(self, workdir: Path, swtpm: Swtpm, config: Config) -> None:
        super().__init__(workdir, swtpm, device=config.device)
        self._props = config.device_props()
        self.platform = dataclasses.replace(
            self.platform, machine=self.platform.machine + config.machine_opts()
        )

    def _device_arg(self) -> str:
        return super()._device_arg() + self._props


@dataclasses.dataclass
class Loader:
    """The commands of QEMU's ``etc/table-loader`` (BIOSLinkerLoader, 128-byte entries)."""

    #: file -> (alignment, zone)
    allocate: dict[str, tuple[int, int]]
    #: (destination file, source file, offset, size)
    pointers: list[tuple[str, str, int, int]]
    #: (file, checksum offset, start, length)
    checksums: list[tuple[str, int, int, int]]

    @classmethod
    def parse(cls, script: bytes) -> Loader:
        loader = cls({}, [], [])

        def name(at: int) -> str:
            return script[at : at + 56].split(b"\0", 1)[0].decode()

        for pos in range(0, len(script), 128):
            command = struct.unpack_from("<I", script, pos)[0]
            if command == 1:  # ALLOCATE: file, align, zone
                loader.allocate[name(pos + 4)] = struct.unpack_from("<IB", script, pos + 60)
            elif command == 2:  # ADD_POINTER: dest file, src file, offset, size
                offset, size = struct.unpack_from("<IB", script, pos + 116)
                loader.pointers.append((name(pos + 4), name(pos + 60), offset, size))
            elif command == 3:  # ADD_CHECKSUM: file, offset, start, length
                loader.checksums.append((name(pos + 4), *struct.unpack_from("<III", script, pos + 60)))
            elif command != 0:
                raise AssertionError(f"unknown table-loader command {command} at {pos}")
        return loader


@dataclasses.dataclass
class Observed:
    """What one QEMU handed its firmware."""

    config: Config
    #: the etc/tpm/* fw_cfg files
    tpm_files: dict[str, bytes]
    #: etc/acpi/tables: the whole blob and its tables by signature
    blob: bytes
    tables: dict[str, list[bytes]]
    loader: Loader


def _observe(config: Config, workdir: Path) -> Observed:
    swtpm = Swtpm(workdir, tpm2=config.tpm2).start()
    try:
        with _Qemu(workdir, swtpm, config).start() as qemu:
            fw = FwCfg(qemu, "virt" if config.device == "tpm-tis-device" else "q35")
            tpm_files = {name: fw.read_file(name) for name in fw.files() if name.startswith("etc/tpm/")}
            blob = fw.read_file("etc/acpi/tables")
            loader = Loader.parse(fw.read_file("etc/table-loader"))
    finally:
        swtpm.close()
    return Observed(config, tpm_files, blob, split_tables(blob), loader)


@pytest.fixture(scope="module")
def observe(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Config], Observed]:
    """``observe(config)``: what QEMU hands firmware in *config*, one QEMU per configuration."""
    cache: dict[Config, Observed] = {}

    def get(config: Config) -> Observed:
        if config not in cache:
            cache[config] = _observe(config, tmp_path_factory.mktemp(config.id))
        return cache[config]

    return get


@contextlib.contextmanager
def _device(config: Config) -> Iterator[Any]:
    with config.tpmdev_device() as device:
        yield device


def _tables(dev: Any, config: Config, log_address: int = 0) -> dict[str, bytes]:
    return dict(
        dev.acpi_tables(log_address=log_address, oem_id=config.oem_id, oem_table_id=config.oem_table_id)
    )


def _log_table(observed: Observed) -> tuple[bytes, int] | None:
    """QEMU's log table and its offset in the blob, or None."""
    found = [t for sig in LOG_TABLES for t in observed.tables.get(sig, [])]
    assert len(found) <= 1, f"QEMU built {len(found)} log tables"
    if not found:
        return None
    return found[0], observed.blob.index(found[0])


def _with_log(config: Config) -> bool:
    """Whether QEMU builds a log table (TPM2 / TCPA) in *config* (the spec, checked by
    test_log_table_choice): all but TPM 1.2 on Arm virt."""
    return config.tpm2 or config.device != "tpm-tis-device"


_ids = {"ids": lambda c: c.id}
LOG_CONFIGS = [c for c in CONFIGS if _with_log(c)]
NO_LOG_CONFIGS = [c for c in CONFIGS if not _with_log(c)]


# -- fw_cfg -------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, **_ids)
def test_tpm_fw_cfg_files(observe: Callable[[Config], Observed], config: Config) -> None:
    """etc/tpm/config and etc/tpm/log: the same names, sizes and bytes as QEMU's."""
    observed = observe(config)
    with _device(config) as dev:
        ours = dev.fw_cfg_files()
    assert sorted(ours) == sorted(observed.tpm_files)
    for name, data in observed.tpm_files.items():
        assert len(ours[name]) == len(data), name
        assert ours[name] == data, name


@pytest.mark.parametrize("config", CONFIGS, **_ids)
def test_tpm_config_bytes(observe: Callable[[Config], Observed], config: Config) -> None:
    """QEMU's etc/tpm/config holds the values of the spec (the oracle reading checked)."""
    data = observe(config).tpm_files.get("etc/tpm/config")
    if config.device != "tpm-tis-device" and config.ppi:
        assert data == bytes([0x00, 0x50, 0xD4, 0xFE, 2 if config.tpm2 else 1, 0x01])
    else:
        assert data is None


# -- the log table ------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, **_ids)
def test_log_table_choice(observe: Callable[[Config], Observed], config: Config) -> None:
    """TPM2 for TPM 2.0, TCPA for TPM 1.2 on a PC, none for TPM 1.2 on Arm virt."""
    observed = observe(config)
    theirs = sorted(sig for sig in observed.tables if sig in LOG_TABLES)
    with _device(config) as dev:
        ours = sorted(sig for sig in _tables(dev, config) if sig in LOG_TABLES)
        assert [acpi.log_table(dev)] == (theirs or [None])
    assert ours == theirs
    assert bool(theirs) == _with_log(config)


@pytest.mark.parametrize("config", LOG_CONFIGS, **_ids)
def test_log_table_blob(observe: Callable[[Config], Observed], config: Config) -> None:
    """QEMU's unpatched table is tpmdev's for log_address=0 with the checksum byte zeroed."""
    found = _log_table(observe(config))
    assert found is not None
    table, _ = found
    with _device(config) as dev:
        ours = bytearray(_tables(dev, config)[table[:4].decode()])
    assert table[acpi.CHECKSUM_OFFSET] == 0
    assert acpi.checksum(ours) == 0
    ours[acpi.CHECKSUM_OFFSET] = 0
    assert bytes(ours) == table


@pytest.mark.parametrize("config", LOG_CONFIGS, **_ids)
def test_loader_patches_lasa_and_checksum(observe: Callable[[Config], Observed], config: Config) -> None:
    """The loader allocates etc/tpm/log, points LASA (8 bytes) at it and checksums the
    whole table: the fields tpmdev fills from ``log_address``, and its checksum."""
    observed = observe(config)
    found = _log_table(observed)
    assert found is not None
    table, at = found
    loader = observed.loader
    lasa = acpi.TPM2_LASA_OFFSET if table[:4] == b"TPM2" else acpi.TCPA_LASA_OFFSET
    assert loader.allocate["etc/tpm/log"] == (1, 1)  # alignment 1, high zone
    to_log = [p for p in loader.pointers if p[1] == "etc/tpm/log"]
    assert to_log == [("etc/acpi/tables", "etc/tpm/log", at + lasa, 8)]
    assert ("etc/acpi/tables", at + acpi.CHECKSUM_OFFSET, at, len(table)) in loader.checksums
    inside = [p for p in loader.pointers if p[0] == "etc/acpi/tables" and at <= p[2] < at + len(table)]
    assert inside == to_log  # nothing else is patched into the table


@pytest.mark.parametrize("config", NO_LOG_CONFIGS, **_ids)
def test_no_log_table_no_log_area(observe: Callable[[Config], Observed], config: Config) -> None:
    """Without a log table the loader allocates no log area and patches nothing to it."""
    loader = observe(config).loader
    assert "etc/tpm/log" not in loader.allocate
    assert not [p for p in loader.pointers if p[1] == "etc/tpm/log"]


@pytest.mark.parametrize("log_address", LOG_ADDRESSES, ids=hex)
@pytest.mark.parametrize("config", LOG_CONFIGS, **_ids)
def test_log_table_after_loader(
    observe: Callable[[Config], Observed], config: Config, log_address: int
) -> None:
    """QEMU's table finished as the firmware's loader does for a log at *log_address*
    equals tpmdev's table for that address, checksum included."""
    observed = observe(config)
    found = _log_table(observed)
    assert found is not None
    table, at = found
    patched = bytearray(table)
    for dest, src, offset, size in observed.loader.pointers:
        if dest == "etc/acpi/tables" and src == "etc/tpm/log" and at <= offset < at + len(table):
            pos = offset - at
            value = int.from_bytes(patched[pos : pos + size], "little") + log_address
            patched[pos : pos + size] = value.to_bytes(size, "little")
    for file, offset, start, length in observed.loader.checksums:
        if file == "etc/acpi/tables" and start == at:
            patched[offset - at] = 0
            patched[offset - at] = -sum(patched[:length]) & 0xFF
    with _device(config) as dev:
        assert bytes(patched) == _tables(dev, config, log_address)[table[:4].decode()]


# -- the SSDT: QEMU's device object, header and revision of QEMU's DSDT --------


@pytest.mark.parametrize("config", CONFIGS, **_ids)
def test_ssdt_header_follows_dsdt(observe: Callable[[Config], Observed], config: Config) -> None:
    """The SSDT carries the DSDT's revision (integer width) and QEMU's header ids."""
    (dsdt,) = observe(config).tables["DSDT"]
    with _device(config) as dev:
        ssdt = _tables(dev, config)["SSDT"]
        assert ssdt[8] == dsdt[8] == acpi.platform_of(dev).dsdt_revision
    assert ssdt[10:36] == dsdt[10:36]  # OEM ID, OEM table ID, OEM revision, creator, creator revision


@pytest.mark.parametrize("config", CONFIGS, **_ids)
def test_ssdt_carries_qemus_device_object(observe: Callable[[Config], Observed], config: Config) -> None:
    """The SSDT declares the device where QEMU's DSDT has it, with the DSDT's bytes."""
    (dsdt,) = observe(config).tables["DSDT"]
    with _device(config) as dev:
        ssdt = _tables(dev, config)["SSDT"]
        scope, name = tpm_aml.device_scope(dev)[1:], tpm_aml.device_name(dev)
    devices = [path for kind, path, _, _ in aml_named_objects(ssdt) if kind == "Device"]
    assert devices == [f"{scope}.{name}"]
    assert aml_object(ssdt, name) == aml_object(dsdt, name)
