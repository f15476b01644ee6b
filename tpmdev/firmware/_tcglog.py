"""The TCG event log formats: records, Spec ID event, parse, serialise, replay.

TCG PC Client Platform Firmware Profile 1.05 section 10 and the TCG EFI
Protocol Specification 2.0 section 5 (crypto agile, TCG_PCR_EVENT2); the
TCG PC Client Implementation Specification for Conventional BIOS 1.21
(legacy SHA-1, TCG_PCClientPCREvent). The public face, with the theory of
operation, is :mod:`tpmdev.firmware.eventlog`; this module knows bytes only,
never a TPM.
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from tpmdev.errors import ConfigurationError, EventLogError

__all__ = [
    "EventType",
    "ALGORITHMS",
    "SPEC_ID_SIGNATURE",
    "STARTUP_LOCALITY_SIGNATURE",
    "bank_name",
    "bank_alg",
    "event_type_name",
    "startup_locality_event",
    "SpecIdEvent",
    "Event",
    "EventLog",
    "parse",
    "replay",
    "startup_locality_of",
    "check_pcr",
    "check_event_type",
    "check_bytes",
    "hash_banks",
]


class EventType(enum.IntEnum):
    """Event types (PFP 1.05 section 10.4.1; EV_POST_CODE2 from 1.06)."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_POST_CODE2 = 0x00000013
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
    EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4


_TYPE_NAMES = {t.value: t.name for t in EventType}
EV_NO_ACTION = EventType.EV_NO_ACTION.value

#: TPM_ALG_ID -> (bank name, digest size, hashlib name) of the hashes PCR banks use
#: (TCG Algorithm Registry).
ALGORITHMS: dict[int, tuple[str, int, str]] = {
    0x0004: ("sha1", 20, "sha1"),
    0x000B: ("sha256", 32, "sha256"),
    0x000C: ("sha384", 48, "sha384"),
    0x000D: ("sha512", 64, "sha512"),
    0x0012: ("sm3_256", 32, "sm3"),
    0x0027: ("sha3_256", 32, "sha3_256"),
    0x0028: ("sha3_384", 48, "sha3_384"),
    0x0029: ("sha3_512", 64, "sha3_512"),
}
_ALG_BY_NAME = {name: alg for alg, (name, _size, _h) in ALGORITHMS.items()}
_UNKNOWN_ALG = re.compile(r"alg_0x([0-9a-f]{4})\Z")

#: TCG_EfiSpecIDEvent signature of a crypto-agile log (with its NUL).
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
#: TCG_EfiStartupLocalityEvent signature (with its NUL).
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\0"
_SHA1_SIZE = 20
_NUM_PCRS = 24
#: PCRs a PC Client TPM starts as all ones (reset only by a dynamic launch).
_DRTM_PCRS = range(17, 23)


def bank_name(alg: int) -> str:
    """The bank name of TPM_ALG_ID *alg* (``0x000B`` -> ``"sha256"``)."""
    known = ALGORITHMS.get(alg)
    return known[0] if known is not None else f"alg_{alg:#06x}"


def bank_alg(name: str) -> int:
    """The TPM_ALG_ID of bank *name* (the inverse of :func:`bank_name`)."""
    if name in _ALG_BY_NAME:
        return _ALG_BY_NAME[name]
    match = _UNKNOWN_ALG.match(name) if isinstance(name, str) else None
    if match is None:
        raise ConfigurationError(
            f"unknown PCR bank {name!r}: use one of {sorted(_ALG_BY_NAME)} "
            "(or alg_0xNNNN for another TPM_ALG_ID)"
        )
    return int(match.group(1), 16)


def event_type_name(event_type: int) -> str:
    """``EV_...`` for a known event type, else its value in hex."""
    return _TYPE_NAMES.get(event_type, f"{event_type:#010x}")


def startup_locality_event(locality: int) -> bytes:
    """The data of the ``StartupLocality`` EV_NO_ACTION event (PFP 10.4.5.3)."""
    if isinstance(locality, bool) or not isinstance(locality, int) or not 0 <= locality <= 4:
        raise ConfigurationError(f"the startup locality must be 0..4, got {locality!r}")
    return STARTUP_LOCALITY_SIGNATURE + bytes((locality,))


def _hash(bank: str, data: bytes) -> Optional[bytes]:
    """H_bank(data), or None when this Python has no such hash."""
    known = ALGORITHMS.get(_ALG_BY_NAME.get(bank, -1))
    if known is None:
        return None
    try:
        return hashlib.new(known[2], data).digest()
    except ValueError:  # e.g. sm3 missing from this OpenSSL
        return None


# -- reading ------------------------------------------------------------------
class _Cursor:
    """Bounds-checked little-endian reads; every failure is an EventLogError
    naming the record being read and the field."""

    def __init__(self, data: bytes, end: Optional[int] = None) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data) if end is None else end
        self.index = 0
        self.record_offset = 0

    def fail(self, field_name: str, problem: str, offset: Optional[int] = None) -> EventLogError:
        at = self.pos if offset is None else offset
        return EventLogError(
            f"event log record {self.index} (at byte offset {self.record_offset}): "
            f"{field_name} at byte offset {at}: {problem}",
            index=self.index,
            record_offset=self.record_offset,
            offset=at,
            field=field_name,
        )

    def take(self, size: int, field_name: str) -> bytes:
        left = self.end - self.pos
        if size > left:
            raise self.fail(field_name, f"needs {size} bytes but only {left} are left (the log is truncated)")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def uint(self, size: int, field_name: str) -> int:
        return int.from_bytes(self.take(size, field_name), "little")


# -- structures -----------------------------------------------------------------
@dataclass(frozen=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEvent, the data of a crypto-agile log's first record.

    ``algorithms`` is the digest-size table in log order: ``(TPM_ALG_ID,
    digestSize)`` pairs.
    """

    algorithms: tuple[tuple[int, int], ...]
    platform_class: int = 0
    spec_version_minor: int = 0
    spec_version_major: int = 2
    spec_errata: int = 0
    uintn_size: int = 2
    vendor_info: bytes = b""

    @classmethod
    def for_banks(
        cls,
        banks: Iterable[str],
        *,
        platform_class: int = 0,
        spec_errata: int = 0,
        uintn_size: int = 2,
        vendor_info: bytes = b"",
    ) -> SpecIdEvent:
        """The Spec ID event of a log with *banks* (names of known hashes)."""
        table = []
        for name in banks:
            alg = bank_alg(name)
            if alg not in ALGORITHMS:
                raise ConfigurationError(
                    f"no digest size is known for bank {name!r}: build SpecIdEvent directly"
                )
            table.append((alg, ALGORITHMS[alg][1]))
        spec = cls(
            tuple(table),
            platform_class=platform_class,
            spec_errata=spec_errata,
            uintn_size=uintn_size,
            vendor_info=bytes(vendor_info),
        )
        spec.to_bytes()  # validates
        return spec

    @property
    def banks(self) -> list[str]:
        return [bank_name(alg) for alg, _size in self.algorithms]

    @property
    def digest_sizes(self) -> dict[str, int]:
        return {bank_name(alg): size for alg, size in self.algorithms}

    def to_bytes(self) -> bytes:
        algs = [alg for alg, _ in self.algorithms]
        if not algs or len(set(algs)) != len(algs):
            raise EventLogError(
                f"a Spec ID event needs one or more distinct algorithms, not {self.algorithms!r}"
            )
        for alg, size in self.algorithms:
            if not (0 <= alg <= 0xFFFF and 0 < size <= 0xFFFF):
                raise EventLogError(f"bad Spec ID algorithm entry ({alg:#x}, {size})")
        if len(self.vendor_info) > 0xFF:
            raise EventLogError(f"vendorInfo holds at most 255 bytes, not {len(self.vendor_info)}")
        try:
            head = struct.pack(
                "<16sIBBBBI",
                SPEC_ID_SIGNATURE,
                self.platform_class,
                self.spec_version_minor,
                self.spec_version_major,
                self.spec_errata,
                self.uintn_size,
                len(self.algorithms),
            )
        except struct.error as exc:
            raise EventLogError(f"a Spec ID field is out of range: {exc}") from None
        table = b"".join(struct.pack("<HH", alg, size) for alg, size in self.algorithms)
        return head + table + bytes((len(self.vendor_info),)) + self.vendor_info

    @classmethod
    def _read(cls, cur: _Cursor, prefix: str) -> SpecIdEvent:
        signature = cur.take(16, f"{prefix}.signature")
        if signature != SPEC_ID_SIGNATURE:
            raise cur.fail(f"{prefix}.signature", f"{signature!r} is not {SPEC_ID_SIGNATURE!r}", cur.pos - 16)
        platform_class = cur.uint(4, f"{prefix}.platformClass")
        minor = cur.uint(1, f"{prefix}.specVersionMinor")
        major = cur.uint(1, f"{prefix}.specVersionMajor")
        errata = cur.uint(1, f"{prefix}.specErrata")
        uintn = cur.uint(1, f"{prefix}.uintnSize")
        count = cur.uint(4, f"{prefix}.numberOfAlgorithms")
        if count == 0 or count * 4 > cur.end - cur.pos:
            raise cur.fail(
                f"{prefix}.numberOfAlgorithms",
                f"{count} algorithms cannot be (zero, or more than the event holds)",
                cur.pos - 4,
            )
        table: list[tuple[int, int]] = []
        for i in range(count):
            where = cur.pos
            alg = cur.uint(2, f"{prefix}.digestSizes[{i}].algorithmId")
            size = cur.uint(2, f"{prefix}.digestSizes[{i}].digestSize")
            if any(alg == seen for seen, _ in table):
                raise cur.fail(f"{prefix}.digestSizes[{i}]", f"{bank_name(alg)} is listed twice", where)
            known = ALGORITHMS.get(alg)
            if size == 0 or (known is not None and known[1] != size):
                expected = f", {bank_name(alg)} digests have {known[1]}" if known else ""
                raise cur.fail(f"{prefix}.digestSizes[{i}].digestSize", f"size {size}{expected}", where + 2)
            table.append((alg, size))
        vendor_size = cur.uint(1, f"{prefix}.vendorInfoSize")
        vendor = cur.take(vendor_size, f"{prefix}.vendorInfo")
        if cur.pos != cur.end:
            raise cur.fail(prefix, f"{cur.end - cur.pos} bytes follow vendorInfo inside the event")
        return cls(tuple(table), platform_class, minor, major, errata, uintn, vendor)

    @classmethod
    def from_bytes(cls, data: bytes) -> SpecIdEvent:
        """Decode a Spec ID event's data (offsets in errors are within *data*)."""
        return cls._read(_Cursor(bytes(data)), "SpecIdEvent")


@dataclass(frozen=True)
class Event:
    """One record: the PCR, the event type, the digest per bank, the event data.

    ``digests`` maps bank names to digests in the order the record holds them
    (a legacy record has exactly ``{"sha1": digest}``).
    """

    pcr: int
    event_type: int
    digests: dict[str, bytes]
    data: bytes = b""

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def startup_locality(self) -> Optional[int]:
        """The locality of a ``StartupLocality`` event, else None."""
        if (
            self.event_type == EV_NO_ACTION
            and self.pcr == 0
            and len(self.data) == 17
            and self.data[:16] == STARTUP_LOCALITY_SIGNATURE
        ):
            return self.data[16]
        return None


def _legacy_record(event: Event, index: int) -> bytes:
    digest = event.digests.get("sha1")
    if len(event.digests) != 1 or digest is None or len(digest) != _SHA1_SIZE:
        raise EventLogError(f"event {index}: a legacy (SHA-1) record holds exactly one 20-byte sha1 digest")
    return (
        struct.pack("<II", event.pcr, event.event_type)
        + digest
        + struct.pack("<I", len(event.data))
        + event.data
    )


def _read_legacy(cur: _Cursor) -> Event:
    pcr = cur.uint(4, "pcrIndex")
    event_type = cur.uint(4, "eventType")
    digest = cur.take(_SHA1_SIZE, "digest")
    size = cur.uint(4, "eventDataSize")
    return Event(pcr, event_type, {"sha1": digest}, cur.take(size, "event"))


def _read_event2(cur: _Cursor, sizes: dict[int, int]) -> Event:
    pcr = cur.uint(4, "pcrIndex")
    event_type = cur.uint(4, "eventType")
    count = cur.uint(4, "digests.count")
    if count > len(sizes):
        raise cur.fail(
            "digests.count", f"{count} digests, but the Spec ID event lists {len(sizes)} banks", cur.pos - 4
        )
    digests: dict[str, bytes] = {}
    for i in range(count):
        alg = cur.uint(2, f"digests[{i}].hashAlg")
        size = sizes.get(alg)
        name = bank_name(alg)
        if size is None:
            raise cur.fail(
                f"digests[{i}].hashAlg", f"{name} is not in the Spec ID event's table", cur.pos - 2
            )
        if name in digests:
            raise cur.fail(f"digests[{i}].hashAlg", f"a second {name} digest", cur.pos - 2)
        digests[name] = cur.take(size, f"digests[{i}].digest")
    size = cur.uint(4, "eventSize")
    return Event(pcr, event_type, digests, cur.take(size, "event"))


def _is_spec_id_header(event: Event) -> bool:
    return event.pcr == 0 and event.event_type == EV_NO_ACTION and event.data[:16] == SPEC_ID_SIGNATURE


@dataclass
class EventLog:
    """A TCG event log: its records in order and its format.

    In a crypto-agile log ``events[0]`` is the Spec ID record (decoded by
    :attr:`spec_id`); every record is kept as read, so :meth:`to_bytes`
    gives back the bytes :func:`parse` got.
    """

    events: list[Event] = field(default_factory=list)
    crypto_agile: bool = True

    @classmethod
    def create(
        cls,
        banks: Optional[Sequence[str]] = None,
        *,
        legacy: bool = False,
        platform_class: int = 0,
        spec_errata: int = 0,
        uintn_size: int = 2,
        vendor_info: bytes = b"",
    ) -> EventLog:
        """A new log: crypto agile with a Spec ID record for *banks*
        (default sha1 and sha256), or with ``legacy=True`` an empty SHA-1 log."""
        if legacy:
            if banks is not None and list(banks) != ["sha1"]:
                raise ConfigurationError(f"a legacy log has the sha1 bank only, not {list(banks)!r}")
            return cls([], crypto_agile=False)
        if isinstance(banks, str):
            raise ConfigurationError(f"banks must be a sequence of bank names, not the string {banks!r}")
        spec = SpecIdEvent.for_banks(
            ("sha1", "sha256") if banks is None else banks,
            platform_class=platform_class,
            spec_errata=spec_errata,
            uintn_size=uintn_size,
            vendor_info=vendor_info,
        )
        header = Event(0, EV_NO_ACTION, {"sha1": bytes(_SHA1_SIZE)}, spec.to_bytes())
        return cls([header], crypto_agile=True)

    @property
    def spec_id(self) -> Optional[SpecIdEvent]:
        """The decoded Spec ID event of a crypto-agile log (None for a legacy one)."""
        if not self.crypto_agile:
            return None
        if not self.events:
            raise EventLogError("a crypto-agile log starts with its Spec ID record, and this one has none")
        return SpecIdEvent.from_bytes(self.events[0].data)

    @property
    def banks(self) -> list[str]:
        spec = self.spec_id
        return ["sha1"] if spec is None else spec.banks

    @property
    def measurements(self) -> list[Event]:
        """The records after the Spec ID record (all records of a legacy log)."""
        return self.events[1:] if self.crypto_agile else list(self.events)

    def add(
        self,
        pcr: int,
        event_type: int,
        data: bytes = b"",
        *,
        measured: Optional[bytes] = None,
        digests: Optional[Mapping[str, bytes]] = None,
    ) -> Event:
        """Append a record and return it (nothing is sent to a TPM).

        The digests are those given, else the hash of *measured* (default:
        *data* itself) in every bank of the log; an ``EV_NO_ACTION`` record
        gets zero digests, as the PFP asks.
        """
        check_pcr(pcr)
        check_event_type(event_type)
        data = check_bytes("data", data)
        if digests is None:
            if event_type == EV_NO_ACTION:
                # zero digests of each bank's size: no hashing, so a bank this Python
                # cannot hash (sm3, alg_0xNNNN) still gets its record
                sizes = self._sizes()
                digests = {bank: bytes(sizes[bank]) for bank in self.banks}
            else:
                payload = data if measured is None else check_bytes("measured", measured)
                digests = hash_banks(self.banks, payload)
        else:
            sizes = {"sha1": _SHA1_SIZE} if not self.crypto_agile else self._sizes()
            digests = dict(digests)
            for bank, digest in digests.items():
                if bank not in sizes or not isinstance(digest, bytes) or len(digest) != sizes[bank]:
                    raise ConfigurationError(
                        f"digest for bank {bank!r}: the log's banks and sizes are {sizes}, got {digest!r}"
                    )
            if not self.crypto_agile and list(digests) != ["sha1"]:
                raise ConfigurationError("a legacy log's record holds exactly one sha1 digest")
        event = Event(pcr, event_type, dict(digests), data)
        self.events.append(event)
        return event

    def _sizes(self) -> dict[str, int]:
        spec = self.spec_id
        return {"sha1": _SHA1_SIZE} if spec is None else spec.digest_sizes

    def to_bytes(self, *, pad_to: Optional[int] = None) -> bytes:
        """The log in its binary form; *pad_to* fills with zeros up to an area size."""
        out: list[bytes] = []
        if not self.crypto_agile:
            out = [_legacy_record(e, i) for i, e in enumerate(self.events)]
        else:
            spec = self.spec_id
            assert spec is not None
            out.append(_legacy_record(self.events[0], 0))
            sizes = {bank_name(alg): (alg, size) for alg, size in spec.algorithms}
            for i, e in enumerate(self.events[1:], 1):
                parts = [struct.pack("<III", e.pcr, e.event_type, len(e.digests))]
                for bank, digest in e.digests.items():
                    if bank not in sizes or len(digest) != sizes[bank][1]:
                        raise EventLogError(f"event {i}: its {bank} digest does not fit the Spec ID table")
                    parts.append(struct.pack("<H", sizes[bank][0]) + digest)
                parts.append(struct.pack("<I", len(e.data)) + e.data)
                out.append(b"".join(parts))
        blob = b"".join(out)
        if pad_to is not None:
            if len(blob) > pad_to:
                raise EventLogError(f"the log takes {len(blob)} bytes, more than the {pad_to}-byte area")
            blob += bytes(pad_to - len(blob))
        return blob


def check_pcr(pcr: int) -> None:
    if isinstance(pcr, bool) or not isinstance(pcr, int) or not 0 <= pcr < _NUM_PCRS:
        raise ConfigurationError(f"pcr must be a PCR index 0..{_NUM_PCRS - 1}, got {pcr!r}")


def check_event_type(event_type: int) -> None:
    if isinstance(event_type, bool) or not isinstance(event_type, int) or not 0 <= event_type <= 0xFFFFFFFF:
        raise ConfigurationError(f"event_type must be a u32 (an EventType), got {event_type!r}")


def check_bytes(name: str, value: Any) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigurationError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def hash_banks(banks: Iterable[str], payload: bytes) -> dict[str, bytes]:
    out = {}
    for bank in banks:
        digest = _hash(bank, payload)
        if digest is None:
            raise ConfigurationError(f"cannot hash in bank {bank!r}: this Python has no such hash function")
        out[bank] = digest
    return out


def parse(data: bytes, *, padded: bool = False) -> EventLog:
    """Parse a binary event log, crypto agile or legacy (told by its first record).

    With *padded* the log is the start of a zero-filled area (QEMU's
    ``etc/tpm/log``, an ACPI log area): parsing stops where only zero bytes
    are left. Raises :class:`~tpmdev.errors.EventLogError` for a truncated or
    inconsistent log.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EventLogError(f"an event log is bytes, not {type(data).__name__}")
    data = bytes(data)
    # padded: the records end where only zeros are left (a record's own
    # trailing zero bytes are still read, from the untrimmed data)
    stop = len(data.rstrip(b"\0")) if padded else len(data)
    cur = _Cursor(data)
    log = EventLog([], crypto_agile=False)
    if stop == 0:
        return log
    first = _read_legacy(cur)
    log.events.append(first)
    sizes: dict[int, int] = {}
    if _is_spec_id_header(first):
        log.crypto_agile = True
        inner = _Cursor(data, cur.pos)
        inner.pos = cur.pos - len(first.data)
        sizes = dict(SpecIdEvent._read(inner, "SpecIdEvent").algorithms)
    while cur.pos < stop:
        cur.index += 1
        cur.record_offset = cur.pos
        log.events.append(_read_event2(cur, sizes) if log.crypto_agile else _read_legacy(cur))
    return log


# -- replay -----------------------------------------------------------
def _initial(pcr: int, size: int, startup_locality: int) -> bytes:
    if pcr in _DRTM_PCRS:
        return b"\xff" * size
    if pcr == 0:
        return bytes(size - 1) + bytes((startup_locality,))
    return bytes(size)


def startup_locality_of(log: EventLog) -> Optional[int]:
    """The locality of the log's first ``StartupLocality`` event, else None.

    PFP 1.05 section 10.4.5.3 has firmware log it before any other event in
    PCR 0, once; should a log hold several, the first one counts (the one the
    PFP places), here and wherever the locality is shown.
    """
    return next((e.startup_locality for e in log.events if e.startup_locality is not None), None)


def replay(log: EventLog) -> dict[str, dict[int, bytes]]:
    """The PCR values *log* implies: ``{bank: {pcr: value}}`` for every bank of
    the log this Python can hash and every PCR a record extends.

    ``EV_NO_ACTION`` records extend nothing; a ``StartupLocality`` event sets
    PCR 0's starting value (its last byte is the locality; the first such
    event counts, see :func:`startup_locality_of`).
    """
    found = startup_locality_of(log)
    locality = 0 if found is None else found
    banks = [b for b in log.banks if _hash(b, b"") is not None]
    values: dict[str, dict[int, bytes]] = {b: {} for b in banks}
    for event in log.measurements:
        if event.event_type == EV_NO_ACTION:
            continue
        for bank, digest in event.digests.items():
            pcrs = values.get(bank)
            if pcrs is None:
                continue
            size = len(digest)
            current = pcrs.get(event.pcr)
            if current is None:
                current = _initial(event.pcr, size, locality)
            new = _hash(bank, current + digest)
            assert new is not None
            pcrs[event.pcr] = new
    return {bank: dict(sorted(pcrs.items())) for bank, pcrs in values.items()}
