"""A pSeries guest of the sPAPR vTPM, driving it the way Linux's ``tpm_ibmvtpm`` does.

Two pieces, because on a pSeries machine two parties stand between a guest
driver and the vTPM:

* :class:`SpaprPlatform` plays QEMU's VIO bus: guest RAM seen through the
  device's TCE table (the RTCE window, 4 KiB pages), and the command/response
  queue the guest registered with H_REG_CRQ. Its :meth:`~SpaprPlatform.dma_read`,
  :meth:`~SpaprPlatform.dma_write` and :meth:`~SpaprPlatform.send_crq` are
  what a :class:`tpmdev.SPAPR` device is built with. ``send_crq`` delivers an
  answer as QEMU's VIO bus does: it refuses it (returns 1, the answer is
  lost) when the entry at the queue cursor is still in use, writes the
  second 8 bytes before the first (the valid byte lands last), advances the
  cursor and pulses the interrupt if the guest enabled it.
* :class:`IbmvtpmDriver` plays the guest driver: :meth:`~IbmvtpmDriver.probe`
  registers a one-page queue and sends init, GET_VERSION and
  GET_RTCE_BUFFER_SIZE, answers "init" with "init complete" from its queue
  handler, and maps a buffer of the size the device announced;
  :meth:`~IbmvtpmDriver.transmit` copies a command into that buffer, sends
  TPM_COMMAND with the buffer's I/O address and waits for the answer that
  carries the response length; :meth:`~IbmvtpmDriver.suspend` sends
  PREPARE_TO_SUSPEND and :meth:`~IbmvtpmDriver.resume` re-sends init.

The queue handler runs whenever the driver looks for an answer (QEMU would
interrupt the guest instead): it takes entries whose valid byte has bit 7
set, in order, and frees each slot by zeroing its valid byte. Error answers
(msg 0xFF) are recorded in :attr:`IbmvtpmDriver.errors`; Linux ignores them.

Timeouts are the kernel's: one second for the probe's answers (Linux's
wait for the RTCE buffer size), the command's duration
(:mod:`tpmdev.drivers._timeouts`) for a TPM command. When it runs out the
driver raises :class:`SpaprTimeout`. There is no cancel on this bus: Linux's
``tpm_ibmvtpm`` cancel does nothing and QEMU's vTPM has no cancel message,
so the command runs to its end; its late answer is dropped, not taken for
the next command's.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

from tpmdev.drivers._timeouts import TPM2_TIMEOUTS, Timeouts
from tpmdev.errors import ConfigurationError, TpmDevError
from tpmdev.hw.spapr import (
    H_DEST_PARM,
    H_SUCCESS,
    SPAPR_VTPM_CRQ_SIZE,
    SPAPR_VTPM_GET_RTCE_BUFFER_SIZE,
    SPAPR_VTPM_GET_VERSION,
    SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT,
    SPAPR_VTPM_INIT_CRQ_RESULT,
    SPAPR_VTPM_MSG_RESULT,
    SPAPR_VTPM_PREPARE_TO_SUSPEND,
    SPAPR_VTPM_RTCE_WINDOW_SIZE,
    SPAPR_VTPM_TPM_COMMAND,
    SPAPR_VTPM_VALID_COMMAND,
    SPAPR_VTPM_VALID_INIT_CRQ_COMMAND,
    SPAPR_VTPM_VTPM_ERROR,
    CrqEntry,
    crq_entry,
    parse_crq,
)

__all__ = ["SpaprPlatform", "IbmvtpmDriver", "SpaprDriverError", "SpaprTimeout", "CrqDevice"]

#: Linux waits this long for the answers to the probe's CRQ messages (s).
PROBE_TIMEOUT = 1.0

#: TCE page size.
PAGE_SIZE = 0x1000

# PAPR hypercall results the platform returns (QEMU include/hw/ppc/spapr.h).
H_PARAMETER = -4
H_RESOURCE = -16


class SpaprDriverError(TpmDevError):
    """The device did not answer as the driver needs (no answer, an error answer, a timeout)."""


class SpaprTimeout(SpaprDriverError, TimeoutError):
    """No answer to a TPM command within its duration."""


class CrqDevice(Protocol):
    def receive_crq(self, entry: bytes) -> int: ...


class SpaprPlatform:
    """Guest RAM behind a TCE table, and the guest's registered CRQ.

    :param ram_size: bytes of guest RAM (:attr:`ram`, a bytearray).

    The TCE table maps 4 KiB I/O pages to RAM pages (:meth:`map`). A DMA
    transfer stops at the first unmapped page: a read returns the bytes
    before it, a write stores them and returns False. (QEMU carries on past
    an unmapped page; a guest maps its buffers in one piece, so the
    difference does not show.)
    """

    def __init__(self, ram_size: int = 0x100000) -> None:
        self.ram = bytearray(ram_size)
        self._tce: dict[int, int] = {}  # I/O page number -> RAM address of the page
        self._next_ram = PAGE_SIZE  # RAM page 0 stays unused: a stray address 0 shows
        self._next_ioba = PAGE_SIZE
        self.queue_addr = 0  # I/O address of the registered queue
        self.queue_size = 0  # 0: no queue registered
        self.queue_next = 0
        self.signal = False  # H_VIO_SIGNAL: interrupts enabled
        self.interrupts = 0
        self.lost: list[bytes] = []  # answers the queue could not take

    # -- the guest kernel's side ----------------------------------------------
    def alloc(self, size: int) -> int:
        """Page-aligned guest RAM of *size* bytes; returns its RAM address."""
        addr = self._next_ram
        self._next_ram += -(-size // PAGE_SIZE) * PAGE_SIZE
        if self._next_ram > len(self.ram):
            raise MemoryError("guest RAM exhausted")
        return addr

    def map(self, ram_addr: int, size: int) -> int:
        """Map *size* bytes of RAM at a fresh I/O address (dma_map_single); returns it."""
        ioba = self._next_ioba
        pages = -(-size // PAGE_SIZE)
        for i in range(pages):
            self._tce[ioba // PAGE_SIZE + i] = ram_addr + i * PAGE_SIZE
        self._next_ioba += pages * PAGE_SIZE
        return ioba

    def unmap(self, ioba: int, size: int) -> None:
        for i in range(-(-size // PAGE_SIZE)):
            self._tce.pop(ioba // PAGE_SIZE + i, None)

    def h_reg_crq(self, ioba: int, size: int) -> int:
        """Register the guest's queue at I/O address *ioba* (QEMU's checks)."""
        if not 0x1000 <= size <= 0x10000000 or ioba & 0xFFF:
            return H_PARAMETER
        if self.queue_size:
            return H_RESOURCE
        self.queue_addr, self.queue_size, self.queue_next = ioba, size, 0
        return H_SUCCESS

    def h_free_crq(self) -> int:
        self.queue_addr = self.queue_size = self.queue_next = 0
        return H_SUCCESS

    # -- the device's side ---------------------------------------------------
    def _chunks(self, addr: int, n: int) -> list[tuple[int, int]]:
        """(RAM address, length) pieces of [addr, addr+n) up to the first unmapped page."""
        pieces = []
        while n > 0:
            if not 0 <= addr < SPAPR_VTPM_RTCE_WINDOW_SIZE:
                break
            ram = self._tce.get(addr // PAGE_SIZE)
            if ram is None:
                break
            offset = addr % PAGE_SIZE
            length = min(n, PAGE_SIZE - offset)
            pieces.append((ram + offset, length))
            addr += length
            n -= length
        return pieces

    def dma_read(self, addr: int, n: int) -> bytes:
        return b"".join(bytes(self.ram[a : a + k]) for a, k in self._chunks(addr, n))

    def dma_write(self, addr: int, data: bytes) -> bool:
        done = 0
        for a, k in self._chunks(addr, len(data)):
            self.ram[a : a + k] = data[done : done + k]
            done += k
        return done == len(data)

    def send_crq(self, entry: bytes) -> int:
        """Put an answer into the guest's queue, as QEMU's VIO bus does.

        Returns 0, 1 when the queue is full, -1 when none is registered, or
        H_DEST_PARM when the queue page is not mapped; the answer is lost in
        all but the first case (QEMU's vTPM ignores the result).
        """
        if not self.queue_size:
            self.lost.append(bytes(entry))
            return -1
        slot = self.queue_addr + self.queue_next
        head = self.dma_read(slot, 1)
        if len(head) != 1:
            self.lost.append(bytes(entry))
            return H_DEST_PARM
        if head[0] != 0:
            self.lost.append(bytes(entry))
            return 1
        # the valid byte (in the first half) lands last
        if not self.dma_write(slot + 8, entry[8:16]) or not self.dma_write(slot, entry[0:8]):
            self.lost.append(bytes(entry))
            return H_DEST_PARM
        self.queue_next = (self.queue_next + SPAPR_VTPM_CRQ_SIZE) % self.queue_size
        if self.signal:
            self.interrupts += 1
        return 0


class IbmvtpmDriver:
    """The guest driver of the vTPM (Linux ``tpm_ibmvtpm``'s sequence).

    :param device: anything with ``receive_crq(entry) -> status`` (a
        :class:`tpmdev.SPAPR`); its ``busy``, ``wait(timeout)`` and
        ``poll()`` are used when present, to wait for an asynchronous answer.
    :param platform: the :class:`SpaprPlatform` the device was built with.
    :param timeouts: the bounds of every wait (default: the kernel's).
    :param timeout: if given, every wait is bounded by this many seconds instead.
    """

    def __init__(
        self,
        device: CrqDevice,
        platform: SpaprPlatform,
        *,
        timeouts: Optional[Timeouts] = None,
        timeout: Optional[float] = None,
    ) -> None:
        self.device = device
        self.platform = platform
        base = timeouts or TPM2_TIMEOUTS
        self.timeouts = base.uniform(timeout) if timeout is not None else base
        self._probe_timeout = PROBE_TIMEOUT if timeout is None else timeout
        self.tpm_version = 2
        #: commands given up after their duration ran out (the device is not told)
        self.cancels = 0
        self._stale = 0
        self.vtpm_version: Optional[int] = None
        self.rtce_size = 0
        self.rtce_buf = 0  # RAM address of the command/response buffer (0: none yet)
        self.rtce_dma_handle = 0  # its I/O address
        self.init_complete = False
        self.suspended = 0
        self.errors: list[CrqEntry] = []
        self._queue_ram = 0
        self._index = 0
        self._res_len: Optional[int] = None

    # -- hypercalls -------------------------------------------------------------
    def send_crq(self, valid: int, msg: int, length: int = 0, data: int = 0) -> int:
        """H_SEND_CRQ with the first word built from the fields, the second zero."""
        return int(self.device.receive_crq(crq_entry(valid, msg, length, data)))

    def _send(self, valid: int, msg: int, length: int = 0, data: int = 0) -> None:
        rc = self.send_crq(valid, msg, length, data)
        if rc != H_SUCCESS:
            raise SpaprDriverError(f"H_SEND_CRQ of msg 0x{msg:02x} failed with {rc}")

    # -- probe, suspend, resume -------------------------------------------------
    def probe(self) -> None:
        """Register the queue, then init, GET_VERSION, GET_RTCE_BUFFER_SIZE, and
        wait for the buffer size (Linux waits one second; here ``timeout``)."""
        p = self.platform
        self._queue_ram = p.alloc(PAGE_SIZE)
        ioba = p.map(self._queue_ram, PAGE_SIZE)
        if p.h_reg_crq(ioba, PAGE_SIZE) != H_SUCCESS:
            raise SpaprDriverError("H_REG_CRQ failed")
        p.signal = True
        self._index = 0
        self._send(SPAPR_VTPM_VALID_INIT_CRQ_COMMAND, SPAPR_VTPM_INIT_CRQ_RESULT)
        self._send(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_GET_VERSION)
        self._send(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_GET_RTCE_BUFFER_SIZE)
        if not self._wait_for(lambda: self.rtce_buf != 0, self._probe_timeout):
            raise SpaprDriverError("CRQ response timed out: no RTCE buffer size")

    def suspend(self) -> None:
        """PREPARE_TO_SUSPEND, and wait for its acknowledgement."""
        before = self.suspended
        self._send(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_PREPARE_TO_SUSPEND)
        if not self._wait_for(lambda: self.suspended > before, self._probe_timeout):
            raise SpaprDriverError("no answer to PREPARE_TO_SUSPEND")

    def resume(self) -> None:
        """Re-enable the queue and send init again (as Linux on resume)."""
        self.platform.signal = True
        self.init_complete = False
        self._send(SPAPR_VTPM_VALID_INIT_CRQ_COMMAND, SPAPR_VTPM_INIT_CRQ_RESULT)
        if not self._wait_for(lambda: self.init_complete, self._probe_timeout):
            raise SpaprDriverError("no answer to init")

    # -- commands ---------------------------------------------------------------
    def transmit(self, command: bytes, locality: Optional[int] = None) -> bytes:
        """Send one TPM command through the RTCE buffer; return the response.
        The vTPM runs every command at locality 0 (QEMU): no other is taken."""
        if locality not in (None, 0):
            raise ConfigurationError(f"the sPAPR vTPM runs commands at locality 0 only, not {locality!r}")
        if not self.rtce_buf:
            raise SpaprDriverError("the vTPM is not ready: probe() first")
        if len(command) > self.rtce_size:
            raise SpaprDriverError(
                f"command of {len(command)} bytes exceeds the RTCE buffer ({self.rtce_size})"
            )
        ram = self.platform.ram
        ram[self.rtce_buf : self.rtce_buf + len(command)] = command
        self._res_len = None
        self._send(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_TPM_COMMAND, len(command), self.rtce_dma_handle)
        duration = self.timeouts.duration(command)
        if not self._wait_for(lambda: self._res_len is not None, duration):
            if self.busy():
                self.cancels += 1
                self._stale += 1
                raise SpaprTimeout(f"sPAPR vTPM: no response within {duration:g} s (nothing can cancel it)")
            raise SpaprDriverError(f"no response to the TPM command (error answers: {self.errors})")
        n = self._res_len or 0
        self._res_len = None
        response = bytes(ram[self.rtce_buf : self.rtce_buf + n])
        ram[self.rtce_buf : self.rtce_buf + n] = bytes(n)
        return response

    # -- the interrupt handler ----------------------------------------------------
    def process_queue(self) -> int:
        """Handle every answer in the queue; returns how many there were."""
        ram = self.platform.ram
        count = 0
        while True:
            slot = self._queue_ram + self._index * SPAPR_VTPM_CRQ_SIZE
            if not ram[slot] & SPAPR_VTPM_MSG_RESULT:
                return count
            self._index = (self._index + 1) % (PAGE_SIZE // SPAPR_VTPM_CRQ_SIZE)
            self._handle(parse_crq(bytes(ram[slot : slot + SPAPR_VTPM_CRQ_SIZE])))
            ram[slot] = 0
            count += 1

    def _handle(self, crq: CrqEntry) -> None:
        if crq.valid == SPAPR_VTPM_VALID_INIT_CRQ_COMMAND:
            if crq.msg == SPAPR_VTPM_INIT_CRQ_RESULT:
                self._send(SPAPR_VTPM_VALID_INIT_CRQ_COMMAND, SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT)
            elif crq.msg == SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT:
                self.init_complete = True
        elif crq.valid == SPAPR_VTPM_VALID_COMMAND:
            if crq.msg == SPAPR_VTPM_GET_RTCE_BUFFER_SIZE | SPAPR_VTPM_MSG_RESULT:
                if crq.len and not self.rtce_buf:
                    self.rtce_size = crq.len
                    self.rtce_buf = self.platform.alloc(crq.len)
                    self.rtce_dma_handle = self.platform.map(self.rtce_buf, crq.len)
            elif crq.msg == SPAPR_VTPM_GET_VERSION | SPAPR_VTPM_MSG_RESULT:
                self.vtpm_version = crq.data
            elif crq.msg == SPAPR_VTPM_TPM_COMMAND | SPAPR_VTPM_MSG_RESULT:
                if self._stale:  # the late answer to a command given up on
                    self._stale -= 1
                else:
                    self._res_len = crq.len
            elif crq.msg == SPAPR_VTPM_PREPARE_TO_SUSPEND | SPAPR_VTPM_MSG_RESULT:
                self.suspended += 1
            elif crq.msg == SPAPR_VTPM_VTPM_ERROR:
                self.errors.append(crq)

    def busy(self) -> bool:
        """Whether the device is still running a command (False if it cannot tell)."""
        return bool(getattr(self.device, "busy", False))

    def _wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        """Handle answers until *done*; wait for an asynchronous device while
        it is busy. False if nothing more can come, or on timeout."""
        deadline = time.monotonic() + timeout
        wait = getattr(self.device, "wait", None)
        poll = getattr(self.device, "poll", None)
        while True:
            self.process_queue()
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if wait is not None and getattr(self.device, "busy", False):
                wait(remaining)
            elif poll is None or not poll():
                return False
