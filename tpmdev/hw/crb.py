"""CRB (Command Response Buffer) interface register model, as QEMU's ``tpm-crb``.

Implements the CRB interface of the TCG PC Client Platform TPM Profile (PTP)
specification, Family 2.0 (Level 00 Revision 01.03 v22, section 6.5.3) with
the behaviour, quirks included, of QEMU 7.2's ``tpm-crb``; ``localities=5``
adds the PTP's five-locality layout, which QEMU does not have. This is a hot
module: typed Python compiled in place by Cython with the declarations in
``ext/tpmdev/hw/crb.pxd``, on the shared access layer of
:mod:`tpmdev.hw.core`; the same source runs uncompiled.

Theory of operation
-------------------

*Address space.* One 0x1000-byte window per locality: 32 registers of 32
bits at 0x00..0x7F, then the data buffer, 0x80..0xFFF (0xF80 = 3968 bytes),
which holds the command and, after START, the response. One numpy array,
``mmio``, holds both, little-endian, exactly as the guest sees them: a
simulator may map the data buffer (``buffer``) as plain RAM, as QEMU does.
The region is ``0x1000 * localities`` bytes: 0x1000 by default. (QEMU maps
nothing at 0x1000..0x4FFF of the PC's TPM window, which then reads 0 and
drops writes; that is the bus's unassigned memory, not the device, so it is
outside the region here.)

*Reads* are served from the array: every register value is stored, so a
read of any size at any lane is the stored bytes. The one computed bit is
LOC_STATE.tpmEstablished (bit 0 = NOT the backend's established flag), and
only for an access whose address is exactly the window's offset 0. The core
asks its owner for the flag at each such read (its established-flag source,
or ``REQUEST_ESTABLISHED``); it caches nothing, as QEMU's CRB caches nothing
(the backend does).

*Writes* to the data buffer store bytes. Writes to the registers never store
their value: QEMU dispatches on the exact address (byte lane 0 of LOC_CTRL,
CTRL_REQ, CTRL_CANCEL, CTRL_START) and the exact value after truncation to
the access size, and ignores everything else. So ``writeb 0x08 = 1`` and
``writew 0x08 = 2`` act, ``writeb 0x09 = 1`` or ``writel 0x08 = 0x101`` do
not; the address registers EDK2 writes (CMD_HADDR, CMD_LADDR, an 8-byte
RSP_ADDR) keep their values.

*Commands.* START = 1 with the locality assigned and START clear sets START
and hands the owner a command: the data buffer's first ``min(header size,
bufsize)`` bytes, where ``bufsize = min(backend buffer size, 0xF80)``
(``REQUEST_COMMAND``, then :attr:`CrbCore.pending_command`). tpmIdle is not
required (QEMU runs a START while idle). :meth:`~tpmdev.hw.core.MmioCore.complete`
puts the response in the same buffer, clears START, and after a backend
failure sets CTRL_STS.tpmSts, which stays set until reset. CTRL_CANCEL = 1
asks the owner to cancel (``REQUEST_CANCEL``) only while START is set.
CTRL_REQ cmdReady / goIdle clear / set tpmIdle and nothing else.

*Localities (QEMU, ``localities=1``).* Only locality 0 exists; LOC_CTRL
requestAccess sets LOC_STS.Granted and LOC_STATE.locAssigned and clears
beenSeized, relinquish clears both; seize and resetEstablishmentBit do
nothing. Relinquishing during a command does not stop it.

*Five localities (``localities=5``, not in QEMU).* Each locality has its own
window, its own control registers and its own data buffer (its CMD/RSP
address registers point at it); LOC_STATE (locAssigned, activeLocality),
CTRL_STS and INTF_ID, which sets CapLocality, are the TPM's and read the same
in every window. Arbitration after the PTP: requestAccess takes the TPM when
no locality has it, else waits; relinquish by the active locality hands the
TPM to the highest waiting locality (by a waiting one, withdraws its
request); seize by a locality higher than the active one takes the TPM at
once and sets the loser's beenSeized; resetEstablishmentBit from the active
locality 3 or 4 asks the owner to reset the established flag
(``REQUEST_RESET_ESTABLISHED``). Departures, chosen so that locality 0 alone
behaves exactly as QEMU's device: requestAccess clears the writer's
beenSeized (QEMU's rule); seize with no locality active is ignored; CTRL_REQ
and CTRL_CANCEL act from any locality (QEMU checks none), CTRL_CANCEL only
for the locality whose command is in flight; START needs the writer to be
the active locality and is ignored while another locality's command is in
flight (one command at a time); a command keeps running across a hand-over
and its response lands in the buffer of the locality that started it.

Invariants: ``0 <= bufsize <= CRB_BUFFER_SIZE``; at most one command in
flight (``_cmd_locty``); the active locality ``_active`` is
``CRB_NO_LOCALITY`` exactly when LOC_STATE.locAssigned is clear.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

try:
    import cython
except ImportError:  # Cython builds the package; the pure variant runs without it
    from tpmdev.hw import _cython_shim as cython
import numpy as np

from tpmdev.errors import ConfigurationError
from tpmdev.hw.core import REQUEST_CANCEL, REQUEST_COMMAND, REQUEST_RESET_ESTABLISHED, MmioCore
from tpmdev.hw.regs import (
    CRB_BASE_ADDRESS,
    CRB_BUFFER_SIZE,
    CRB_LOCALITY_SIZE,
    CRB_NO_LOCALITY,
    CRB_NUM_LOCALITIES,
    TPM_CRB_CTRL_CANCEL,
    TPM_CRB_CTRL_CANCEL_INVOKE,
    TPM_CRB_CTRL_CMD_HADDR,
    TPM_CRB_CTRL_CMD_LADDR,
    TPM_CRB_CTRL_CMD_SIZE,
    TPM_CRB_CTRL_REQ,
    TPM_CRB_CTRL_REQ_CMD_READY,
    TPM_CRB_CTRL_REQ_GO_IDLE,
    TPM_CRB_CTRL_RSP_ADDR,
    TPM_CRB_CTRL_RSP_ADDR_HIGH,
    TPM_CRB_CTRL_RSP_SIZE,
    TPM_CRB_CTRL_START,
    TPM_CRB_CTRL_START_INVOKE,
    TPM_CRB_CTRL_STS,
    TPM_CRB_CTRL_STS_TPM_IDLE,
    TPM_CRB_CTRL_STS_TPM_STS,
    TPM_CRB_DATA_BUFFER,
    TPM_CRB_INTF_ID,
    TPM_CRB_INTF_ID_HIGH,
    TPM_CRB_INTF_ID_HIGH_VALUE,
    TPM_LOC_CTRL,
    TPM_LOC_CTRL_RELINQUISH,
    TPM_LOC_CTRL_REQUEST_ACCESS,
    TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT,
    TPM_LOC_CTRL_SEIZE,
    TPM_LOC_STATE,
    TPM_LOC_STATE_ACTIVE_LOCALITY_SHIFT,
    TPM_LOC_STATE_LOC_ASSIGNED,
    TPM_LOC_STATE_TPM_ESTABLISHED,
    TPM_LOC_STATE_TPM_REG_VALID_STS,
    TPM_LOC_STS,
    TPM_LOC_STS_BEEN_SEIZED,
    TPM_LOC_STS_GRANTED,
    crb_intf_id,
)

__all__ = ["CrbCore"]

#: The register block of a window (the rest is the data buffer).
_REGS_END = TPM_CRB_DATA_BUFFER
_WINDOW_MASK = CRB_LOCALITY_SIZE - 1
_LOCALITY_SHIFT = 12
#: All 32 bits; a typed constant so that compiled masking stays in C.
_U32 = 0xFFFFFFFF


@cython.cclass
class CrbCore(MmioCore):
    """The CRB registers and data buffer of one device.

    :param tpm_version: recorded for the owner (1, 2, or 0 for unknown); the
        CRB registers are the same for both (QEMU does not refuse TPM 1.2).
    :param bufsize: the backend's buffer size; capped at 0xF80.
    :param request: the owner's ``request(kind)`` callable (see
        :mod:`tpmdev.hw.core`).
    :param localities: 1 (QEMU's device) or 5 (the PTP layout).
    :param address: guest-physical address of the region, shown in the
        CMD_LADDR / CMD_HADDR / RSP_ADDR registers.
    """

    @cython.annotation_typing(False)  # type: ignore[untyped-decorator]  # host arguments: checked here
    def __init__(
        self,
        tpm_version: int = 2,
        bufsize: int = CRB_BUFFER_SIZE,
        request: Optional[Callable[[int], object]] = None,
        localities: int = 1,
        address: int = CRB_BASE_ADDRESS,
    ) -> None:
        if isinstance(localities, bool) or localities not in (1, CRB_NUM_LOCALITIES):
            raise ConfigurationError(
                f"localities must be 1 (QEMU's tpm-crb) or {CRB_NUM_LOCALITIES} (the PTP layout), "
                f"got {localities!r}"
            )
        region = localities * CRB_LOCALITY_SIZE
        if (
            isinstance(address, bool)
            or not isinstance(address, int)
            or address < 0
            or address & _WINDOW_MASK
            or address + region > 1 << 64
        ):
            raise ConfigurationError(
                f"address must be a 4 KiB-aligned guest-physical address with the {region:#x}-byte "
                f"region below 2**64, got {address!r}"
            )
        MmioCore.__init__(self, "CRB", region, (1, 2, 4, 8), request)
        self.mmio = np.zeros(region, dtype=np.uint8)
        self._m8 = self.mmio.data
        self._m32 = self.mmio.data.cast("I")
        self._localities = localities
        self._address = address
        self._version = 0
        self._bufsize = 0
        self._active = CRB_NO_LOCALITY
        self._waiting = 0
        self._cmd_locty = CRB_NO_LOCALITY
        self._cmd_len = 0
        self.reset(tpm_version, bufsize)

    # ------------------------------------------------------------------
    # The register model (aligned pieces of 1, 2 or 4 bytes)
    # ------------------------------------------------------------------
    def _read(self, off: cython.Py_ssize_t, size: cython.int) -> cython.uint:
        val: cython.uint
        if size == 4:
            val = self._m32[off >> 2]
        elif size == 2:
            val = self._m8[off] | (self._m8[off + 1] << 8)
        else:
            val = self._m8[off]
        if (off & _WINDOW_MASK) == TPM_LOC_STATE:
            # tpmEstablished, computed at every read (nothing is cached); only
            # an access at the window's offset 0 reaches bit 0 of LOC_STATE
            if self._query_established() != 1:
                val |= TPM_LOC_STATE_TPM_ESTABLISHED
        return val

    def _write(self, off: cython.Py_ssize_t, value: cython.uint, size: cython.int) -> None:
        reg: cython.Py_ssize_t = off & _WINDOW_MASK
        locty: cython.int = off >> _LOCALITY_SHIFT
        if reg >= _REGS_END:
            # the data buffer: plain memory
            if size == 4:
                self._m32[off >> 2] = value
            elif size == 2:
                self._m8[off] = value & 0xFF
                self._m8[off + 1] = (value >> 8) & 0xFF
            else:
                self._m8[off] = value & 0xFF
            return
        # QUIRK: dispatch on the exact address and the exact value; a
        # register write never stores its value.
        if reg == TPM_CRB_CTRL_START:
            if value == TPM_CRB_CTRL_START_INVOKE:
                self._start(locty)
        elif reg == TPM_CRB_CTRL_REQ:
            # QUIRK: from any locality, assigned or not; tpmIdle is the whole
            # effect (START does not need cmdReady)
            if value == TPM_CRB_CTRL_REQ_CMD_READY:
                self._set_ctrl_sts(self._ctrl_sts() & ~TPM_CRB_CTRL_STS_TPM_IDLE)
            elif value == TPM_CRB_CTRL_REQ_GO_IDLE:
                self._set_ctrl_sts(self._ctrl_sts() | TPM_CRB_CTRL_STS_TPM_IDLE)
        elif reg == TPM_CRB_CTRL_CANCEL:
            if value == TPM_CRB_CTRL_CANCEL_INVOKE and locty == self._cmd_locty:
                self._ask(REQUEST_CANCEL)
        elif reg == TPM_LOC_CTRL:
            if value == TPM_LOC_CTRL_REQUEST_ACCESS:
                self._request_access(locty)
            elif value == TPM_LOC_CTRL_RELINQUISH:
                self._relinquish(locty)
            elif value == TPM_LOC_CTRL_SEIZE:
                self._seize(locty)
            elif value == TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT:
                # QEMU: ignored (it has no locality 3 or 4)
                if locty >= 3 and locty == self._active:
                    self._ask(REQUEST_RESET_ESTABLISHED)
        # everything else (LOC_STATE, LOC_STS, INTF_ID, CTRL_EXT, CTRL_STS,
        # INT_ENABLE, INT_STS, the size and address registers, reserved
        # slots, other values and lanes) is ignored

    # -- register image helpers ------------------------------------------------
    def _get32(self, off: cython.Py_ssize_t) -> cython.uint:
        return self._m32[off >> 2]

    def _set32(self, off: cython.Py_ssize_t, value: cython.uint) -> None:
        self._m32[off >> 2] = value

    def _set_shared(self, reg: cython.Py_ssize_t, value: cython.uint) -> None:
        """Set a register the TPM has once: the same in every window."""
        locty: cython.int
        for locty in range(self._localities):
            self._m32[((locty << _LOCALITY_SHIFT) + reg) >> 2] = value

    def _ctrl_sts(self) -> cython.uint:
        return self._m32[TPM_CRB_CTRL_STS >> 2]

    def _set_ctrl_sts(self, value: cython.uint) -> None:
        self._set_shared(TPM_CRB_CTRL_STS, value)

    # -- localities ---------------------------------------------------------------
    def _grant(self, locty: cython.int) -> None:
        """Make *locty* the active locality (LOC_STATE, LOC_STS.Granted)."""
        if self._active != CRB_NO_LOCALITY:
            self._set32(
                (self._active << _LOCALITY_SHIFT) + TPM_LOC_STS,
                self._get32((self._active << _LOCALITY_SHIFT) + TPM_LOC_STS) & ~TPM_LOC_STS_GRANTED,
            )
        self._active = locty
        self._waiting &= ~(1 << locty)
        self._set32(
            (locty << _LOCALITY_SHIFT) + TPM_LOC_STS,
            self._get32((locty << _LOCALITY_SHIFT) + TPM_LOC_STS) | TPM_LOC_STS_GRANTED,
        )
        self._set_shared(
            TPM_LOC_STATE,
            TPM_LOC_STATE_TPM_REG_VALID_STS
            | TPM_LOC_STATE_LOC_ASSIGNED
            | (locty << TPM_LOC_STATE_ACTIVE_LOCALITY_SHIFT),
        )

    def _request_access(self, locty: cython.int) -> None:
        base: cython.Py_ssize_t = locty << _LOCALITY_SHIFT
        self._set32(base + TPM_LOC_STS, self._get32(base + TPM_LOC_STS) & ~TPM_LOC_STS_BEEN_SEIZED)
        if self._active == CRB_NO_LOCALITY or self._active == locty:
            self._grant(locty)
        else:
            self._waiting |= 1 << locty  # granted when the active locality relinquishes

    def _relinquish(self, locty: cython.int) -> None:
        # QUIRK: a command in flight keeps running; its response still arrives
        loc: cython.int
        if locty != self._active:
            self._waiting &= ~(1 << locty)  # withdraw a request
            return
        for loc in range(self._localities - 1, -1, -1):
            if self._waiting & (1 << loc):
                self._grant(loc)
                return
        self._set32(
            (locty << _LOCALITY_SHIFT) + TPM_LOC_STS,
            self._get32((locty << _LOCALITY_SHIFT) + TPM_LOC_STS) & ~TPM_LOC_STS_GRANTED,
        )
        self._active = CRB_NO_LOCALITY
        self._set_shared(TPM_LOC_STATE, self._get32(TPM_LOC_STATE) & ~TPM_LOC_STATE_LOC_ASSIGNED)

    def _seize(self, locty: cython.int) -> None:
        old: cython.int = self._active
        if old == CRB_NO_LOCALITY or locty <= old:
            return  # only a higher locality seizes; locality 0 never can (QEMU: ignored)
        self._grant(locty)
        self._set32(
            (old << _LOCALITY_SHIFT) + TPM_LOC_STS,
            self._get32((old << _LOCALITY_SHIFT) + TPM_LOC_STS) | TPM_LOC_STS_BEEN_SEIZED,
        )

    # -- commands -------------------------------------------------------------------
    def _start(self, locty: cython.int) -> None:
        base: cython.Py_ssize_t = locty << _LOCALITY_SHIFT
        buf: cython.Py_ssize_t = base + TPM_CRB_DATA_BUFFER
        length: cython.uint
        if self._get32(base + TPM_CRB_CTRL_START) & TPM_CRB_CTRL_START_INVOKE:
            return  # already running
        if locty != self._active or self._cmd_locty != CRB_NO_LOCALITY:
            return  # no locality assigned, another locality's, or one command at a time
        # QUIRK: no header check: the length is the header size, capped at the
        # buffer size, whatever it says (QEMU checks neither minimum nor tpmIdle).
        length = self._m8[buf + 2]
        length = (length << 8) | self._m8[buf + 3]
        length = (length << 8) | self._m8[buf + 4]
        length = (length << 8) | self._m8[buf + 5]
        if length > self._bufsize:
            length = self._bufsize
        self._set32(base + TPM_CRB_CTRL_START, TPM_CRB_CTRL_START_INVOKE)
        self._cmd_locty = locty
        self._cmd_len = length
        self._ask(REQUEST_COMMAND)

    def _complete(self, response: object, selftest_done: cython.bint, failed: cython.bint) -> None:
        locty: cython.int = self._cmd_locty
        base: cython.Py_ssize_t = locty << _LOCALITY_SHIFT
        start: cython.Py_ssize_t = base + TPM_CRB_DATA_BUFFER
        n: cython.Py_ssize_t
        i: cython.Py_ssize_t
        data: bytes
        if locty == CRB_NO_LOCALITY:
            return
        data = bytes(response)  # type: ignore[call-overload]
        n = len(data)
        if n > self._bufsize:
            n = self._bufsize  # the backend writes at most the buffer size
        for i in range(n):
            self._m8[start + i] = data[i]
        self._set32(base + TPM_CRB_CTRL_START, 0)
        self._cmd_locty = CRB_NO_LOCALITY
        if failed:
            # QUIRK: sticky until reset: goIdle, cmdReady and later successes keep it
            self._set_ctrl_sts(self._ctrl_sts() | TPM_CRB_CTRL_STS_TPM_STS)
        # (CRB has no selfTestDone bit: *selftest_done* changes nothing)

    @property
    def pending_command(self) -> Optional[tuple[int, bytes]]:
        """``(locality, command bytes)`` of the command in flight, or None."""
        start: cython.Py_ssize_t
        if self._cmd_locty == CRB_NO_LOCALITY:
            return None
        start = (self._cmd_locty << _LOCALITY_SHIFT) + TPM_CRB_DATA_BUFFER
        return self._cmd_locty, bytes(self.mmio[start : start + self._cmd_len])

    @property
    def executing(self) -> bool:
        """True from START until the response is delivered."""
        return self._cmd_locty != CRB_NO_LOCALITY

    # -- reset and inspection ------------------------------------------------------------
    def reset(self, tpm_version: int, bufsize: int) -> None:
        """Machine reset of the registers (the device layer handles the backend).

        Every register of every window is cleared and set to its reset value;
        the data buffers keep their contents (RAM), as in QEMU. A command in
        flight or a posted completion is forgotten.
        """
        locty: cython.int
        base: cython.Py_ssize_t
        cmd: cython.ulonglong
        self._version = tpm_version
        self._bufsize = min(max(int(bufsize), 0), CRB_BUFFER_SIZE)
        self._active = CRB_NO_LOCALITY
        self._waiting = 0
        self._cmd_locty = CRB_NO_LOCALITY
        self._cmd_len = 0
        self._drop_posted()
        for locty in range(self._localities):
            base = locty << _LOCALITY_SHIFT
            self.mmio[base : base + _REGS_END] = 0
            cmd = self._address + base + TPM_CRB_DATA_BUFFER
            self._set32(base + TPM_LOC_STATE, TPM_LOC_STATE_TPM_REG_VALID_STS)
            self._set32(base + TPM_CRB_INTF_ID, crb_intf_id(self._localities))
            self._set32(base + TPM_CRB_INTF_ID_HIGH, TPM_CRB_INTF_ID_HIGH_VALUE)
            self._set32(base + TPM_CRB_CTRL_STS, TPM_CRB_CTRL_STS_TPM_IDLE)
            self._set32(base + TPM_CRB_CTRL_CMD_SIZE, CRB_BUFFER_SIZE)
            self._set32(base + TPM_CRB_CTRL_CMD_LADDR, cmd & _U32)
            self._set32(base + TPM_CRB_CTRL_CMD_HADDR, cmd >> 32)
            self._set32(base + TPM_CRB_CTRL_RSP_SIZE, CRB_BUFFER_SIZE)
            self._set32(base + TPM_CRB_CTRL_RSP_ADDR, cmd & _U32)
            self._set32(base + TPM_CRB_CTRL_RSP_ADDR_HIGH, cmd >> 32)

    @property
    def tpm_version(self) -> int:
        return self._version

    @property
    def bufsize(self) -> int:
        """Bytes of a command or response the buffer carries (``min(backend, 0xF80)``)."""
        return self._bufsize

    @property
    def localities(self) -> int:
        return self._localities

    @property
    def address(self) -> int:
        """Guest-physical address of the region (in the address registers)."""
        return self._address

    @property
    def active_locality(self) -> Optional[int]:
        """The assigned locality, or None."""
        return None if self._active == CRB_NO_LOCALITY else self._active

    @property
    def buffer(self) -> np.ndarray:
        """Locality 0's data buffer: a live view of ``mmio[0x80:0x1000]``."""
        return self.mmio[TPM_CRB_DATA_BUFFER:CRB_LOCALITY_SIZE]

    def locality_buffer(self, locality: int) -> np.ndarray:
        """The data buffer of *locality* (a live view into ``mmio``)."""
        if isinstance(locality, bool) or not isinstance(locality, int) or not 0 <= locality < self.localities:
            raise ConfigurationError(f"locality must be 0..{self._localities - 1}, got {locality!r}")
        base = locality * CRB_LOCALITY_SIZE
        return self.mmio[base + TPM_CRB_DATA_BUFFER : base + CRB_LOCALITY_SIZE]

    # ------------------------------------------------------------------
    # State capture (migration, snapshots)
    # ------------------------------------------------------------------
    def capture(self) -> tuple[object, ...]:
        """Everything that defines the core's behaviour, as a tuple of bytes
        and ints (copies): the whole region (registers and data buffers, which
        QEMU migrates as its "tpm-crb" VMState and RAM), the active locality,
        the waiting localities, the command in flight and a posted
        completion. :meth:`restore` puts it back; the TPM version and the
        buffer size are the owner's (asked from the backend again).
        Layout: ``(mmio, active, waiting, cmd_locty, cmd_len, posted)``."""
        return (
            self.mmio.tobytes(),
            self._active,
            self._waiting,
            self._cmd_locty,
            self._cmd_len,
            self._capture_base(),
        )

    def restore(self, state: tuple[Any, ...], tpm_version: int, bufsize: int) -> None:
        """Put back a :meth:`capture` of a core of the same configuration
        (the owner checked it)."""
        self._copy_into(self._m8, state[0])
        self._active = state[1]
        self._waiting = state[2]
        self._cmd_locty = state[3]
        self._cmd_len = state[4]
        self._version = tpm_version
        self._bufsize = min(max(int(bufsize), 0), CRB_BUFFER_SIZE)
        self._restore_base(state[5])
