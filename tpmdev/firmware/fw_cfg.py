"""The fw_cfg files QEMU adds for its TPM (qemu-tpm-spec section 7).

QEMU hands firmware two files about the TPM through fw_cfg:

* ``etc/tpm/config`` -- six packed little-endian bytes: the guest-physical
  address of the Physical Presence Interface page (u32), the TPM version of
  the frontend when the ACPI tables were built (u8: 0 unknown, 1 TPM 1.2,
  2 TPM 2.0) and the PPI version (u8: 1, PPI 1.30). Only the PC machines
  (ISA TIS, CRB) add it, and only when the device's ``ppi`` property is on.
  SeaBIOS and OVMF read it to find the PPI page.
* ``etc/tpm/log`` -- the TCG event-log area. Whenever an ACPI TPM2 or TCPA
  table is built it holds 64 KiB of zeros: the firmware's table loader
  allocates it and patches the table's log-area address (LASA) to point at
  it. Otherwise QEMU still adds the file, with length 0 (a TPM of unknown
  version on a PC, or a TPM 1.2 on Arm ``virt``, which builds no table).

Which table a device gets is :func:`tpmdev.firmware.acpi.log_table`'s
decision; this module only follows it, so the two never disagree.

Observed on QEMU 7.2: ``etc/tpm/config`` is ``00 50 D4 FE 02 01`` (TPM 2.0)
or ``00 50 D4 FE 01 01`` (TPM 1.2) for the TIS and the CRB alike, absent with
``ppi=off`` and on Arm ``virt``; ``etc/tpm/log`` is 65536 zero bytes for a TIS
or CRB with either TPM version and for the sysbus TIS with TPM 2.0, and empty
for the sysbus TIS with TPM 1.2.
"""

from __future__ import annotations

import struct
from typing import Any

from tpmdev.errors import ConfigurationError
from tpmdev.firmware import acpi
from tpmdev.firmware import aml as A

__all__ = [
    "TPM_CONFIG_FILE",
    "TPM_LOG_FILE",
    "TPM_LOG_AREA_MINIMUM_SIZE",
    "TPM_PPI_VERSION_NONE",
    "TPM_PPI_VERSION_1_30",
    "tpm_config",
    "tpm_log",
    "fw_cfg_files",
]

#: fw_cfg file names
TPM_CONFIG_FILE = "etc/tpm/config"
TPM_LOG_FILE = "etc/tpm/log"

#: size of the event-log area QEMU reserves (and the tables' LAML)
TPM_LOG_AREA_MINIMUM_SIZE = acpi.TPM_LOG_AREA_MINIMUM_SIZE

#: ``tpmppi_version`` values of ``etc/tpm/config``
TPM_PPI_VERSION_NONE = 0
TPM_PPI_VERSION_1_30 = 1

_TPM_CONFIG = struct.Struct("<IBB")  # tpmppi_address, tpm_version, tpmppi_version


def tpm_config(ppi_address: int, tpm_version: int, ppi_version: int = TPM_PPI_VERSION_1_30) -> bytes:
    """The six bytes of ``etc/tpm/config``.

    :param ppi_address: guest-physical address of the PPI page (a u32).
    :param tpm_version: 0 (unknown), 1 (TPM 1.2) or 2 (TPM 2.0).
    :param ppi_version: 0 (no PPI) or 1 (PPI 1.30, what QEMU writes).
    """
    A.check_unsigned("ppi_address", ppi_address, 32)
    if isinstance(tpm_version, bool) or tpm_version not in (0, 1, 2):
        raise ConfigurationError(f"tpm_version must be 0 (unknown), 1 or 2, got {tpm_version!r}")
    if isinstance(ppi_version, bool) or ppi_version not in (TPM_PPI_VERSION_NONE, TPM_PPI_VERSION_1_30):
        raise ConfigurationError(f"ppi_version must be 0 (none) or 1 (PPI 1.30), got {ppi_version!r}")
    return _TPM_CONFIG.pack(ppi_address, tpm_version, ppi_version)


def tpm_log(with_table: bool) -> bytes:
    """The initial contents of ``etc/tpm/log``: 64 KiB of zeros when a TPM2 or
    TCPA table points at it, else empty."""
    return bytes(TPM_LOG_AREA_MINIMUM_SIZE) if with_table else b""


def fw_cfg_files(dev: Any) -> dict[str, bytes]:
    """The TPM's fw_cfg files for *dev* (a :class:`tpmdev.TIS`,
    :class:`tpmdev.TISSysbus` or :class:`tpmdev.CRB`), as QEMU adds them:
    ``etc/tpm/config`` on a PC platform with PPI, and ``etc/tpm/log`` always.
    """
    platform = acpi.platform_of(dev)
    files: dict[str, bytes] = {}
    if platform.pc and dev.ppi is not None:
        files[TPM_CONFIG_FILE] = tpm_config(dev.ppi.address, dev.tpm_version)
    # QUIRK: QEMU adds etc/tpm/log even when no table points at it (then empty).
    files[TPM_LOG_FILE] = tpm_log(acpi.log_table(dev) is not None)
    return files
