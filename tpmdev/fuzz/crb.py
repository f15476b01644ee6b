"""Fuzz target: the CRB register surface (QEMU's ``tpm-crb``, and the five-locality PTP layout).

Input: a configuration byte (bit 0: TPM 1.2 instead of TPM 2.0; bit 1: five
localities, a 0x5000-byte region, instead of QEMU's one), then register
operations in the encoding of :mod:`tpmdev.fuzz._mmio`. The data buffer is
part of the region: the image compared at the end includes it. The device
runs on the builtin TPM (seeded: deterministic), pure and compiled models in
lockstep.

Run: ``tpmdev fuzz crb`` or ``python -m tpmdev.fuzz.crb [libFuzzer flags] [CORPUS]``.
"""

from __future__ import annotations

from typing import Any, Optional

import tpmdev
from tpmdev.fuzz._harness import backends, STATS, Reader, fuzz_main, pure_module, same, variants
from tpmdev.fuzz._mmio import run_mmio

__all__ = ["TestOneInput", "main", "CONFIG_TPM12", "CONFIG_LOCALITIES5"]

CONFIG_TPM12 = 0x01
CONFIG_LOCALITIES5 = 0x02

_CRB = variants(tpmdev.CRB, "crb", "CrbCore")


def _finish(devices: list[Any]) -> None:
    same("active_locality", [d.active_locality for d in devices])


def TestOneInput(data: bytes) -> None:
    """Run one input (see the module doc); raises on a finding."""
    STATS.inputs += 1
    reader = Reader(data)
    config = reader.u8()
    version = 1 if config & CONFIG_TPM12 else 2
    localities = 5 if config & CONFIG_LOCALITIES5 else 1
    devices = [
        cls(backend, localities=localities) for cls, backend in zip(_CRB, backends(version, len(_CRB)))
    ]
    try:
        run_mmio(reader, devices, devices[0].region_size, _finish)
    finally:
        for dev in devices:
            dev.close()


def main(argv: Optional[list[str]] = None, module: Optional[str] = None) -> None:
    """Fuzz this target under libFuzzer; *argv* (default ``sys.argv``) holds libFuzzer's
    flags and corpus directories, *module* is given when run as ``python -m``."""
    fuzz_main(TestOneInput, (pure_module("crb"), "tpmdev.crb"), argv, module)


if __name__ == "__main__":
    main(module=__spec__.name if __spec__ is not None else None)
