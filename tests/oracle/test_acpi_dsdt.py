"""``dev.aml()`` against the ``Device (TPM)`` of QEMU 7.2's own DSDT, byte for byte.

One QEMU per configuration (module-scoped): q35 with ``tpm-tis`` (TPM 2.0
with and without PPI, TPM 1.2), q35 with ``tpm-crb`` (PPI on and off), and
Arm ``virt`` with ``tpm-tis-device``, each on its swtpm, stopped (``-S``):
QEMU builds its ACPI tables at machine init, so fw_cfg's
``etc/acpi/tables`` is there before any firmware ran. The DSDT is split out
of the blob, the TPM device object found by walking the AML
(:mod:`tests.oracle.fwcfg`), and compared with ``dev.aml()`` of a tpmdev
device with the same settings. Spec sections 6.1, 8.1 and 10.5.

Where the live QEMU and qemu-tpm-spec disagree, the live QEMU wins; on these
configurations they agree (object order, the ISA TIS in ``\\_SB.PCI0.SF8``
on q35, ``TPM0`` with ``_UID`` 0 on virt, function 3 of the PPI ``_DSM``
falling through to ``Buffer {0}`` for revisions other than 1 and 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from iasl_check import disassemble, ssdt

import tpmdev.backends
from tpmdev.firmware import aml as A
from tpmdev.firmware import tpm_aml

from . import fwcfg
from .qtest import Qemu, Swtpm

pytestmark = pytest.mark.oracle


@dataclass(frozen=True)
class Config:
    device: str  # QEMU's
    tpm2: bool
    ppi: bool

    @property
    def id(self) -> str:
        return f"{self.device}-{'tpm2' if self.tpm2 else 'tpm12'}{'' if self.ppi else '-noppi'}"


CONFIGS = [
    Config("tpm-tis", True, True),
    Config("tpm-tis", True, False),
    Config("tpm-tis", False, True),
    Config("tpm-crb", True, True),
    Config("tpm-crb", True, False),
    Config("tpm-tis-device", True, False),  # the sysbus TIS has no ppi property
]


class _Qemu(Qemu):
    """The harness's QEMU with the TPM device's ``ppi`` property set."""

    def __init__(self, *args: Any, ppi: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ppi = ppi

    def _device_arg(self) -> str:
        arg = super()._device_arg()
        return arg if self.device == "tpm-tis-device" else f"{arg},ppi={'on' if self.ppi else 'off'}"


@dataclass
class Machine:
    config: Config
    qemu: Qemu
    tables: dict[str, list[bytes]]

    @property
    def dsdt(self) -> bytes:
        (table,) = self.tables["DSDT"]
        return table


@pytest.fixture(scope="module", params=CONFIGS, ids=[c.id for c in CONFIGS])
def machine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    config: Config = request.param
    workdir = tmp_path_factory.mktemp(config.id)
    sw = Swtpm(workdir, tpm2=config.tpm2).start()
    try:
        with _Qemu(workdir, sw, device=config.device, ppi=config.ppi) as qemu:
            qemu.start()
            yield Machine(config, qemu, fwcfg.acpi_tables(qemu))
    finally:
        sw.close()


def _tpmdev_aml(config: Config, tis_class: Any, tis_sysbus_class: Any, crb_class: Any) -> bytes:
    backend = tpmdev.backends.Builtin(tpm_version=2 if config.tpm2 else 1)
    if config.device == "tpm-tis-device":
        dev = tis_sysbus_class(backend)
    elif config.device == "tpm-tis":
        dev = tis_class(backend, ppi=config.ppi)
    else:
        dev = crb_class(backend, ppi=config.ppi)
    with dev:
        aml: bytes = dev.aml()
    return aml


def test_device_object_is_qemus(
    machine: Machine, tis_class: Any, tis_sysbus_class: Any, crb_class: Any
) -> None:
    config = machine.config
    name = "TPM0" if config.device == "tpm-tis-device" else "TPM"
    qemu_obj = fwcfg.aml_object(machine.dsdt, name)
    ours = _tpmdev_aml(config, tis_class, tis_sysbus_class, crb_class)
    assert ours.hex(" ") == qemu_obj.hex(" ")


def test_device_sits_where_device_scope_says(machine: Machine) -> None:
    kind = {"tpm-tis": "tis", "tpm-crb": "crb", "tpm-tis-device": "tis-sysbus"}[machine.config.device]
    paths = [p for k, p, _, _ in fwcfg.aml_named_objects(machine.dsdt) if k == "Device"]
    expected = tpm_aml.device_scope(kind).lstrip("\\") + "." + tpm_aml.device_name(kind)
    assert expected in paths


def test_pci0_crs_has_the_isa_tis_window(machine: Machine) -> None:
    """Not part of the device object: q35 also lists the ISA TIS's window in PCI0._CRS (so twice
    in the DSDT); the CRB's and the sysbus TIS's windows only in their device."""
    window = A.memory32_fixed(0xFED40000, 0x5000)
    expected = {"tpm-tis": 2, "tpm-crb": 0, "tpm-tis-device": 0}[machine.config.device]
    assert machine.dsdt.count(window) == expected


def test_iasl_disassembles_our_object_in_an_ssdt(
    machine: Machine, tis_class: Any, tis_sysbus_class: Any, crb_class: Any, tmp_path: Path
) -> None:
    kind = {"tpm-tis": "tis", "tpm-crb": "crb", "tpm-tis-device": "tis-sysbus"}[machine.config.device]
    ours = _tpmdev_aml(machine.config, tis_class, tis_sysbus_class, crb_class)
    disassemble(ssdt(A.scope(tpm_aml.device_scope(kind), ours)), tmp_path)


def test_fw_cfg_byte_reads_agree_with_dma(machine: Machine) -> None:
    """The reader itself: the DMA path and the byte-by-byte path read the same file."""
    dma = fwcfg.FwCfg(machine.qemu)
    pio = fwcfg.FwCfg(machine.qemu, dma=False)
    assert dma.dma
    assert dma.files() == pio.files()
    name = "etc/tpm/config" if "etc/tpm/config" in dma.files() else "etc/acpi/rsdp"
    assert dma.read_file(name) == pio.read_file(name)
    assert len(dma.read_file(name)) == dma.files()[name][1] > 0
