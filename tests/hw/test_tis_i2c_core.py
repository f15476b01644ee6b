"""The TIS-over-I2C layer around the TIS core, on both core variants.

The test plays the device layer as ``tests/hw/test_tis_core.py`` does:
commands are answered at once with TPM_RC_FAILURE, like the fake emulator
of QEMU's qtests (spec 10.0), so QEMU's tpm-tis-i2c-test (10.3) runs here
with its own expected values, checksum included. Then every bus case QEMU's
device handles on its own: NAKs, over-long writes, reads without a
register, zero-length transfers, transactions cut short, and host misuse.
QEMU 7.2 has no tpm-tis-i2c; the reference is spec sections 2 and 10.3.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from tis_i2c_qtest import QEMU_TESTS, STARTUP, QtestI2C

from tpmdev import AccessError
from tpmdev.hw import regs as R
from tpmdev.hw.tis import REQUEST_CANCEL, REQUEST_COMMAND, REQUEST_ESTABLISHED
from tpmdev.hw.tis_i2c import TisI2CCore, crc16_kermit

RC_FAILURE = bytes.fromhex("8001 0000000a 00000101")
GETRANDOM = bytes.fromhex("8001 0000000c 0000017b 0008")
RESPONSE = bytes.fromhex("8001 00000014 00000000 0008 0102030405060708")

KNOWN = {
    R.TPM_I2C_LOC_SEL,
    R.TPM_I2C_ACCESS,
    R.TPM_I2C_INT_ENABLE,
    R.TPM_I2C_INT_CAPABILITY,
    R.TPM_I2C_STS,
    R.TPM_I2C_STS + 1,
    R.TPM_I2C_STS + 2,
    R.TPM_I2C_STS + 3,
    R.TPM_I2C_DATA_FIFO,
    R.TPM_I2C_INTERFACE_CAPABILITY,
    R.TPM_I2C_DATA_CSUM_ENABLE,
    R.TPM_I2C_DATA_CSUM,
    R.TPM_I2C_DID_VID,
    R.TPM_I2C_RID,
}


class Harness:
    """An I2C layer around a TIS core of the variant under test."""

    def __init__(self, core_class: type, tpm_version: int = 2, *, auto: bytes | None = RC_FAILURE) -> None:
        self.commands: list[tuple[int, bytes]] = []
        self.kinds: list[int] = []
        self.auto = auto
        self.tis = core_class(tpm_version, 4096, 5, None, self.on_request, int_any_locality=True)
        self.i2c = TisI2CCore(self.tis)

    def on_request(self, kind: int) -> None:
        self.kinds.append(kind)
        if kind == REQUEST_COMMAND:
            pending = self.tis.pending_command
            assert pending is not None
            self.commands.append(pending)
            if self.auto is not None:
                self.tis.complete(self.auto)
        elif kind == REQUEST_ESTABLISHED:
            self.tis.set_established(False)

    # bus shorthands
    def write(self, reg: int, *data: int) -> int:
        return int(self.i2c.i2c_write(bytes([reg, *data])))

    def read(self, reg: int, n: int) -> int:
        return int.from_bytes(self.i2c.i2c_read_reg(reg, n), "little")

    def select(self, locality: int) -> None:
        assert self.write(R.TPM_I2C_LOC_SEL, locality) == 2

    def tis_reg(self, locality: int, reg: int, size: int = 4) -> int:
        return int(self.tis.read((locality << 12) + reg, size))


@pytest.fixture
def h(core_class: type) -> Harness:
    return Harness(core_class)


# -- QEMU's own test --------------------------------------------------------------
def test_qemu_tpm_tis_i2c_test(h: Harness) -> None:
    """The six tests in QEMU's order on one device, as QEMU runs them."""
    qtest = QtestI2C(h.i2c, RC_FAILURE)
    for name in QEMU_TESTS:
        getattr(qtest, name)()
    assert h.commands == [(0, STARTUP)]


@pytest.mark.parametrize("name", QEMU_TESTS)
def test_qemu_test_alone(h: Harness, name: str) -> None:
    """Each of QEMU's tests also holds on a freshly reset device."""
    getattr(QtestI2C(h.i2c, RC_FAILURE), name)()


def test_checksum_value() -> None:
    assert crc16_kermit(b"123456789") == 0x2189
    assert crc16_kermit(b"") == 0
    assert crc16_kermit(STARTUP) == 0x3367


# -- register map and NAKs ------------------------------------------------------------
@pytest.mark.parametrize("reg", range(256))
def test_register_address_acked_or_naked(h: Harness, reg: int) -> None:
    """Every known register is ACKed, everything else (and the device
    address register) NAKed at once, with nothing changed."""
    before = h.tis.mmio.copy()
    acked = h.i2c.i2c_write(bytes([reg]))
    assert acked == (1 if reg in KNOWN else 0)
    if reg not in KNOWN:
        assert h.i2c.i2c_read_reg(reg, 4) == b"\xff" * 4
        # nothing was selected: a bare read gives zeros
        assert h.i2c.i2c_read(4) == bytes(4)
    assert (h.tis.mmio == before).all()


def test_device_address_register_naked(h: Harness) -> None:
    assert h.write(R.TPM_I2C_DEVICE_ADDRESS, 0x2E) == 0
    assert h.read(R.TPM_I2C_DEVICE_ADDRESS, 4) == 0xFFFFFFFF


def test_over_long_register_write(h: Harness) -> None:
    """A fifth value byte is NAKed; the four before it are written at STOP."""
    assert h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE, 0, 0, 0, 0x20, 0x20) == 5
    assert h.read(R.TPM_I2C_ACCESS, 1) == 0xA1


def test_byte_after_nak_is_a_register_address(h: Harness) -> None:
    """A master that ignores the NAK: the next byte is taken as an address."""
    i2c = h.i2c
    assert i2c.i2c_start() is True
    assert i2c.i2c_send(0x01) is False
    assert i2c.i2c_send(R.TPM_I2C_ACCESS) is True
    assert i2c.i2c_send(R.TPM_ACCESS_REQUEST_USE) is True
    i2c.i2c_stop()
    assert h.read(R.TPM_I2C_ACCESS, 1) == 0xA1


def test_fifo_takes_any_number_of_bytes(h: Harness) -> None:
    """FIFO bytes go to the TIS one by one, without limit: the TIS drops
    what does not fit (Expect clears at the end of the buffer)."""
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    command = bytes([0x80, 0x01, 0x00, 0x00, 0xFF, 0xFF]) + bytes(5000)
    assert h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + command) == 1 + len(command)
    assert h.read(R.TPM_I2C_STS, 1) == R.TPM_STS_VALID
    assert h.tis.rw_offset == 4096


def test_read_without_register(h: Harness) -> None:
    """A read transaction with nothing selected returns zeros."""
    assert h.i2c.i2c_read(6) == bytes(6)
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)  # a complete write clears the pointer
    assert h.i2c.i2c_read(2) == bytes(2)


def test_register_pointer_read_in_separate_transaction(h: Harness) -> None:
    """Address alone, STOP, then a read transaction: Linux's way."""
    assert h.i2c.i2c_write(bytes([R.TPM_I2C_DID_VID])) == 1
    assert h.i2c.i2c_read(6) == bytes.fromhex("141001000000")
    # that read's STOP used the pointer up
    assert h.i2c.i2c_read(2) == bytes(2)


def test_pointer_survives_zero_length_read(h: Harness) -> None:
    h.i2c.i2c_write(bytes([R.TPM_I2C_RID]))
    assert h.i2c.i2c_read(0) == b""
    assert h.i2c.i2c_read(1) == b"\x01"


def test_zero_length_write_clears_pointer(h: Harness) -> None:
    h.i2c.i2c_write(bytes([R.TPM_I2C_RID]))
    assert h.i2c.i2c_write(b"") == 0
    assert h.i2c.i2c_read(1) == b"\x00"


def test_zero_length_read_reg(h: Harness) -> None:
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DID_VID, 0) == b""
    assert h.i2c.i2c_read_reg(0x02, 0) == b""


def test_value_fetched_once_per_read(h: Harness) -> None:
    """The register is read once, at the first byte: the later bytes of the
    same read are from that snapshot, then zeros."""
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    i2c = h.i2c
    i2c.i2c_start()
    i2c.i2c_send(R.TPM_I2C_STS)
    i2c.i2c_start(recv=True)
    first = i2c.i2c_recv()
    h.tis.write(R.TPM_DATA_FIFO, 0x80, 1)  # STS changes under the read
    rest = [i2c.i2c_recv() for _ in range(5)]
    i2c.i2c_stop()
    assert first == R.TPM_STS_COMMAND_READY
    assert rest == [0x00, 0x10, 0x00, 0x00, 0x00]
    assert h.read(R.TPM_I2C_STS, 4) == 0x000FFF88


def test_write_then_repeated_start_read_loses_the_write(h: Harness) -> None:
    """QUIRK: value bytes, then a repeated START to read: the read gives
    zeros and the write is never done."""
    i2c = h.i2c
    i2c.i2c_start()
    i2c.i2c_send(R.TPM_I2C_ACCESS)
    i2c.i2c_send(R.TPM_ACCESS_REQUEST_USE)
    i2c.i2c_start(recv=True)
    assert [i2c.i2c_recv() for _ in range(6)] == [0] * 6
    i2c.i2c_stop()
    assert h.read(R.TPM_I2C_ACCESS, 1) == 0x81


def test_nack_and_recv_in_send_direction(h: Harness) -> None:
    """Events out of order never raise; QEMU's device ignores the NAK."""
    i2c = h.i2c
    i2c.i2c_nack()
    assert i2c.i2c_recv() == 0
    i2c.i2c_stop()
    i2c.i2c_stop()
    assert i2c.i2c_send(R.TPM_I2C_RID) is True  # no START: taken all the same
    assert i2c.i2c_recv() == 1


# -- locality selection -------------------------------------------------------------------
@pytest.mark.parametrize("locality", range(5))
def test_locality_selection_reaches_that_tis_locality(h: Harness, locality: int) -> None:
    h.select(locality)
    assert h.i2c.locality == locality
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    # locality 4 writes are dropped by the TIS core
    expected = None if locality == 4 else locality
    assert h.tis.active_locality == expected
    assert h.read(R.TPM_I2C_LOC_SEL, 4) == locality


@pytest.mark.parametrize("value", [5, 6, 0x7F, 0xFF])
def test_locality_out_of_range_ignored(h: Harness, value: int) -> None:
    h.select(2)
    assert h.write(R.TPM_I2C_LOC_SEL, value) == 2
    assert h.i2c.locality == 2


def test_locality_uses_first_value_byte(h: Harness) -> None:
    assert h.write(R.TPM_I2C_LOC_SEL, 3, 1, 2, 4) == 5
    assert h.read(R.TPM_I2C_LOC_SEL, 4) == 3


def test_locality_write_drops_the_register_pointer(h: Harness) -> None:
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)  # locality 0 active
    h.i2c.i2c_write(bytes([R.TPM_I2C_STS]))
    h.select(1)  # a new write transaction: the pointer is gone
    assert h.i2c.i2c_read(1) == b"\x00"
    assert h.read(R.TPM_I2C_STS, 4) == 0xFFFFFFFF & R.TPM_I2C_STS_READ_MASK


# -- individual registers ---------------------------------------------------------------
def test_int_enable_forced_to_zero_from_any_locality(h: Harness) -> None:
    """QEMU 8.0's TIS core takes INT_ENABLE from inactive localities; every
    I2C write of it writes 0. Locality 4 writes stay dropped."""
    for loc in range(5):
        h.select(loc)
        assert h.read(R.TPM_I2C_INT_ENABLE, 4) == R.TPM_INT_POLARITY_LOW_LEVEL
        h.write(R.TPM_I2C_INT_ENABLE, 0xFF, 0xFF, 0xFF, 0xFF)
        expected = R.TPM_INT_POLARITY_LOW_LEVEL if loc == 4 else 0
        assert h.read(R.TPM_I2C_INT_ENABLE, 4) == expected
        assert h.tis_reg(loc, R.TPM_INT_ENABLE) == expected


def test_int_capability_read_only_zero(h: Harness) -> None:
    assert h.write(R.TPM_I2C_INT_CAPABILITY, 0xFF, 0xFF, 0xFF, 0xFF) == 5
    assert h.read(R.TPM_I2C_INT_CAPABILITY, 4) == 0


@pytest.mark.parametrize("tpm_version", [1, 2])
def test_interface_capability(core_class: type, tpm_version: int) -> None:
    """0x02600082 whatever the TIS version (QEMU synthesises it); writes ignored."""
    h = Harness(core_class, tpm_version)
    assert h.write(R.TPM_I2C_INTERFACE_CAPABILITY, 0, 0, 0, 0) == 5
    for loc in range(5):
        h.select(loc)
        assert h.read(R.TPM_I2C_INTERFACE_CAPABILITY, 4) == R.TPM_I2C_INTERFACE_CAPABILITY_VALUE
        assert h.tis_reg(loc, R.TPM_INTF_CAPABILITY) == R.intf_capability(tpm_version)


def test_did_vid_rid_forwarded_read_only(h: Harness) -> None:
    h.write(R.TPM_I2C_DID_VID, 1, 2, 3, 4)
    h.write(R.TPM_I2C_RID, 9)
    assert h.read(R.TPM_I2C_DID_VID, 4) == R.TPM_DID_VID_VALUE
    assert h.read(R.TPM_I2C_DID_VID, 2) == 0x1014
    assert h.read(R.TPM_I2C_RID, 4) == R.TPM_RID_VALUE


def test_csum_enable_keeps_bit_0(h: Harness) -> None:
    h.write(R.TPM_I2C_DATA_CSUM_ENABLE, 0xFF, 0xFF)
    assert h.read(R.TPM_I2C_DATA_CSUM_ENABLE, 4) == 1
    assert h.i2c.checksum_enabled is True
    h.write(R.TPM_I2C_DATA_CSUM_ENABLE, 0xFE)
    assert h.read(R.TPM_I2C_DATA_CSUM_ENABLE, 1) == 0
    assert h.i2c.checksum_enabled is False


def test_sts_reads_hide_family_and_write_only_bits(h: Harness) -> None:
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    assert h.tis_reg(0, R.TPM_STS) == 0x04100000
    assert h.read(R.TPM_I2C_STS, 4) == 0x00100000
    assert h.read(R.TPM_I2C_STS + 1, 2) == 0x1000
    assert h.read(R.TPM_I2C_STS + 2, 1) == 0x10
    assert h.read(R.TPM_I2C_STS + 3, 1) == 0
    assert h.read(R.TPM_I2C_STS, 1) == 0x00
    # the TIS is read as a whole register: no one-byte clamp of the burst
    # count (a TIS byte read at STS + 1 gives 0xFF)
    assert h.read(R.TPM_I2C_STS + 1, 1) == 0x00
    assert h.tis_reg(0, R.TPM_STS + 1, 1) == 0xFF


def test_sts_not_active_locality(h: Harness) -> None:
    """All ones from the TIS, masked: 0x00FFFFDD."""
    assert h.read(R.TPM_I2C_STS, 4) == 0x00FFFFDD


def test_sts_write_masks(h: Harness) -> None:
    """STS takes only commandReady, tpmGo, responseRetry, cancel and
    resetEstablishment; STS + 1 and + 2 take nothing."""
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS + 1, 0x40)
    h.write(R.TPM_I2C_STS + 2, 0x40)
    assert h.read(R.TPM_I2C_STS, 1) == 0
    # bit 6 plus bits the mask drops: still exactly one action bit
    h.write(R.TPM_I2C_STS, 0x40 | 0x9D, 0xFF, 0xFC, 0xFC)
    assert h.read(R.TPM_I2C_STS, 1) == R.TPM_STS_COMMAND_READY


def test_sts_cancel_through_lane_3(core_class: type) -> None:
    """commandCancel written at STS + 3 reaches the TIS (a cancel request)."""
    h = Harness(core_class, auto=None)
    kinds = h.kinds
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + STARTUP)
    h.write(R.TPM_I2C_STS, R.TPM_STS_GO)
    assert h.tis.executing
    kinds.clear()
    h.write(R.TPM_I2C_STS + 3, 0x01)
    assert kinds == [REQUEST_CANCEL]
    h.write(R.TPM_I2C_STS, 0, 0, 0, 0x01)
    assert kinds == [REQUEST_CANCEL, REQUEST_CANCEL]


# -- the data checksum -------------------------------------------------------------------
def test_checksum_over_command_then_response(h: Harness) -> None:
    """Over the bytes written so far; 0 when the response arrives (rw_offset
    0); then over the response bytes read so far. High byte first."""
    h.auto = RESPONSE
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    for n in range(len(GETRANDOM) + 1):
        crc = crc16_kermit(GETRANDOM[:n])
        assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_CSUM, 2) == crc.to_bytes(2, "big")
        assert h.read(R.TPM_I2C_DATA_CSUM, 4) == ((crc & 0xFF) << 8) | (crc >> 8)
        if n < len(GETRANDOM):
            h.write(R.TPM_I2C_DATA_FIFO, GETRANDOM[n])
    h.write(R.TPM_I2C_STS, R.TPM_STS_GO)
    assert h.read(R.TPM_I2C_DATA_CSUM, 2) == 0
    response = h.i2c.i2c_read_reg(R.TPM_I2C_DATA_FIFO, 7)
    assert response == RESPONSE[:7]
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_CSUM, 2) == crc16_kermit(RESPONSE[:7]).to_bytes(2, "big")
    response += h.i2c.i2c_read_reg(R.TPM_I2C_DATA_FIFO, 20)
    assert response == RESPONSE + b"\xff" * 7
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_CSUM, 2) == crc16_kermit(RESPONSE).to_bytes(2, "big")
    assert h.i2c.data_checksum() == int.from_bytes(crc16_kermit(RESPONSE).to_bytes(2, "big"), "little")


def test_checksum_independent_of_enable_and_locality(h: Harness) -> None:
    """The flag is only stored, and the buffer is shared: any locality reads it."""
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + STARTUP[:7])
    expected = crc16_kermit(STARTUP[:7]).to_bytes(2, "big")
    assert h.i2c.checksum_enabled is False
    for loc in range(5):
        h.select(loc)
        assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_CSUM, 2) == expected
    h.write(R.TPM_I2C_DATA_CSUM, 0, 0)  # read-only
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_CSUM, 2) == expected


def test_checksum_past_the_buffer(h: Harness) -> None:
    """QUIRK: a locality left in COMPLETION reads one byte past a buffer
    another locality filled (rw_offset 4097, see TisCore._past_buffer); the
    checksum then covers that byte too (QEMU's CRC reads on past its buffer)."""
    command = bytes.fromhex("8001 00001000") + bytes(4090)  # announces 4096 bytes
    h.select(0)
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + GETRANDOM)
    h.write(R.TPM_I2C_STS, R.TPM_STS_GO)  # locality 0: COMPLETION, dataAvail
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_ACTIVE_LOCALITY)
    h.select(1)
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    assert h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + command) == 1 + 4096
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_ACTIVE_LOCALITY)
    h.select(0)
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_FIFO, 1) == b"\x01"  # low byte of rw_offset 4097
    assert h.tis.rw_offset == 4097
    expected = crc16_kermit(command + b"\x01")
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_CSUM, 2) == expected.to_bytes(2, "big")


# -- FIFO reads ----------------------------------------------------------------------------
def test_fifo_read_one_tis_byte_per_bus_byte(h: Harness) -> None:
    h.auto = RESPONSE
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + GETRANDOM)
    h.write(R.TPM_I2C_STS, R.TPM_STS_GO)
    assert h.read(R.TPM_I2C_STS, 4) == 0x00001490
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]))
    data = h.i2c.i2c_read(3)
    # the read's STOP used up the register pointer
    assert h.i2c.i2c_read(2) == bytes(2)
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]))
    data += h.i2c.i2c_read(17)
    assert data == RESPONSE
    assert h.read(R.TPM_I2C_STS, 4) == ((4096 - 20) << 8) | R.TPM_STS_VALID


def test_fifo_from_inactive_locality(h: Harness) -> None:
    h.select(1)
    assert h.i2c.i2c_read_reg(R.TPM_I2C_DATA_FIFO, 3) == b"\xff\xff\xff"
    assert h.write(R.TPM_I2C_DATA_FIFO, 0x80, 0x01) == 3
    assert h.tis.rw_offset == 0


# -- reset ---------------------------------------------------------------------------------
def test_reset_clears_i2c_state(h: Harness) -> None:
    h.select(3)
    h.write(R.TPM_I2C_DATA_CSUM_ENABLE, 1)
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.i2c.i2c_write(bytes([R.TPM_I2C_RID]))
    h.i2c.reset(2, 4096)
    assert h.i2c.locality == 0
    assert h.i2c.checksum_enabled is False
    assert h.i2c.i2c_read(1) == b"\x00"  # pointer gone
    assert h.tis.active_locality is None
    assert h.read(R.TPM_I2C_ACCESS, 1) == 0x81


def test_posted_completion_applied_at_next_bus_event(h: Harness) -> None:
    h.auto = None
    h.write(R.TPM_I2C_ACCESS, R.TPM_ACCESS_REQUEST_USE)
    h.write(R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
    h.i2c.i2c_write(bytes([R.TPM_I2C_DATA_FIFO]) + GETRANDOM)
    h.write(R.TPM_I2C_STS, R.TPM_STS_GO)
    h.tis.post(RESPONSE)
    # the checksum register (kept by the I2C layer) sees the response applied
    assert h.read(R.TPM_I2C_DATA_CSUM, 2) == 0
    assert h.read(R.TPM_I2C_STS, 1) == R.TPM_STS_VALID | R.TPM_STS_DATA_AVAIL


# -- host misuse ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("i2c_write", ("abc",)),
        ("i2c_write", ([4, 2],)),
        ("i2c_write", (None,)),
        ("i2c_read", (-1,)),
        ("i2c_read", (1.0,)),
        ("i2c_read", (True,)),
        ("i2c_read", (0x1000001,)),
        ("i2c_read_reg", (256, 1)),
        ("i2c_read_reg", (-1, 1)),
        ("i2c_read_reg", (4, -1)),
        ("i2c_read_reg", ("4", 1)),
        ("i2c_send", (256,)),
        ("i2c_send", (-1,)),
        ("i2c_send", (b"\x04",)),
    ],
)
def test_host_misuse_raises(h: Harness, call: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(AccessError, match="TIS I2C"):
        getattr(h.i2c, call)(*args)


# -- compiled and pure cores agree through the I2C layer --------------------------------------
def _random_session(core_class: type, seed: int) -> list[object]:
    rng = random.Random(seed)
    h = Harness(core_class, auto=None)
    i2c = h.i2c
    regs = [*sorted(KNOWN), R.TPM_I2C_DEVICE_ADDRESS, 0x01, 0x7F, 0xFF]
    out: list[object] = []
    for _ in range(400):
        op = rng.randrange(8)
        if op == 0:
            out.append(i2c.i2c_start(rng.random() < 0.3))
        elif op == 1:
            out.append(i2c.i2c_send(rng.choice(regs) if rng.random() < 0.5 else rng.randrange(256)))
        elif op == 2:
            out.append(i2c.i2c_recv())
        elif op == 3:
            i2c.i2c_stop()
        elif op == 4:
            data = bytes([rng.choice(regs)]) + bytes(rng.randrange(256) for _ in range(rng.randrange(7)))
            out.append(i2c.i2c_write(data))
        elif op == 5:
            out.append(i2c.i2c_read_reg(rng.choice(regs), rng.randrange(6)))
        elif op == 6:
            out.append(i2c.i2c_read(rng.randrange(5)))
        elif h.tis.executing:
            h.tis.complete(RESPONSE if rng.random() < 0.5 else RC_FAILURE)
    out.append(bytes(h.tis.mmio))
    out.append(h.commands)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_compiled_and_pure_agree(compiled_core_class: type, seed: int) -> None:
    import tpmdev.hw

    pure_class = tpmdev.hw.pure("tis").TisCore
    assert _random_session(compiled_core_class, seed) == _random_session(pure_class, seed)
