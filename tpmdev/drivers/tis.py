"""A TIS FIFO driver, written the way SeaBIOS, EDK2 and Linux drive the TIS.

Sequence for one command at locality *L*:

1. request the locality (ACCESS.requestUse) and wait for activeLocality;
2. write commandReady and wait for STS.commandReady;
3. write the command through DATA_FIFO, at most burstCount bytes at a time
   (re-reading STS whenever the burst is used up), byte by byte as firmware
   does; after the last byte STS.Expect must be clear;
4. write tpmGo and poll STS until stsValid and dataAvail;
5. read the response, honouring burstCount, first the 10-byte header to learn
   its size, then the rest;
6. write commandReady (the TPM may drop the response) and relinquish.

Works on anything with ``read(offset, size)`` / ``write(offset, value, size)``
using device-relative offsets: a :class:`tpmdev.TIS`, or a test adapter for
another implementation. Every wait is bounded by ``timeout`` seconds.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

from tpmdev.errors import TpmDevError
from tpmdev.hw.regs import (
    TIS_LOCALITY_SHIFT,
    TPM_ACCESS,
    TPM_ACCESS_ACTIVE_LOCALITY,
    TPM_ACCESS_REQUEST_USE,
    TPM_ACCESS_TPM_REG_VALID_STS,
    TPM_DATA_FIFO,
    TPM_STS,
    TPM_STS_BURST_COUNT_MASK,
    TPM_STS_BURST_COUNT_SHIFT,
    TPM_STS_COMMAND_READY,
    TPM_STS_DATA_AVAIL,
    TPM_STS_EXPECT,
    TPM_STS_GO,
    TPM_STS_VALID,
)
from tpmdev.wire import HEADER_SIZE, header_size

__all__ = ["TisDriver", "TisTimeout", "RegisterAccess"]


class TisTimeout(TpmDevError, TimeoutError):
    """The device did not reach the state the driver waited for in time."""


class RegisterAccess(Protocol):
    def read(self, offset: int, size: int = 4) -> int: ...

    def write(self, offset: int, value: int, size: int = 4) -> None: ...


Trace = Callable[[str, int, int, int], object]


class TisDriver:
    """Send TPM commands through a TIS register interface.

    :param device: the register interface (device-relative offsets).
    :param locality: the locality to use (0..3).
    :param timeout: seconds to wait for any state change.
    :param trace: called as ``trace(op, offset, size, value)`` for every
        register access (``op`` is ``"r"`` or ``"w"``).
    """

    def __init__(
        self,
        device: RegisterAccess,
        locality: int = 0,
        *,
        timeout: float = 10.0,
        trace: Optional[Trace] = None,
    ) -> None:
        if not 0 <= locality <= 3:
            raise ValueError(f"a driver can use localities 0..3, not {locality}")
        self.device = device
        self.locality = locality
        self.timeout = timeout
        self.trace = trace
        self._base = locality << TIS_LOCALITY_SHIFT

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

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout
        spins = 0
        while not done():
            spins += 1
            if spins > 64:
                if time.monotonic() > deadline:
                    raise TisTimeout(f"TIS locality {self.locality}: timed out waiting for {what}")
                time.sleep(0.0001)

    def _sts(self) -> int:
        return self._r(TPM_STS)

    def _burst(self) -> int:
        return (self._sts() & TPM_STS_BURST_COUNT_MASK) >> TPM_STS_BURST_COUNT_SHIFT

    # -- the steps ----------------------------------------------------------
    def request_locality(self) -> None:
        """Request the locality and wait until it is active."""
        self._w(TPM_ACCESS, TPM_ACCESS_REQUEST_USE, 1)
        want = TPM_ACCESS_TPM_REG_VALID_STS | TPM_ACCESS_ACTIVE_LOCALITY
        self._wait("activeLocality", lambda: self._r(TPM_ACCESS, 1) & want == want)

    def relinquish_locality(self) -> None:
        self._w(TPM_ACCESS, TPM_ACCESS_ACTIVE_LOCALITY, 1)

    def command_ready(self) -> None:
        self._w(TPM_STS, TPM_STS_COMMAND_READY, 1)
        self._wait("commandReady", lambda: bool(self._sts() & TPM_STS_COMMAND_READY))

    def send(self, command: bytes) -> None:
        """Write *command* through DATA_FIFO, honouring burstCount, then tpmGo."""
        sent = 0
        while sent < len(command):
            burst = 0
            deadline = time.monotonic() + self.timeout
            while burst == 0:
                burst = self._burst()
                if burst == 0 and time.monotonic() > deadline:
                    raise TisTimeout(f"TIS locality {self.locality}: burstCount stayed 0")
            for byte in command[sent : sent + burst]:
                self._w(TPM_DATA_FIFO, byte, 1)
            sent += min(burst, len(command) - sent)
        sts = self._sts()
        if sts & TPM_STS_EXPECT:
            raise TpmDevError(
                f"TIS still expects data after the whole {len(command)}-byte command (STS {sts:#010x})"
            )
        self._w(TPM_STS, TPM_STS_GO, 1)

    def wait_response(self) -> None:
        want = TPM_STS_VALID | TPM_STS_DATA_AVAIL
        self._wait("dataAvail", lambda: self._sts() & want == want)

    def receive(self) -> bytes:
        """Read the response, honouring burstCount."""
        data = bytearray()
        expected = HEADER_SIZE
        while len(data) < expected:
            sts = self._sts()
            if not sts & TPM_STS_DATA_AVAIL:
                raise TpmDevError(
                    f"TIS response ended after {len(data)} of {expected} bytes (STS {sts:#010x})"
                )
            burst = (sts & TPM_STS_BURST_COUNT_MASK) >> TPM_STS_BURST_COUNT_SHIFT
            for _ in range(min(burst, expected - len(data))):
                data.append(self._r(TPM_DATA_FIFO, 1))
            if len(data) >= HEADER_SIZE:
                expected = max(header_size(bytes(data)), HEADER_SIZE)
        return bytes(data)

    def transmit(self, command: bytes) -> bytes:
        """Run one command: request the locality, send, wait, receive, release."""
        self.request_locality()
        try:
            self.command_ready()
            self.send(command)
            self.wait_response()
            response = self.receive()
            self._w(TPM_STS, TPM_STS_COMMAND_READY, 1)
        finally:
            self.relinquish_locality()
        return response
