"""The firmware-facing methods of the frontends that have an ACPI description
(TIS, TIS on sysbus, CRB): each hands the device to its builder in
:mod:`tpmdev.firmware`, which reads the device's settings; nothing here
touches the registers."""

from __future__ import annotations

from tpmdev.firmware import acpi as _acpi
from tpmdev.firmware import fw_cfg as _fw_cfg
from tpmdev.firmware import tpm_aml as _tpm_aml

__all__ = ["FirmwareDescribed"]


class FirmwareDescribed:
    """Mixed into a frontend class: ``aml()``, ``fw_cfg_files()`` and
    ``acpi_tables()``, built as QEMU builds them for that frontend."""

    def aml(self) -> bytes:
        """The ``Device (TPM)`` object QEMU puts in its DSDT for this device
        (``Device (TPM0)`` for the sysbus TIS): :func:`tpmdev.firmware.tpm_aml.device_aml`."""
        return _tpm_aml.device_aml(self)

    def fw_cfg_files(self) -> dict[str, bytes]:
        """The fw_cfg files QEMU adds for this device (``etc/tpm/config``,
        ``etc/tpm/log``): :func:`tpmdev.firmware.fw_cfg.fw_cfg_files`."""
        return _fw_cfg.fw_cfg_files(self)

    def acpi_tables(
        self,
        *,
        log_address: int = 0,
        oem_id: str = _acpi.DEFAULT_OEM_ID,
        oem_table_id: str = _acpi.DEFAULT_OEM_TABLE_ID,
    ) -> dict[str, bytes]:
        """The ACPI tables of this device (TPM2 or TCPA, and an SSDT with
        :meth:`aml`): :func:`tpmdev.firmware.acpi.acpi_tables`."""
        return _acpi.acpi_tables(self, log_address=log_address, oem_id=oem_id, oem_table_id=oem_table_id)
