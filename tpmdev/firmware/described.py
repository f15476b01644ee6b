"""The firmware-facing parts of the frontends that have an ACPI description
(TIS, TIS on sysbus, CRB).

* :class:`FirmwareDescribed`: ``aml()``, ``fw_cfg_files()``, ``acpi_tables()``;
  each hands the device to its builder in :mod:`tpmdev.firmware`, which reads
  the device's settings; nothing touches the registers.
* :class:`PhysicalPresence`: QEMU's ``ppi`` property (the ISA TIS and the
  CRB): the PPI page, its memory-overwrite request at reset, ``ppi_address``.
"""

from __future__ import annotations

from typing import Callable, Optional

from tpmdev._device import Device, check_callback, check_flag
from tpmdev.firmware import acpi as _acpi
from tpmdev.firmware import fw_cfg as _fw_cfg
from tpmdev.firmware import tpm_aml as _tpm_aml
from tpmdev.firmware.ppi import PpiPage

__all__ = ["FirmwareDescribed", "PhysicalPresence"]


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


class PhysicalPresence(Device):
    """Mixed into a frontend with QEMU's PPI page, before its device base
    (``class CRB(FirmwareDescribed, PhysicalPresence, MmioDevice)``).

    The frontend calls :meth:`_init_ppi` with its ``ppi`` and ``memory_clear``
    arguments before the device layer's ``__init__`` (whose first reset
    already runs the page's); every reset then handles the page's
    memory-overwrite request before the core's own reset, as QEMU's TIS and
    CRB reset handlers do.
    """

    #: The PPI page (``ppi=True``), or None.
    ppi: Optional[PpiPage]

    def _init_ppi(self, ppi: bool, memory_clear: Optional[Callable[[], object]]) -> None:
        self.ppi = PpiPage() if check_flag("ppi", ppi) else None
        clear = check_callback("memory_clear", memory_clear)
        self._memory_clear = None if clear is None else self._contain("memory_clear", clear)

    def _core_reset(self, tpm_version: int, bufsize: int) -> None:
        # QEMU's ISA TIS and CRB resets: the PPI page's memory-overwrite request first.
        if self.ppi is not None:
            self.ppi.reset(self._memory_clear)
        super()._core_reset(tpm_version, bufsize)

    @property
    def ppi_address(self) -> Optional[int]:
        """Where the PPI page sits (0xFED45000), or None without one."""
        return None if self.ppi is None else self.ppi.address
