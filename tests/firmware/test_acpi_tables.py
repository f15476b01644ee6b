"""The fw_cfg files and ACPI tables (TPM2, TCPA, SSDT) of the TIS, sysbus TIS and CRB.

Golden bytes from QEMU's reference tables (qemu-tpm-spec 8.2, 8.3) and the
values QEMU 7.2 writes (tests/oracle/test_firmware_tables.py compares with
the live QEMU); every table of every configuration disassembled by
``iasl -d`` with no error or warning, every checksum valid; bad arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from iasl_check import disassemble

import tpmdev
from tpmdev.backends.builtin import Builtin
from tpmdev.errors import ConfigurationError
from tpmdev.firmware import acpi, fw_cfg

H = bytes.fromhex
HEADER_IDS = b"BOCHS BXPC    " + H("01000000") + b"BXPC" + H("01000000")

#: TPM2 of QEMU's tests/data/acpi/x86/q35/TPM2.tis.tpm2 (LASA 0x07FF0000 as allocated there)
TPM2_TIS_REFERENCE = (
    b"TPM2" + H("4c000000 04 15") + HEADER_IDS + H("0000 0000") + bytes(8) + H("06000000") + bytes(12)
    + H("00000100") + H("0000ff07 00000000")
)  # fmt: skip
#: TCPA of QEMU's tests/data/acpi/x86/q35/TCPA.tis.tpm12
TCPA_REFERENCE = (
    b"TCPA" + H("32000000 02 32") + HEADER_IDS + H("0000") + H("00000100") + H("0000ff07 00000000")
)

FRONTENDS = {"tis": tpmdev.TIS, "tis-sysbus": tpmdev.TISSysbus, "crb": tpmdev.CRB}


def _make(frontend: str, version: int, **options: Any) -> Any:
    backend = tpmdev.backends.open(f"builtin:{'2.0' if version == 2 else '1.2'}")
    return FRONTENDS[frontend](backend, **options)


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[Any] = []

    def build(frontend: str, version: int, **options: Any) -> Any:
        dev = _make(frontend, version, **options)
        made.append(dev)
        return dev

    yield build
    for dev in made:
        dev.close()


#: (frontend, TPM version, ppi) of every configuration QEMU has
CONFIGS = [
    (frontend, version, ppi)
    for frontend in FRONTENDS
    for version in (2, 1)
    for ppi in ((True, False) if frontend != "tis-sysbus" else (False,))
]


def _ppi_options(frontend: str, ppi: bool) -> dict[str, bool]:
    return {} if frontend == "tis-sysbus" else {"ppi": ppi}


# -- golden bytes -----------------------------------------------------------------


def test_tpm2_tis_reference(make: Any) -> None:
    assert make("tis", 2).acpi_tables(log_address=0x07FF0000)["TPM2"] == TPM2_TIS_REFERENCE


def test_tcpa_reference(make: Any) -> None:
    assert make("tis", 1).acpi_tables(log_address=0x07FF0000)["TCPA"] == TCPA_REFERENCE
    assert make("crb", 1).acpi_tables(log_address=0x07FF0000)["TCPA"] == TCPA_REFERENCE


def test_tpm2_crb_control_area_and_start_method(make: Any) -> None:
    table = make("crb", 2).acpi_tables(log_address=0x1_0000_0000)["TPM2"]
    assert len(table) == 76 and table[8] == 4
    assert table[40:48] == (0xFED40040).to_bytes(8, "little")
    assert table[48:52] == (7).to_bytes(4, "little")
    assert table[52:64] == bytes(12)
    assert table[64:68] == (0x10000).to_bytes(4, "little")
    assert table[68:76] == (0x1_0000_0000).to_bytes(8, "little")
    assert acpi.checksum(table) == 0


def test_tpm2_crb_follows_the_device_address(make: Any) -> None:
    """A CRB placed elsewhere points the TPM2 control area at its own CTRL_REQ."""
    table = make("crb", 2, address=0xFEE00000).acpi_tables()["TPM2"]
    assert table[40:48] == (0xFEE00040).to_bytes(8, "little")


def test_tpm2_sysbus_is_tis_start_method(make: Any) -> None:
    """Arm virt: the same TPM2 as the ISA TIS (start method 6, no control area)."""
    assert make("tis-sysbus", 2).acpi_tables(log_address=0x07FF0000)["TPM2"] == TPM2_TIS_REFERENCE


@pytest.mark.parametrize(
    ("frontend", "version", "expected"),
    [
        ("tis", 2, "TPM2"),
        ("tis", 1, "TCPA"),
        ("crb", 2, "TPM2"),
        ("crb", 1, "TCPA"),
        ("tis-sysbus", 2, "TPM2"),
        ("tis-sysbus", 1, None),
    ],
)
def test_log_table_choice(make: Any, frontend: str, version: int, expected: str | None) -> None:
    dev = make(frontend, version)
    assert acpi.log_table(dev) == expected
    tables = dev.acpi_tables()
    assert sorted(tables) == sorted(["SSDT"] + ([expected] if expected else []))
    log = dev.fw_cfg_files()["etc/tpm/log"]
    assert log == (bytes(0x10000) if expected else b"")


def test_oem_ids_in_every_header(make: Any) -> None:
    for dev in (make("tis", 2), make("tis", 1), make("tis-sysbus", 2)):
        for sig, table in dev.acpi_tables(oem_id="TPMDEV", oem_table_id="TABLES01").items():
            assert table[:4] == sig.encode()
            assert table[10:16] == b"TPMDEV" and table[16:24] == b"TABLES01", sig
            assert table[24:36] == H("01000000") + b"BXPC" + H("01000000"), sig
            assert acpi.checksum(table) == 0


# -- fw_cfg -------------------------------------------------------------------------


@pytest.mark.parametrize(("frontend", "version", "ppi"), CONFIGS)
def test_fw_cfg_files(make: Any, frontend: str, version: int, ppi: bool) -> None:
    files = make(frontend, version, **_ppi_options(frontend, ppi)).fw_cfg_files()
    if frontend != "tis-sysbus" and ppi:
        assert files.pop("etc/tpm/config") == bytes([0x00, 0x50, 0xD4, 0xFE, version, 0x01])
    with_table = version == 2 or frontend != "tis-sysbus"
    assert files == {"etc/tpm/log": bytes(0x10000) if with_table else b""}


class _UnknownVersion(Builtin):
    """A TPM whose version the device cannot learn (QEMU's TPM_VERSION_UNSPEC; a swtpm
    always tells, so the oracle cannot show this case)."""

    @property
    def tpm_version(self) -> int:
        return 0


@pytest.mark.parametrize("frontend", list(FRONTENDS))
def test_unknown_tpm_version(frontend: str) -> None:
    """Version 0 in etc/tpm/config, no log table, an empty log (QEMU's acpi-build.c choice)."""
    with FRONTENDS[frontend](_UnknownVersion()) as dev:
        assert dev.tpm_version == 0
        assert acpi.log_table(dev) is None
        assert list(dev.acpi_tables()) == ["SSDT"]
        files = dev.fw_cfg_files()
        assert files.pop("etc/tpm/log") == b""
        assert files == ({} if frontend == "tis-sysbus" else {"etc/tpm/config": H("0050d4fe0001")})


def test_tpm_config_builder() -> None:
    assert fw_cfg.tpm_config(0xFED45000, 0) == H("0050d4fe0001")  # a TPM of unknown version
    assert fw_cfg.tpm_config(0x12345678, 2, fw_cfg.TPM_PPI_VERSION_NONE) == H("78563412 02 00")
    for bad in (
        {"ppi_address": -1},
        {"ppi_address": 1 << 32},
        {"ppi_address": True},
        {"tpm_version": 3},
        {"tpm_version": True},
        {"ppi_version": 2},
    ):
        args = {"ppi_address": 0xFED45000, "tpm_version": 2, **bad}
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            fw_cfg.tpm_config(**args)


def test_tpm_log_builder() -> None:
    assert fw_cfg.tpm_log(True) == bytes(fw_cfg.TPM_LOG_AREA_MINIMUM_SIZE) and fw_cfg.tpm_log(False) == b""


# -- the SSDT ------------------------------------------------------------------------

#: Device (TPM) { Name (_HID, "MSFT0101") Name (_STA, 0x0F) }, hand-assembled
HAND_DEVICE = (
    H("5b82") + bytes([1 + 4 + 15 + 7]) + b"TPM_" + b"\x08_HID\x0dMSFT0101\x00" + b"\x08_STA\x0a\x0f"
)


def test_ssdt_in_lpc_scope_golden() -> None:
    """External (\\_SB.PCI0.SF8, DeviceObj) then Scope (\\_SB.PCI0.SF8) { <device> }."""
    path = b"\\" + H("2f03") + b"_SB_PCI0SF8_"
    table = acpi.ssdt_table(HAND_DEVICE, "\\_SB.PCI0.SF8")
    body = (
        H("15") + path + H("06 00") + H("10") + bytes([1 + len(path) + len(HAND_DEVICE)]) + path + HAND_DEVICE
    )
    assert table[:4] == b"SSDT" and table[8] == 1
    assert int.from_bytes(table[4:8], "little") == len(table) == 36 + len(body)
    assert table[10:] == HEADER_IDS + body
    assert acpi.checksum(table) == 0


def test_ssdt_predefined_and_root_scopes() -> None:
    sb = acpi.ssdt_table(HAND_DEVICE, "\\_SB", revision=2)
    assert sb[8] == 2
    assert sb[36:] == H("10") + bytes([1 + 5 + len(HAND_DEVICE)]) + b"\\_SB_" + HAND_DEVICE
    root = acpi.ssdt_table(HAND_DEVICE, "\\")
    assert root[36:] == HAND_DEVICE


def test_ssdt_long_body_package_length() -> None:
    """A scope body past 63 bytes takes a multi-byte PkgLength."""
    body = HAND_DEVICE * 10
    table = acpi.ssdt_table(body, "\\_SB")
    length = 5 + len(body) + 2
    assert table[36:39] == bytes([0x10, 0x40 | (length & 0x0F), length >> 4])
    assert table[39:] == b"\\_SB_" + body


@pytest.mark.parametrize(("frontend", "version", "ppi"), CONFIGS)
def test_ssdt_of_a_device(make: Any, frontend: str, version: int, ppi: bool) -> None:
    dev = make(frontend, version, **_ppi_options(frontend, ppi))
    ssdt = dev.acpi_tables()["SSDT"]
    aml = dev.aml()
    assert ssdt.endswith(aml)
    assert ssdt[8] == (2 if frontend == "tis-sysbus" else 1)
    assert acpi.checksum(ssdt) == 0


# -- iasl and checksums over every configuration ------------------------------------------


@pytest.mark.parametrize(("frontend", "version", "ppi"), CONFIGS)
def test_iasl_disassembles_every_table(
    make: Any, tmp_path: Path, frontend: str, version: int, ppi: bool
) -> None:
    dev = make(frontend, version, **_ppi_options(frontend, ppi))
    tables = dev.acpi_tables(log_address=0x7FF0000, oem_id="TPMDEV", oem_table_id="TABLES01")
    for sig, table in tables.items():
        assert acpi.checksum(table) == 0, sig
        assert int.from_bytes(table[4:8], "little") == len(table), sig
        asl = disassemble(table, tmp_path, sig.lower())
        if sig == "SSDT":
            name = "TPM0" if frontend == "tis-sysbus" else "TPM"
            assert f"Device ({name})" in asl
            assert ("_DSM" in asl) == ppi
        else:
            assert "Log Address : 0000000007FF0000" in " ".join(asl.split())


# -- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"oem_id": "BOCHS"}, "oem_id must be exactly 6"),
        ({"oem_id": "BOCHS  "}, "oem_id must be exactly 6"),
        ({"oem_id": "BÖCHS "}, "oem_id must be exactly 6 printable ASCII"),
        ({"oem_id": "BOC\nS "}, "oem_id must be exactly 6 printable ASCII"),
        ({"oem_id": b"BOCHS "}, "oem_id must be a str"),
        ({"oem_table_id": "BXPC"}, "oem_table_id must be exactly 8"),
        ({"oem_table_id": None}, "oem_table_id must be a str"),
        ({"log_address": -1}, "log_address must fit in 64 bits"),
        ({"log_address": 1 << 64}, "log_address must fit in 64 bits"),
        ({"log_address": True}, "log_address must be an int"),
        ({"log_address": 4096.0}, "log_address must be an int"),
        ({"log_address": "0x1000"}, "log_address must be an int"),
    ],
)
def test_acpi_tables_bad_arguments(make: Any, kwargs: dict[str, Any], message: str) -> None:
    dev = make("tis", 2)
    with pytest.raises(ConfigurationError, match=message):
        dev.acpi_tables(**kwargs)


def test_largest_log_address(make: Any) -> None:
    table = make("tis", 1).acpi_tables(log_address=(1 << 64) - 1)["TCPA"]
    assert table[42:50] == b"\xff" * 8 and acpi.checksum(table) == 0


def test_builders_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="start_method"):
        acpi.tpm2_table(start_method=-1)
    with pytest.raises(ConfigurationError, match="control_area"):
        acpi.tpm2_table(start_method=7, control_area=1 << 64)
    with pytest.raises(ConfigurationError, match="revision must be 1"):
        acpi.ssdt_table(HAND_DEVICE, "\\_SB", revision=3)
    with pytest.raises(ConfigurationError, match="absolute ACPI path"):
        acpi.ssdt_table(HAND_DEVICE, "_SB")
    with pytest.raises(ConfigurationError, match="aml must be bytes"):
        acpi.ssdt_table("Device", "\\_SB")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="name segment"):
        acpi.ssdt_table(HAND_DEVICE, "\\_SB.PCI00")
    with pytest.raises(ConfigurationError, match="signature must be exactly 4"):
        acpi.table_header("TPM", 36, 1)


@pytest.mark.parametrize("frontend", ["spapr", "tis-i2c"])
def test_frontends_without_acpi(frontend: str) -> None:
    """QEMU describes only the TIS, sysbus TIS and CRB to ACPI firmware."""
    backend = tpmdev.backends.open("builtin:2.0")
    if frontend == "spapr":
        dev: Any = tpmdev.SPAPR(
            backend, dma_read=lambda *a: b"", dma_write=lambda *a: None, send_crq=lambda *a: None
        )
    else:
        dev = tpmdev.TISI2C(backend)
    with dev:
        with pytest.raises(ConfigurationError, match="no ACPI description"):
            acpi.platform_of(dev)
        with pytest.raises(ConfigurationError, match="no ACPI description"):
            fw_cfg.fw_cfg_files(dev)
