"""The TCG event log formats without a TPM: logs written byte by byte by the
test (from the structures real firmware writes) parse, round-trip and replay;
bad logs raise EventLogError naming the record, the offset and the field.

The logs here are assembled with ``struct`` from the specification's
layouts, not with the library's serialiser, so a parser and a writer that
agreed on a wrong layout would fail.
"""

from __future__ import annotations

import hashlib
import struct
import uuid

import pytest

import tpmdev
from tpmdev.errors import ConfigurationError, EventLogError, TpmDevError
from tpmdev.firmware import eventlog as E
from tpmdev.firmware.eventlog import EventType as T

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SHA1 = 0x0004
SHA256 = 0x000B


# -- logs written by hand --------------------------------------------------------
def spec_id_event03(algs: list[tuple[int, int]], vendor: bytes = b"") -> bytes:
    """TCG_EfiSpecIDEvent as EDK2 writes it for a client platform, UINT64 UINTN."""
    return (
        b"Spec ID Event03\0"
        + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
        + b"".join(struct.pack("<HH", a, s) for a, s in algs)
        + bytes((len(vendor),))
        + vendor
    )


def pcclient_event(pcr: int, event_type: int, digest: bytes, data: bytes) -> bytes:
    """TCG_PCClientPCREvent (legacy SHA-1 record)."""
    return struct.pack("<II", pcr, event_type) + digest + struct.pack("<I", len(data)) + data


def pcr_event2(pcr: int, event_type: int, digests: list[tuple[int, bytes]], data: bytes) -> bytes:
    """TCG_PCR_EVENT2 with its TPML_DIGEST_VALUES."""
    tpml = struct.pack("<I", len(digests)) + b"".join(struct.pack("<H", a) + d for a, d in digests)
    return struct.pack("<II", pcr, event_type) + tpml + struct.pack("<I", len(data)) + data


def uefi_variable(guid: uuid.UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: GUID, name length in characters, data length, name, data."""
    wide = name.encode("utf-16-le")
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + wide + value


def measure(data: bytes) -> list[tuple[int, bytes]]:
    return [(SHA1, hashlib.sha1(data).digest()), (SHA256, hashlib.sha256(data).digest())]


#: (pcr, type, event data, what was hashed): an OVMF-like boot, as Linux shows it
LINUX_EVENTS: list[tuple[int, int, bytes, bytes]] = [
    (0, 0x8, "\0".encode("utf-16-le"), "\0".encode("utf-16-le")),  # EV_S_CRTM_VERSION
    (0, 0x80000008, struct.pack("<QQ", 0x820000, 0xE0000), b"firmware volume"),  # PLATFORM_FIRMWARE_BLOB
    *[
        (7, 0x80000001, v, v)  # EV_EFI_VARIABLE_DRIVER_CONFIG
        for v in (
            uefi_variable(EFI_GLOBAL_VARIABLE, "SecureBoot", b"\0"),
            uefi_variable(EFI_GLOBAL_VARIABLE, "PK", b""),
            uefi_variable(EFI_GLOBAL_VARIABLE, "KEK", b""),
            uefi_variable(EFI_IMAGE_SECURITY_DATABASE, "db", b""),
            uefi_variable(EFI_IMAGE_SECURITY_DATABASE, "dbx", b""),
        )
    ],
    (7, 0x4, bytes(4), bytes(4)),  # EV_SEPARATOR
    (1, 0x80000002, uefi_variable(EFI_GLOBAL_VARIABLE, "BootOrder", b"\0\0"), b"BootOrder"),
    (4, 0x80000007, b"Calling EFI Application from Boot Option", b"Calling EFI Application from Boot Option"),
    *[(pcr, 0x4, bytes(4), bytes(4)) for pcr in (0, 1, 2, 3, 4, 5, 6)],
    (4, 0x80000003, struct.pack("<QQQQ", 0x7E000000, 0x10000, 0, 4) + b"\x7f\xff\x04\x00", b"authenticode"),
    (5, 0x80000007, b"Exit Boot Services Invocation", b"Exit Boot Services Invocation"),
]


def linux_log() -> bytes:
    header = pcclient_event(0, 0x3, bytes(20), spec_id_event03([(SHA1, 20), (SHA256, 32)]))
    return header + b"".join(pcr_event2(p, t, measure(m), d) for p, t, d, m in LINUX_EVENTS)


def expected_pcrs(
    events: list[tuple[int, int, bytes, bytes]], hashes: dict[str, str]
) -> dict[str, dict[int, bytes]]:
    out: dict[str, dict[int, bytes]] = {}
    for bank, name in hashes.items():
        pcrs: dict[int, bytes] = {}
        for pcr, _type, _data, measured in events:
            size = hashlib.new(name).digest_size
            pcrs[pcr] = hashlib.new(
                name, pcrs.get(pcr, bytes(size)) + hashlib.new(name, measured).digest()
            ).digest()
        out[bank] = dict(sorted(pcrs.items()))
    return out


#: a SeaBIOS-like TPM 1.2 boot: (pcr, type, data) and the data is what was hashed
LEGACY_EVENTS: list[tuple[int, int, bytes]] = [
    (0, 0x7, b"SeaBIOS"),  # EV_S_CRTM_CONTENTS
    (1, 0x1, b"ACPI DATA"),  # EV_POST_CODE
    *[(pcr, 0x4, bytes(4)) for pcr in range(8)],
    (4, 0x5, b"Calling INT 19h"),  # EV_ACTION
    (4, 0xD, b"MBR"),  # EV_IPL
    (5, 0xE, bytes(64)),  # EV_IPL_PARTITION_DATA
]


def legacy_log() -> bytes:
    return b"".join(pcclient_event(p, t, hashlib.sha1(d).digest(), d) for p, t, d in LEGACY_EVENTS)


# -- round trips and replay --------------------------------------------------------
def test_linux_crypto_agile_log_round_trips() -> None:
    data = linux_log()
    log = E.parse(data)
    assert log.crypto_agile
    assert log.banks == ["sha1", "sha256"]
    assert log.spec_id == E.SpecIdEvent(((SHA1, 20), (SHA256, 32)), 0, 0, 2, 0, 2, b"")
    assert len(log.events) == 1 + len(LINUX_EVENTS)
    header = log.events[0]
    assert (header.pcr, header.event_type, header.digests) == (0, T.EV_NO_ACTION, {"sha1": bytes(20)})
    for event, (pcr, event_type, event_data, measured) in zip(log.events[1:], LINUX_EVENTS):
        assert (event.pcr, event.event_type, event.data) == (pcr, event_type, event_data)
        assert event.digests == {
            "sha1": hashlib.sha1(measured).digest(),
            "sha256": hashlib.sha256(measured).digest(),
        }
    assert log.events[8].type_name == "EV_SEPARATOR"
    assert log.events[1].type_name == "EV_S_CRTM_VERSION"
    assert log.to_bytes() == data


def test_linux_log_replays() -> None:
    log = E.parse(linux_log())
    assert E.replay(log) == expected_pcrs(LINUX_EVENTS, {"sha1": "sha1", "sha256": "sha256"})


def test_legacy_log_round_trips_and_replays() -> None:
    data = legacy_log()
    log = E.parse(data)
    assert not log.crypto_agile and log.spec_id is None and log.banks == ["sha1"]
    assert [(e.pcr, e.event_type, e.data) for e in log.events] == LEGACY_EVENTS
    assert log.to_bytes() == data
    assert E.replay(log) == expected_pcrs([(p, t, d, d) for p, t, d in LEGACY_EVENTS], {"sha1": "sha1"})


def test_built_log_equals_hand_written_one() -> None:
    log = E.EventLog.create(["sha1", "sha256"])
    for pcr, event_type, data, measured in LINUX_EVENTS:
        log.add(pcr, event_type, data, measured=measured)
    assert log.to_bytes() == linux_log()
    legacy = E.EventLog.create(legacy=True)
    for pcr, event_type, data in LEGACY_EVENTS:
        legacy.add(pcr, event_type, data)
    assert legacy.to_bytes() == legacy_log()


def test_no_action_extends_nothing_and_startup_locality_sets_pcr0() -> None:
    log = E.EventLog.create(["sha256"])
    log.add(0, T.EV_NO_ACTION, E.startup_locality_event(3))
    log.add(0, T.EV_POST_CODE, b"code")
    log.add(2, T.EV_NO_ACTION, b"not measured")
    log.add(17, T.EV_COMPACT_HASH, b"drtm")
    assert log.events[1].digests == {"sha256": bytes(32)}
    assert log.events[1].startup_locality == 3
    d = hashlib.sha256(b"code").digest()
    assert E.replay(log) == {
        "sha256": {
            0: hashlib.sha256(bytes(31) + b"\x03" + d).digest(),
            17: hashlib.sha256(b"\xff" * 32 + hashlib.sha256(b"drtm").digest()).digest(),
        }
    }
    assert E.parse(log.to_bytes()) == log


def test_four_banks_and_an_unknown_algorithm() -> None:
    log = E.EventLog.create(["sha1", "sha256", "sha384", "sha512"], vendor_info=b"tpmdev")
    log.add(3, T.EV_EFI_HANDOFF_TABLES, b"tables")
    assert E.parse(log.to_bytes()) == log
    assert sorted(E.replay(log)) == ["sha1", "sha256", "sha384", "sha512"]
    # a bank no hash function here knows: parsed and kept, not replayed
    data = pcclient_event(0, 3, bytes(20), spec_id_event03([(SHA256, 32), (0x0099, 7)]))
    data += pcr_event2(1, 1, [(0x0099, b"7 bytes"), (SHA256, bytes(32))], b"x")
    parsed = E.parse(data)
    assert parsed.banks == ["sha256", "alg_0x0099"]
    assert parsed.events[1].digests == {"alg_0x0099": b"7 bytes", "sha256": bytes(32)}
    assert parsed.to_bytes() == data
    assert list(E.replay(parsed)) == ["sha256"]
    assert E.bank_alg("alg_0x0099") == 0x0099 and E.bank_name(0x0099) == "alg_0x0099"


def test_padded_area() -> None:
    log = E.EventLog.create()
    log.add(0, T.EV_POST_CODE, b"ends in zeros\0\0\0\0", measured=b"m")
    area = log.to_bytes(pad_to=0x10000)
    assert len(area) == 0x10000
    assert E.parse(area, padded=True) == log
    assert E.parse(bytes(0x10000), padded=True) == E.EventLog([], crypto_agile=False)
    with pytest.raises(EventLogError, match="more than the 16-byte area"):
        log.to_bytes(pad_to=16)


def test_empty_log() -> None:
    log = E.parse(b"")
    assert log.events == [] and not log.crypto_agile and E.replay(log) == {"sha1": {}}


def test_event_type_names() -> None:
    assert E.event_type_name(0x80000001) == "EV_EFI_VARIABLE_DRIVER_CONFIG"
    assert E.event_type_name(0x13) == "EV_POST_CODE2"
    assert E.event_type_name(0x800000E0) == "EV_EFI_VARIABLE_AUTHORITY"
    assert E.event_type_name(0x1234) == "0x00001234"


# -- bad logs ------------------------------------------------------------------
HEADER = pcclient_event(0, 3, bytes(20), spec_id_event03([(SHA1, 20), (SHA256, 32)]))
GOOD2 = pcr_event2(7, 4, measure(bytes(4)), bytes(4))


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


#: (log, record index, record offset, field offset, field name, words in the message)
BAD_LOGS = [
    (HEADER[:7], 0, 0, 4, "eventType", "truncated"),
    (HEADER[:-1], 0, 0, 32, "event", "truncated"),
    (_patch(HEADER, 28, b"\xff\xff\xff\xff"), 0, 0, 32, "event", "needs 4294967295 bytes"),
    (
        pcclient_event(0, 3, bytes(20), spec_id_event03([]).replace(b"\0" * 4 + b"\0", b"\0" * 5)),
        0,
        0,
        56,
        "SpecIdEvent.numberOfAlgorithms",
        "0 algorithms",
    ),
    (
        pcclient_event(0, 3, bytes(20), spec_id_event03([(SHA256, 20)])),
        0,
        0,
        62,
        "SpecIdEvent.digestSizes[0].digestSize",
        "sha256 digests have 32",
    ),
    (
        pcclient_event(0, 3, bytes(20), spec_id_event03([(SHA1, 20), (SHA1, 20)])),
        0,
        0,
        64,
        "SpecIdEvent.digestSizes[1]",
        "listed twice",
    ),
    (
        pcclient_event(0, 3, bytes(20), spec_id_event03([(SHA1, 20)]) + b"extra"),
        0,
        0,
        65,
        "SpecIdEvent",
        "5 bytes follow vendorInfo",
    ),
    (HEADER + GOOD2[:10], 1, len(HEADER), len(HEADER) + 8, "digests.count", "truncated"),
    (
        HEADER + _patch(GOOD2, 8, b"\x03\0\0\0"),
        1,
        len(HEADER),
        len(HEADER) + 8,
        "digests.count",
        "lists 2 banks",
    ),
    (HEADER + _patch(GOOD2, 12, b"\x0c\0"), 1, len(HEADER), len(HEADER) + 12, "digests[0].hashAlg", "sha384"),
    (
        HEADER + pcr_event2(1, 1, [(SHA1, bytes(20)), (SHA1, bytes(20))], b""),
        1,
        len(HEADER),
        len(HEADER) + 34,
        "digests[1].hashAlg",
        "a second sha1",
    ),
    # the event data of a TCG_PCR_EVENT2 with sha1 and sha256 starts 72 bytes in
    (HEADER + GOOD2 + GOOD2[:-1], 2, len(HEADER + GOOD2), len(HEADER + GOOD2) + 72, "event", "truncated"),
    # the last legacy record (EV_IPL_PARTITION_DATA) starts at 39 + 41 + 8 * 36 + 47 + 35
    (legacy_log()[:-3], 12, 450, 482, "event", "needs 64 bytes but only 61"),
]


@pytest.mark.parametrize(
    ("data", "index", "record_offset", "offset", "field", "words"),
    BAD_LOGS,
    ids=[f"{b[4]}-{i}" for i, b in enumerate(BAD_LOGS)],
)
def test_bad_log_error_names_record_offset_and_field(
    data: bytes, index: int, record_offset: int, offset: int, field: str, words: str
) -> None:
    with pytest.raises(EventLogError) as info:
        E.parse(data)
    err = info.value
    assert (err.index, err.record_offset, err.offset, err.field) == (index, record_offset, offset, field)
    message = str(err)
    assert f"record {index} (at byte offset {record_offset})" in message
    assert f"{field} at byte offset {offset}" in message
    assert words in message
    assert isinstance(err, TpmDevError) and isinstance(err, ValueError)
    assert tpmdev.errors.EventLogError is E.EventLogError


def test_parse_refuses_what_is_not_bytes() -> None:
    with pytest.raises(EventLogError, match="bytes, not str"):
        E.parse("log")  # type: ignore[arg-type]


# -- building logs by hand: host errors ---------------------------------------------
@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: E.EventLog.create(["md5"]), "unknown PCR bank 'md5'"),
        (lambda: E.EventLog.create("sha256"), "not the string"),
        (lambda: E.EventLog.create(["sha256"], legacy=True), "sha1 bank only"),
        (lambda: E.EventLog.create(["sha1", "sha1"]), "distinct algorithms"),
        (lambda: E.EventLog.create(vendor_info=bytes(256)), "at most 255"),
        (lambda: E.EventLog.create(platform_class=-1), "out of range"),
        (lambda: E.EventLog.create().add(24, 1, b""), "PCR index 0..23"),
        (lambda: E.EventLog.create().add(True, 1, b""), "PCR index"),
        (lambda: E.EventLog.create().add(0, 1 << 32, b""), "u32"),
        (lambda: E.EventLog.create().add(0, 1, "text"), "data must be bytes"),  # type: ignore[arg-type]
        (lambda: E.EventLog.create().add(0, 1, b"", digests={"sha256": bytes(20)}), "digest for bank"),
        (lambda: E.EventLog.create().add(0, 1, b"", digests={"sha384": bytes(48)}), "digest for bank"),
        (lambda: E.startup_locality_event(5), "0..4"),
    ],
)
def test_building_errors(call: object, words: str) -> None:
    with pytest.raises((ConfigurationError, EventLogError), match=words):
        call()  # type: ignore[operator]


def test_legacy_log_with_a_second_bank_cannot_be_written() -> None:
    log = E.EventLog([E.Event(0, 1, {"sha1": bytes(20), "sha256": bytes(32)})], crypto_agile=False)
    with pytest.raises(EventLogError, match="event 0: a legacy"):
        log.to_bytes()


def test_no_action_in_a_bank_this_python_cannot_hash() -> None:
    # parsed from a Spec ID event naming a bank with no hash function here
    data = pcclient_event(0, 3, bytes(20), spec_id_event03([(SHA256, 32), (0x0099, 7)]))
    log = E.parse(data)
    event = log.add(0, T.EV_NO_ACTION, E.startup_locality_event(3))
    assert event.digests == {"sha256": bytes(32), "alg_0x0099": bytes(7)}
    assert E.parse(log.to_bytes()) == log


def test_the_first_startup_locality_event_counts() -> None:
    log = E.EventLog.create(["sha256"])
    log.add(0, T.EV_NO_ACTION, E.startup_locality_event(3))
    log.add(0, T.EV_NO_ACTION, E.startup_locality_event(4))
    log.add(0, T.EV_S_CRTM_VERSION, b"code")
    assert E.startup_locality_of(log) == 3
    d = hashlib.sha256(b"code").digest()
    assert E.replay(log) == {"sha256": {0: hashlib.sha256(bytes(31) + b"\x03" + d).digest()}}
