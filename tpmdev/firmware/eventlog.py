"""The TCG event log: build it while measuring through a device, parse it, replay it.

TCG PC Client Platform Firmware Profile Specification (PFP) 1.05, section 10
("Event Logging"), and the TCG EFI Protocol Specification 2.0, section 5
("Event Log Structure"); TPM 1.2 logs as in the TCG PC Client Specific
Implementation Specification for Conventional BIOS 1.21. Linux exposes a
firmware's log as ``/sys/kernel/security/tpm0/binary_bios_measurements`` in
exactly the binary form handled here; QEMU hands firmware the area it fills
(``etc/tpm/log``, found through the TPM2 / TCPA ACPI table).

Theory of operation
-------------------

Two formats exist, both little-endian (unlike TPM commands):

* **Legacy (SHA-1)**, the TPM 1.2 log: a run of ``TCG_PCClientPCREvent``
  records, each ``pcrIndex`` (u32), ``eventType`` (u32), a 20-byte SHA-1
  ``digest``, ``eventDataSize`` (u32) and the event data.
* **Crypto agile**, the TPM 2.0 log: a first record in the legacy layout, an
  ``EV_NO_ACTION`` in PCR 0 with a zero digest whose data is the
  ``TCG_EfiSpecIDEvent`` ("Spec ID Event03"): platform class, spec version,
  ``uintnSize`` and the table of the banks in the log with their digest sizes.
  Every later record is a ``TCG_PCR_EVENT2``: ``pcrIndex``, ``eventType``, a
  ``TPML_DIGEST_VALUES`` (u32 count, then ``hashAlg`` (u16) and the digest,
  whose size only the Spec ID table tells) and ``eventSize`` with the data.

:func:`parse` tells the two apart by that first record and keeps every byte:
``parse(data).to_bytes() == data`` for any log it accepts. It reads through
one bounds-checked cursor, so a truncated or inconsistent log raises
:class:`~tpmdev.errors.EventLogError` naming the record, its offset and the
field, never an exception from deep inside.

:class:`EventLogBuilder` is the firmware side: for each measurement it hashes
the data in every bank of the log, extends the PCR through the device's
registers with a guest driver (TPM2_PCR_Extend with one digest per bank;
TPM 1.2: TPM_Extend), and only then appends the record. Its banks are the
ones the TPM has allocated (TPM2_GetCapability(TPM_CAP_PCRS)).

:func:`replay` computes the PCR values a log implies: every PCR starts as a
PC Client TPM starts it (zero; the DRTM PCRs 17 to 22 all ones; PCR 0 ends in
the startup locality when a ``StartupLocality`` event says so) and each record
but ``EV_NO_ACTION`` extends it, ``PCR = H(PCR || digest)`` per bank.
:func:`check` compares that with the TPM's own PCR_Read (TPM_PcrRead).

What :func:`parse` refuses, and what it lets through: it refuses what
leaves the bytes ambiguous or unreadable -- a field running past the end, a
Spec ID event with no algorithms, a known algorithm with the wrong digest
size, one listed twice or bytes after ``vendorInfo``, a record with more
digests than the table has banks, a digest of a bank not in the table or two
of one bank. It keeps, as real firmware writes them, records with fewer
digests than the table lists (those banks are simply not extended), PCR
indices above 23 and any event type; :func:`replay` leaves out a bank this
Python cannot hash (``alg_0xNNNN``, or SM3 without OpenSSL support).

Banks are named by hash (``"sha1"``, ``"sha256"``, ...), as
:class:`tpmdev.backends.Builtin`'s ``pcr_banks`` names them; an algorithm
this module does not know is named ``alg_0xNNNN``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Callable, NamedTuple, Optional

from tpmdev.drivers import commands as _cmd
from tpmdev.drivers import for_device
from tpmdev.errors import BackendError, ConfigurationError, EventLogError
from tpmdev.firmware._tcglog import (
    ALGORITHMS,
    EV_NO_ACTION,
    SPEC_ID_SIGNATURE,
    STARTUP_LOCALITY_SIGNATURE,
    Event,
    EventLog,
    EventType,
    SpecIdEvent,
    bank_alg,
    bank_name,
    check_bytes,
    check_event_type,
    check_pcr,
    event_type_name,
    hash_banks,
    parse,
    replay,
    startup_locality_event,
    startup_locality_of,
)

__all__ = [
    "EventType",
    "ALGORITHMS",
    "SPEC_ID_SIGNATURE",
    "STARTUP_LOCALITY_SIGNATURE",
    "bank_name",
    "bank_alg",
    "event_type_name",
    "startup_locality_event",
    "startup_locality_of",
    "SpecIdEvent",
    "Event",
    "EventLog",
    "EventLogError",
    "EventLogBuilder",
    "PcrMismatch",
    "parse",
    "replay",
    "check",
]


class PcrMismatch(NamedTuple):
    """A PCR whose value in the TPM differs from the one the log implies
    (``actual`` None: the TPM has no such bank allocated, or no such PCR: a
    PC Client TPM has PCRs 0..23, and one above is reported, never read)."""

    bank: str
    pcr: int
    expected: bytes
    actual: Optional[bytes]


def check(log: EventLog, tpm: Any, *, tpm_version: Optional[int] = None) -> list[PcrMismatch]:
    """Compare :func:`replay` with the TPM's PCR_Read (TPM 1.2: TPM_PcrRead).

    *tpm* is a device (driven with :func:`tpmdev.drivers.for_device`) or a
    guest driver (anything with ``transmit(command) -> response``). Returns
    the mismatches, empty when the TPM agrees with the log on every bank and
    PCR the log covers; a PCR above 23 is reported (``actual`` None), not read.
    """
    return _compare(log, _TpmConnection(tpm, tpm_version))


def _compare(log: EventLog, conn: _TpmConnection) -> list[PcrMismatch]:
    mismatches = []
    for bank, pcrs in replay(log).items():
        for pcr, expected in pcrs.items():
            # a PC Client TPM has PCRs 0..23 only: one the log names beyond them
            # is not read (the TPM has no such PCR), it is reported
            actual = conn.pcr_read(bank, pcr) if pcr < _cmd.PCR_COUNT else None
            if actual != expected:
                mismatches.append(PcrMismatch(bank, pcr, expected, actual))
    return mismatches


# -- talking to the TPM -----------------------------------------------------------
class _TpmConnection:
    """The few commands the builder and check need, through a guest driver."""

    def __init__(self, tpm: Any, tpm_version: Optional[int]) -> None:
        transmit = getattr(tpm, "transmit", None)
        device = tpm
        if callable(transmit):
            device = next(
                (getattr(tpm, a) for a in ("device", "bus", "dev") if getattr(tpm, a, None) is not None), None
            )
        else:
            try:
                transmit = for_device(tpm).transmit
            except ConfigurationError:
                raise ConfigurationError(
                    f"{type(tpm).__name__} is neither a device tpmdev.drivers.for_device drives "
                    "(TIS, TISSysbus, CRB, TISI2C, SPAPR) nor a driver with transmit()"
                ) from None
        version = tpm_version if tpm_version is not None else getattr(device, "tpm_version", None)
        if version not in (1, 2):
            raise ConfigurationError(
                f"cannot tell the TPM version of {tpm!r}: pass tpm_version=1 or 2"
                if tpm_version is None
                else f"tpm_version must be 1 or 2, got {tpm_version!r}"
            )
        self.transmit: Callable[[bytes], bytes] = transmit
        self.version: int = version

    def run(self, what: str, command: bytes) -> bytes:
        response = self.transmit(command)
        if len(response) < 10:
            raise BackendError(f"{what}: the TPM answered {len(response)} bytes, not a response")
        rc = int.from_bytes(response[6:10], "big")
        if rc != 0:
            raise BackendError(f"{what} failed with TPM response code {rc:#x}")
        return response

    def allocated_banks(self) -> list[str]:
        """The banks with a PCR allocated, in the TPM's order (TPM 1.2: sha1)."""
        if self.version == 1:
            return ["sha1"]
        rsp = self.run("TPM2_GetCapability(TPM_CAP_PCRS)", _cmd.tpm2_get_capability(_cmd.TPM_CAP_PCRS, 0, 1))
        try:
            selections = _cmd.decode_pcr_selection(rsp)
        except struct.error:
            raise BackendError(f"TPM2_GetCapability(TPM_CAP_PCRS): malformed response {rsp.hex()}") from None
        banks = [bank_name(alg) for alg, select in selections if any(select)]
        return banks

    def extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        if self.version == 1:
            self.run(f"TPM_Extend(PCR {pcr})", _cmd.tpm12_extend(pcr, digests["sha1"]))
            return
        values = [(bank_alg(bank), digest) for bank, digest in digests.items()]
        self.run(f"TPM2_PCR_Extend(PCR {pcr})", _cmd.tpm2_pcr_extend_banks(pcr, values))

    def pcr_read(self, bank: str, pcr: int) -> Optional[bytes]:
        if self.version == 1:
            if bank != "sha1":
                return None
            return _cmd.decode_tpm12_digest(self.run(f"TPM_PcrRead({pcr})", _cmd.tpm12_pcr_read(pcr)))
        rsp = self.run(f"TPM2_PCR_Read({bank}, PCR {pcr})", _cmd.tpm2_pcr_read([pcr], bank_alg(bank)))
        try:
            _counter, digests = _cmd.decode_pcr_read(rsp)
        except struct.error:
            raise BackendError(f"TPM2_PCR_Read: malformed response {rsp.hex()}") from None
        return digests[0] if digests else None


class EventLogBuilder:
    """Measure through a device as firmware does, keeping the event log.

    :param tpm: a device (TIS, TIS on sysbus, CRB, ...: driven with the
        driver :func:`tpmdev.drivers.for_device` probes) or a guest driver
        with ``transmit()``. The TPM
        must be started (TPM2_Startup / TPM_Startup) already.
    :param banks: the banks to measure into (names); default every bank the
        TPM has allocated. A TPM 1.2 has ``sha1`` only and gets a legacy log.
    :param tpm_version: needed only when it cannot be read from *tpm*.
    :param startup_locality: log a ``StartupLocality`` event (TPM 2.0, when
        TPM2_Startup ran at locality 3 or an H-CRTM at 4).
    The remaining keywords fill the Spec ID event.

    Raises :class:`~tpmdev.errors.ConfigurationError` for unusable options
    and :class:`~tpmdev.errors.BackendError` when the TPM refuses a command.
    """

    def __init__(
        self,
        tpm: Any,
        *,
        banks: Optional[Sequence[str]] = None,
        tpm_version: Optional[int] = None,
        startup_locality: Optional[int] = None,
        platform_class: int = 0,
        spec_errata: int = 0,
        uintn_size: int = 2,
        vendor_info: bytes = b"",
    ) -> None:
        self._tpm = _TpmConnection(tpm, tpm_version)
        allocated = self._tpm.allocated_banks()
        if banks is None:
            chosen = allocated
        else:
            if isinstance(banks, str):
                raise ConfigurationError(f"banks must be a sequence of bank names, not the string {banks!r}")
            chosen = list(banks)
            missing = [b for b in chosen if b not in allocated]
            if missing or not chosen or len(set(chosen)) != len(chosen):
                raise ConfigurationError(
                    f"banks must be distinct banks the TPM has allocated ({allocated}), not {chosen!r}"
                )
        if not chosen:
            raise ConfigurationError("the TPM has no PCR bank allocated: nothing to measure into")
        if self._tpm.version == 1:
            if startup_locality is not None:
                raise ConfigurationError("a TPM 1.2 log has no StartupLocality event")
            self.log = EventLog.create(legacy=True)
        else:
            self.log = EventLog.create(
                chosen,
                platform_class=platform_class,
                spec_errata=spec_errata,
                uintn_size=uintn_size,
                vendor_info=vendor_info,
            )
            if startup_locality is not None:
                self.log.add(0, EV_NO_ACTION, startup_locality_event(startup_locality))

    @property
    def tpm_version(self) -> int:
        return self._tpm.version

    def measure(
        self, pcr: int, event_type: int, data: bytes = b"", *, measured: Optional[bytes] = None
    ) -> Event:
        """Hash *measured* (default *data*) in every bank, extend *pcr* with it
        through the device, then log the record (*data* is the event data).

        ``EV_NO_ACTION`` is only logged, never extended. Nothing is logged if
        the TPM refuses the extend.
        """
        check_pcr(pcr)
        check_event_type(event_type)
        data = check_bytes("data", data)
        if event_type == EV_NO_ACTION:
            return self.log.add(pcr, event_type, data)
        digests = hash_banks(self.log.banks, data if measured is None else check_bytes("measured", measured))
        self._tpm.extend(pcr, digests)
        return self.log.add(pcr, event_type, data, digests=digests)

    def to_bytes(self, *, pad_to: Optional[int] = None) -> bytes:
        return self.log.to_bytes(pad_to=pad_to)

    def check(self) -> list[PcrMismatch]:
        """:func:`check` of this log against the same TPM."""
        return _compare(self.log, self._tpm)
