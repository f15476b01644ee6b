"""avatar2 adapter: a tpmdev MMIO device as an avatar2 Python peripheral.

avatar2 orchestrates targets (QEMU, unicorn, GDB, hardware debuggers) and
forwards accesses to memory ranges it emulates itself to a Python
*peripheral*: an ``AvatarPeripheral`` subclass whose read and write handlers
it calls with the offset in the range and the access size. avatar2 builds the
peripheral itself from the class given to ``add_memory_range(...,
emulate=cls, **kwargs)``, passing it the keyword arguments;
:class:`TpmPeripheral` takes the device as ``device=``. :func:`add_tpm` does
that in one call, at the device's platform address unless told otherwise.

Accesses wider than the device takes are cut as QEMU's memory core cuts them
(:mod:`tpmdev.adapters._mmio`). avatar2 calls peripherals from its own
message-handling thread, one access at a time: that thread drives the
device (a synchronous device needs nothing more; do not also drive it from
another thread).

Example (a unicorn target: no QEMU build needed)::

    from avatar2 import ARM, Avatar
    from avatar2.targets import UnicornTarget
    import tpmdev
    from tpmdev.adapters.avatar2 import add_tpm

    avatar = Avatar(arch=ARM)
    cpu = avatar.add_target(UnicornTarget)
    avatar.add_memory_range(0x1000, 0x1000, name="rom")
    add_tpm(avatar, tpmdev.TISSysbus(tpmdev.backends.Builtin()))   # at 0x0C000000
    avatar.init_targets()
"""

from __future__ import annotations

from typing import Any

from avatar2.peripherals.avatar_peripheral import AvatarPeripheral

from tpmdev.adapters import _mmio
from tpmdev.errors import ConfigurationError

__all__ = ["TpmPeripheral", "add_tpm"]


class TpmPeripheral(AvatarPeripheral):  # type: ignore[misc]
    """An avatar2 peripheral that is a tpmdev MMIO device (TIS, TISSysbus, CRB).

    Built by avatar2 as ``TpmPeripheral(name, address, size, device=dev)``;
    *size* must be the device's region size.
    """

    def __init__(self, name: str, address: int, size: int, device: Any = None, **kwargs: Any) -> None:
        if device is None:
            raise ConfigurationError(
                "TpmPeripheral needs the tpmdev device: add_memory_range(..., device=dev)"
            )
        region = _mmio.region_size(device)
        if size != region:
            raise ConfigurationError(
                f"the memory range is {size:#x} bytes but the {type(device).__name__} region is {region:#x}"
            )
        super().__init__(name, address, size, **kwargs)
        self.device = device
        self.read_handler[0:size] = self._read
        self.write_handler[0:size] = self._write

    # avatar2 may pass more keywords (``origin=`` in later versions); they change nothing here
    def _read(self, offset: int, size: int, **_: Any) -> int:
        return _mmio.read(self.device, offset, size)

    def _write(self, offset: int, size: int, value: int, **_: Any) -> bool:
        _mmio.write(self.device, offset, value, size)
        return True


def add_tpm(avatar: Any, dev: Any, base: int | None = None, *, name: str = "tpm") -> Any:
    """Add *dev* to *avatar* as an emulated memory range; returns avatar2's ``MemoryRange``.

    *base* defaults to the device's platform address. Call it before
    ``avatar.init_targets()`` (targets map the ranges they know when they start).
    """
    size = _mmio.region_size(dev)
    address = _mmio.device_base(dev, base)
    return avatar.add_memory_range(
        address, size, name=name, permissions="rw-", emulate=TpmPeripheral, device=dev
    )
