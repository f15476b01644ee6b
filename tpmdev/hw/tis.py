"""TIS (FIFO) interface register model, as QEMU's ``tpm-tis`` presents it.

Implements the TCG PC Client TIS 1.3 / PTP FIFO interface (TPM 1.2 and
TPM 2.0) with the behaviour, quirks included, of QEMU 7.2's TIS core. This is
the hot path: ordinary typed Python, compiled in place by Cython with the
declarations in ``ext/tpmdev/hw/tis.pxd``, on the shared access layer of
:mod:`tpmdev.hw.core`; the same source runs uncompiled.

Theory of operation
-------------------

*Address space.* Five localities of 0x1000 bytes each (0x5000 in all).
``locality = offset >> 12``; the register is the 4-byte slot
``offset & 0xFFC`` and ``offset & 3`` is the byte lane. Registers are
computed as 32-bit values and shifted right by the lane; FIFO ports instead
move up to ``4 - lane`` bytes, first byte in bits 0..7. Accesses are 1, 2 or
4 bytes. The entry points (``read``, ``write``, ``read_many``,
``write_many``), their host-input checks and the splitting of an access that
is not naturally aligned (``readl 0x19`` = ``readb 0x19`` + ``readw 0x1A`` +
``readb 0x1C``, as QEMU's memory core splits every qtest access) are
:class:`~tpmdev.hw.core.MmioCore`'s: this module sees aligned pieces only.
Every write to locality 4 is dropped.

*Register file.* ``mmio`` is a numpy uint8 array holding the stored value of
every register slot (little-endian): ACCESS (byte 0, with the internal Seize
bit), INT_ENABLE, INT_VECTOR, INT_STATUS, INTF_CAPABILITY, STS (stored flags,
no burst count), INTERFACE_ID, DID_VID, RID; reserved slots and the FIFO
ports hold 0xFF. Side-effect-free registers are read straight from it. Three
reads are computed: ACCESS (pendingRequest and tpmEstablishment are derived at
read time), STS (burstCount derived from the shared buffer; all ones unless the
reader is the active locality) and the FIFO ports.

*Arbitration.* ``_active`` is the active locality or ``TIS_NO_LOCALITY``.
A change of locality while a command is executing is deferred: ``_next`` and
``_aborting`` record it, the device layer is asked to cancel, and the hand-over
runs when the response arrives ("prepare abort" / "abort" below).

*Command state machine.* Per locality: IDLE, READY, RECEPTION, EXECUTION,
COMPLETION. Command and response share one buffer and one offset
(``_rw_offset``), like the hardware. tpmGo moves the locality to EXECUTION
and records ``_cmd_locty``; :meth:`TisCore.complete` delivers the response.

*Sans-IO boundary.* The core never runs a TPM. It tells its owner what it
needs through the shared vocabulary of :mod:`tpmdev.hw.core` (one callable,
``request(kind)``, with the ``REQUEST_*`` kinds, re-exported here): a command
is ready (read it with :attr:`TisCore.pending_command`), a cancel is wanted,
the established flag should be reset, or the established flag is needed. The
owner answers a command with ``complete`` (or ``post`` from another thread,
applied at the next access or ``poll``); a completion with no command in
EXECUTION is ignored.

*Established flag.* Not cached here: every ACCESS read asks the owner (its
established-flag source, or ``REQUEST_ESTABLISHED``), as QEMU's TIS asks its
backend (which keeps the one cache). No answer reads as "not established",
as QEMU shows a failed query.

*QEMU versions.* ``int_any_locality=True`` takes INT_ENABLE and INT_STATUS
writes from any locality 0..3 (QEMU 8.0 and later, and the I2C frontend);
the default drops them unless the locality is active (QEMU 7.2).

*Interrupts.* One level-triggered line shared by all localities. ``irq`` is
called with the new level only when it changes. As in QEMU, the line is raised
by any enabled event and lowered only by INT_STATUS writes.

*Host input.* Checked once, at the door, by :class:`~tpmdev.hw.core.MmioCore`
(ints or any ``__index__`` type, never bool; nothing outside the region; no
arithmetic that could overflow); a refusal is an
:class:`~tpmdev.errors.AccessError` naming the TIS.

Invariants: ``0 <= _bufsize <= TIS_BUFFER_MAX``; ``0 <= _rw_offset <=
_bufsize``, except that reads can take it at most three past
``TIS_BUFFER_MAX`` (see :meth:`TisCore._past_buffer`); the buffer itself is
never indexed past its end. At most one locality is in EXECUTION as far as
the backend is concerned (``_cmd_locty``, cleared by the completion); values
are kept within 32 bits explicitly so that C and Python arithmetic agree.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

try:
    import cython
except ImportError:  # Cython builds the package; the pure variant runs without it
    from tpmdev.hw import _cython_shim as cython
import numpy as np

from tpmdev.errors import AccessError
from tpmdev.hw.core import (
    REQUEST_CANCEL,
    REQUEST_COMMAND,
    REQUEST_ESTABLISHED,
    REQUEST_RESET_ESTABLISHED,
    MmioCore,
)
from tpmdev.hw.regs import (
    TIS_BUFFER_MAX,
    TIS_NO_DATA_BYTE,
    TIS_NO_LOCALITY,
    TIS_NUM_LOCALITIES,
    TIS_REGION_SIZE,
    TIS_STATE_COMPLETION,
    TIS_STATE_EXECUTION,
    TIS_STATE_IDLE,
    TIS_STATE_READY,
    TIS_STATE_RECEPTION,
    TPM_ACCESS,
    TPM_ACCESS_ACTIVE_LOCALITY,
    TPM_ACCESS_BEEN_SEIZED,
    TPM_ACCESS_PENDING_REQUEST,
    TPM_ACCESS_REQUEST_USE,
    TPM_ACCESS_SEIZE,
    TPM_ACCESS_TPM_ESTABLISHMENT,
    TPM_ACCESS_TPM_REG_VALID_STS,
    TPM_DATA_FIFO,
    TPM_DID_VID,
    TPM_DID_VID_VALUE,
    TPM_INT_COMMAND_READY,
    TPM_INT_DATA_AVAIL,
    TPM_INT_ENABLE,
    TPM_INT_ENABLE_WRITABLE,
    TPM_INT_GLOBAL_ENABLE,
    TPM_INT_LOCALITY_CHANGE,
    TPM_INT_POLARITY_LOW_LEVEL,
    TPM_INT_STATUS,
    TPM_INT_STS_VALID,
    TPM_INT_SUPPORTED,
    TPM_INT_VECTOR,
    TPM_INTERFACE_ID,
    TPM_INTERFACE_ID_INT_SEL_LOCK,
    TPM_INTF_CAPABILITY,
    TPM_RID,
    TPM_RID_VALUE,
    TPM_STS,
    TPM_STS_COMMAND_CANCEL,
    TPM_STS_COMMAND_READY,
    TPM_STS_DATA_AVAIL,
    TPM_STS_EXPECT,
    TPM_STS_GO,
    TPM_STS_RESET_ESTABLISHMENT,
    TPM_STS_RESPONSE_RETRY,
    TPM_STS_SELFTEST_DONE,
    TPM_STS_TPM_FAMILY_MASK,
    TPM_STS_VALID,
    TPM_XDATA_FIFO,
    TPM_XDATA_FIFO_END,
    interface_id,
    intf_capability,
    sts_family,
)

__all__ = [
    "TisCore",
    "REQUEST_COMMAND",
    "REQUEST_CANCEL",
    "REQUEST_RESET_ESTABLISHED",
    "REQUEST_ESTABLISHED",
]

#: All 32 bits; a typed constant so that compiled masking stays in C.
_U32 = 0xFFFFFFFF


def _size_mask(size: cython.int) -> cython.uint:
    if size == 4:
        return _U32
    return (1 << (8 * size)) - 1


@cython.cclass
class TisCore(MmioCore):
    """The TIS register file and state machines of one device.

    ``read``/``write`` (and ``read_many``/``write_many``) are the entry
    points a guest (or simulator) calls, inherited from
    :class:`~tpmdev.hw.core.MmioCore`: they check the host's arguments and
    never raise for any in-range access.

    *tpm_version* and *bufsize* are as for :meth:`reset`; *irq_num* is the
    value of INT_VECTOR; *irq* is called with the new line level on every
    change; *request* is the owner's callable (see the module doc);
    *int_any_locality* takes INT_ENABLE and INT_STATUS writes from inactive
    localities too (QEMU 8.0 and later; False is QEMU 7.2).
    """

    def __init__(
        self,
        tpm_version: int = 2,
        bufsize: int = TIS_BUFFER_MAX,
        irq_num: int = 5,
        irq: Optional[Callable[[int], object]] = None,
        request: Optional[Callable[[int], object]] = None,
        int_any_locality: bool = False,
    ) -> None:
        MmioCore.__init__(self, "TIS", TIS_REGION_SIZE, (1, 2, 4), request)
        self.mmio = np.full(TIS_REGION_SIZE, 0xFF, dtype=np.uint8)
        self._m8 = self.mmio.data
        self._m32 = self.mmio.data.cast("I")
        self._buffer = bytearray(TIS_BUFFER_MAX)
        self._buf = self._buffer
        self._state = bytearray(TIS_NUM_LOCALITIES)
        self._irq = irq
        self._irq_level = 0
        self._int_any_locality = bool(int_any_locality)
        self._version = 0
        self._bufsize = 0
        self._rw_offset = 0
        self._active = TIS_NO_LOCALITY
        self._next = TIS_NO_LOCALITY
        self._aborting = TIS_NO_LOCALITY
        self._cmd_locty = TIS_NO_LOCALITY
        for locty in range(TIS_NUM_LOCALITIES):
            base: cython.Py_ssize_t = locty << 12
            # a fresh device: identification registers, nothing else known
            self._set32(base + TPM_ACCESS, 0)
            self._set32(base + TPM_INTERFACE_ID, 0)
            self._set32(base + TPM_INTF_CAPABILITY, 0)
            self._set32(base + TPM_STS, 0)
            self._set32(base + TPM_INT_ENABLE, 0)
            self._set32(base + TPM_INT_STATUS, 0)
            self._set32(base + TPM_INT_VECTOR, irq_num)
            self._set32(base + TPM_DID_VID, TPM_DID_VID_VALUE)
            self._set32(base + TPM_RID, TPM_RID_VALUE)
        self.reset(tpm_version, bufsize)

    # ------------------------------------------------------------------
    # The register model (aligned pieces of 1, 2 or 4 bytes; the entry
    # points, their checks and the splitting are MmioCore's)
    # ------------------------------------------------------------------
    def _read(self, off: cython.Py_ssize_t, size: cython.int) -> cython.uint:
        locty: cython.int = off >> 12
        reg: cython.int = off & 0xFFC
        shift: cython.int = (off & 3) * 8
        val: cython.uint
        if reg == TPM_STS:
            if locty != self._active:
                return _U32 & _size_mask(size)
            val = self._sts_read(locty, size)
        elif reg == TPM_ACCESS:
            val = self._access_read(locty)
        elif reg == TPM_DATA_FIFO or (reg >= TPM_XDATA_FIFO and reg <= TPM_XDATA_FIFO_END):
            if locty != self._active:
                return _U32 & _size_mask(size)
            return self._fifo_read(locty, size if size <= 4 - (off & 3) else 4 - (off & 3))
        else:
            # side-effect-free: served from the register image
            if size == 4:
                return self._m32[off >> 2]
            if size == 2:
                return self._m8[off] | (self._m8[off + 1] << 8)
            return self._m8[off]
        return (val >> shift) & _size_mask(size)

    def _write(self, off: cython.Py_ssize_t, value: cython.uint, size: cython.int) -> None:
        locty: cython.int = off >> 12
        reg: cython.int = off & 0xFFC
        shift: cython.int = (off & 3) * 8
        val: cython.uint
        mask: cython.uint
        base: cython.Py_ssize_t
        loc: cython.int
        if locty == 4:
            return  # locality 4 is hardware-only: every write is dropped
        if reg == TPM_DATA_FIFO or (reg >= TPM_XDATA_FIFO and reg <= TPM_XDATA_FIFO_END):
            if locty == self._active:
                self._fifo_write(locty, value, size if size <= 4 - (off & 3) else 4 - (off & 3))
            return
        val = (value << shift) & _U32
        mask = (_size_mask(size) << shift) & _U32
        base = locty << 12
        if reg == TPM_STS:
            if locty == self._active:
                self._sts_write(locty, val)
        elif reg == TPM_ACCESS:
            self._access_write(locty, val)
        elif reg == TPM_INT_ENABLE:
            # QEMU 7.2: only the active locality's write takes effect (8.0
            # and later: any locality's). The bytes the access covers are
            # replaced, the others kept.
            if locty == self._active or self._int_any_locality:
                self._set32(
                    base + TPM_INT_ENABLE,
                    (self._get32(base + TPM_INT_ENABLE) & ~mask & _U32) | (val & TPM_INT_ENABLE_WRITABLE),
                )
        elif reg == TPM_INT_STATUS:
            if locty == self._active or self._int_any_locality:
                self._int_status_write(locty, val)
        elif reg == TPM_INTERFACE_ID:
            if val & TPM_INTERFACE_ID_INT_SEL_LOCK:
                for loc in range(TIS_NUM_LOCALITIES):
                    b: cython.Py_ssize_t = loc << 12
                    self._set32(
                        b + TPM_INTERFACE_ID,
                        self._get32(b + TPM_INTERFACE_ID) | TPM_INTERFACE_ID_INT_SEL_LOCK,
                    )
        # everything else (INT_VECTOR, INTF_CAPABILITY, DID_VID, RID, DEBUG,
        # reserved) is read-only: the write is ignored.

    # -- register image helpers ------------------------------------------
    def _get32(self, off: cython.Py_ssize_t) -> cython.uint:
        return self._m32[off >> 2]

    def _set32(self, off: cython.Py_ssize_t, value: cython.uint) -> None:
        self._m32[off >> 2] = value

    def _sts(self, locty: cython.int) -> cython.uint:
        return self._m32[((locty << 12) + TPM_STS) >> 2]

    def _access(self, locty: cython.int) -> cython.uint:
        return self._m8[(locty << 12) + TPM_ACCESS]

    def _set_access(self, locty: cython.int, value: cython.uint) -> None:
        self._m8[(locty << 12) + TPM_ACCESS] = value & 0xFF

    def _sts_set(self, locty: cython.int, flags: cython.uint) -> None:
        """Replace STS flags, keeping selfTestDone and tpmFamily."""
        i: cython.Py_ssize_t = ((locty << 12) + TPM_STS) >> 2
        self._m32[i] = (self._m32[i] & (TPM_STS_SELFTEST_DONE | TPM_STS_TPM_FAMILY_MASK)) | flags

    def _cmd_size(self) -> cython.uint:
        """The big-endian size field of whatever the buffer holds."""
        size: cython.uint = self._buf[2]
        size = (size << 8) | self._buf[3]
        size = (size << 8) | self._buf[4]
        return (size << 8) | self._buf[5]

    # -- STS ---------------------------------------------------------------
    def _sts_read(self, locty: cython.int, size: cython.int) -> cython.uint:
        sts: cython.uint = self._sts(locty)
        avail: cython.uint
        length: cython.uint
        if sts & TPM_STS_DATA_AVAIL:
            length = self._cmd_size()
            if length > self._bufsize:
                length = self._bufsize
            avail = (length - self._rw_offset) & _U32
        else:
            # (unsigned, as QEMU's: reads past the buffer, see _past_buffer,
            # leave rw_offset above bufsize and the count wraps)
            avail = (self._bufsize - self._rw_offset) & _U32
            # QUIRK: a lone byte read of the burst count never shows 0x00
            # for 0x100 or more free bytes; it is clamped, in every lane.
            if size == 1 and avail > 0xFF:
                avail = 0xFF
        return ((avail << 8) | sts) & _U32

    def _sts_write(self, locty: cython.int, val: cython.uint) -> None:
        state: cython.int = self._state[locty]
        if self._version == 2:
            if (val & TPM_STS_COMMAND_CANCEL) and state == TIS_STATE_EXECUTION:
                self._ask(REQUEST_CANCEL)
            if (val & TPM_STS_RESET_ESTABLISHMENT) and locty >= 3:
                self._ask(REQUEST_RESET_ESTABLISHED)
        val &= TPM_STS_COMMAND_READY | TPM_STS_GO | TPM_STS_RESPONSE_RETRY
        # exactly one action bit, else nothing happens
        if val == TPM_STS_COMMAND_READY:
            if state == TIS_STATE_READY:
                self._rw_offset = 0
            elif state == TIS_STATE_IDLE:
                # QUIRK: IDLE->READY keeps a stale rw_offset
                self._sts_set(locty, TPM_STS_COMMAND_READY)
                self._state[locty] = TIS_STATE_READY
                self._raise_irq(locty, TPM_INT_COMMAND_READY)
            elif state in (TIS_STATE_EXECUTION, TIS_STATE_RECEPTION):
                self._prep_abort(locty, locty)
            elif state == TIS_STATE_COMPLETION:
                self._rw_offset = 0
                self._state[locty] = TIS_STATE_READY
                if not (self._sts(locty) & TPM_STS_COMMAND_READY):
                    self._sts_set(locty, TPM_STS_COMMAND_READY)
                    self._raise_irq(locty, TPM_INT_COMMAND_READY)
                i: cython.Py_ssize_t = ((locty << 12) + TPM_STS) >> 2
                self._m32[i] = self._m32[i] & ~TPM_STS_DATA_AVAIL & _U32
        elif val == TPM_STS_GO:
            if state == TIS_STATE_RECEPTION and not (self._sts(locty) & TPM_STS_EXPECT):
                self._send(locty)
        elif val == TPM_STS_RESPONSE_RETRY:
            if state == TIS_STATE_COMPLETION:
                self._rw_offset = 0
                self._sts_set(locty, TPM_STS_VALID | TPM_STS_DATA_AVAIL)

    # -- FIFO --------------------------------------------------------------
    def _fifo_read(self, locty: cython.int, count: cython.int) -> cython.uint:
        val: cython.uint = 0
        i: cython.int
        for i in range(count):
            if self._state[locty] == TIS_STATE_COMPLETION:
                val |= self._data_read(locty) << (8 * i)
            else:
                val |= TIS_NO_DATA_BYTE << (8 * i)
        return val

    def _data_read(self, locty: cython.int) -> cython.uint:
        length: cython.uint
        ret: cython.uint
        if not (self._sts(locty) & TPM_STS_DATA_AVAIL):
            return TIS_NO_DATA_BYTE
        length = self._cmd_size()
        if length > self._bufsize:
            length = self._bufsize  # a response longer than the buffer is cut
        self._rw_offset += 1
        if self._rw_offset <= TIS_BUFFER_MAX:
            ret = self._buf[self._rw_offset - 1]
        else:
            ret = self._past_buffer(self._rw_offset - 1)
        if self._rw_offset >= (length & 0xFFFF):
            self._sts_set(locty, TPM_STS_VALID)  # last byte: dataAvail drops
            self._raise_irq(locty, TPM_INT_STS_VALID)
        return ret

    def _fifo_write(self, locty: cython.int, value: cython.uint, count: cython.int) -> None:
        state: cython.int = self._state[locty]
        length: cython.uint
        need_irq: cython.bint
        if state != TIS_STATE_READY and state != TIS_STATE_RECEPTION:
            return  # dropped in IDLE, EXECUTION and COMPLETION
        if state == TIS_STATE_READY:
            self._state[locty] = TIS_STATE_RECEPTION
            self._sts_set(locty, TPM_STS_EXPECT | TPM_STS_VALID)
        while (self._sts(locty) & TPM_STS_EXPECT) and count > 0:
            if self._rw_offset < self._bufsize:
                self._buf[self._rw_offset] = value & 0xFF
                self._rw_offset += 1
                value >>= 8
                count -= 1
            else:
                self._sts_set(locty, TPM_STS_VALID)  # over-long command: Expect drops
        if self._rw_offset > 5 and (self._sts(locty) & TPM_STS_EXPECT):
            need_irq = not (self._sts(locty) & TPM_STS_VALID)
            # QUIRK: the header size is compared as a 16-bit number
            length = self._cmd_size() & 0xFFFF
            if length > self._rw_offset:
                self._sts_set(locty, TPM_STS_EXPECT | TPM_STS_VALID)
            else:
                self._sts_set(locty, TPM_STS_VALID)
            if need_irq:
                self._raise_irq(locty, TPM_INT_STS_VALID)

    # -- ACCESS and arbitration -------------------------------------------
    def _access_read(self, locty: cython.int) -> cython.uint:
        val: cython.uint = self._access(locty) & ~TPM_ACCESS_SEIZE & 0xFF
        loc: cython.int
        for loc in range(TIS_NUM_LOCALITIES):
            if loc != locty and (self._access(loc) & TPM_ACCESS_REQUEST_USE):
                val |= TPM_ACCESS_PENDING_REQUEST
                break
        # Asked at every read, as QEMU asks its backend (which caches it);
        # no answer reads as "not established".
        if self._query_established() != 1:
            val |= TPM_ACCESS_TPM_ESTABLISHMENT
        return val

    def _access_write(self, locty: cython.int, val: cython.uint) -> None:
        target: cython.int = self._active
        apply_target: cython.bint = True
        loc: cython.int
        found: cython.int
        higher_seize: cython.bint
        if val & TPM_ACCESS_SEIZE:
            val &= ~(TPM_ACCESS_REQUEST_USE | TPM_ACCESS_ACTIVE_LOCALITY) & _U32
        if val & TPM_ACCESS_ACTIVE_LOCALITY:
            if self._active == locty:
                # relinquish: hand over to the highest locality asking for use
                found = TIS_NO_LOCALITY
                for loc in range(TIS_NUM_LOCALITIES - 1, -1, -1):
                    if self._access(loc) & TPM_ACCESS_REQUEST_USE:
                        found = loc
                        break
                if found != TIS_NO_LOCALITY:
                    apply_target = False
                    self._prep_abort(locty, found)
                else:
                    target = TIS_NO_LOCALITY
            else:
                # not the owner: withdraw its own request
                self._set_access(locty, self._access(locty) & ~TPM_ACCESS_REQUEST_USE)
        if val & TPM_ACCESS_BEEN_SEIZED:
            self._set_access(locty, self._access(locty) & ~TPM_ACCESS_BEEN_SEIZED)
        if val & TPM_ACCESS_SEIZE:
            # only a higher locality may seize, or anyone when none is active
            if self._active == TIS_NO_LOCALITY or locty > self._active:
                if not (self._access(locty) & TPM_ACCESS_SEIZE):
                    higher_seize = False
                    for loc in range(locty + 1, TIS_NUM_LOCALITIES):
                        if self._access(loc) & TPM_ACCESS_SEIZE:
                            higher_seize = True
                            break
                    if not higher_seize:
                        for loc in range(locty):
                            self._set_access(loc, self._access(loc) & ~TPM_ACCESS_SEIZE)
                        self._set_access(locty, self._access(locty) | TPM_ACCESS_SEIZE)
                        apply_target = False
                        self._prep_abort(self._active, locty)
        if val & TPM_ACCESS_REQUEST_USE:
            if self._active != locty:
                if self._active != TIS_NO_LOCALITY:
                    self._set_access(locty, self._access(locty) | TPM_ACCESS_REQUEST_USE)
                else:
                    target = locty  # nobody active: take it at once
        if apply_target:
            self._new_active_locality(target)

    def _new_active_locality(self, new: cython.int) -> None:
        change: cython.bint = self._active != new
        old: cython.int = self._active
        if change and old != TIS_NO_LOCALITY:
            if new != TIS_NO_LOCALITY and (self._access(new) & TPM_ACCESS_SEIZE):
                # seized: the old owner keeps its own request and learns why
                self._set_access(
                    old, (self._access(old) & ~TPM_ACCESS_ACTIVE_LOCALITY) | TPM_ACCESS_BEEN_SEIZED
                )
            else:
                self._set_access(
                    old, self._access(old) & ~(TPM_ACCESS_ACTIVE_LOCALITY | TPM_ACCESS_REQUEST_USE)
                )
        self._active = new
        if new != TIS_NO_LOCALITY:
            self._set_access(
                new,
                (self._access(new) | TPM_ACCESS_ACTIVE_LOCALITY)
                & ~(TPM_ACCESS_REQUEST_USE | TPM_ACCESS_SEIZE),
            )
        if change:
            self._raise_irq(new, TPM_INT_LOCALITY_CHANGE)

    def _prep_abort(self, locty: cython.int, new: cython.int) -> None:
        loc: cython.int
        self._aborting = locty
        self._next = new
        for loc in range(TIS_NUM_LOCALITIES):
            if self._state[loc] == TIS_STATE_EXECUTION:
                # finish the hand-over when the response arrives
                self._ask(REQUEST_CANCEL)
                return
        self._abort()

    def _abort(self) -> None:
        self._rw_offset = 0
        if self._aborting == self._next:
            # a locality aborting its own command returns to READY
            self._state[self._aborting] = TIS_STATE_READY
            self._sts_set(self._aborting, TPM_STS_COMMAND_READY)
            self._raise_irq(self._aborting, TPM_INT_COMMAND_READY)
        self._new_active_locality(self._next)
        self._next = TIS_NO_LOCALITY
        self._aborting = TIS_NO_LOCALITY

    # -- interrupts --------------------------------------------------------
    def _raise_irq(self, locty: cython.int, mask: cython.uint) -> None:
        inte: cython.uint
        base: cython.Py_ssize_t
        if locty == TIS_NO_LOCALITY:
            return
        base = locty << 12
        inte = self._get32(base + TPM_INT_ENABLE)
        if (inte & TPM_INT_GLOBAL_ENABLE) and (inte & mask):
            # QUIRK: the whole mask is latched even if only one bit is enabled
            self._set32(base + TPM_INT_STATUS, self._get32(base + TPM_INT_STATUS) | mask)
            self._set_irq(1)

    def _int_status_write(self, locty: cython.int, val: cython.uint) -> None:
        base: cython.Py_ssize_t = locty << 12
        ints: cython.uint = self._get32(base + TPM_INT_STATUS)
        if (val & TPM_INT_SUPPORTED) and (ints & TPM_INT_SUPPORTED):
            ints &= ~val & _U32
            self._set32(base + TPM_INT_STATUS, ints)
            if ints == 0:
                # QUIRK: lowers the shared line even if another locality
                # still has status pending
                self._set_irq(0)
        self._set32(base + TPM_INT_STATUS, ints & ~(val & TPM_INT_SUPPORTED) & _U32)

    def _set_irq(self, level: cython.int) -> None:
        if level != self._irq_level:
            self._irq_level = level
            if self._irq is not None:
                self._irq(level)

    # -- the boundary with the device layer ---------------------------------
    def _send(self, locty: cython.int) -> None:
        # rw_offset keeps the command length until the response arrives
        self._state[locty] = TIS_STATE_EXECUTION
        self._cmd_locty = locty
        self._ask(REQUEST_COMMAND)

    def _complete(self, response: object, selftest_done: cython.bint, failed: cython.bint) -> None:
        """The response to the command in flight (``complete``, ``poll``).

        *response* is copied into the shared buffer (cut to the buffer size).
        *selftest_done* reports a successful TPM 1.2 ContinueSelfTest.
        *failed* says the backend failed (*response* is then QEMU's fatal
        response); the TIS has no register for it and ignores it. Does
        nothing unless a command is in EXECUTION: a second completion of
        one command, or one after a reset, changes nothing.
        """
        locty: cython.int = self._cmd_locty
        loc: cython.int
        n: cython.Py_ssize_t
        data: bytes
        if locty == TIS_NO_LOCALITY or self._state[locty] != TIS_STATE_EXECUTION:
            return
        # QUIRK: when a second tpmGo arrived while this command ran, _send
        # made the second locality the command's locality: the response
        # lands there and the first locality stays in EXECUTION (QEMU 7.2).
        self._cmd_locty = TIS_NO_LOCALITY
        data = response if type(response) is bytes else bytes(response)  # type: ignore[call-overload]
        n = len(data)
        if n > self._bufsize:
            n = self._bufsize
        self._buffer[:n] = data[:n]
        if selftest_done:
            for loc in range(TIS_NUM_LOCALITIES):
                i: cython.Py_ssize_t = ((loc << 12) + TPM_STS) >> 2
                self._m32[i] = self._m32[i] | TPM_STS_SELFTEST_DONE
        self._sts_set(locty, TPM_STS_VALID | TPM_STS_DATA_AVAIL)
        self._state[locty] = TIS_STATE_COMPLETION
        self._rw_offset = 0
        if self._next != TIS_NO_LOCALITY:
            self._abort()
        self._raise_irq(locty, TPM_INT_DATA_AVAIL | TPM_INT_STS_VALID)

    def invalidate_established(self) -> None:
        """Nothing to do: the core keeps no established flag (every ACCESS
        read asks). Kept for owners written against the caching core."""

    @property
    def pending_command(self) -> Optional[tuple[int, bytes]]:
        """``(locality, command bytes)`` of the command in EXECUTION, or None."""
        if not self.executing:
            return None
        # QEMU sends rw_offset bytes (past the buffer too, see _past_buffer)
        return self._cmd_locty, self.transferred

    @property
    def transferred(self) -> bytes:
        """Bytes ``[0, rw_offset)`` of the shared buffer, as QEMU reads them:
        the command written so far, or the response read so far. When reads
        left rw_offset past the buffer, the last bytes are those QEMU finds
        after its buffer (see :meth:`_past_buffer`). Read-only; wrapping
        frontends use it (the I2C data checksum)."""
        n: cython.Py_ssize_t = self._rw_offset
        i: cython.Py_ssize_t
        if n <= TIS_BUFFER_MAX:
            return bytes(memoryview(self._buffer)[:n])
        tail = bytearray(n - TIS_BUFFER_MAX)
        for i in range(TIS_BUFFER_MAX, n):
            tail[i - TIS_BUFFER_MAX] = self._past_buffer(i)
        return bytes(self._buffer) + bytes(tail)

    def _past_buffer(self, index: cython.Py_ssize_t) -> cython.uint:
        """The byte QEMU reads at ``buffer[index]`` for ``index >= 4096``.

        QUIRK: QEMU's 4096-byte buffer is followed in its device state by the
        16-bit rw_offset (little-endian) and the active, aborting and next
        locality bytes, and its FIFO read does not check the index. A guest
        gets there by leaving a locality in COMPLETION with dataAvail set,
        then filling the buffer from another locality (rw_offset 4096) with
        a header announcing 4096 bytes: the first locality's next FIFO read
        is ``buffer[4096]``. The increment is stored before the byte is
        loaded, so it reads 0x01 (the low byte of 4097), and dataAvail then
        drops. Each other locality left in COMPLETION can read one byte
        further (0x10, the high byte of 4098; then the reader's own locality
        number); with one locality needed to fill the buffer, three readers
        are the most: ``index`` never passes 4098 (a tpmGo after them sends
        up to 4099 bytes). Modelled from the state, never from memory.
        """
        k: cython.Py_ssize_t = index - TIS_BUFFER_MAX
        if k == 0:
            return self._rw_offset & 0xFF
        if k == 1:
            return (self._rw_offset >> 8) & 0xFF
        if k == 2:
            return self._active & 0xFF
        if k == 3:
            return self._aborting & 0xFF
        if k == 4:
            return self._next & 0xFF
        return 0  # padding (unreachable, see above)

    @property
    def executing(self) -> bool:
        """True while a command has been sent and its response not delivered."""
        return self._cmd_locty != TIS_NO_LOCALITY and self._state[self._cmd_locty] == TIS_STATE_EXECUTION

    # -- reset and inspection ----------------------------------------------
    def reset(self, tpm_version: int, bufsize: int) -> None:
        """Machine reset of the registers (the device layer handles the backend).

        *tpm_version* is 1, 2 or 0 (unknown: STS family and INTERFACE_ID are
        left as they were, INTF_CAPABILITY reads 0). The data buffer is not
        cleared and the IRQ line is not lowered, as in QEMU.
        """
        locty: cython.int
        base: cython.Py_ssize_t
        self._version = tpm_version
        self._bufsize = min(max(int(bufsize), 0), TIS_BUFFER_MAX)
        self._active = TIS_NO_LOCALITY
        self._next = TIS_NO_LOCALITY
        self._aborting = TIS_NO_LOCALITY
        self._cmd_locty = TIS_NO_LOCALITY
        self._drop_posted()
        for locty in range(TIS_NUM_LOCALITIES):
            base = locty << 12
            self._set32(base + TPM_ACCESS, TPM_ACCESS_TPM_REG_VALID_STS)
            if tpm_version in (1, 2):
                self._set32(base + TPM_STS, sts_family(tpm_version))
                self._set32(base + TPM_INTERFACE_ID, interface_id(tpm_version))
            self._set32(base + TPM_INTF_CAPABILITY, intf_capability(tpm_version))
            self._set32(base + TPM_INT_ENABLE, TPM_INT_POLARITY_LOW_LEVEL)
            self._set32(base + TPM_INT_STATUS, 0)
            self._state[locty] = TIS_STATE_IDLE
        self._rw_offset = 0

    @property
    def tpm_version(self) -> int:
        return self._version

    @property
    def bufsize(self) -> int:
        return self._bufsize

    @property
    def irq_level(self) -> int:
        return self._irq_level

    @property
    def rw_offset(self) -> int:
        """The shared FIFO offset into :attr:`buffer`: command bytes written
        so far, or response bytes read so far (0 when a response arrives).
        Read-only; wrapping frontends use it (the I2C data checksum)."""
        return self._rw_offset

    @property
    def active_locality(self) -> Optional[int]:
        return None if self._active == TIS_NO_LOCALITY else self._active

    def locality_state(self, locality: object) -> int:
        """The command state (``TIS_STATE_*``) of *locality* (0 .. 4)."""
        loc: cython.Py_ssize_t = self._bounded(locality, TIS_NUM_LOCALITIES - 1)
        if loc < 0:
            raise AccessError(f"TIS locality_state: locality {locality!r} must be an int 0 .. 4 (not bool)")
        return int(self._state[loc])

    @property
    def int_any_locality(self) -> bool:
        """Whether INT_ENABLE / INT_STATUS writes are taken from any locality."""
        return bool(self._int_any_locality)

    @property
    def buffer(self) -> bytearray:
        """The shared command/response buffer (4096 bytes, live)."""
        return self._buffer

    # ------------------------------------------------------------------
    # State capture (migration, snapshots)
    # ------------------------------------------------------------------
    def capture(self) -> tuple[object, ...]:
        """Everything that defines the core's behaviour, as a tuple of bytes
        and ints (copies): the register image, the shared buffer, the
        per-locality command states, the offsets and locality numbers, the
        IRQ line level and a posted completion (QEMU's "tpm-tis" VMState and
        more: tpmdev also keeps the IRQ level and the locality of the command
        in flight). :meth:`restore` puts it back; the TPM version and the
        buffer size are the owner's (asked from the backend again).
        Layout: ``(mmio, buffer, states, rw_offset, active, next, aborting,
        cmd_locty, irq_level, posted)``."""
        return (
            self.mmio.tobytes(),
            bytes(self._buffer),
            bytes(self._state),
            self._rw_offset,
            self._active,
            self._next,
            self._aborting,
            self._cmd_locty,
            self._irq_level,
            self._capture_base(),
        )

    def restore(self, state: tuple[Any, ...], tpm_version: int, bufsize: int) -> None:
        """Put back a :meth:`capture` of a core of the same configuration
        (the owner checked it). The IRQ callable is told if the line level
        changes."""
        self._copy_into(self._m8, state[0])
        self._copy_into(self._buf, state[1])
        self._copy_into(self._state, state[2])
        self._rw_offset = state[3]
        self._active = state[4]
        self._next = state[5]
        self._aborting = state[6]
        self._cmd_locty = state[7]
        self._version = tpm_version
        self._bufsize = min(max(int(bufsize), 0), TIS_BUFFER_MAX)
        self._restore_base(state[9])
        self._set_irq(state[8])
