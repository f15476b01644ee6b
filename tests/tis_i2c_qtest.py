"""QEMU's own tpm-tis-i2c-test, every assertion, over tpmdev's I2C bus API.

QEMU 7.2 (the live oracle) has no tpm-tis-i2c, so its qtest is re-run here
instead (spec section 10.3): the same six tests, in the same order, with the
same helpers. QEMU drives the device through the Aspeed I2C controller of the
``rainier-bmc`` machine; these helpers do what that controller does, through
``i2c_write`` (START, address, value bytes least significant first, STOP)
and ``i2c_read_reg`` (address, repeated START, bytes, STOP), and they select
the locality through TPM_I2C_LOC_SEL only when it changes, as QEMU's test
does (its cache starts at 0xFF, so the first access always selects).

Works on anything with ``i2c_write`` and ``i2c_read_reg``: the bare
:class:`~tpmdev.hw.tis_i2c.TisI2CCore` or a :class:`tpmdev.TISI2C`.
"""

from __future__ import annotations

from typing import Callable, Protocol

from tpmdev.hw import regs as R

__all__ = ["QtestI2C", "STARTUP", "QEMU_TESTS"]

VALID = R.TPM_ACCESS_TPM_REG_VALID_STS
ACTIVE = R.TPM_ACCESS_ACTIVE_LOCALITY
SEIZED = R.TPM_ACCESS_BEEN_SEIZED
SEIZE = R.TPM_ACCESS_SEIZE
PENDING = R.TPM_ACCESS_PENDING_REQUEST
REQUEST = R.TPM_ACCESS_REQUEST_USE
EST = R.TPM_ACCESS_TPM_ESTABLISHMENT

#: TPM2_Startup(SU_CLEAR), QEMU's TPM_CMD
STARTUP = bytes.fromhex("8001 0000000c 00000144 0000")
#: DATA_CSUM after those 12 bytes, as QEMU's test reads it
STARTUP_CSUM = 0x6733


class Bus(Protocol):
    def i2c_write(self, data: bytes) -> int: ...

    def i2c_read_reg(self, reg: int, count: int) -> bytes: ...


class QtestI2C:
    """QEMU's test helpers: locality-caching byte/word/dword accesses.

    *response* is the 10-byte response test_check_transmit must read back
    (QEMU's fake emulator answers TPM_RC_FAILURE; a real TPM answers
    TPM2_Startup with success).
    """

    def __init__(self, bus: Bus, response: bytes) -> None:
        self.bus = bus
        self.response = response
        self.cur_locty = 0xFF

    def set_locty(self, locty: int) -> None:
        if self.cur_locty != locty:
            self.cur_locty = locty
            self.bus.i2c_write(bytes([R.TPM_I2C_LOC_SEL, locty]))

    def _read(self, locty: int, reg: int, n: int) -> int:
        self.set_locty(locty)
        return int.from_bytes(self.bus.i2c_read_reg(reg, n), "little")

    def readb(self, locty: int, reg: int) -> int:
        return self._read(locty, reg, 1)

    def readw(self, locty: int, reg: int) -> int:
        return self._read(locty, reg, 2)

    def readl(self, locty: int, reg: int) -> int:
        return self._read(locty, reg, 4)

    def _write(self, locty: int, reg: int, value: int, n: int) -> None:
        if reg != R.TPM_I2C_LOC_SEL:
            self.set_locty(locty)
        self.bus.i2c_write(bytes([reg]) + value.to_bytes(n, "little"))

    def writeb(self, locty: int, reg: int, value: int) -> None:
        self._write(locty, reg, value, 1)

    def writel(self, locty: int, reg: int, value: int) -> None:
        self._write(locty, reg, value, 4)

    # -- the six tests ----------------------------------------------------------
    def test_basic(self) -> None:
        # every access below must work without locality 0 being active
        self.writeb(0, R.TPM_I2C_ACCESS, ACTIVE)
        assert self.readb(0, R.TPM_I2C_ACCESS) == VALID | EST
        # no interrupt is supported
        assert self.readl(0, R.TPM_I2C_INT_CAPABILITY) == 0
        # none can be enabled
        self.writel(0, R.TPM_I2C_INT_ENABLE, 0xFFFFFFFF)
        assert self.readl(0, R.TPM_I2C_INT_ENABLE) == 0
        # checksum enable, read back as a byte and as a dword
        self.writeb(0, R.TPM_I2C_DATA_CSUM_ENABLE, R.TPM_I2C_DATA_CSUM_ENABLED)
        assert self.readb(0, R.TPM_I2C_DATA_CSUM_ENABLE) == R.TPM_I2C_DATA_CSUM_ENABLED
        assert self.readl(0, R.TPM_I2C_DATA_CSUM_ENABLE) == R.TPM_I2C_DATA_CSUM_ENABLED
        self.writeb(0, R.TPM_I2C_DATA_CSUM_ENABLE, 0)
        assert self.readb(0, R.TPM_I2C_DATA_CSUM_ENABLE) == 0
        # register 1 does not exist: NAKed, the controller reads the idle bus
        self.writel(0, 1, 0x12345678)
        assert self.readl(0, 1) == 0xFFFFFFFF
        self.writeb(0, R.TPM_I2C_ACCESS, REQUEST)
        assert self.readb(0, R.TPM_I2C_STS + 3) == 0
        # a write at STS + 3 changes nothing visible
        v = self.readl(0, R.TPM_I2C_STS)
        self.writeb(0, R.TPM_I2C_STS + 3, 0x0F)
        assert self.readl(0, R.TPM_I2C_STS) == v
        self.writeb(0, R.TPM_I2C_ACCESS, ACTIVE)
        # locality 5 cannot be selected
        self.writeb(0, R.TPM_I2C_LOC_SEL, 5)
        assert self.readb(0, R.TPM_I2C_LOC_SEL) == 0

    def test_check_localities(self) -> None:
        for locty in range(R.TIS_NUM_LOCALITIES):
            assert self.readb(locty, R.TPM_I2C_ACCESS) == VALID | EST
            assert self.readl(locty, R.TPM_I2C_INTERFACE_CAPABILITY) == 0x02600082
            assert self.readl(locty, R.TPM_I2C_DID_VID) == (1 << 16) | 0x1014
            rid = self.readl(locty, R.TPM_I2C_RID)
            assert rid != 0
            assert rid != 0xFFFFFFFF
            assert self.readb(locty, R.TPM_I2C_LOC_SEL) == locty

    def check_access_reg(self) -> None:
        for locty in range(R.TIS_NUM_LOCALITIES - 1):
            assert self.readb(locty, R.TPM_I2C_ACCESS) == VALID | EST
            self.writeb(locty, R.TPM_I2C_ACCESS, REQUEST)
            assert self.readb(locty, R.TPM_I2C_ACCESS) == VALID | ACTIVE | EST
            self.writeb(locty, R.TPM_I2C_ACCESS, ACTIVE)
            assert self.readb(locty, R.TPM_I2C_ACCESS) == VALID | EST

    def check_access_reg_seize(self) -> None:
        acc = R.TPM_I2C_ACCESS
        for locty in range(R.TIS_NUM_LOCALITIES - 1):
            pending = 0
            assert self.readb(locty, acc) == VALID | EST
            self.writeb(locty, acc, REQUEST)
            assert self.readb(locty, acc) == VALID | ACTIVE | EST
            # lower localities can neither request nor seize
            for low in range(locty):
                assert self.readb(low, acc) == VALID | pending | EST
                self.writeb(low, acc, REQUEST)
                assert self.readb(low, acc) == VALID | REQUEST | pending | EST
                assert self.readb(locty, acc) == VALID | ACTIVE | PENDING | EST
                self.writeb(low, acc, SEIZE)
                assert self.readb(low, acc) == VALID | REQUEST | pending | EST
                assert self.readb(locty, acc) == VALID | ACTIVE | PENDING | EST
                pending = PENDING
            # higher localities seize, one after the other
            for high in range(locty + 1, R.TIS_NUM_LOCALITIES - 1):
                self.writeb(high, acc, REQUEST)
                assert self.readb(high, acc) == VALID | REQUEST | pending | EST
                assert self.readb(high - 1, acc) == VALID | ACTIVE | PENDING | EST
                self.writeb(high, acc, SEIZE)
                assert self.readb(high, acc) == VALID | ACTIVE | pending | EST
                assert self.readb(high - 1, acc) == VALID | SEIZED | pending | EST
                self.writeb(high - 1, acc, SEIZED)
                assert self.readb(high - 1, acc) == VALID | pending | EST
            if locty <= 1:
                pending = 0
            # the last one (locality 3) relinquishes: locty - 1 gets the TPM
            last = R.TIS_NUM_LOCALITIES - 2
            self.readb(last, acc)
            self.writeb(last, acc, ACTIVE)
            assert self.readb(last, acc) == VALID | pending | EST
            for low in range(locty - 1, -1, -1):
                assert self.readb(low, acc) == VALID | ACTIVE | pending | EST
                self.writeb(low, acc, ACTIVE)
                if low == 1:
                    pending = 0
            for loc in range(R.TIS_NUM_LOCALITIES - 1):
                assert self.readb(loc, acc) == VALID | EST

    def check_access_reg_release(self) -> None:
        acc = R.TPM_I2C_ACCESS
        for locty in range(R.TIS_NUM_LOCALITIES - 2, -1, -1):
            pending = 0
            assert self.readb(locty, acc) == VALID | EST
            self.writeb(locty, acc, REQUEST)
            assert self.readb(locty, acc) == VALID | ACTIVE | EST
            for loc in range(R.TIS_NUM_LOCALITIES - 1):
                if loc == locty:
                    continue
                self.writeb(loc, acc, REQUEST)
                assert self.readb(loc, acc) == VALID | REQUEST | pending | EST
                pending = PENDING
            self.writeb(locty, acc, ACTIVE)
            # the highest requester is active; each release passes it down
            for loc in range(R.TIS_NUM_LOCALITIES - 2, -1, -1):
                if loc == locty:
                    continue
                assert self.readb(loc, acc) == VALID | ACTIVE | pending | EST
                self.writeb(loc, acc, ACTIVE)
                value = self.readb(loc, acc)
                if loc == 1 or (locty <= 1 and loc == 2):
                    pending = 0
                assert value == VALID | pending | EST

    def test_check_transmit(self, poll: Callable[[], object] = lambda: None) -> None:
        """*poll* runs between STS reads while waiting for dataAvail (the
        host's event loop, for an asynchronous device)."""
        self.writeb(0, R.TPM_I2C_DATA_CSUM_ENABLE, R.TPM_I2C_DATA_CSUM_ENABLED)
        assert self.readb(0, R.TPM_I2C_DATA_CSUM_ENABLE) == R.TPM_I2C_DATA_CSUM_ENABLED
        assert self.readl(0, R.TPM_I2C_DATA_CSUM_ENABLE) == R.TPM_I2C_DATA_CSUM_ENABLED
        self.writeb(0, R.TPM_I2C_ACCESS, REQUEST)
        assert self.readb(0, R.TPM_I2C_ACCESS) == VALID | ACTIVE | EST
        sts = self.readl(0, R.TPM_I2C_STS)
        assert sts & 0xFF == 0
        bcount = (sts >> 8) & 0xFFFF
        assert bcount >= 128
        # the burst count through STS + 1 as a word
        assert self.readw(0, R.TPM_I2C_STS + 1) == bcount
        # bits 26..30 read as zero over I2C
        assert sts & (0x1F << 26) == 0
        self.writel(0, R.TPM_I2C_STS, R.TPM_STS_COMMAND_READY)
        sts = self.readl(0, R.TPM_I2C_STS)
        assert sts & 0xFF == R.TPM_STS_COMMAND_READY
        for i, byte in enumerate(STARTUP):
            self.writeb(0, R.TPM_I2C_DATA_FIFO, byte)
            sts = self.readl(0, R.TPM_I2C_STS)
            if i < len(STARTUP) - 1:
                assert sts & 0xFF == R.TPM_STS_EXPECT | R.TPM_STS_VALID
            else:
                assert sts & 0xFF == R.TPM_STS_VALID
            bcount -= 1
            assert (sts >> 8) & 0xFFFF == bcount
        assert self.readw(0, R.TPM_I2C_DATA_CSUM) == STARTUP_CSUM
        self.writeb(0, R.TPM_I2C_STS, R.TPM_STS_GO)
        for _ in range(1_000_000):
            if self.readl(0, R.TPM_I2C_STS) & R.TPM_STS_DATA_AVAIL:
                break
            poll()
        sts = self.readl(0, R.TPM_I2C_STS)
        assert sts & 0xFF == R.TPM_STS_VALID | R.TPM_STS_DATA_AVAIL
        bcount = (sts >> 8) & 0xFFFF
        assert bcount == 10
        msg = bytearray()
        for _ in range(10):
            msg.append(self.readb(0, R.TPM_I2C_DATA_FIFO))
            sts = self.readl(0, R.TPM_I2C_STS)
            if sts & R.TPM_STS_DATA_AVAIL:
                bcount -= 1
                assert (sts >> 8) & 0xFFFF == bcount
        assert bytes(msg) == self.response
        self.writeb(0, R.TPM_I2C_ACCESS, ACTIVE)
        self.readb(0, R.TPM_I2C_ACCESS)


#: QEMU's test names, in its order
QEMU_TESTS = (
    "test_basic",
    "test_check_localities",
    "check_access_reg",
    "check_access_reg_seize",
    "check_access_reg_release",
    "test_check_transmit",
)
