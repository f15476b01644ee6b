"""Fuzz target: the TIS over I2C (QEMU's ``tpm-tis-i2c``): bus events and transactions.

Input: a configuration byte (bit 0: TPM 1.2 instead of TPM 2.0), then bus
operations, each an opcode byte ``op`` and its operands:

==========  ======================  ==========================================
``op & 7``  operands                operation (its result is compared)
==========  ======================  ==========================================
0           --                      ``i2c_start(recv=bool(op & 8))``
1           byte                    ``i2c_send(byte)``
2           --                      ``i2c_recv()``
3           --                      ``i2c_nack()``; with ``op & 8``: ``reset()``
4           --                      ``i2c_stop()``
5           ``n``, ``n`` bytes      ``i2c_write(data)`` (a whole transaction)
6           ``n``                   ``i2c_read(n)``
7           register, ``n``         ``i2c_read_reg(register, n)``
==========  ======================  ==========================================

The TIS register core behind the I2C layer runs pure and compiled in
lockstep (on the seeded builtin TPM); every result, the locality selection,
the checksum flag and the TIS image must agree.

Run: ``tpmdev fuzz tis_i2c`` or ``python -m tpmdev.fuzz.tis_i2c [libFuzzer flags] [CORPUS]``.
"""

from __future__ import annotations

from typing import Optional

from collections.abc import Iterable

import tpmdev
from tpmdev.fuzz._harness import (
    backends,
    STATS,
    Reader,
    check_contained,
    check_images,
    fuzz_main,
    pure_module,
    same,
    variants,
)

__all__ = ["TestOneInput", "main", "CONFIG_TPM12", "I2CEncoder"]

CONFIG_TPM12 = 0x01

OP_START = 0
OP_SEND = 1
OP_RECV = 2
OP_NACK = 3
OP_STOP = 4
OP_WRITE = 5
OP_READ = 6
OP_READ_REG = 7
#: With OP_START: a receive START; with OP_NACK: a machine reset instead.
FLAG = 0x08

_I2C = variants(tpmdev.TISI2C, "tis", "TisCore")


def TestOneInput(data: bytes) -> None:
    """Run one input (see the module doc); raises on a finding."""
    STATS.inputs += 1
    reader = Reader(data)
    config = reader.u8()
    version = 1 if config & CONFIG_TPM12 else 2
    devices = [cls(backend) for cls, backend in zip(_I2C, backends(version, len(_I2C)))]
    try:
        _run(reader, devices)
    finally:
        for dev in devices:
            dev.close()


def _run(reader: Reader, devices: list[tpmdev.TISI2C]) -> None:
    ops = 0
    while not reader.done:
        op = reader.u8()
        kind = op & 7
        ops += 1
        if kind == OP_START:
            recv = bool(op & FLAG)
            same(f"i2c_start({recv})", [d.i2c_start(recv) for d in devices])
        elif kind == OP_SEND:
            byte = reader.u8()
            same(f"i2c_send({byte:#x})", [d.i2c_send(byte) for d in devices])
        elif kind == OP_RECV:
            same("i2c_recv()", [d.i2c_recv() for d in devices])
        elif kind == OP_NACK:
            for dev in devices:
                if op & FLAG:
                    dev.reset()
                else:
                    dev.i2c_nack()
        elif kind == OP_STOP:
            for dev in devices:
                dev.i2c_stop()
        elif kind == OP_WRITE:
            payload = reader.take(reader.u8())
            same(f"i2c_write({payload.hex()})", [d.i2c_write(payload) for d in devices])
            ops += len(payload)
        elif kind == OP_READ:
            count = reader.u8()
            same(f"i2c_read({count})", [d.i2c_read(count) for d in devices])
            ops += count
        else:
            reg = reader.u8()
            count = reader.u8()
            same(f"i2c_read_reg({reg:#x}, {count})", [d.i2c_read_reg(reg, count) for d in devices])
            ops += count
    STATS.ops += ops
    same("locality", [d.locality for d in devices])
    same("checksum_enabled", [d.checksum_enabled for d in devices])
    check_contained(devices)
    check_images("TIS mmio", [d.core.mmio for d in devices])


class I2CEncoder:
    """Builds an input in this target's format."""

    def __init__(self, config: int = 0) -> None:
        self._out = bytearray([config & 0xFF])

    def start(self, recv: bool = False) -> I2CEncoder:
        self._out.append(OP_START | (FLAG if recv else 0))
        return self

    def send(self, byte: int) -> I2CEncoder:
        self._out += bytes([OP_SEND, byte])
        return self

    def recv(self) -> I2CEncoder:
        self._out.append(OP_RECV)
        return self

    def nack(self) -> I2CEncoder:
        self._out.append(OP_NACK)
        return self

    def stop(self) -> I2CEncoder:
        self._out.append(OP_STOP)
        return self

    def reset(self) -> I2CEncoder:
        self._out.append(OP_NACK | FLAG)
        return self

    def write(self, data: bytes) -> I2CEncoder:
        if len(data) > 255:  # the length is one byte: a seed splits longer writes itself
            raise ValueError("an encoded i2c_write carries at most 255 bytes")
        self._out += bytes([OP_WRITE, len(data)]) + data
        return self

    def read(self, count: int) -> I2CEncoder:
        self._out += bytes([OP_READ, count])
        return self

    def read_reg(self, reg: int, count: int) -> I2CEncoder:
        self._out += bytes([OP_READ_REG, reg, count])
        return self

    def trace(self, transfers: Iterable[tuple[str, bytes]]) -> I2CEncoder:
        """Append a driver's transfers (``("w", data)`` / ``("r", data read)``)."""
        for op, data in transfers:
            if op == "w":
                self.write(data)
            else:
                self.read(len(data))
        return self

    def bytes(self) -> bytes:
        return bytes(self._out)


def main(argv: Optional[list[str]] = None, module: Optional[str] = None) -> None:
    """Fuzz this target under libFuzzer; *argv* (default ``sys.argv``) holds libFuzzer's
    flags and corpus directories, *module* is given when run as ``python -m``."""
    fuzz_main(TestOneInput, (pure_module("tis"), "tpmdev.hw.tis_i2c", "tpmdev.tis_i2c"), argv, module)


if __name__ == "__main__":
    main(module=__spec__.name if __spec__ is not None else None)
