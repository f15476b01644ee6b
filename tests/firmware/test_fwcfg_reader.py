"""The oracle's ACPI helpers on tables built here: splitting the tables blob, finding a device in a DSDT."""

from __future__ import annotations

import pytest
from iasl_check import ssdt
from oracle import fwcfg

from tpmdev.firmware import aml as A

DECOY = bytes([0x5B, 0x82, 0x05]) + b"TPM_"  # a Device (TPM) opcode inside data


def _dsdt() -> bytes:
    tpm = A.device("TPM", A.name("_UID", A.ONE), A.name("BUF0", A.buffer(DECOY)))
    body = A.scope(
        "\\_SB",
        A.name("PKG0", A.package(A.string("x"), A.buffer(DECOY))),
        A.operation_region("REG0", A.RegionSpace.SYSTEM_IO, A.integer(0x510), A.integer(2)),
        A.field("REG0", A.named_field("SEL0", 16)),
        A.method("MTH0", 0, A.return_(A.buffer(DECOY))),
        A.device("PCI0", A.device("SF8", tpm), A.name("_ADR", A.ZERO)),
        A.device("TPM0", A.name("_UID", A.ZERO)),
    )
    return b"DSDT" + ssdt(body)[4:]


def test_aml_object_finds_the_device_by_walking_not_by_searching() -> None:
    dsdt = _dsdt()
    obj = fwcfg.aml_object(dsdt, "TPM")
    assert obj == A.device("TPM", A.name("_UID", A.ONE), A.name("BUF0", A.buffer(DECOY)))
    kinds = {p: k for k, p, _, _ in fwcfg.aml_named_objects(dsdt)}
    assert kinds == {
        "_SB": "Scope",
        "_SB.MTH0": "Method",
        "_SB.PCI0": "Device",
        "_SB.PCI0.SF8": "Device",
        "_SB.PCI0.SF8.TPM": "Device",
        "_SB.TPM0": "Device",
    }
    with pytest.raises(ValueError, match="0 Device objects named 'TPM1'"):
        fwcfg.aml_object(dsdt, "TPM1")


def test_aml_walk_refuses_an_opcode_it_does_not_know() -> None:
    dsdt = b"DSDT" + ssdt(A.scope("\\_SB", A.store(A.ZERO, A.local(0))))[4:]
    with pytest.raises(ValueError, match="unexpected opcode 70"):
        fwcfg.aml_named_objects(dsdt)


def test_split_tables_skips_padding() -> None:
    facs = b"FACS" + (64).to_bytes(4, "little") + bytes(56)
    dsdt = _dsdt()
    blob = facs + dsdt + bytes(3) + ssdt(A.ZERO) + bytes(1000)
    tables = fwcfg.split_tables(blob)
    assert tables == {"FACS": [facs], "DSDT": [dsdt], "SSDT": [ssdt(A.ZERO)]}
    with pytest.raises(ValueError, match="no ACPI table header at offset 0x40"):
        fwcfg.split_tables(facs + b"\x01garbage")
