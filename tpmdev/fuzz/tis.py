"""Fuzz target: the TIS register surface (QEMU's ``tpm-tis`` / ``tpm-tis-device``).

Input: a configuration byte (bit 0: TPM 1.2 instead of TPM 2.0; bit 1: the
sysbus flavour, :class:`tpmdev.TISSysbus`), then register operations in the
encoding of :mod:`tpmdev.fuzz._mmio` over the 0x5000-byte region. The device
runs on the builtin TPM (seeded: deterministic), pure and compiled models in
lockstep; besides every value read and the MMIO image, the interrupt line's
changes must agree.

Run: ``tpmdev fuzz tis`` or ``python -m tpmdev.fuzz.tis [libFuzzer flags] [CORPUS]``.
"""

from __future__ import annotations

from typing import Any, Optional

import tpmdev
from tpmdev.fuzz._harness import backends, STATS, Reader, fuzz_main, pure_module, same, variants
from tpmdev.fuzz._mmio import run_mmio
from tpmdev.hw.regs import TIS_REGION_SIZE

__all__ = ["TestOneInput", "main", "CONFIG_TPM12", "CONFIG_SYSBUS"]

CONFIG_TPM12 = 0x01
CONFIG_SYSBUS = 0x02

#: The TIS takes no 8-byte access (QEMU: max_access_size 4).
TIS_SIZES = (1, 2, 4, 4)

_TIS = variants(tpmdev.TIS, "tis", "TisCore")
_SYSBUS = variants(tpmdev.TISSysbus, "tis", "TisCore")


def _finish(devices: list[Any]) -> None:
    same("irq line changes", [d.irq_trace for d in devices])
    same("active_locality", [d.active_locality for d in devices])


def TestOneInput(data: bytes) -> None:
    """Run one input (see the module doc); raises on a finding."""
    STATS.inputs += 1
    reader = Reader(data)
    config = reader.u8()
    version = 1 if config & CONFIG_TPM12 else 2
    devices = []
    classes = _SYSBUS if config & CONFIG_SYSBUS else _TIS
    for cls, backend in zip(classes, backends(version, len(classes))):
        trace: list[int] = []
        dev = cls(backend, irq=trace.append)
        dev.irq_trace = trace
        devices.append(dev)
    try:
        run_mmio(reader, devices, TIS_REGION_SIZE, _finish, TIS_SIZES)
    finally:
        for dev in devices:
            dev.close()


def main(argv: Optional[list[str]] = None, module: Optional[str] = None) -> None:
    """Fuzz this target under libFuzzer; *argv* (default ``sys.argv``) holds libFuzzer's
    flags and corpus directories, *module* is given when run as ``python -m``."""
    fuzz_main(TestOneInput, (pure_module("tis"), "tpmdev.tis"), argv, module)


if __name__ == "__main__":
    main(module=__spec__.name if __spec__ is not None else None)
