"""A CRB driver, written the way Linux's ``tpm_crb`` and EDK2's ``Tpm2Ptp.c`` drive the CRB.

Both styles run one command at a locality *L* as:

1. request the locality (LOC_CTRL.requestAccess) and wait until it is
   granted (Linux: LOC_STATE.locAssigned and tpmRegValidSts; EDK2:
   LOC_STS.Granted);
2. cmdReady (CTRL_REQ = 1) and wait until the request bit reads 0 (EDK2
   first waits for tpmIdle if the TPM is busy, and afterwards for tpmIdle to
   drop);
3. write the command into the data buffer (Linux: clears CTRL_CANCEL, then
   copies with 4-byte stores; EDK2: byte stores, then writes CMD_HADDR,
   CMD_LADDR, CMD_SIZE, an 8-byte RSP_ADDR and RSP_SIZE, which the device
   ignores);
4. CTRL_START = 1 and poll CTRL_START until bit 0 is clear, then fail on
   CTRL_STS.tpmSts;
5. read the response (Linux: 4-byte loads of the header, then the rest;
   EDK2: byte loads);
6. goIdle (CTRL_REQ = 2) and relinquish the locality.

The command and response buffer is found as both drivers find it: from the
CMD_LADDR / CMD_HADDR, RSP_ADDR and size registers, translated to an offset
with the device's base *address*. Works on anything with ``read(offset,
size)`` / ``write(offset, value, size)``: a :class:`tpmdev.CRB`, or QEMU over
qtest in the conformance tests.

Timeouts are the kernel's (:mod:`tpmdev.drivers._timeouts`): TIMEOUT_C for
the locality and cmdReady, the command's duration for START to clear. When
the duration runs out the driver cancels as Linux's ``crb_cancel`` does
(CTRL_CANCEL = 1, which QEMU passes to the backend; the next send clears
it), goes idle, releases the locality and raises :class:`CrbTimeout`. A CRB
is TPM 2.0 only (Linux sets the TPM 2.0 flag without probing); EDK2's style
refuses a TPM 1.2 response.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from tpmdev.drivers._timeouts import TPM2_TIMEOUTS, Timeouts
from tpmdev.drivers.tis import RegisterAccess, Trace, _check_locality
from tpmdev.errors import ConfigurationError, TpmDevError
from tpmdev.hw.regs import (
    CRB_BASE_ADDRESS,
    CRB_LOCALITY_SHIFT,
    TPM_CRB_CTRL_CANCEL,
    TPM_CRB_CTRL_CANCEL_INVOKE,
    TPM_CRB_CTRL_CMD_HADDR,
    TPM_CRB_CTRL_CMD_LADDR,
    TPM_CRB_CTRL_CMD_SIZE,
    TPM_CRB_CTRL_REQ,
    TPM_CRB_CTRL_REQ_CMD_READY,
    TPM_CRB_CTRL_REQ_GO_IDLE,
    TPM_CRB_CTRL_RSP_ADDR,
    TPM_CRB_CTRL_RSP_SIZE,
    TPM_CRB_CTRL_START,
    TPM_CRB_CTRL_START_INVOKE,
    TPM_CRB_CTRL_STS,
    TPM_CRB_CTRL_STS_TPM_IDLE,
    TPM_CRB_CTRL_STS_TPM_STS,
    TPM_CRB_INTF_CAP_CRB,
    TPM_CRB_INTF_CAP_CRB_IDLE_BYPASS,
    TPM_CRB_INTF_ID,
    TPM_LOC_CTRL,
    TPM_LOC_CTRL_RELINQUISH,
    TPM_LOC_CTRL_REQUEST_ACCESS,
    TPM_LOC_STATE,
    TPM_LOC_STATE_LOC_ASSIGNED,
    TPM_LOC_STATE_TPM_REG_VALID_STS,
    TPM_LOC_STS,
    TPM_LOC_STS_GRANTED,
)
from tpmdev.wire import HEADER_SIZE, TPM_TAG_RSP_COMMAND, header_size

__all__ = ["CrbDriver", "CrbTimeout", "CrbError", "STYLES"]

#: The drivers whose register sequences :class:`CrbDriver` reproduces.
STYLES = ("linux", "edk2")


class CrbTimeout(TpmDevError, TimeoutError):
    """The device did not reach the state the driver waited for in time."""


class CrbError(TpmDevError):
    """The device reported an error (CTRL_STS.tpmSts) or a malformed response."""


class CrbDriver:
    """Send TPM commands through a CRB register interface.

    :param device: the register interface (offsets relative to *address*).
    :param locality: the locality to use (0 on QEMU's device; 0..4 with five).
    :param style: ``"linux"`` or ``"edk2"`` (see the module doc).
    :param address: the guest-physical base of the region, to turn the
        buffer address registers into offsets.
    :param timeouts: the bounds of every wait (default: the kernel's).
    :param timeout: if given, every wait is bounded by this many seconds instead.
    :param trace: called as ``trace(op, offset, size, value)`` for every
        register access (``op`` is ``"r"`` or ``"w"``).
    """

    def __init__(
        self,
        device: RegisterAccess,
        locality: int = 0,
        *,
        style: str = "linux",
        address: int = CRB_BASE_ADDRESS,
        timeouts: Optional[Timeouts] = None,
        timeout: Optional[float] = None,
        trace: Optional[Trace] = None,
    ) -> None:
        self.locality = _check_locality(locality, 4)
        if style not in STYLES:
            raise ConfigurationError(f"style must be one of {STYLES}, got {style!r}")
        self.device = device
        self.style = style
        self.address = address
        base = timeouts or TPM2_TIMEOUTS
        self.timeouts = base.uniform(timeout) if timeout is not None else base
        self.trace = trace
        self.tpm_version = 2
        self._base = self.locality << CRB_LOCALITY_SHIFT
        # each locality's buffers as its registers give them (one window
        # per locality in the PTP layout), read at its first command
        self._buffers: dict[int, tuple[int, int, int, int]] = {}
        #: commands cancelled after their duration ran out
        self.cancels = 0

    # -- register access --------------------------------------------------
    def _r(self, reg: int, size: int = 4) -> int:
        return self._load(self._base + reg, size)

    def _w(self, reg: int, value: int, size: int = 4) -> None:
        self._store(self._base + reg, value, size)

    def _load(self, offset: int, size: int = 4) -> int:
        """A load at a region offset (the buffers are found by address, not by locality)."""
        value = self.device.read(offset, size)
        if self.trace is not None:
            self.trace("r", offset, size, value)
        return value

    def _store(self, offset: int, value: int, size: int = 4) -> None:
        if self.trace is not None:
            self.trace("w", offset, size, value)
        self.device.write(offset, value, size)

    def _wait(self, what: str, done: Callable[[], bool], timeout: Optional[float] = None) -> None:
        timeout = self.timeouts.c if timeout is None else timeout
        deadline = time.monotonic() + timeout
        spins = 0
        while not done():
            spins += 1
            if spins > 64:
                if time.monotonic() > deadline:
                    raise CrbTimeout(
                        f"CRB locality {self.locality}: timed out after {timeout:g} s waiting for {what}"
                    )
                time.sleep(0.0001)

    # -- the steps ----------------------------------------------------------
    def probe(self) -> tuple[int, int, int, int]:
        """Read the interface and the buffer registers of the driver's
        locality: ``(cmd offset, cmd size, rsp offset, rsp size)``, offsets
        relative to the region."""
        intf = self._r(TPM_CRB_INTF_ID)
        if not intf & TPM_CRB_INTF_CAP_CRB:
            raise CrbError(f"INTF_ID {intf:#010x} does not announce a CRB")
        cmd_addr = self._r(TPM_CRB_CTRL_CMD_LADDR) | (self._r(TPM_CRB_CTRL_CMD_HADDR) << 32)
        cmd_size = self._r(TPM_CRB_CTRL_CMD_SIZE)
        rsp_addr = self._r(TPM_CRB_CTRL_RSP_ADDR, 8)  # both drivers read it as 64 bits
        rsp_size = self._r(TPM_CRB_CTRL_RSP_SIZE)
        if cmd_addr == rsp_addr and cmd_size != rsp_size:
            raise CrbError("overlapping command and response buffers of different sizes")
        found = (cmd_addr - self.address, cmd_size, rsp_addr - self.address, rsp_size)
        self._buffers[self.locality] = found
        return found

    def request_locality(self) -> None:
        if self.style == "linux":
            self._w(TPM_LOC_CTRL, TPM_LOC_CTRL_REQUEST_ACCESS)
            want = TPM_LOC_STATE_LOC_ASSIGNED | TPM_LOC_STATE_TPM_REG_VALID_STS
            self._wait("locAssigned", lambda: self._r(TPM_LOC_STATE) & want == want)
        else:
            self._w(TPM_LOC_CTRL, TPM_LOC_CTRL_REQUEST_ACCESS)
            self._wait("Granted", lambda: bool(self._r(TPM_LOC_STS) & TPM_LOC_STS_GRANTED), self.timeouts.a)

    def relinquish_locality(self) -> None:
        self._w(TPM_LOC_CTRL, TPM_LOC_CTRL_RELINQUISH)

    def command_ready(self) -> None:
        if self.style == "edk2":
            bypass = self._r(TPM_CRB_INTF_ID) & TPM_CRB_INTF_CAP_CRB_IDLE_BYPASS
            if not bypass and not self._r(TPM_CRB_CTRL_STS) & TPM_CRB_CTRL_STS_TPM_IDLE:
                self._wait(
                    "tpmIdle",
                    lambda: bool(self._r(TPM_CRB_CTRL_STS) & TPM_CRB_CTRL_STS_TPM_IDLE),
                    self.timeouts.a,
                )
        self._w(TPM_CRB_CTRL_REQ, TPM_CRB_CTRL_REQ_CMD_READY)
        self._wait("cmdReady to clear", lambda: not self._r(TPM_CRB_CTRL_REQ) & TPM_CRB_CTRL_REQ_CMD_READY)
        if self.style == "edk2":
            self._wait("tpmIdle to clear", lambda: not self._r(TPM_CRB_CTRL_STS) & TPM_CRB_CTRL_STS_TPM_IDLE)

    def go_idle(self) -> None:
        self._w(TPM_CRB_CTRL_REQ, TPM_CRB_CTRL_REQ_GO_IDLE)

    def send(self, command: bytes) -> None:
        """Write *command* into the command buffer and START it."""
        cmd, cmd_size, _, rsp_size = self._buffers.get(self.locality) or self.probe()
        if len(command) > cmd_size:
            raise CrbError(f"a {len(command)}-byte command does not fit the {cmd_size}-byte buffer")
        if self.style == "linux":
            self._w(TPM_CRB_CTRL_CANCEL, 0)
            padded = command + bytes(-len(command) % 4)
            for i in range(0, len(padded), 4):
                self._store(cmd + i, int.from_bytes(padded[i : i + 4], "little"))
        else:
            for i, byte in enumerate(command):
                self._store(cmd + i, byte, 1)
            buffer = self.address + cmd
            self._w(TPM_CRB_CTRL_CMD_HADDR, buffer >> 32)
            self._w(TPM_CRB_CTRL_CMD_LADDR, buffer & 0xFFFFFFFF)
            self._w(TPM_CRB_CTRL_CMD_SIZE, cmd_size)
            self._w(TPM_CRB_CTRL_RSP_ADDR, buffer, 8)
            self._w(TPM_CRB_CTRL_RSP_SIZE, rsp_size)
        self._w(TPM_CRB_CTRL_START, TPM_CRB_CTRL_START_INVOKE)

    def cancel(self) -> None:
        """Linux's ``crb_cancel``: CTRL_CANCEL = 1 (cleared again by the next send)."""
        self._w(TPM_CRB_CTRL_CANCEL, TPM_CRB_CTRL_CANCEL_INVOKE)

    def wait_response(self, duration: Optional[float] = None) -> None:
        """Poll START for *duration* s (default TIMEOUT_C); on timeout cancel and raise."""
        try:
            self._wait(
                "START to clear (the response)",
                lambda: not self._r(TPM_CRB_CTRL_START) & TPM_CRB_CTRL_START_INVOKE,
                duration,
            )
        except CrbTimeout:
            self.cancel()
            self.cancels += 1
            raise
        sts = self._r(TPM_CRB_CTRL_STS)
        if sts & TPM_CRB_CTRL_STS_TPM_STS:
            raise CrbError(f"CRB reports a fatal error (CTRL_STS {sts:#010x})")

    def receive(self) -> bytes:
        """Read the response from the response buffer."""
        _, _, rsp, rsp_size = self._buffers.get(self.locality) or self.probe()
        if self.style == "linux":
            head = b"".join(self._load(rsp + i).to_bytes(4, "little") for i in range(0, 8, 4))[:HEADER_SIZE]
            size = header_size(head + bytes(HEADER_SIZE - len(head)))
            if not 6 <= size <= rsp_size:
                raise CrbError(f"response header size {size} is outside 6..{rsp_size}")
            words = b"".join(self._load(rsp + i).to_bytes(4, "little") for i in range(0, size + 3 & ~3, 4))
            return words[:size]
        head = bytes(self._load(rsp + i, 1) for i in range(HEADER_SIZE))
        if int.from_bytes(head[:2], "big") == TPM_TAG_RSP_COMMAND:
            raise CrbError("a TPM 1.2 response (tag 0x00C4): EDK2 treats the TPM as unsupported")
        size = header_size(head)
        if not HEADER_SIZE <= size <= rsp_size:
            raise CrbError(f"response header size {size} is outside {HEADER_SIZE}..{rsp_size}")
        return head + bytes(self._load(rsp + i, 1) for i in range(HEADER_SIZE, size))

    def transmit(self, command: bytes, locality: Optional[int] = None) -> bytes:
        """Run one command at *locality* (default: the driver's, which this
        call does not change): request the locality, cmdReady, send, wait
        for the command's duration, receive, goIdle, release."""
        own = self.locality
        if locality is not None and locality != self.locality:
            self.locality = _check_locality(locality, 4)
            self._base = self.locality << CRB_LOCALITY_SHIFT
        try:
            available = getattr(self.device, "localities", 5)
            if self.locality >= available:
                raise ConfigurationError(
                    f"this CRB has {available} localit{'y' if available == 1 else 'ies'} (QEMU's has one; "
                    f"tpmdev.CRB(localities=5) has five): locality {self.locality} is not there"
                )
            self.request_locality()
            try:
                self.command_ready()
                self.send(command)
                self.wait_response(self.timeouts.duration(command))
                response = self.receive()
            finally:
                self.go_idle()
                self.relinquish_locality()
            return response
        finally:
            self.locality = own
            self._base = own << CRB_LOCALITY_SHIFT
