"""A TIS-over-I2C driver, written the way Linux's ``tpm_tis_i2c`` drives a TPM.

Linux's driver is ``tpm_tis_i2c.c`` (the bus: register mapping, retries,
guard times, read-as-zero checks, the data checksum) under ``tpm_tis_core.c``
(the TIS protocol). The sequence it performs, reproduced here:

* probe: read ``TPM_I2C_INTERFACE_CAPABILITY`` first (its guard-time fields
  tell how long to wait between transfers; 250 us until then), select
  locality 0 in ``TPM_I2C_LOC_SEL``, enable the data checksum, then the TIS
  probe: DID_VID, wait for ACCESS.tpmRegValidSts, INT_ENABLE read and written
  back with the global enable off (locality 0 held around the write), the
  TPM 2.0 probe command, RID, the DID_VID vendor check, INTF_CAPS;
* every register read is an address write followed by a separate read
  transfer, and is retried when a bit that must read as zero is set;
  every write is one transfer (address, then data); NAKed transfers are
  retried after the error guard time;
* a command: status (8-bit STS), commandReady if needed, the command in
  bursts of ``min(burstCount, remaining - 1)`` bytes with Expect checked
  after each, the last byte alone with Expect then clear, the checksum
  compared with the CRC of the command, tpmGo;
* a response: the 10-byte header, then the rest in bursts, stsValid with
  dataAvail clear, the checksum compared with the CRC of the response, and
  commandReady.

Timeouts are the kernel's (:mod:`tpmdev.drivers._timeouts`); when the
command's duration runs out the driver cancels (commandReady, as the TIS
driver) and raises :class:`TisI2CTimeout`. A
transfer error (Expect wrong, a CRC mismatch, left-over data) starts the
send over, or reads the response again after responseRetry, up to
:data:`RETRIES` times, as Linux.

The driver uses locality 0 and no interrupts, as Linux's (``transmit``
selects another locality through TPM_I2C_LOC_SEL when asked). It works on
anything with ``i2c_write(data) -> int`` (bytes ACKed) and
``i2c_read(count) -> bytes``, such as :class:`tpmdev.TISI2C`.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

from tpmdev.drivers._timeouts import TPM2_TIMEOUTS, Timeouts
from tpmdev.drivers.tis import _check_locality, tpm2_probe_command, tpm_version_of
from tpmdev.errors import TpmDevError
from tpmdev.hw.regs import (
    TPM_ACCESS_ACTIVE_LOCALITY,
    TPM_ACCESS_REQUEST_USE,
    TPM_ACCESS_TPM_REG_VALID_STS,
    TPM_I2C_ACCESS,
    TPM_I2C_DATA_CSUM,
    TPM_I2C_DATA_CSUM_ENABLE,
    TPM_I2C_DATA_CSUM_ENABLED,
    TPM_I2C_DATA_FIFO,
    TPM_I2C_DID_VID,
    TPM_I2C_INT_ENABLE,
    TPM_I2C_INTERFACE_CAPABILITY,
    TPM_I2C_LOC_SEL,
    TPM_I2C_RID,
    TPM_I2C_STS,
    TPM_INT_COMMAND_READY,
    TPM_INT_DATA_AVAIL,
    TPM_INT_GLOBAL_ENABLE,
    TPM_INT_LOCALITY_CHANGE,
    TPM_INT_STS_VALID,
    TPM_INTF_CAPABILITY,
    TPM_STS_COMMAND_READY,
    TPM_STS_DATA_AVAIL,
    TPM_STS_EXPECT,
    TPM_STS_GO,
    TPM_STS_RESPONSE_RETRY,
    TPM_STS_VALID,
)
from tpmdev.hw.tis_i2c import crc16_kermit
from tpmdev.wire import HEADER_SIZE, header_size

__all__ = ["TisI2CDriver", "TisI2CError", "TisI2CTimeout", "I2CBus"]

#: Linux's TPM_RETRY: attempts for a NAKed transfer or a failed sanity check
RETRIES = 50
#: guard time before the capability register is read, and after a NAK (s)
GUARD_TIME_DEFAULT = 250e-6
#: Linux's TPM_BUFSIZE: the longest write transfer is this minus the address
TPM_BUFSIZE = 4096
#: TPM_PT_TOTAL_COMMANDS, the property Linux's TPM 2.0 probe asks for
TPM_PT_TOTAL_COMMANDS = 0x129
#: Intel's vendor id (Linux probes only Intel parts for the iTPM quirk)
TPM_VID_INTEL = 0x8086

# guard-time fields of TPM_I2C_INTERFACE_CAPABILITY
_GUARD_TIME_SR = 0x40000000
_GUARD_TIME_RR = 0x00100000
_GUARD_TIME_RW = 0x00080000
_GUARD_TIME_WR = 0x00040000
_GUARD_TIME_WW = 0x00020000
_GUARD_TIME_MIN_MASK = 0x0001FE00
_GUARD_TIME_MIN_SHIFT = 9

#: I2C register -> the bits that must read as zero (Linux's sanity check);
#: Linux reads TIS INTF_CAPS at its TIS offset 0x14, which is
#: TPM_I2C_INT_CAPABILITY on the I2C map.
READ_AS_ZERO = {
    TPM_I2C_ACCESS: 0x48,
    TPM_I2C_INT_ENABLE: 0x7FFFFF60,
    TPM_I2C_STS: 0x23,
    TPM_INTF_CAPABILITY: 0x0FFFF000,
    TPM_I2C_INTERFACE_CAPABILITY: 0x80000000,
}


class TisI2CError(TpmDevError):
    """The TPM did not behave as the driver requires (Linux: -EIO)."""


class TisI2CTimeout(TisI2CError, TimeoutError):
    """The TPM did not reach the state the driver waited for in time (Linux: -ETIME)."""


class I2CBus(Protocol):
    def i2c_write(self, data: bytes) -> int: ...

    def i2c_read(self, count: int) -> bytes: ...


class TisI2CDriver:
    """Send TPM 2.0 commands through a TIS-over-I2C device, as Linux does.

    :param bus: the device (``i2c_write`` / ``i2c_read``).
    :param timeouts: the bounds of every wait (default: the kernel's).
    :param timeout: if given, every wait is bounded by this many seconds instead.
    :param sleep: how to wait a guard time (``time.sleep``).
    :param trace: called as ``trace(op, data)`` for every transfer, ``op``
        ``"w"`` (data written, address first) or ``"r"`` (data read).
    """

    def __init__(
        self,
        bus: I2CBus,
        *,
        timeouts: Optional[Timeouts] = None,
        timeout: Optional[float] = None,
        sleep: Callable[[float], object] = time.sleep,
        trace: Optional[Callable[[str, bytes], object]] = None,
    ) -> None:
        self.bus = bus
        base = timeouts or TPM2_TIMEOUTS
        self.timeouts = base.uniform(timeout) if timeout is not None else base
        self.tpm_version = 2
        self.locality = 0
        #: commands cancelled after their duration ran out
        self.cancels = 0
        #: responses read again after responseRetry
        self.retries = 0
        self.sleep = sleep
        self.trace = trace
        self.guard_time_read = True
        self.guard_time_write = True
        self.guard_time = GUARD_TIME_DEFAULT
        #: the checksums compared so far: (what, device value, host value)
        self.checksums: list[tuple[str, int, int]] = []
        self.did_vid = 0
        self.rid = 0
        self.intf_caps = 0
        self.i2c_caps = 0

    # -- transfers ----------------------------------------------------------
    def _transfer(self, op: str, data: bytes = b"", count: int = 0) -> bytes:
        """One transfer, retried while the device NAKs (Linux retries until ACK)."""
        guard = self.guard_time_read if op == "r" else self.guard_time_write
        for _ in range(RETRIES + 1):
            if op == "w":
                ok = self.bus.i2c_write(data) == len(data)
                result = data
            else:
                result = self.bus.i2c_read(count)
                ok = True
            if self.trace is not None:
                self.trace(op, result)
            if ok:
                if guard and self.guard_time:
                    self.sleep(self.guard_time)
                return result
            self.sleep(GUARD_TIME_DEFAULT)
        raise TisI2CError(f"TIS I2C: transfer {data.hex()} NAKed {RETRIES + 1} times")

    def read(self, reg: int, count: int) -> bytes:
        """Read *count* bytes of register *reg*: address write, then read."""
        for _ in range(RETRIES):
            self._transfer("w", bytes([reg]))
            data = self._transfer("r", count=count)
            if count in (1, 2, 4) and reg in READ_AS_ZERO:
                if int.from_bytes(data, "little") & READ_AS_ZERO[reg]:
                    self.sleep(GUARD_TIME_DEFAULT)
                    continue
            return data
        raise TisI2CError(f"TIS I2C: register 0x{reg:02X} kept failing the read-as-zero check")

    def read_int(self, reg: int, count: int) -> int:
        return int.from_bytes(self.read(reg, count), "little")

    def write(self, reg: int, data: bytes) -> None:
        """Write *data* to register *reg* in one transfer."""
        if len(data) > TPM_BUFSIZE - 1:
            raise TisI2CError(f"TIS I2C: a {len(data)}-byte write does not fit in one transfer")
        self._transfer("w", bytes([reg]) + data)

    def write_int(self, reg: int, value: int, count: int) -> None:
        self.write(reg, value.to_bytes(count, "little"))

    def _wait(self, what: str, done: Callable[[], bool], timeout: Optional[float] = None) -> None:
        timeout = self.timeouts.c if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TisI2CTimeout(f"TIS I2C: timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.0001)

    # -- probe ----------------------------------------------------------------
    def init_guard_time(self) -> None:
        """Read the I2C interface capability: the guard times (first access)."""
        self.i2c_caps = caps = self.read_int(TPM_I2C_INTERFACE_CAPABILITY, 4)
        self.guard_time_read = bool(caps & (_GUARD_TIME_RR | _GUARD_TIME_RW))
        self.guard_time_write = bool(caps & (_GUARD_TIME_WR | _GUARD_TIME_WW))
        self.guard_time = ((caps & _GUARD_TIME_MIN_MASK) >> _GUARD_TIME_MIN_SHIFT) * 1e-6

    def probe(self) -> None:
        """Linux's probe: the I2C set-up, then the TIS core's."""
        self.init_guard_time()
        self.write_int(TPM_I2C_LOC_SEL, 0, 1)
        self.write_int(TPM_I2C_DATA_CSUM_ENABLE, TPM_I2C_DATA_CSUM_ENABLED, 1)
        # tpm_tis_core_init
        self.did_vid = self.read_int(TPM_I2C_DID_VID, 4)
        self._wait(
            "ACCESS.tpmRegValidSts",
            lambda: bool(self.access() & TPM_ACCESS_TPM_REG_VALID_STS),
            self.timeouts.a,
        )
        intmask = self.read_int(TPM_I2C_INT_ENABLE, 4)
        intmask |= TPM_INT_COMMAND_READY | TPM_INT_LOCALITY_CHANGE | TPM_INT_DATA_AVAIL | TPM_INT_STS_VALID
        intmask &= ~TPM_INT_GLOBAL_ENABLE
        self.request_locality()
        self.write_int(TPM_I2C_INT_ENABLE, intmask, 4)
        self.release_locality()
        # tpm2_probe, inside tpm_chip_start / tpm_chip_stop
        response = self.transmit(tpm2_probe_command())
        self.tpm_version = tpm_version_of(response)
        if self.tpm_version != 2:
            raise TisI2CError(f"TIS I2C: not a TPM 2.0 (probe answered {response.hex()})")
        self.rid = self.read_int(TPM_I2C_RID, 1)
        if self.read_int(TPM_I2C_DID_VID, 2) == TPM_VID_INTEL:  # probe_itpm
            raise TisI2CError("TIS I2C: the iTPM workaround probe is not modelled")
        self.intf_caps = self.read_int(TPM_INTF_CAPABILITY, 4)

    # -- locality and status --------------------------------------------------
    def access(self) -> int:
        return self.read_int(TPM_I2C_ACCESS, 1)

    def check_locality(self) -> bool:
        want = TPM_ACCESS_ACTIVE_LOCALITY | TPM_ACCESS_TPM_REG_VALID_STS
        return self.access() & (want | TPM_ACCESS_REQUEST_USE) == want

    def request_locality(self) -> None:
        if self.check_locality():
            return
        self.write_int(TPM_I2C_ACCESS, TPM_ACCESS_REQUEST_USE, 1)
        self._wait(f"locality {self.locality}", self.check_locality, self.timeouts.a)

    def release_locality(self) -> None:
        self.write_int(TPM_I2C_ACCESS, TPM_ACCESS_ACTIVE_LOCALITY, 1)

    def status(self) -> int:
        return self.read_int(TPM_I2C_STS, 1)

    def ready(self) -> None:
        self.write_int(TPM_I2C_STS, TPM_STS_COMMAND_READY, 1)

    def burst_count(self) -> int:
        burst = 0

        def nonzero() -> bool:
            nonlocal burst
            burst = (self.read_int(TPM_I2C_STS, 4) >> 8) & 0xFFFF
            return burst != 0

        self._wait("a burst count", nonzero, self.timeouts.a)
        return burst

    def _wait_status(self, mask: int, timeout: Optional[float] = None) -> None:
        self._wait(f"STS 0x{mask:02X}", lambda: self.status() & mask == mask, timeout)

    def cancel(self) -> None:
        """Cancel the command in flight as Linux does: commandReady (an abort)."""
        self.ready()

    def verify_crc(self, what: str, data: bytes) -> None:
        """Compare DATA_CSUM with the CRC of *data* (Linux byte-swaps its CRC)."""
        device = self.read_int(TPM_I2C_DATA_CSUM, 2)
        crc = crc16_kermit(data)
        host = ((crc & 0xFF) << 8) | (crc >> 8)
        self.checksums.append((what, device, host))
        if device != host:
            raise TisI2CError(f"TIS I2C: CRC mismatch for {what}: device 0x{device:04X}, host 0x{host:04X}")

    # -- one command ------------------------------------------------------------
    def send(self, command: bytes) -> None:
        """Send *command* and tpmGo; a transfer error starts over (Linux's -EIO retries)."""
        for attempt in range(RETRIES):
            try:
                self._send(command)
                break
            except TisI2CTimeout:
                self.ready()
                raise
            except TisI2CError:
                self.ready()
                if attempt == RETRIES - 1:
                    raise
        self.write_int(TPM_I2C_STS, TPM_STS_GO, 1)

    def _send(self, command: bytes) -> None:
        if not self.status() & TPM_STS_COMMAND_READY:
            self.ready()
            self._wait_status(TPM_STS_COMMAND_READY, self.timeouts.b)
        count = 0
        while count < len(command) - 1:
            burst = min(self.burst_count(), len(command) - count - 1)
            self.write(TPM_I2C_DATA_FIFO, command[count : count + burst])
            count += burst
            self._wait_status(TPM_STS_VALID)
            if not self.status() & TPM_STS_EXPECT:
                raise TisI2CError(f"TIS I2C: Expect dropped after {count} of {len(command)} bytes")
        self.write(TPM_I2C_DATA_FIFO, command[count:])
        self._wait_status(TPM_STS_VALID)
        if self.status() & TPM_STS_EXPECT:
            raise TisI2CError(f"TIS I2C: Expect still set after all {len(command)} bytes")
        self.verify_crc("command", command)

    def _recv_data(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            self._wait_status(TPM_STS_DATA_AVAIL | TPM_STS_VALID)
            burst = min(self.burst_count(), count - len(data))
            data += self.read(TPM_I2C_DATA_FIFO, burst)
        return data

    def recv(self) -> bytes:
        """Read the response; a transfer error reads it again after responseRetry."""
        try:
            for attempt in range(RETRIES):
                try:
                    return self._try_recv()
                except TisI2CTimeout:
                    raise
                except TisI2CError:
                    if attempt == RETRIES - 1:
                        raise
                    self.retries += 1
                    self.write_int(TPM_I2C_STS, TPM_STS_RESPONSE_RETRY, 1)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self.ready()

    def _try_recv(self) -> bytes:
        response = self._recv_data(HEADER_SIZE)
        expected = header_size(response)
        if not HEADER_SIZE <= expected <= TPM_BUFSIZE:
            raise TisI2CError(f"TIS I2C: response size {expected} out of range")
        response += self._recv_data(expected - HEADER_SIZE)
        self._wait_status(TPM_STS_VALID)
        if self.status() & TPM_STS_DATA_AVAIL:
            raise TisI2CError("TIS I2C: response data left over")
        self.verify_crc("response", response)
        return response

    def wait_response(self, duration: float) -> None:
        """Poll for dataAvail|stsValid for *duration* s; on timeout cancel and raise."""
        try:
            self._wait_status(TPM_STS_DATA_AVAIL | TPM_STS_VALID, duration)
        except TisI2CTimeout:
            self.cancel()
            self.cancels += 1
            raise

    def transmit(self, command: bytes, locality: Optional[int] = None) -> bytes:
        """Run one command as Linux does: take the locality (0 unless asked;
        another one is selected through TPM_I2C_LOC_SEL), send, wait for the
        command's duration, receive, release."""
        if locality is None:
            locality = 0
        if locality != self.locality:
            self.locality = _check_locality(locality, 4)
            self.write_int(TPM_I2C_LOC_SEL, self.locality, 1)
        self.request_locality()
        try:
            self.send(command)
            self.wait_response(self.timeouts.duration(command))
            return self.recv()
        finally:
            self.release_locality()
