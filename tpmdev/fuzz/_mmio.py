"""The register-access encoding the MMIO harnesses (TIS, CRB) share.

After a target's configuration byte, the input is a sequence of operations,
each an opcode byte ``op`` and its operands (multi-byte fields little-endian;
``size`` is ``sizes[(op >> 3) & 3]``, with ``sizes`` ``(1, 2, 4, 8)``, or
``(1, 2, 4, 4)`` for a device that takes no 8-byte access, the TIS;
``offset`` is a 16-bit field taken modulo the region size and pulled back so
that the access fits):

==========  =====================================  ================================
``op & 7``  operands                               operation
==========  =====================================  ================================
0, 6, 7     offset                                 ``read(offset, size)``
1           offset, ``size`` value bytes           ``write(offset, value, size)``
2           offset, count ``n``, ``n * size`` bytes ``write_many(offset, data, size)``
3           offset, count ``n``                    ``read_many(offset, n, size)``
4           --                                     ``reset()`` (machine reset)
5           --                                     ``poll()``
==========  =====================================  ================================

Every operation is a valid host call (in range, a size the device takes, a
value that fits), so anything it raises is a finding. :class:`MmioEncoder`
writes the same format (the seed corpus uses it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from tpmdev.fuzz._harness import STATS, Reader, check_contained, check_images, same

__all__ = [
    "SIZES",
    "OP_READ",
    "OP_WRITE",
    "OP_WRITE_MANY",
    "OP_READ_MANY",
    "OP_RESET",
    "OP_POLL",
    "MmioEncoder",
    "run_mmio",
]

SIZES = (1, 2, 4, 8)
OP_READ = 0
OP_WRITE = 1
OP_WRITE_MANY = 2
OP_READ_MANY = 3
OP_RESET = 4
OP_POLL = 5


def _offset(raw: int, size: int, region: int) -> int:
    offset = raw % region
    return offset if offset <= region - size else region - size


def run_mmio(
    reader: Reader,
    devices: list[Any],
    region: int,
    finish: Callable[[list[Any]], None],
    sizes: tuple[int, int, int, int] = SIZES,
) -> None:
    """Apply the operations of *reader* to *devices* in lockstep (see the module doc)."""
    pure = devices[0]
    ops = 0
    while not reader.done:
        op = reader.u8()
        kind = op & 7
        size = sizes[(op >> 3) & 3]
        ops += 1
        if kind == OP_WRITE:
            offset = _offset(reader.u16(), size, region)
            value = reader.uint(size)
            for dev in devices:
                dev.write(offset, value, size)
        elif kind == OP_WRITE_MANY:
            offset = _offset(reader.u16(), size, region)
            data = reader.take(reader.u8() * size)
            data = data[: len(data) - len(data) % size]
            for dev in devices:
                dev.write_many(offset, data, size)
            ops += len(data) // size
        elif kind == OP_READ_MANY:
            offset = _offset(reader.u16(), size, region)
            count = reader.u8()
            same(
                f"read_many({offset:#x}, {count}, {size})",
                [d.read_many(offset, count, size) for d in devices],
            )
            ops += count
        elif kind == OP_RESET:
            for dev in devices:
                dev.reset()
        elif kind == OP_POLL:
            same("poll()", [d.poll() for d in devices])
        else:
            offset = _offset(reader.u16(), size, region)
            if len(devices) == 1:
                pure.read(offset, size)
            else:
                same(f"read({offset:#x}, {size})", [d.read(offset, size) for d in devices])
    STATS.ops += ops
    check_contained(devices)
    check_images("mmio", [d.mmio for d in devices])
    finish(devices)


class MmioEncoder:
    """Builds an input in the MMIO format, after the target's configuration byte."""

    def __init__(self, config: int) -> None:
        self._out = bytearray([config & 0xFF])

    @staticmethod
    def _size_bits(size: int) -> int:
        return SIZES.index(size) << 3

    def read(self, offset: int, size: int = 4) -> MmioEncoder:
        self._out += bytes([OP_READ | self._size_bits(size)]) + offset.to_bytes(2, "little")
        return self

    def write(self, offset: int, value: int, size: int = 4) -> MmioEncoder:
        self._out += bytes([OP_WRITE | self._size_bits(size)]) + offset.to_bytes(2, "little")
        self._out += value.to_bytes(size, "little")
        return self

    def write_many(self, offset: int, data: bytes, size: int = 1) -> MmioEncoder:
        step = 255 * size
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            self._out += bytes([OP_WRITE_MANY | self._size_bits(size)]) + offset.to_bytes(2, "little")
            self._out += bytes([len(chunk) // size]) + chunk
        return self

    def read_many(self, offset: int, count: int, size: int = 1) -> MmioEncoder:
        while count > 0:
            n = min(count, 255)
            self._out += bytes([OP_READ_MANY | self._size_bits(size)]) + offset.to_bytes(2, "little")
            self._out += bytes([n])
            count -= n
        return self

    def reset(self) -> MmioEncoder:
        self._out.append(OP_RESET)
        return self

    def poll(self) -> MmioEncoder:
        self._out.append(OP_POLL)
        return self

    def trace(self, accesses: Iterable[tuple[str, int, int, int]]) -> MmioEncoder:
        """Append a driver's accesses (``(op, offset, size, value)``, op ``"r"`` or
        ``"w"``), runs of one-byte accesses to one register folded into
        ``write_many`` / ``read_many``."""
        pending: list[tuple[str, int, int, int]] = []

        def flush() -> None:
            if not pending:
                return
            op, offset, size, _ = pending[0]
            if len(pending) == 1:
                if op == "r":
                    self.read(offset, size)
                else:
                    self.write(offset, pending[0][3], size)
            elif op == "r":
                self.read_many(offset, len(pending), 1)
            else:
                self.write_many(offset, bytes(v for _, _, _, v in pending), 1)
            pending.clear()

        for access in accesses:
            op, offset, size, _ = access
            if pending and (size != 1 or (op, offset) != pending[0][:2]):
                flush()
            if size == 1:
                pending.append(access)
            else:
                flush()
                if op == "r":
                    self.read(offset, size)
                else:
                    self.write(offset, access[3], size)
        flush()
        return self

    def bytes(self) -> bytes:
        return bytes(self._out)
