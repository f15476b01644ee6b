"""TIS over I2C: the I2C register interface of QEMU's ``tpm-tis-i2c`` (QEMU 8.0+).

Implements the TCG TPM I2C Interface Specification, Family 2.0, Level 00,
Revision 1.00, as QEMU's I2C slave presents it, on top of the TIS register
core (:class:`tpmdev.hw.tis.TisCore`). This layer only translates: every
TIS register semantic (arbitration, STS, FIFO, the command state machine)
stays in the wrapped core, reached through its ``read`` / ``write``.

This module is plain Python on purpose, not compiled: an I2C bus moves at
most 400 kbit/s in fast mode (1 Mbit/s in fast mode plus), some 25 (10)
microseconds a byte on the wire, against about a microsecond per byte here.

Theory of operation
-------------------

*Bus events.* A bus master (a simulator's I2C controller) drives the device
with the events of QEMU's I2C slave: :meth:`TisI2CCore.i2c_start` (START or
repeated START, in the send or the receive direction), :meth:`i2c_send`
(a byte from the master; the answer is ACK = True or NAK = False),
:meth:`i2c_recv` (a byte to the master), :meth:`i2c_nack` (the master's NAK
after its last byte; ignored, as by QEMU) and :meth:`i2c_stop` (STOP). The
device never polices their order: whatever a master does, it reacts as QEMU's
device reacts, and it never raises for it. :meth:`i2c_write`,
:meth:`i2c_read` and :meth:`i2c_read_reg` run whole transactions with those
events, as a bus master does.

*Transaction state* (QEMU's): the operation of the current transaction (none,
send or receive), an offset into a 5-byte buffer (byte 0 the register
address, bytes 1..4 a register value, least significant byte first), the
selected locality (``TPM_I2C_LOC_SEL``) and the checksum-enable flag.

*Writes.* The first byte of a write transaction selects the register: an
address the interface does not know, or ``TPM_I2C_DEVICE_ADDRESS`` (address
change is unsupported), is NAKed. Bytes for ``TPM_I2C_DATA_FIFO`` go to the
TIS FIFO one by one as they arrive, without limit. Bytes for any other
register are collected (up to four; a fifth value byte is NAKed) and written
at STOP as one TIS access: STS through the masks of the I2C specification,
INT_ENABLE as 0 (no interrupts over I2C), the locality selection and the
checksum flag kept here.

*Reads.* A register selected by a write that carried only its address
(the register pointer) is read by the next receive bytes, after a STOP or a
repeated START alike: the value is fetched once at the first byte and
returned least significant byte first, then zeros; the FIFO instead gives
one TIS FIFO byte per receive byte. The STOP of that read (or the START of
any write) clears the pointer; a read with no pointer gives zeros.

*Checksum.* ``TPM_I2C_DATA_CSUM`` reads the CRC-16/KERMIT of the shared TIS
buffer bytes ``[0, rw_offset)`` (the command bytes written so far, or the
response bytes read so far), sent high byte first. The enable flag is only
stored: QEMU neither checks nor appends checksums because of it.

*Completions.* A response posted to the TIS core from another thread is
applied at the next bus event, so every register and the checksum see it.

Where we differ from QEMU, on purpose: writes to the I2C-only registers
(``TPM_I2C_INT_CAPABILITY``, ``TPM_I2C_DATA_CSUM``) are not passed on; QEMU
passes them as a 4-byte write to a reserved TIS address, which ignores it.
"""

from __future__ import annotations

import operator
from typing import Any

from tpmdev.errors import AccessError
from tpmdev.hw.regs import (
    TIS_LOCALITY_SHIFT,
    TIS_NUM_LOCALITIES,
    TPM_I2C_CAP_BURST_COUNT_STATIC,
    TPM_I2C_DATA_CSUM,
    TPM_I2C_DATA_CSUM_ENABLE,
    TPM_I2C_DATA_CSUM_ENABLED,
    TPM_I2C_DATA_FIFO,
    TPM_I2C_DEVICE_ADDRESS,
    TPM_I2C_INT_CAPABILITY,
    TPM_I2C_INT_CAPABILITY_VALUE,
    TPM_I2C_INT_ENABLE,
    TPM_I2C_INT_ENABLE_MASK,
    TPM_I2C_INTERFACE_CAPABILITY,
    TPM_I2C_INTERFACE_CAPABILITY_VALUE,
    TPM_I2C_LOC_SEL,
    TPM_I2C_LOCAL_REGISTERS,
    TPM_I2C_STS,
    TPM_I2C_STS_READ_MASK,
    TPM_I2C_STS_WRITE_MASK,
    TPM_I2C_TO_TIS,
    TPM_INTF_BURST_COUNT_STATIC,
)
from tpmdev.hw.tis import TisCore

__all__ = ["TisI2CCore", "crc16_kermit", "I2C_READ_MAX"]

#: The most bytes one :meth:`TisI2CCore.i2c_read` may ask for (a sanity bound
#: on host arguments, far above any TPM buffer).
I2C_READ_MAX = 0x1000000

_OP_NONE = 0
_OP_SEND = 1
_OP_RECV = 2

#: register byte + a 4-byte value
_DATA_SIZE = 5

#: TIS address of a register the I2C layer keeps itself
_LOCAL = -1

#: x^16 + x^12 + x^5 + 1, bit-reversed (CRC-CCITT processed LSB first)
_CRC_POLY_REFLECTED = 0x8408


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_kermit(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/KERMIT (the reflected CCITT polynomial 0x8408, initial value 0,
    no final XOR) of *data*: QEMU's and Linux's ``crc_ccitt(0, ...)``.
    ``crc16_kermit(b"123456789") == 0x2189``."""
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


class TisI2CCore:
    """The I2C slave interface of a TPM, around a TIS register core.

    *tis* is the :class:`~tpmdev.hw.tis.TisCore` (compiled or pure) that
    holds the registers. For QEMU's behaviour it is built with
    ``int_any_locality=True``: QEMU's I2C device came with the TIS core that
    takes INT_ENABLE and INT_STATUS writes from any locality.
    """

    def __init__(self, tis: TisCore) -> None:
        self.tis = tis
        self._operation = _OP_NONE
        self._offset = 0
        self._data = bytearray(_DATA_SIZE)
        self._tis_addr = _LOCAL
        self._loc_sel = 0
        self._csum_enable = 0

    # ------------------------------------------------------------------
    # Bus events, as QEMU's I2C slave receives them.
    # ------------------------------------------------------------------
    def i2c_start(self, recv: bool = False) -> bool:
        """START (or repeated START) addressed to this device; *recv* is the
        direction (True: the master reads). Returns True: the device ACKs
        its address."""
        self.tis.poll()
        if not recv:
            self._clear()
        return True

    def i2c_send(self, byte: int) -> bool:
        """A byte written by the master. Returns True for ACK, False for NAK."""
        value = _check_byte("i2c_send", byte)
        self.tis.poll()
        if self._offset == 0:
            if not self._select(value):
                return False  # unknown register or address change: NAK
        if self._offset >= _DATA_SIZE:
            return False  # a fifth value byte: NAK
        self._operation = _OP_SEND
        if self._offset == 0 or self._data[0] != TPM_I2C_DATA_FIFO:
            self._data[self._offset] = value
            self._offset += 1
        else:
            # FIFO bytes go straight to the TIS, one 1-byte access each
            self.tis.write(self._tis_addr, value, 1)
        return True

    def i2c_recv(self) -> int:
        """A byte read by the master."""
        self.tis.poll()
        if self._operation == _OP_RECV:
            if self._data[0] == TPM_I2C_DATA_FIFO:
                return int(self.tis.read(self._tis_addr, 1))
            if self._offset < _DATA_SIZE:
                value = self._data[self._offset]
                self._offset += 1
                return value
            return 0
        if self._operation == _OP_SEND and self._offset < 2:
            # first byte after a register pointer: fetch the value once
            self._operation = _OP_RECV
            value = self._fetch(self._data[0])
            self._data[1:] = value.to_bytes(4, "little")
            self._offset = 2
            return self._data[1]
        # QUIRK: no register pointer, or value bytes written without a STOP
        # before this read: the bytes read are 0 (the rest of the cleared
        # transaction buffer), and the pending register write is lost at
        # the STOP.
        self._operation = _OP_RECV
        return 0

    def i2c_nack(self) -> None:
        """The master NAKed the byte it read (its last). Ignored, as by QEMU."""
        self.tis.poll()

    def i2c_stop(self) -> None:
        """STOP: a collected register write is carried out."""
        self.tis.poll()
        if self._operation == _OP_SEND:
            if self._offset > 1:
                self._commit()
                self._clear()
            # a register pointer alone (or FIFO bytes) survives, for a read
        else:
            self._clear()

    # ------------------------------------------------------------------
    # Whole transactions, as a bus master runs them.
    # ------------------------------------------------------------------
    def i2c_write(self, data: object) -> int:
        """One write transaction: START, the register address and the value
        bytes of *data*, STOP. The master stops sending at the first NAK.

        Returns how many bytes the device ACKed: ``len(data)`` when all were
        taken, 0 for an unknown register, 5 for an over-long register write
        (its first four value bytes are written at the STOP).
        """
        raw = _check_data(data)
        acked = 0
        self.i2c_start(False)
        for byte in raw:
            if not self.i2c_send(byte):
                break
            acked += 1
        self.i2c_stop()
        return acked

    def i2c_read(self, count: object) -> bytes:
        """One read transaction of *count* bytes (START, *count* bytes, the
        master's NAK after the last one, STOP) from the register a previous
        write selected. With no register selected the bytes read 0."""
        n = _check_count("i2c_read", count)
        self.i2c_start(True)
        out = bytes(self.i2c_recv() for _ in range(n))
        if n:
            self.i2c_nack()
        self.i2c_stop()
        return out

    def i2c_read_reg(self, reg: object, count: object) -> bytes:
        """A combined transaction: write the register address *reg*, repeated
        START, read *count* bytes, STOP (least significant byte first).

        If the device NAKs the address (an unknown register), the master
        stops there and reads nothing: the result is *count* bytes of 0xFF,
        the idle bus level, which is what a controller reports for a transfer
        it abandoned (QEMU's own test reads 0xFFFFFFFF so).
        """
        address = _check_byte("i2c_read_reg", reg)
        n = _check_count("i2c_read_reg", count)
        self.i2c_start(False)
        if not self.i2c_send(address):
            self.i2c_stop()
            return b"\xff" * n
        self.i2c_start(True)
        out = bytes(self.i2c_recv() for _ in range(n))
        if n:
            self.i2c_nack()
        self.i2c_stop()
        return out

    # ------------------------------------------------------------------
    # Translation.
    # ------------------------------------------------------------------
    def _select(self, reg: int) -> bool:
        """Latch the TIS address behind *reg*; False if *reg* gets a NAK."""
        if reg == TPM_I2C_DEVICE_ADDRESS:
            return False  # changing the device address is not supported
        if reg in TPM_I2C_LOCAL_REGISTERS:
            self._tis_addr = _LOCAL
            return True
        tis_reg = TPM_I2C_TO_TIS.get(reg)
        if tis_reg is None:
            return False
        self._tis_addr = (self._loc_sel << TIS_LOCALITY_SHIFT) + tis_reg
        return True

    def _fetch(self, reg: int) -> int:
        """The 32-bit value a read of register *reg* returns."""
        if reg == TPM_I2C_LOC_SEL:
            return self._loc_sel
        if reg == TPM_I2C_DATA_CSUM_ENABLE:
            return self._csum_enable
        if reg == TPM_I2C_INT_CAPABILITY:
            return TPM_I2C_INT_CAPABILITY_VALUE
        if reg == TPM_I2C_DATA_CSUM:
            return self.data_checksum()
        if reg == TPM_I2C_DATA_FIFO:
            return int(self.tis.read(self._tis_addr, 1))
        value = int(self.tis.read(self._tis_addr, 4))
        if reg == TPM_I2C_INTERFACE_CAPABILITY:
            cap = TPM_I2C_INTERFACE_CAPABILITY_VALUE
            if value & TPM_INTF_BURST_COUNT_STATIC:
                cap |= TPM_I2C_CAP_BURST_COUNT_STATIC
            return cap
        if TPM_I2C_STS <= reg <= TPM_I2C_STS + 3:
            # the family bits and the write-only bits read as zero
            return (value & TPM_I2C_STS_READ_MASK) >> (8 * (reg - TPM_I2C_STS))
        return value

    def _commit(self) -> None:
        """Carry out the register write collected in this transaction."""
        reg = self._data[0]
        if reg == TPM_I2C_DATA_CSUM_ENABLE:
            self._csum_enable = self._data[1] & TPM_I2C_DATA_CSUM_ENABLED
            return
        if reg == TPM_I2C_LOC_SEL:
            if self._data[1] < TIS_NUM_LOCALITIES:
                self._loc_sel = self._data[1]
            return
        if self._tis_addr == _LOCAL:
            return  # INT_CAPABILITY, DATA_CSUM: read-only, nothing behind them
        value = int.from_bytes(self._data[1:], "little")
        lane = 0
        size = 4
        if reg == TPM_I2C_INT_ENABLE:
            value &= TPM_I2C_INT_ENABLE_MASK
        elif TPM_I2C_STS <= reg <= TPM_I2C_STS + 3:
            # a whole-register write at STS, a single byte at STS + 1..3
            lane = reg - TPM_I2C_STS
            value &= TPM_I2C_STS_WRITE_MASK >> (8 * lane)
            if lane:
                size = 1
                value &= 0xFF
        self.tis.write(self._tis_addr + lane, value, size)

    def _clear(self) -> None:
        self._operation = _OP_NONE
        self._offset = 0
        self._tis_addr = _LOCAL
        self._data[:] = bytes(_DATA_SIZE)

    # ------------------------------------------------------------------
    # Checksum, reset, inspection.
    # ------------------------------------------------------------------
    def data_checksum(self) -> int:
        """``TPM_I2C_DATA_CSUM`` as the register holds it: the CRC-16/KERMIT
        of TIS buffer bytes ``[0, rw_offset)`` with its bytes swapped, so
        that the least-significant-first wire order sends the CRC's high
        byte first. (QUIRK: when FIFO reads took rw_offset past the buffer,
        QEMU's CRC runs on into the bytes after it; so does this one.)"""
        crc = crc16_kermit(self.tis.transferred)
        return ((crc & 0xFF) << 8) | (crc >> 8)

    def reset(self, tpm_version: int, bufsize: int) -> None:
        """Machine reset: the transaction state, the locality selection and
        the checksum flag are cleared, then the TIS core is reset."""
        self._clear()
        self._csum_enable = 0
        self._loc_sel = 0
        self.tis.reset(tpm_version, bufsize)

    @property
    def locality(self) -> int:
        """The locality selected through ``TPM_I2C_LOC_SEL`` (0..4)."""
        return self._loc_sel

    @property
    def checksum_enabled(self) -> bool:
        """The stored ``TPM_I2C_DATA_CSUM_ENABLE`` flag."""
        return bool(self._csum_enable)

    # ------------------------------------------------------------------
    # State capture (migration, snapshots)
    # ------------------------------------------------------------------
    def capture(self) -> tuple[object, ...]:
        """The I2C layer's own state (the TIS core's is captured by the
        core): ``(operation, offset, data, tis_addr, loc_sel, csum_enable)``.
        QEMU's "tpm-tis-i2c" VMState has all of them but ``tis_addr``, which
        its destination works out again after the load; so does
        :meth:`restore` (the field stays in the tuple for the state format's
        layout, and a restore ignores it)."""
        return (
            self._operation,
            self._offset,
            bytes(self._data),
            self._tis_addr,
            self._loc_sel,
            self._csum_enable,
        )

    def restore(self, state: tuple[Any, ...]) -> None:
        """Put back a :meth:`capture` (checked by the owner)."""
        self._operation = state[0]
        self._offset = state[1]
        self._data[:] = state[2]
        self._loc_sel = state[4]
        self._csum_enable = state[5]
        # As QEMU after a load: the TIS address from the register the
        # transaction addressed (data[0], once a byte came) and the locality
        # selected; state[3] is not trusted (a bad one would reach past the
        # TIS region on the guest's next access).
        self._tis_addr = _LOCAL
        if self._offset >= 1:
            self._select(self._data[0])


def _as_int(value: object) -> int | None:
    """*value* as an int if it is an integer (``__index__``, numpy's too) and
    not a bool, else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_byte(op: str, value: object) -> int:
    byte = _as_int(value)
    if byte is None or not 0 <= byte <= 0xFF:
        raise AccessError(f"TIS I2C {op}: a bus byte must be an int 0..255, got {value!r}")
    return byte


def _check_count(op: str, count: object) -> int:
    n = _as_int(count)
    if n is None or not 0 <= n <= I2C_READ_MAX:
        raise AccessError(
            f"TIS I2C {op}: the byte count must be an int 0 .. 0x{I2C_READ_MAX:X}, got {count!r}"
        )
    return n


def _check_data(data: object) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AccessError(
            f"TIS I2C i2c_write: data must be bytes-like (register address, then value bytes), "
            f"got {type(data).__name__}"
        )
    return bytes(data)
