"""Qiling adapter: a tpmdev MMIO device in a Qiling instance's address space.

Qiling (the binary emulation framework on top of unicorn) maps MMIO with
``ql.mem.map_mmio``: in Qiling 1.4 ``(addr, size, read_cb, write_cb, info)``,
whose callbacks get the offset in the region and the access size; in later
versions ``(addr, size, handler, info)`` with a handler object having the
same ``read`` / ``write``. :func:`attach` takes either, maps the device's
whole region (at its platform address unless told otherwise) and turns each
access into the device's ``read`` / ``write``. Accesses wider than the device
takes are cut as QEMU's memory core cuts them (:mod:`tpmdev.adapters._mmio`).
Guest accesses never raise; the device runs on the thread that runs the
emulation.

Unicorn, under Qiling, hands MMIO callbacks naturally aligned accesses only:
an unaligned guest access arrives as the aligned ones that cover it, so an
unaligned read of DATA_FIFO consumes more FIFO bytes than the guest asked
for (guest drivers make aligned FIFO accesses; QEMU would cut the access to
the bytes asked).

This path has a Python frame per guest access (Qiling's callbacks are
Python); for a native path without one, map the device into the engine
underneath (``ql.uc``) with :mod:`tpmdev.adapters.unicorn`.

Example::

    from qiling import Qiling
    from qiling.const import QL_ARCH, QL_OS
    import tpmdev
    from tpmdev.adapters.qiling import attach

    ql = Qiling(code=guest_code, archtype=QL_ARCH.X8664, ostype=QL_OS.LINUX)
    dev = tpmdev.TIS(tpmdev.backends.Builtin())
    attach(ql, dev)                     # at 0xFED40000
    ql.run()
"""

from __future__ import annotations

import inspect
from typing import Any

from tpmdev.adapters import _mmio
from tpmdev.errors import ConfigurationError

__all__ = ["attach", "detach"]


def attach(ql: Any, dev: Any, base: int | None = None, *, name: str | None = None) -> tuple[int, int]:
    """Map *dev* (a TIS, TISSysbus or CRB) into *ql*'s memory at *base*.

    *base* defaults to the device's platform address (TIS 0xFED40000,
    TISSysbus 0x0C000000, CRB its ``address``). *name* labels the range in
    Qiling's memory map (default ``"[tpmdev <class>]"``). Returns
    ``(base, size)`` of the mapping. Raises :class:`tpmdev.ConfigurationError`
    for a device that is not memory-mapped, a bad base, or an instance without
    Qiling's ``mem.map_mmio``; Qiling's own error if the range is taken.
    """
    size = _mmio.region_size(dev)
    address = _mmio.device_base(dev, base)
    mem: Any = getattr(ql, "mem", None)
    if not callable(getattr(mem, "map_mmio", None)):
        raise ConfigurationError(f"{type(ql).__name__} has no mem.map_mmio: pass a qiling.Qiling instance")

    def read_cb(_ql: Any, offset: int, size: int) -> int:
        return _mmio.read(dev, offset, size)

    def write_cb(_ql: Any, offset: int, size: int, value: int) -> None:
        _mmio.write(dev, offset, value, size)

    info = name or f"[tpmdev {type(dev).__name__}]"
    if "read_cb" in inspect.signature(mem.map_mmio).parameters:  # Qiling 1.4
        mem.map_mmio(address, size, read_cb, write_cb, info=info)
    else:  # a handler object (QlMmioHandler)
        mem.map_mmio(address, size, _Handler(read_cb, write_cb), info)
    return address, size


class _Handler:
    """Qiling's MMIO handler protocol: ``read(ql, offset, size)``, ``write(ql, offset, size, value)``."""

    def __init__(self, read: Any, write: Any) -> None:
        self.read = read
        self.write = write


def detach(ql: Any, base: int, size: int) -> None:
    """Unmap a range :func:`attach` mapped (``(base, size)`` as it returned them)."""
    ql.mem.unmap(base, size)
