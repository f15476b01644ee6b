"""sPAPR virtual TPM message model, as QEMU's ``tpm-spapr`` presents it.

Implements the pSeries (PAPR) vTPM interface that Linux's ``tpm_ibmvtpm``
driver speaks: a VIO device reached through a command/response queue (CRQ)
of 16-byte entries, with TPM commands and responses moved by DMA through the
partition's RTCE window. Behaviour, quirks included, is QEMU's
``hw/tpm/tpm_spapr.c``. Unlike the TIS and CRB cores this module is not a
hot path (one hypercall per TPM command, no register polling), so it stays
plain typed Python and is never compiled.

Theory of operation
-------------------

*Entries.* A CRQ entry is 16 bytes, multi-byte fields big-endian: ``valid``
(byte 0: 0xC0 initialisation, 0x80 command/response), ``msg`` (byte 1),
``len`` (bytes 2..3), ``data`` (bytes 4..7: the I/O bus address of the
guest's RTCE buffer for a TPM command) and 8 reserved bytes. The guest sends
one with the H_SEND_CRQ hypercall; :meth:`SpaprCore.receive_crq` takes it as
the hypercall delivers it and returns the hypercall status (``H_SUCCESS``,
or ``H_BUSY`` for a TPM command while one executes). Answers leave through
the ``send_crq`` callable: writing them into the guest's queue (and raising
the VIO interrupt) is the transport's business, not the device's.

*Messages.* Init (0xC0/0x01) and init complete (0xC0/0x02) are echoed.
GET_VERSION answers 1 (TPM 1.2) or 2 (TPM 2.0) in ``data``,
GET_RTCE_BUFFER_SIZE the buffer size in ``len``, PREPARE_TO_SUSPEND an
empty acknowledgement; every answer has ``msg | 0x80``. Anything else is
ignored and still returns ``H_SUCCESS``.

*A TPM command.* States NONE, EXECUTION and COMPLETION (``SPAPR_VTPM_STATE_*``);
a TPM_COMMAND is taken in NONE and COMPLETION. The core keeps the request
entry, DMA-reads the whole buffer (``bufsize`` bytes, whatever ``len``
says) from ``data`` into its own 4096-byte buffer, enters EXECUTION and asks
its owner to run ``buffer[:min(header size, bufsize)]`` at locality 0
(``request(REQUEST_COMMAND)``, then :attr:`SpaprCore.pending_command`).
The owner answers with :meth:`SpaprCore.complete`, synchronously inside the
request or later; a completion produced on another thread is handed over
with :meth:`SpaprCore.post` and applied at the next :meth:`receive_crq` or
:meth:`SpaprCore.poll`, as QEMU applies it on its main loop. Completion
copies the response into the same buffer, DMA-writes
``min(header size, bufsize)`` bytes of it back to ``data`` and sends the
stored request entry turned into the answer: valid 0x80, msg 0x82, ``len``
the byte count, ``data`` and the reserved bytes echoed.

*DMA.* ``dma_read(addr, n)`` returns the guest bytes at ``addr``; fewer
than ``n`` (``b""`` for an unmapped address) means the rest is not mapped.
``dma_write(addr, data)`` returns None (or True, or the byte count) when the
bytes landed, False (or a smaller count) when the address is not writable.
A callable that raises counts as a failed transfer and is reported through
``on_error``; so is one that returns something that is not a bytes-like
object of at most ``n`` bytes. Nothing a guest sends, and no failure of a
host callable, ever raises out of :meth:`receive_crq`, :meth:`complete` or
:meth:`poll`; only host misuse does (an entry that is not 16 bytes).

Where QEMU is odd (``QUIRK:`` in the code)
------------------------------------------
* The DMA read covers the whole buffer, not ``len``; ``len`` is ignored.
* The command goes to the TPM even when the DMA read failed, after a
  copy-in error answer (msg 0xFF, data 3). What the TPM then gets is what
  QEMU's buffer holds: the bytes that could be read, and zeros for every
  byte that could not (QEMU's memory core reads an untranslatable IOMMU
  address as unassigned memory: zero, with an error result, and carries on
  with the rest of the transfer). A callable that raised delivered nothing,
  so the whole buffer reads as zeros; the command is then empty.
* Command and response lengths come from the header size field in the
  buffer, capped at ``bufsize``: a header that claims more than it has sends
  stale buffer bytes (the previous command's tail) along.
* A failed DMA write answers with msg 0xFF, data 4 (copy-out failed), ``len``
  0 and the request's reserved bytes echoed (QEMU rewrites its stored entry).
* QEMU leaves the unused fields of the GET_VERSION, GET_RTCE_BUFFER_SIZE,
  PREPARE_TO_SUSPEND and copy-in error answers uninitialised (stack
  contents); here they are zeros.

Where we differ from QEMU, on purpose
-------------------------------------
* The buffer starts as zeros (QEMU's is uninitialised heap memory).
* A version other than 1 or 2 answers GET_VERSION with 0; QEMU aborts (it
  cannot get there: a backend of unknown version never starts).
* With a synchronous owner the response can reach ``send_crq`` before
  :meth:`receive_crq` returns; QEMU always answers later, from its main loop.
  The guest-visible order of the answers is QEMU's: the copy-in error answer
  leaves before the command is handed over.
* Migration: the owner completes a command in flight before it saves
  (:meth:`SpaprCore.capture`), so QEMU's response held back in ``numbytes``
  while a migration finishes never arises.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Optional

from tpmdev.errors import AccessError

__all__ = [
    "SpaprCore",
    "CrqEntry",
    "crq_entry",
    "parse_crq",
    "REQUEST_COMMAND",
    "H_SUCCESS",
    "H_BUSY",
    "H_SEND_CRQ",
    "SPAPR_VTPM_CRQ_SIZE",
    "SPAPR_VTPM_BUFFER_MAX",
    "SPAPR_VTPM_VALID_INIT_CRQ_COMMAND",
    "SPAPR_VTPM_VALID_COMMAND",
    "SPAPR_VTPM_MSG_RESULT",
    "SPAPR_VTPM_INIT_CRQ_RESULT",
    "SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT",
    "SPAPR_VTPM_GET_VERSION",
    "SPAPR_VTPM_TPM_COMMAND",
    "SPAPR_VTPM_GET_RTCE_BUFFER_SIZE",
    "SPAPR_VTPM_PREPARE_TO_SUSPEND",
    "SPAPR_VTPM_VTPM_ERROR",
    "SPAPR_VTPM_ERR_COPY_IN_FAILED",
    "SPAPR_VTPM_ERR_COPY_OUT_FAILED",
    "SPAPR_VTPM_STATE_NONE",
    "SPAPR_VTPM_STATE_EXECUTION",
    "SPAPR_VTPM_STATE_COMPLETION",
    "SPAPR_VTPM_DT_NAME",
    "SPAPR_VTPM_DT_TYPE",
    "SPAPR_VTPM_DT_COMPATIBLE",
    "SPAPR_VTPM_SIGNAL_MASK",
    "SPAPR_VTPM_RTCE_WINDOW_SIZE",
]

log = logging.getLogger(__name__)

#: A command is ready (read :attr:`SpaprCore.pending_command`). The same
#: number in every core of tpmdev.hw.
REQUEST_COMMAND = 1

# PAPR hypercall return codes (QEMU include/hw/ppc/spapr.h).
H_SUCCESS = 0
H_BUSY = 1
#: Internal result of a DMA transfer that failed (QEMU's spapr_vio DMA helpers).
H_DEST_PARM = -14
#: The hypercall number by which the guest sends an entry.
H_SEND_CRQ = 0x108

SPAPR_VTPM_CRQ_SIZE = 16
#: The device's buffer; the size in force is min(backend buffer size, this).
SPAPR_VTPM_BUFFER_MAX = 4096

# valid byte
SPAPR_VTPM_VALID_INIT_CRQ_COMMAND = 0xC0
SPAPR_VTPM_VALID_COMMAND = 0x80
#: OR-ed into msg of an answer; also the valid byte of a TPM_COMMAND answer.
SPAPR_VTPM_MSG_RESULT = 0x80
# msg, valid 0xC0
SPAPR_VTPM_INIT_CRQ_RESULT = 0x01
SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT = 0x02
# msg, valid 0x80
SPAPR_VTPM_GET_VERSION = 0x01
SPAPR_VTPM_TPM_COMMAND = 0x02
SPAPR_VTPM_GET_RTCE_BUFFER_SIZE = 0x03
SPAPR_VTPM_PREPARE_TO_SUSPEND = 0x04
# error answer: msg 0xFF, the reason in data
SPAPR_VTPM_VTPM_ERROR = 0xFF
SPAPR_VTPM_ERR_COPY_IN_FAILED = 0x3
SPAPR_VTPM_ERR_COPY_OUT_FAILED = 0x4

SPAPR_VTPM_STATE_NONE = 0
SPAPR_VTPM_STATE_EXECUTION = 1
SPAPR_VTPM_STATE_COMPLETION = 2

# Device tree facts (for firmware builders): node name, device_type,
# compatible by TPM version, VIO signal mask, RTCE (DMA) window size.
SPAPR_VTPM_DT_NAME = "vtpm"
SPAPR_VTPM_DT_TYPE = "IBM,vtpm"
SPAPR_VTPM_DT_COMPATIBLE = {1: "IBM,vtpm", 2: "IBM,vtpm20"}
SPAPR_VTPM_SIGNAL_MASK = 0x00000001
SPAPR_VTPM_RTCE_WINDOW_SIZE = 0x10000000


class CrqEntry(NamedTuple):
    """The fields of a CRQ entry."""

    valid: int
    msg: int
    len: int
    data: int
    reserved: int


def crq_entry(valid: int, msg: int, length: int = 0, data: int = 0, reserved: int = 0) -> bytes:
    """The 16 bytes of a CRQ entry (fields big-endian; *length* is ``len``)."""
    return (
        bytes((valid & 0xFF, msg & 0xFF))
        + (length & 0xFFFF).to_bytes(2, "big")
        + (data & 0xFFFFFFFF).to_bytes(4, "big")
        + (reserved & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
    )


def parse_crq(entry: bytes) -> CrqEntry:
    """Split a 16-byte CRQ entry into its fields."""
    if len(entry) != SPAPR_VTPM_CRQ_SIZE:
        raise AccessError(f"a CRQ entry is 16 bytes, got {len(entry)}")
    return CrqEntry(
        entry[0],
        entry[1],
        int.from_bytes(entry[2:4], "big"),
        int.from_bytes(entry[4:8], "big"),
        int.from_bytes(entry[8:16], "big"),
    )


def _header_size(buffer: bytearray) -> int:
    # tpm_cmd_get_size: the BE32 at bytes 2..5 (the buffer is always 4096 bytes)
    return int.from_bytes(buffer[2:6], "big")


def _answer(valid: int, msg: int, length: int = 0, data: int = 0) -> bytes:
    # QUIRK: QEMU sends these from a stack entry whose unset fields are
    # garbage; ours are zeros.
    return crq_entry(valid, msg, length, data)


class SpaprCore:
    """The vTPM's CRQ message handling and command state of one device.

    :param tpm_version: 1 or 2, reported by GET_VERSION.
    :param bufsize: the buffer size in force (capped at 4096).
    :param request: called with ``REQUEST_COMMAND`` when a command is ready.
    :param dma_read: ``(addr, n) -> bytes`` from the guest's RTCE window.
    :param dma_write: ``(addr, data) -> None | bool | int`` into it.
    :param send_crq: ``(entry) -> object``, an answer for the guest's queue.
    :param on_error: ``(what, exc)``, told about every host callable that
        raised (``what`` is ``"dma_read"``, ``"dma_write"``, ``"send_crq"``
        or ``"request"``); the failure itself is contained.
    """

    def __init__(
        self,
        tpm_version: int,
        bufsize: int,
        request: Optional[Callable[[int], object]],
        dma_read: Callable[[int, int], bytes],
        dma_write: Callable[[int, bytes], object],
        send_crq: Callable[[bytes], object],
        on_error: Optional[Callable[[str, Exception], object]] = None,
    ) -> None:
        self._request = request
        self._dma_read = dma_read
        self._dma_write = dma_write
        self._send_crq = send_crq
        self._on_error = on_error
        self._buffer = bytearray(SPAPR_VTPM_BUFFER_MAX)
        self._crq = bytearray(SPAPR_VTPM_CRQ_SIZE)  # the TPM_COMMAND request entry
        self._posted: Optional[tuple[bytes, bool, bool]] = None
        self._command = b""
        self._state = SPAPR_VTPM_STATE_NONE
        self._version = 0
        self._bufsize = 0
        self.reset(tpm_version, bufsize)

    # -- the guest's side ---------------------------------------------------
    def receive_crq(self, entry: bytes) -> int:
        """Handle one entry sent with H_SEND_CRQ; return the hypercall status.

        *entry* is the 16 bytes of the two hypercall arguments (big-endian
        64-bit words). Raises :class:`tpmdev.AccessError` only for an entry
        that is not 16 bytes of a bytes-like object.
        """
        try:
            raw = bytes(memoryview(entry).cast("B"))
        except TypeError:
            raise AccessError(
                f"receive_crq takes the 16-byte entry as bytes, got {type(entry).__name__}"
            ) from None
        if len(raw) != SPAPR_VTPM_CRQ_SIZE:
            raise AccessError(
                f"receive_crq takes a 16-byte CRQ entry (the two 64-bit H_SEND_CRQ words, "
                f"big-endian), got {len(raw)} bytes"
            )
        if self._posted is not None:
            self.poll()
        valid = raw[0]
        msg = raw[1]
        if valid == SPAPR_VTPM_VALID_INIT_CRQ_COMMAND:
            if msg in (SPAPR_VTPM_INIT_CRQ_RESULT, SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT):
                self._send(crq_entry(SPAPR_VTPM_VALID_INIT_CRQ_COMMAND, msg))
            else:
                log.debug("sPAPR vTPM: unknown init message 0x%02x ignored", msg)
        elif valid == SPAPR_VTPM_VALID_COMMAND:
            if msg == SPAPR_VTPM_TPM_COMMAND:
                if self._state == SPAPR_VTPM_STATE_EXECUTION:
                    return H_BUSY
                self._tpm_command(raw)
            elif msg == SPAPR_VTPM_GET_RTCE_BUFFER_SIZE:
                self._send(
                    _answer(SPAPR_VTPM_VALID_COMMAND, msg | SPAPR_VTPM_MSG_RESULT, length=self._bufsize)
                )
            elif msg == SPAPR_VTPM_GET_VERSION:
                version = self._version if self._version in (1, 2) else 0
                self._send(_answer(SPAPR_VTPM_VALID_COMMAND, msg | SPAPR_VTPM_MSG_RESULT, data=version))
            elif msg == SPAPR_VTPM_PREPARE_TO_SUSPEND:
                self._send(_answer(SPAPR_VTPM_VALID_COMMAND, msg | SPAPR_VTPM_MSG_RESULT))
            else:
                log.debug("sPAPR vTPM: unknown message type 0x%02x ignored", msg)
        else:
            log.debug("sPAPR vTPM: entry with valid 0x%02x (msg 0x%02x) ignored", valid, msg)
        return H_SUCCESS

    def _tpm_command(self, raw: bytes) -> None:
        self._crq[:] = raw
        addr = int.from_bytes(raw[4:8], "big")
        # QUIRK: the whole buffer is read, whatever len says
        copied = self._dma_in(addr)
        # QUIRK: the command goes to the TPM even if the DMA read failed
        self._command = bytes(self._buffer[: min(_header_size(self._buffer), self._bufsize)])
        self._state = SPAPR_VTPM_STATE_EXECUTION
        if copied:
            self._crq[0] = 0
        else:
            log.warning("sPAPR vTPM: DMA read of the command at 0x%08x failed", addr)
            # QEMU sends this after handing the command over, but the
            # completion can only reach the guest later: the guest sees
            # this answer first, and so it does here.
            self._send(
                _answer(
                    SPAPR_VTPM_MSG_RESULT,
                    SPAPR_VTPM_VTPM_ERROR,
                    data=SPAPR_VTPM_ERR_COPY_IN_FAILED,
                )
            )
        if self._request is not None:
            try:
                self._request(REQUEST_COMMAND)
            except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
                self._host_failure("request", exc)

    # -- host callables, contained -----------------------------------------
    def _dma_in(self, addr: int) -> bool:
        """Read the whole buffer from *addr*; bytes not delivered read as zero."""
        n = self._bufsize
        if n == 0:
            return True  # an empty transfer always succeeds
        got = 0
        try:
            data = self._dma_read(addr, n)
            view = memoryview(data).cast("B")
            got = len(view)
            if got > n:
                raise ValueError(f"dma_read({addr:#x}, {n}) returned {got} bytes")
            self._buffer[:got] = view
        except Exception as exc:  # noqa: BLE001 - a failed transfer, never a guest-visible exception
            self._host_failure("dma_read", exc)
            got = 0
        self._buffer[got:n] = bytes(n - got)
        return got == n

    def _dma_out(self, addr: int, n: int) -> bool:
        if n == 0:
            return True  # an empty transfer always succeeds
        data = bytes(self._buffer[:n])
        try:
            result = self._dma_write(addr, data)
        except Exception as exc:  # noqa: BLE001 - a failed transfer, never a guest-visible exception
            self._host_failure("dma_write", exc)
            return False
        if result is None or result is True:
            return True
        if result is False:
            return False
        if isinstance(result, int):
            return result >= n
        self._host_failure(
            "dma_write",
            TypeError(f"dma_write returned {type(result).__name__}; expected None, a bool or a byte count"),
        )
        return False

    def _send(self, entry: bytes) -> None:
        # What spapr_vio_send_crq returns (a full queue, no queue) is the
        # transport's business; QEMU's vTPM ignores it.
        try:
            self._send_crq(entry)
        except Exception as exc:  # noqa: BLE001 - the guest must never see a host exception
            self._host_failure("send_crq", exc)

    def _host_failure(self, what: str, exc: Exception) -> None:
        log.warning("sPAPR vTPM: %s failed: %r", what, exc)
        if self._on_error is not None:
            try:
                self._on_error(what, exc)
            except Exception:  # a bug in the reporting hook must not reach the guest either
                log.exception("sPAPR vTPM: on_error hook failed")

    # -- the boundary with the device layer ---------------------------------
    @property
    def pending_command(self) -> Optional[tuple[int, bytes]]:
        """``(0, command bytes)`` of the command in flight, or None."""
        if self._state != SPAPR_VTPM_STATE_EXECUTION:
            return None
        return 0, self._command

    def complete(self, response: bytes, selftest_done: bool = False, failed: bool = False) -> None:
        """Deliver the response to the command in flight.

        *response* is copied into the buffer (cut to the buffer size);
        ``min(header size, bufsize)`` bytes of the buffer go to the guest by
        DMA, then the answer entry. *selftest_done* and *failed* change
        nothing here (a failed backend's response is already QEMU's fatal
        one). Does nothing when no command is in flight.
        """
        if self._state != SPAPR_VTPM_STATE_EXECUTION:
            return
        self._state = SPAPR_VTPM_STATE_COMPLETION
        self._command = b""
        n = min(len(response), self._bufsize)
        self._buffer[:n] = response[:n]
        length = min(_header_size(self._buffer), self._bufsize)
        crq = self._crq
        addr = int.from_bytes(crq[4:8], "big")
        crq[0] = SPAPR_VTPM_MSG_RESULT
        if self._dma_out(addr, length):
            crq[1] = SPAPR_VTPM_TPM_COMMAND | SPAPR_VTPM_MSG_RESULT
            crq[2:4] = length.to_bytes(2, "big")
        else:
            log.warning("sPAPR vTPM: DMA write of the response to 0x%08x failed", addr)
            crq[1] = SPAPR_VTPM_VTPM_ERROR
            crq[2:4] = bytes(2)
            # QUIRK: the stored entry is rewritten: data now names the error
            # and the reserved bytes are the request's
            crq[4:8] = SPAPR_VTPM_ERR_COPY_OUT_FAILED.to_bytes(4, "big")
        self._send(bytes(crq))

    def post(self, response: bytes, selftest_done: bool = False, failed: bool = False) -> None:
        """Hand over a completion from another thread; applied at the next
        :meth:`receive_crq` or :meth:`poll`."""
        self._posted = (bytes(response), bool(selftest_done), bool(failed))

    def poll(self) -> bool:
        """Apply a posted completion now. Returns True if there was one."""
        posted = self._posted
        if posted is None:
            return False
        self._posted = None
        self.complete(*posted)
        return True

    # -- reset and inspection ----------------------------------------------
    def reset(self, tpm_version: int, bufsize: int) -> None:
        """Machine reset: state NONE, version and buffer size refreshed.

        The buffer and the stored request entry are kept, as in QEMU; a
        completion posted before the reset is dropped (its command belongs to
        the machine before the reset).
        """
        self._version = int(tpm_version)
        self._bufsize = min(max(int(bufsize), 0), SPAPR_VTPM_BUFFER_MAX)
        self._state = SPAPR_VTPM_STATE_NONE
        self._command = b""
        self._posted = None

    @property
    def executing(self) -> bool:
        """True while a command has been handed over and not completed."""
        return self._state == SPAPR_VTPM_STATE_EXECUTION

    @property
    def state(self) -> int:
        """``SPAPR_VTPM_STATE_NONE``, ``_EXECUTION`` or ``_COMPLETION``."""
        return self._state

    @property
    def tpm_version(self) -> int:
        return self._version

    @property
    def bufsize(self) -> int:
        return self._bufsize

    @property
    def buffer(self) -> bytearray:
        """The device's command/response buffer (4096 bytes, live)."""
        return self._buffer

    # ------------------------------------------------------------------
    # State capture (migration, snapshots)
    # ------------------------------------------------------------------
    def capture(self) -> tuple[object, ...]:
        """Everything that defines the core's behaviour (copies): ``(buffer,
        crq, command, state, posted)`` -- the whole buffer (QEMU migrates
        ``numbytes`` of it; the rest shows through the stale-tail quirk), the
        stored request entry, the command in flight, the state and a posted
        completion. :meth:`restore` puts it back; the TPM version and the
        buffer size are the owner's."""
        return (bytes(self._buffer), bytes(self._crq), self._command, self._state, self._posted)

    def restore(self, state: tuple[Any, ...], tpm_version: int, bufsize: int) -> None:
        """Put back a :meth:`capture` (checked by the owner)."""
        self._buffer[:] = state[0]
        self._crq[:] = state[1]
        self._command = state[2]
        self._state = state[3]
        self._posted = state[4]
        self._version = int(tpm_version)
        self._bufsize = min(max(int(bufsize), 0), SPAPR_VTPM_BUFFER_MAX)
