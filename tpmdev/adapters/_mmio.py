"""What the simulator adapters share: where a device goes, and accesses cut as QEMU's memory core cuts them.

A simulator hands a device the accesses its CPU made: 1, 2, 4 or 8 bytes at
any offset. QEMU's TPM devices take at most four bytes at a time (the CRB
model of tpmdev takes eight and cuts them itself); QEMU's memory core cuts a
wider access into naturally aligned four-byte pieces, lowest address first,
and the device cores cut unaligned ones the same way. :func:`read` and
:func:`write` do the first cut for devices that take no eight-byte access,
so every adapter hands the device exactly what QEMU would.
"""

from __future__ import annotations

from typing import Any

import tpmdev
from tpmdev.errors import ConfigurationError

__all__ = ["device_base", "region_size", "read", "write"]


def device_base(dev: Any, base: int | None) -> int:
    """*base*, or where the platform maps *dev* (TIS: ``base_address``; CRB: ``address``)."""
    if base is None:
        base = dev.address if isinstance(dev, tpmdev.CRB) else getattr(dev, "base_address", None)
        if base is None:
            raise ConfigurationError(f"{type(dev).__name__} has no platform address: pass base=")
    if isinstance(base, bool) or not isinstance(base, int) or base < 0 or base % 0x1000:
        raise ConfigurationError(f"base must be a page-aligned address (an int), got {base!r}")
    return int(base)


def region_size(dev: Any) -> int:
    """The size of *dev*'s MMIO region; a ConfigurationError for a device without one."""
    size = getattr(dev, "region_size", None)
    if not isinstance(size, int) or not hasattr(dev, "read") or not hasattr(dev, "write"):
        raise ConfigurationError(
            f"{type(dev).__name__} is not a memory-mapped TPM device (TIS, TISSysbus or CRB)"
        )
    return size


def _takes_8(dev: Any) -> bool:
    return isinstance(dev, tpmdev.CRB)


def read(dev: Any, offset: int, size: int) -> int:
    """A guest read of *size* bytes at *offset*, as QEMU's memory core hands it to *dev*."""
    if size == 8 and not _takes_8(dev):
        return int(dev.read(offset, 4)) | (int(dev.read(offset + 4, 4)) << 32)
    return int(dev.read(offset, size))


def write(dev: Any, offset: int, value: int, size: int) -> None:
    """A guest write of the *size*-byte *value* at *offset*, as QEMU's memory core hands it to *dev*."""
    value &= (1 << (8 * size)) - 1
    if size == 8 and not _takes_8(dev):
        dev.write(offset, value & 0xFFFFFFFF, 4)
        dev.write(offset + 4, value >> 32, 4)
    else:
        dev.write(offset, value, size)
