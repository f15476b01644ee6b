"""A TIS FIFO driver, written the way Linux's ``tpm_tis_core`` drives the TIS.

The sequence of one command at locality *L* (Linux ``tpm_try_transmit`` over
``tpm_tis_core.c``, polling, no interrupts):

1. take the locality: nothing to do if ACCESS shows activeLocality and
   tpmRegValidSts with requestUse clear, else write requestUse and poll
   for that within TIMEOUT_A;
2. if STS.commandReady is clear, write it and poll within TIMEOUT_B;
3. write the command through DATA_FIFO in chunks of ``min(burstCount,
   remaining - 1)`` bytes (a zero burst count is polled within TIMEOUT_A,
   TIMEOUT_D on TPM 1.2), after each chunk wait for stsValid (TIMEOUT_C) and
   require Expect still set; the last byte alone, then Expect must be clear;
   a transfer error (-EIO) makes the driver write commandReady and start
   over, up to :data:`RETRIES` times;
4. tpmGo, then poll STS until dataAvail and stsValid for the command's
   duration (:meth:`Timeouts.duration`); on timeout cancel as Linux's
   ``tpm_tis_ready`` does (commandReady: QEMU aborts the command in
   execution and passes the cancel to the backend) and raise
   :class:`TisTimeout`;
5. read the 10-byte header, then the rest, each chunk after dataAvail and
   stsValid (TIMEOUT_C) and at most burstCount bytes; refuse a size below
   10 or above the buffer; wait for stsValid and fail if dataAvail is still
   set; a short or inconsistent read writes responseRetry and reads the
   response again (up to :data:`RETRIES` times);
6. commandReady, then release the locality (write activeLocality).

:meth:`TisDriver.probe` is Linux's probe: DID_VID, tpmRegValidSts, the TPM 2.0
probe (TPM2_GetCapability answered with tag 0x8001 means TPM 2.0, anything
else TPM 1.2), RID, INTF_CAPS.

Works on anything with ``read(offset, size)`` / ``write(offset, value, size)``
using device-relative offsets: a :class:`tpmdev.TIS`, or a test adapter for
another implementation.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

from tpmdev.drivers._timeouts import Timeouts, for_version
from tpmdev.errors import ConfigurationError, TpmDevError
from tpmdev.hw.regs import (
    TIS_BUFFER_MAX,
    TIS_LOCALITY_SHIFT,
    TPM_ACCESS,
    TPM_ACCESS_ACTIVE_LOCALITY,
    TPM_ACCESS_REQUEST_USE,
    TPM_ACCESS_TPM_REG_VALID_STS,
    TPM_DATA_FIFO,
    TPM_DID_VID,
    TPM_INTF_CAPABILITY,
    TPM_RID,
    TPM_STS,
    TPM_STS_BURST_COUNT_MASK,
    TPM_STS_BURST_COUNT_SHIFT,
    TPM_STS_COMMAND_READY,
    TPM_STS_DATA_AVAIL,
    TPM_STS_EXPECT,
    TPM_STS_GO,
    TPM_STS_RESPONSE_RETRY,
    TPM_STS_VALID,
)
from tpmdev.wire import HEADER_SIZE, TPM_ST_NO_SESSIONS, header_size, parse_header

__all__ = ["TisDriver", "TisTimeout", "TisError", "RegisterAccess", "RETRIES", "tpm2_probe_command"]

#: Linux's TPM_RETRY: attempts of a send or a receive that failed with a transfer error
RETRIES = 50
#: TPM_PT_TOTAL_COMMANDS, the property Linux's TPM 2.0 probe asks for
_TPM_PT_TOTAL_COMMANDS = 0x129
_TPM_CAP_TPM_PROPERTIES = 6


def tpm2_probe_command() -> bytes:
    """Linux's ``tpm2_probe``: TPM2_GetCapability(TPM_PROPERTIES, TOTAL_COMMANDS, 1)."""
    body = _TPM_CAP_TPM_PROPERTIES.to_bytes(4, "big") + _TPM_PT_TOTAL_COMMANDS.to_bytes(4, "big")
    body += (1).to_bytes(4, "big")
    size = HEADER_SIZE + len(body)
    return TPM_ST_NO_SESSIONS.to_bytes(2, "big") + size.to_bytes(4, "big") + (0x17A).to_bytes(4, "big") + body


def tpm_version_of(response: bytes) -> int:
    """2 if the probe was answered with TPM 2.0's tag 0x8001, else 1 (as Linux)."""
    return 2 if len(response) >= HEADER_SIZE and parse_header(response)[0] == TPM_ST_NO_SESSIONS else 1


class TisTimeout(TpmDevError, TimeoutError):
    """The device did not reach the state the driver waited for in time (Linux: -ETIME)."""


class TisError(TpmDevError):
    """The device broke the protocol (Linux: -EIO) and retries did not help."""


class _TransferError(Exception):
    """A transfer error the driver recovers from by starting over (Linux's -EIO)."""


class RegisterAccess(Protocol):
    def read(self, offset: int, size: int = 4) -> int: ...

    def write(self, offset: int, value: int, size: int = 4) -> None: ...


Trace = Callable[[str, int, int, int], object]


class TisDriver:
    """Send TPM commands through a TIS register interface, as Linux does.

    :param device: the register interface (device-relative offsets).
    :param locality: the default locality of :meth:`transmit` (0..4).
    :param timeouts: the bounds of every wait (default: the kernel's for
        the TPM version: :func:`tpmdev.drivers.for_version`).
    :param timeout: if given, every wait is bounded by this many seconds
        instead (a slow simulator, QEMU over qtest).
    :param trace: called as ``trace(op, offset, size, value)`` for every
        register access (``op`` is ``"r"`` or ``"w"``).

    :attr:`tpm_version` is the TPM version :meth:`probe` found (before a
    probe: the device's ``tpm_version`` if it has one, else 2).
    """

    def __init__(
        self,
        device: RegisterAccess,
        locality: int = 0,
        *,
        timeouts: Optional[Timeouts] = None,
        timeout: Optional[float] = None,
        trace: Optional[Trace] = None,
    ) -> None:
        self.locality = _check_locality(locality, 4)
        self.device = device
        self.trace = trace
        version = getattr(device, "tpm_version", 2)
        self.tpm_version = version if version in (1, 2) else 2
        self._timeouts = timeouts
        self._timeout = timeout
        self._base = self.locality << TIS_LOCALITY_SHIFT
        self.did_vid = 0
        self.rid = 0
        self.intf_caps = 0
        #: commands cancelled after their duration ran out
        self.cancels = 0
        #: responses read again after responseRetry
        self.retries = 0

    @property
    def timeouts(self) -> Timeouts:
        """The bounds in force (the kernel's for :attr:`tpm_version` unless given)."""
        base = self._timeouts or for_version(self.tpm_version)
        return base.uniform(self._timeout) if self._timeout is not None else base

    @timeouts.setter
    def timeouts(self, value: Timeouts) -> None:
        self._timeouts, self._timeout = value, None

    # -- register access --------------------------------------------------
    def _r(self, reg: int, size: int = 4) -> int:
        value = self.device.read(self._base + reg, size)
        if self.trace is not None:
            self.trace("r", self._base + reg, size, value)
        return value

    def _w(self, reg: int, value: int, size: int = 4) -> None:
        if self.trace is not None:
            self.trace("w", self._base + reg, size, value)
        self.device.write(self._base + reg, value, size)

    def _wait(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        spins = 0
        while not done():
            spins += 1
            if spins > 64:
                if time.monotonic() > deadline:
                    raise TisTimeout(
                        f"TIS locality {self.locality}: timed out after {timeout:g} s waiting for {what}"
                    )
                time.sleep(0.0001)

    def _sts(self) -> int:
        return self._r(TPM_STS, 1)

    def _wait_sts(self, mask: int, timeout: float) -> None:
        self._wait(f"STS 0x{mask:02X}", lambda: self._sts() & mask == mask, timeout)

    def burst_count(self) -> int:
        """STS bits 8..23 (a 32-bit read), polled while zero (TIMEOUT_A; TIMEOUT_D on TPM 1.2)."""
        burst = 0

        def nonzero() -> bool:
            nonlocal burst
            burst = (self._r(TPM_STS) & TPM_STS_BURST_COUNT_MASK) >> TPM_STS_BURST_COUNT_SHIFT
            return burst != 0

        t = self.timeouts
        self._wait("a burst count", nonzero, t.a if self.tpm_version == 2 else t.d)
        return burst

    # -- locality -----------------------------------------------------------
    def check_locality(self) -> bool:
        want = TPM_ACCESS_ACTIVE_LOCALITY | TPM_ACCESS_TPM_REG_VALID_STS
        return self._r(TPM_ACCESS, 1) & (want | TPM_ACCESS_REQUEST_USE) == want

    def request_locality(self) -> None:
        """Take the locality (Linux's ``request_locality``)."""
        if self.check_locality():
            return
        self._w(TPM_ACCESS, TPM_ACCESS_REQUEST_USE, 1)
        self._wait("activeLocality", self.check_locality, self.timeouts.a)

    def relinquish_locality(self) -> None:
        self._w(TPM_ACCESS, TPM_ACCESS_ACTIVE_LOCALITY, 1)

    def _at(self, locality: Optional[int]) -> None:
        if locality is not None and locality != self.locality:
            self.locality = _check_locality(locality, 4)
            self._base = self.locality << TIS_LOCALITY_SHIFT

    # -- probe ----------------------------------------------------------------
    def probe(self) -> int:
        """Linux's probe at locality 0; returns the TPM version (1 or 2).
        The driver's own locality is kept for the commands after it."""
        own = self.locality
        self._at(0)
        try:
            self.did_vid = self._r(TPM_DID_VID)
            self._wait(
                "tpmRegValidSts",
                lambda: bool(self._r(TPM_ACCESS, 1) & TPM_ACCESS_TPM_REG_VALID_STS),
                self.timeouts.a,
            )
            self.tpm_version = tpm_version_of(self.transmit(tpm2_probe_command()))
            self.rid = self._r(TPM_RID, 1)
            self.intf_caps = self._r(TPM_INTF_CAPABILITY)
        finally:
            self._at(own)
        return self.tpm_version

    # -- the steps ----------------------------------------------------------
    def command_ready(self) -> None:
        """commandReady unless the TPM already shows it (TIMEOUT_B)."""
        if self._sts() & TPM_STS_COMMAND_READY:
            return
        self._w(TPM_STS, TPM_STS_COMMAND_READY, 1)
        self._wait_sts(TPM_STS_COMMAND_READY, self.timeouts.b)

    def ready(self) -> None:
        """Write commandReady (Linux's ``tpm_tis_ready``: abort, or idle after a response)."""
        self._w(TPM_STS, TPM_STS_COMMAND_READY, 1)

    def cancel(self) -> None:
        """Cancel the command in flight as Linux does: commandReady (an abort)."""
        self.ready()

    def _send_data(self, command: bytes) -> None:
        self.command_ready()
        t = self.timeouts
        count = 0
        while count < len(command) - 1:
            burst = min(self.burst_count(), len(command) - count - 1)
            for byte in command[count : count + burst]:
                self._w(TPM_DATA_FIFO, byte, 1)
            count += burst
            self._wait_sts(TPM_STS_VALID, t.c)
            if not self._sts() & TPM_STS_EXPECT:
                raise _TransferError(f"Expect dropped after {count} of {len(command)} bytes")
        self._w(TPM_DATA_FIFO, command[count], 1)
        self._wait_sts(TPM_STS_VALID, t.c)
        if self._sts() & TPM_STS_EXPECT:
            raise _TransferError(f"Expect still set after all {len(command)} bytes")

    def send(self, command: bytes) -> None:
        """Write *command* through DATA_FIFO (retried on a transfer error), then tpmGo."""
        if len(command) < HEADER_SIZE:
            raise TisError(f"a TPM command is at least {HEADER_SIZE} bytes, got {len(command)}")
        for attempt in range(RETRIES):
            try:
                self._send_data(command)
                break
            except _TransferError as exc:
                self.ready()
                if attempt == RETRIES - 1:
                    raise TisError(f"TIS locality {self.locality}: {exc}") from None
        self._w(TPM_STS, TPM_STS_GO, 1)

    def wait_response(self, duration: float) -> None:
        """Poll for dataAvail|stsValid for *duration* s; on timeout cancel and raise."""
        want = TPM_STS_VALID | TPM_STS_DATA_AVAIL
        try:
            self._wait("dataAvail (the response)", lambda: self._sts() & want == want, duration)
        except TisTimeout:
            self.cancel()
            self.cancels += 1
            raise

    def _recv_data(self, data: bytearray, count: int) -> None:
        t = self.timeouts
        while len(data) < count:
            self._wait_sts(TPM_STS_DATA_AVAIL | TPM_STS_VALID, t.c)
            burst = min(self.burst_count(), count - len(data))
            for _ in range(burst):
                data.append(self._r(TPM_DATA_FIFO, 1))

    def _try_receive(self) -> bytes:
        data = bytearray()
        self._recv_data(data, HEADER_SIZE)
        expected = header_size(bytes(data))
        if not HEADER_SIZE <= expected <= TIS_BUFFER_MAX:
            raise _TransferError(f"response size {expected} out of range")
        self._recv_data(data, expected)
        self._wait_sts(TPM_STS_VALID, self.timeouts.c)
        if self._sts() & TPM_STS_DATA_AVAIL:
            raise _TransferError("response data left over")
        return bytes(data)

    def receive(self) -> bytes:
        """Read the response; a short or inconsistent read is read again after responseRetry."""
        try:
            for attempt in range(RETRIES):
                try:
                    return self._try_receive()
                except _TransferError as exc:
                    if attempt == RETRIES - 1:
                        raise TisError(f"TIS locality {self.locality}: {exc}") from None
                    self.retries += 1
                    self._w(TPM_STS, TPM_STS_RESPONSE_RETRY, 1)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self.ready()

    def transmit(self, command: bytes, locality: Optional[int] = None) -> bytes:
        """Run one command at *locality* (default: the driver's, which this
        call does not change): take the locality, send, wait for the
        command's duration, receive, release."""
        own = self.locality
        self._at(locality)
        try:
            self.request_locality()
            try:
                self.send(command)
                self.wait_response(self.timeouts.duration(command))
                return self.receive()
            finally:
                self.relinquish_locality()
        finally:
            self._at(own)


def _check_locality(locality: object, highest: int) -> int:
    if isinstance(locality, bool) or not isinstance(locality, int) or not 0 <= locality <= highest:
        raise ConfigurationError(f"the locality must be an int 0..{highest}, got {locality!r}")
    return locality
