"""What QEMU hands a guest's firmware about its TPM, built from a device's own
configuration so the two can never disagree: the fw_cfg files, the ACPI
description (device AML with the Physical Presence Interface, the TPM2 and
TCPA tables), the PPI page and the TCG event log.

The builders are pure Python above the devices: they read a frontend's
settings (kind, TPM version, addresses, ``ppi``) and the register map; the
register cores know nothing of them. See qemu-tpm-spec sections 6 to 8.
"""

from __future__ import annotations

__all__: list[str] = []
