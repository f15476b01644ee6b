"""Fuzz target: the sPAPR vTPM's CRQ messages (QEMU's ``tpm-spapr``).

The device sits on :class:`tpmdev.drivers.spapr.SpaprPlatform` (guest RAM
behind a TCE table, the guest's registered queue), with a 4 KiB command
buffer mapped at :data:`BUFFER_IOBA`. Input: a configuration byte (bit 0:
TPM 1.2 instead of TPM 2.0), then operations, each an opcode byte ``op`` and
its operands (multi-byte fields little-endian unless said otherwise):

==========  ==========================  =======================================
``op & 7``  operands                    operation
==========  ==========================  =======================================
0           16 bytes                    ``receive_crq(entry)`` (H_SEND_CRQ)
1           ``len`` (2 bytes)           ``receive_crq`` of a TPM_COMMAND entry
                                        naming the command buffer
2           offset (2), ``n``, n bytes  guest writes into the command buffer
3           --                          ``poll()``
4           --                          ``reset()``
5           --                          the guest empties its queue
6           --                          the buffer is unmapped / mapped again
                                        (at the next free I/O address)
7           ``n`` (2), n bytes          a whole command into the buffer at 0
==========  ==========================  =======================================

sPAPR's core is plain Python only (not a hot module), so there is no
compiled variant to compare; the findings are exceptions out of the device,
a hypercall status other than H_SUCCESS / H_BUSY, an answer that is not a
16-byte entry, and a contained backend or host-callable error.

Run: ``tpmdev fuzz spapr`` or ``python -m tpmdev.fuzz.spapr [libFuzzer flags] [CORPUS]``.
"""

from __future__ import annotations

from typing import Optional

import tpmdev
from tpmdev.backends import Builtin
from tpmdev.drivers.spapr import PAGE_SIZE, SpaprPlatform
from tpmdev.fuzz._harness import STATS, Finding, Reader, check_contained, fuzz_main
from tpmdev.hw.spapr import (
    H_BUSY,
    H_SUCCESS,
    SPAPR_VTPM_BUFFER_MAX,
    SPAPR_VTPM_CRQ_SIZE,
    SPAPR_VTPM_TPM_COMMAND,
    SPAPR_VTPM_VALID_COMMAND,
    crq_entry,
)

__all__ = ["TestOneInput", "main", "CONFIG_TPM12", "BUFFER_IOBA", "CrqEncoder"]

CONFIG_TPM12 = 0x01

OP_CRQ = 0
OP_COMMAND = 1
OP_RAM = 2
OP_POLL = 3
OP_RESET = 4
OP_CONSUME = 5
OP_TOGGLE_MAP = 6
OP_LOAD = 7

_RAM_SIZE = 0x4000


class _Machine:
    """The platform of one input: queue at RAM page 1, command buffer at RAM page 2."""

    def __init__(self) -> None:
        self.platform = p = SpaprPlatform(_RAM_SIZE)
        self.queue_ram = p.alloc(PAGE_SIZE)
        queue_ioba = p.map(self.queue_ram, PAGE_SIZE)
        p.h_reg_crq(queue_ioba, PAGE_SIZE)
        self.buffer_ram = p.alloc(SPAPR_VTPM_BUFFER_MAX)
        self.buffer_ioba = p.map(self.buffer_ram, SPAPR_VTPM_BUFFER_MAX)
        self.mapped = True
        self.answers: list[bytes] = []

    def send_crq(self, entry: bytes) -> int:
        if type(entry) is not bytes or len(entry) != SPAPR_VTPM_CRQ_SIZE:
            raise Finding(f"send_crq got {entry!r}, not a 16-byte entry")
        self.answers.append(entry)
        return self.platform.send_crq(entry)

    def toggle_map(self) -> None:
        p = self.platform
        if self.mapped:
            p.unmap(self.buffer_ioba, SPAPR_VTPM_BUFFER_MAX)
        else:
            self.buffer_ioba = p.map(self.buffer_ram, SPAPR_VTPM_BUFFER_MAX)  # at a fresh I/O address
        self.mapped = not self.mapped


#: Where the command buffer is mapped first (the same in every input).
BUFFER_IOBA = _Machine().buffer_ioba


def TestOneInput(data: bytes) -> None:
    """Run one input (see the module doc); raises on a finding."""
    STATS.inputs += 1
    reader = Reader(data)
    config = reader.u8()
    version = 1 if config & CONFIG_TPM12 else 2
    m = _Machine()
    p = m.platform
    dev = tpmdev.SPAPR(
        Builtin(version, seed=0), dma_read=p.dma_read, dma_write=p.dma_write, send_crq=m.send_crq
    )
    try:
        ops = 0
        while not reader.done:
            op = reader.u8() & 7
            ops += 1
            status = H_SUCCESS
            if op == OP_CRQ:
                status = dev.receive_crq(reader.take(16).ljust(16, b"\0"))
            elif op == OP_COMMAND:
                entry = crq_entry(
                    SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_TPM_COMMAND, reader.u16(), m.buffer_ioba
                )
                status = dev.receive_crq(entry)
            elif op == OP_RAM:
                offset = reader.u16() % SPAPR_VTPM_BUFFER_MAX
                chunk = reader.take(reader.u8())[: SPAPR_VTPM_BUFFER_MAX - offset]
                p.ram[m.buffer_ram + offset : m.buffer_ram + offset + len(chunk)] = chunk
            elif op == OP_POLL:
                dev.poll()
            elif op == OP_RESET:
                dev.reset()
            elif op == OP_CONSUME:
                p.ram[m.queue_ram : m.queue_ram + PAGE_SIZE] = bytes(PAGE_SIZE)
            elif op == OP_TOGGLE_MAP:
                m.toggle_map()
            else:
                chunk = reader.take(reader.u16() % (SPAPR_VTPM_BUFFER_MAX + 1))
                p.ram[m.buffer_ram : m.buffer_ram + len(chunk)] = chunk
            if status not in (H_SUCCESS, H_BUSY):
                raise Finding(f"receive_crq returned {status!r}")
        STATS.ops += ops
        check_contained([dev])
    finally:
        dev.close()


class CrqEncoder:
    """Builds an input in this target's format."""

    def __init__(self, config: int = 0) -> None:
        self._out = bytearray([config & 0xFF])

    def crq(self, valid: int, msg: int, length: int = 0, data: int = 0, reserved: int = 0) -> CrqEncoder:
        self._out += bytes([OP_CRQ]) + crq_entry(valid, msg, length, data, reserved)
        return self

    def command(self, command: bytes) -> CrqEncoder:
        """The guest's whole exchange: the command into the buffer, then TPM_COMMAND."""
        self._out += bytes([OP_LOAD]) + len(command).to_bytes(2, "little") + command
        self._out += bytes([OP_COMMAND]) + len(command).to_bytes(2, "little")
        return self

    def tpm_command(self, length: int) -> CrqEncoder:
        """A TPM_COMMAND entry naming the command buffer wherever it is mapped now."""
        self._out += bytes([OP_COMMAND]) + length.to_bytes(2, "little")
        return self

    def ram(self, offset: int, data: bytes) -> CrqEncoder:
        self._out += bytes([OP_RAM]) + offset.to_bytes(2, "little") + bytes([len(data)]) + data
        return self

    def poll(self) -> CrqEncoder:
        self._out.append(OP_POLL)
        return self

    def reset(self) -> CrqEncoder:
        self._out.append(OP_RESET)
        return self

    def consume(self) -> CrqEncoder:
        self._out.append(OP_CONSUME)
        return self

    def toggle_map(self) -> CrqEncoder:
        self._out.append(OP_TOGGLE_MAP)
        return self

    def bytes(self) -> bytes:
        return bytes(self._out)


def main(argv: Optional[list[str]] = None, module: Optional[str] = None) -> None:
    """Fuzz this target under libFuzzer; *argv* (default ``sys.argv``) holds libFuzzer's
    flags and corpus directories, *module* is given when run as ``python -m``."""
    fuzz_main(TestOneInput, ("tpmdev.hw.spapr", "tpmdev.spapr"), argv, module)


if __name__ == "__main__":
    main(module=__spec__.name if __spec__ is not None else None)
