"""``dev.aml()``: the TPM device object of TIS, TISSysbus and CRB, on both register-model variants.

The golden bytes of the objects without PPI are QEMU 7.2's (the DSDT of
q35 / virt, read over fw_cfg), annotated; the oracle test
(tests/oracle/test_acpi_dsdt.py) compares every configuration, PPI
included, against the live QEMU. Here: delegation, the settings that
change the object, ``iasl -d`` of each, and bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from iasl_check import disassemble, ssdt

import tpmdev
import tpmdev.backends
from tpmdev.errors import ConfigurationError
from tpmdev.firmware import aml as A
from tpmdev.firmware import tpm_aml


def h(text: str) -> bytes:
    """Hex with spaces; quoted runs are ASCII."""
    out = bytearray()
    for part in text.split():
        out += part.strip("'").encode() if part.startswith("'") else bytes.fromhex(part)
    return bytes(out)


HID_STR_20 = "08 '_HID' 0d 'MSFT0101' 00 08 '_STR' 0d 'TPM' 20 '2.0' 20 'Device' 00"
CRS_TIS = "08 '_CRS' 11 11 0a 0e 86 09 00 01 00 00 d4 fe 00 50 00 00 79 00"  # Memory32Fixed RW FED40000 5000

#: QEMU 7.2, q35, tpm-tis (TPM 2.0), ppi=off
TIS_20_NO_PPI = h(f"5b 82 4e 04 'TPM_' {HID_STR_20} 08 '_UID' 01 08 '_STA' 0a 0f {CRS_TIS}")
#: QEMU 7.2, q35, tpm-tis (TPM 1.2), ppi=off: EISAID PNP0C31, no _STR
TIS_12_NO_PPI = h(f"5b 82 33 'TPM_' 08 '_HID' 0c 41 d0 0c 31 08 '_UID' 01 08 '_STA' 0a 0f {CRS_TIS}")
#: QEMU 7.2, q35, tpm-crb, ppi=off: its own order, the 0x1000 region
CRB_NO_PPI = h(
    f"5b 82 4e 04 'TPM_' {HID_STR_20} "
    "08 '_CRS' 11 11 0a 0e 86 09 00 01 00 00 d4 fe 00 10 00 00 79 00 08 '_STA' 0a 0f 08 '_UID' 01"
)
#: QEMU 7.2, virt, tpm-tis-device: TPM0, _UID 0, the platform bus address
SYSBUS = h(
    f"5b 82 47 04 'TPM0' {HID_STR_20} 08 '_UID' 00 "
    "08 '_CRS' 11 11 0a 0e 86 09 00 01 00 00 00 0c 00 50 00 00 79 00"
)


def _body(obj: bytes) -> bytes:
    """The body of a Device object after its name (the PkgLength may differ in size)."""
    assert obj[:2] == b"\x5b\x82"
    follow = obj[2] >> 6
    return obj[3 + follow + 4 :]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ppi", [False, True])
def test_tis(tis_class: type[tpmdev.TIS], version: int, ppi: bool) -> None:
    with tis_class(tpmdev.backends.Builtin(tpm_version=version), ppi=ppi) as dev:
        aml = dev.aml()
    plain = TIS_20_NO_PPI if version == 2 else TIS_12_NO_PPI
    if not ppi:
        assert aml == plain
    else:  # the same objects, then the PPI objects
        assert _body(aml) == _body(plain) + tpm_aml.ppi_objects()


@pytest.mark.parametrize("version", [1, 2])
def test_tis_sysbus_is_tpm0_without_ppi_whatever_the_version(
    tis_sysbus_class: type[tpmdev.TISSysbus], version: int
) -> None:
    with tis_sysbus_class(tpmdev.backends.Builtin(tpm_version=version)) as dev:
        assert dev.aml() == SYSBUS


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ppi", [False, True])
def test_crb_is_always_tpm20(crb_class: type[tpmdev.CRB], version: int, ppi: bool) -> None:
    with crb_class(tpmdev.backends.Builtin(tpm_version=version), ppi=ppi) as dev:
        aml = dev.aml()
    if not ppi:
        assert aml == CRB_NO_PPI
    else:
        assert _body(aml) == _body(CRB_NO_PPI) + tpm_aml.ppi_objects()


def test_crb_resources_follow_the_device(crb_class: type[tpmdev.CRB]) -> None:
    """The _CRS says where this CRB is and how large (5 localities: 0x5000)."""
    with crb_class(tpmdev.backends.Builtin(), ppi=False, localities=5, address=0xFED00000) as dev:
        assert A.memory32_fixed(0xFED00000, 0x5000) in dev.aml()
        assert A.memory32_fixed(0xFED40000, 0x1000) not in dev.aml()


def test_ppi_is_tested_for_truth(tis_class: type[tpmdev.TIS]) -> None:
    """``dev.ppi`` may become a page object (PPI on) or None (off): the builder only asks ``if dev.ppi``."""
    with tis_class(tpmdev.backends.Builtin()) as dev:
        dev.ppi = None  # type: ignore[assignment]
        assert dev.aml() == TIS_20_NO_PPI
        dev.ppi = object()  # type: ignore[assignment]
        assert dev.aml().endswith(tpm_aml.ppi_objects())


def test_ppi_objects_bytes() -> None:
    """The head of the PPI objects, hand-encoded from qemu-tpm-spec 6.1."""
    ppi = tpm_aml.ppi_objects()
    head = h(
        "5b 80 'TPP2' 00 0c 00 51 d4 fe 0a 5a "  # OperationRegion (TPP2, SystemMemory, 0xFED45100, 0x5A)
        "5b 81 24 'TPP2' 00 'PPIN' 08 'PPIP' 20 'PPRP' 20 'PPRQ' 20 'PPRM' 20 'LPPR' 20 "  # Field, AnyAcc
        "5b 80 'TPP3' 00 0c 5a 51 d4 fe 01 "  # OperationRegion (TPP3, SystemMemory, 0xFED4515A, One)
        "5b 81 0b 'TPP3' 01 'MOVV' 08 "  # Field (TPP3, ByteAcc, NoLock, Preserve)
        "14 32 'TPFN' 09 "  # Method (TPFN, 1, Serialized)
        "a0 09 92 95 68 0b 00 01 a4 00 "  # If (Arg0 >= 0x100) Return (Zero)
        "5b 80 'TPP1' 00 72 0c 00 50 d4 fe 68 00 01 "  # OperationRegion (TPP1, .., 0xFED45000 + Arg0, One)
        "5b 81 0b 'TPP1' 01 'TPPF' 08 a4 'TPPF' "
        "08 'TPM2' 12 04 02 00 00 08 'TPM3' 12 05 03 00 00 00"  # Name (TPM2, Package {0, 0}), TPM3
    )
    assert ppi.startswith(head)
    rest = ppi[len(head) :]
    assert rest[0] == A.Op.METHOD and rest[3:8] == b"_DSM\x0c"  # Method (_DSM, 4, Serialized)
    assert A.uuid(tpm_aml.PPI_UUID) in rest and A.uuid(tpm_aml.MEMORY_CLEAR_UUID) in rest


KINDS = [
    (tpm_aml.KIND_TIS, 2, True),
    (tpm_aml.KIND_TIS, 1, True),
    (tpm_aml.KIND_TIS, 2, False),
    (tpm_aml.KIND_CRB, 2, True),
    (tpm_aml.KIND_TIS_SYSBUS, 2, False),
]


@pytest.mark.parametrize(("kind", "version", "ppi"), KINDS)
def test_iasl_disassembles_the_device_in_its_scope(
    tmp_path: Path, kind: str, version: int, ppi: bool
) -> None:
    size = 0x1000 if kind == tpm_aml.KIND_CRB else 0x5000
    address = 0x0C000000 if kind == tpm_aml.KIND_TIS_SYSBUS else 0xFED40000
    obj = tpm_aml.tpm_device(kind, tpm_version=version, address=address, size=size, ppi=ppi)
    asl = " ".join(disassemble(ssdt(A.scope(tpm_aml.device_scope(kind), obj)), tmp_path).split())
    name = tpm_aml.device_name(kind)
    assert f"Scope ({tpm_aml.device_scope(kind)}) {{ Device ({name})" in asl
    hid = 'Name (_HID, EisaId ("PNP0C31"))' if version == 1 else 'Name (_HID, "MSFT0101"'
    assert hid in asl
    assert ("Method (_DSM, 4, Serialized)" in asl) == ppi


def test_iasl_reads_the_ppi_methods_as_the_spec_has_them(tmp_path: Path) -> None:
    obj = tpm_aml.tpm_device(tpm_aml.KIND_TIS, tpm_version=2, address=0xFED40000, size=0x5000, ppi=True)
    code = "\n".join(
        line.split("//")[0].split("/*")[0] for line in disassemble(ssdt(obj), tmp_path).splitlines()
    )
    asl = " ".join(code.split())
    for fragment in [
        "Field (TPP2, AnyAcc, NoLock, Preserve) "
        "{ PPIN, 8, PPIP, 32, PPRP, 32, PPRQ, 32, PPRM, 32, LPPR, 32 }",
        "Field (TPP3, ByteAcc, NoLock, Preserve) { MOVV, 8 }",
        "If ((Arg0 >= 0x0100)) { Return (Zero) }",
        "OperationRegion (TPP1, SystemMemory, (0xFED45000 + Arg0), One)",
        'If ((Arg0 == ToUUID ("3dddfaa6-361b-4eb4-a424-8d10089d1653")',
        "If ((Arg2 == Zero)) { Return (Buffer (0x02) { 0xFF, 0x01 }) }",
        'If ((Arg2 == One)) { Return ("1.3") }',
        "If ((Arg2 == 0x02)) { Local0 = DerefOf (Arg3 [Zero]) Local1 = TPFN (Local0) "
        "If (((Local1 & 0x07) == Zero)) { Return (One) } PPRQ = Local0 PPRM = Zero Return (Zero) }",
        "If ((Arg1 == One)) { TPM2 [One] = PPRQ Return (TPM2) }",
        "If ((Arg1 == 0x02)) { TPM3 [One] = PPRQ TPM3 [0x02] = PPRM Return (TPM3) }",
        "If ((Arg2 == 0x04)) { Return (0x02) }",
        "If ((Arg2 == 0x05)) { TPM3 [One] = LPPR TPM3 [0x02] = PPRP Return (TPM3) }",
        "If ((Arg2 == 0x06)) { Return (0x03) }",
        "If (((Local1 & 0x07) == 0x02)) { Return (0x03) }",
        "If ((Arg1 == 0x02)) { PPRQ = Local0 PPRM = DerefOf (Arg3 [One]) }",
        "If ((Arg2 == 0x08)) { Local0 = DerefOf (Arg3 [Zero]) Local1 = TPFN (Local0) "
        "Return ((Local1 & 0x07)) }",
        "Return (Buffer (One) { 0x00 })",
        'If ((Arg0 == ToUUID ("376054ed-cc13-4675-901c-4756d7f2d45d")',
        "If ((Arg2 == Zero)) { Return (Buffer (One) { 0x03 }) }",
        "If ((Arg2 == One)) { Local0 = DerefOf (Arg3 [Zero]) MOVV = Local0 Return (Zero) }",
    ]:
        assert fragment in asl


def test_scope_and_name_of_each_frontend(tis_class: Any, tis_sysbus_class: Any, crb_class: Any) -> None:
    with (
        tis_class(tpmdev.backends.Builtin()) as tis,
        tis_sysbus_class(tpmdev.backends.Builtin()) as sysbus,
        crb_class(tpmdev.backends.Builtin()) as crb,
    ):
        assert tpm_aml.frontend_kind(tis) == tpm_aml.KIND_TIS
        assert tpm_aml.frontend_kind(sysbus) == tpm_aml.KIND_TIS_SYSBUS
        assert tpm_aml.frontend_kind(crb) == tpm_aml.KIND_CRB
        assert tpm_aml.device_scope(tis) == "\\_SB.PCI0.SF8"
        assert tpm_aml.device_scope(crb) == tpm_aml.device_scope(sysbus) == "\\_SB"
        assert (tpm_aml.device_name(tis), tpm_aml.device_name(sysbus)) == ("TPM", "TPM0")


@pytest.mark.parametrize(
    "call",
    [
        lambda: tpm_aml.frontend_kind(object()),
        lambda: tpm_aml.device_scope("spapr"),
        lambda: tpm_aml.device_name("i2c"),
        lambda: tpm_aml.tpm_device("isa", tpm_version=2, address=0, size=0x5000, ppi=False),
        lambda: tpm_aml.tpm_device("tis", tpm_version=3, address=0, size=0x5000, ppi=False),
        lambda: tpm_aml.tpm_device("tis", tpm_version=2, address=1 << 32, size=0x5000, ppi=False),
    ],
    ids=["not-a-frontend", "scope-kind", "name-kind", "kind", "version", "address"],
)
def test_bad_input(call: Any) -> None:
    with pytest.raises(ConfigurationError):
        call()
