"""``tpmdev eventlog FILE``: print a TCG event log decoded.

Reads a binary log -- crypto agile (TPM 2.0) or legacy SHA-1 (TPM 1.2), as
Linux shows it in ``/sys/kernel/security/tpm0/binary_bios_measurements`` --
and prints each record: index, PCR, event type, the digest of every bank and
the event data (strings shown as text, the Spec ID, StartupLocality and UEFI
variable events decoded, anything else as hex). ``--replay`` adds the PCR
values the log implies per bank; ``--padded`` reads a zero-filled log area
(QEMU's ``etc/tpm/log``). An unreadable file or a malformed log is reported
on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any, Optional

from tpmdev.errors import EventLogError
from tpmdev.firmware.eventlog import (
    SPEC_ID_SIGNATURE,
    Event,
    EventLog,
    EventType,
    SpecIdEvent,
    parse,
    replay,
    startup_locality_of,
)

__all__ = ["register", "run", "describe", "summarise"]

_HEX_SHOWN = 32
_VARIABLE_EVENTS = frozenset(
    {
        EventType.EV_EFI_VARIABLE_DRIVER_CONFIG,
        EventType.EV_EFI_VARIABLE_BOOT,
        EventType.EV_EFI_VARIABLE_BOOT2,
        EventType.EV_EFI_VARIABLE_AUTHORITY,
    }
)
_PLATFORM_CLASSES = {0: "client", 1: "server"}
_UINTN = {1: "UINT32", 2: "UINT64"}


def register(subparsers: Any) -> None:
    """Add the ``eventlog`` subcommand to the ``tpmdev`` parser."""
    p = subparsers.add_parser(
        "eventlog",
        help="print a TCG event log (e.g. binary_bios_measurements) decoded",
        description="Print a TCG event log decoded: crypto agile (TPM 2.0) or legacy SHA-1 (TPM 1.2).",
    )
    p.add_argument("file", help="the binary log, e.g. /sys/kernel/security/tpm0/binary_bios_measurements")
    p.add_argument("--replay", action="store_true", help="also show the PCR values the log implies, per bank")
    p.add_argument(
        "--padded",
        action="store_true",
        help="the file is a zero-filled log area (QEMU's etc/tpm/log): stop where only zeros are left",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as f:
            data = f.read()
    except OSError as exc:
        print(f"tpmdev eventlog: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        log = parse(data, padded=args.padded)
    except EventLogError as exc:
        print(f"tpmdev eventlog: {args.file} is not a valid event log: {exc}", file=sys.stderr)
        return 1
    lines = describe(log)
    if args.replay:
        lines += describe_replay(log)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def describe(log: EventLog) -> list[str]:
    """The lines ``tpmdev eventlog`` prints for *log*."""
    if log.crypto_agile:
        kind = f"crypto agile (TCG_PCR_EVENT2), banks {', '.join(log.banks)}"
    else:
        kind = "legacy SHA-1 (TCG_PCClientPCREvent)"
    lines = [f"TCG event log: {kind}, {len(log.events)} records"]
    for index, event in enumerate(log.events):
        lines.append(f"[{index}] PCR {event.pcr}  {event.type_name}")
        width = max((len(bank) for bank in event.digests), default=0)
        for bank, digest in event.digests.items():
            lines.append(f"    {bank:<{width}}  {digest.hex()}")
        header = log.crypto_agile and index == 0
        lines.append(f"    data  {summarise(event, spec_id=header)}")
    return lines


def describe_replay(log: EventLog) -> list[str]:
    values = replay(log)
    locality = startup_locality_of(log)
    note = f" (StartupLocality {locality})" if locality is not None else ""
    lines = ["", f"PCR values the log implies{note}:"]
    for bank in log.banks:
        if bank not in values:
            lines.append(f"  {bank}: cannot replay (this Python has no {bank} hash)")
            continue
        lines.append(f"  {bank}:")
        if not values[bank]:
            lines.append("    (no PCR extended)")
        for pcr, value in values[bank].items():
            lines.append(f"    PCR {pcr:2d}  {value.hex()}")
    return lines


def summarise(event: Event, *, spec_id: bool = False) -> str:
    """A one-line description of *event*'s data; never raises."""
    data = event.data
    if not data:
        return "(empty)"
    if spec_id and data.startswith(SPEC_ID_SIGNATURE):
        try:
            return _spec_id(SpecIdEvent.from_bytes(data))
        except EventLogError:
            pass
    locality = event.startup_locality
    if locality is not None:
        return f"StartupLocality {locality}"
    if event.event_type in _VARIABLE_EVENTS:
        variable = _variable(data)
        if variable is not None:
            return variable
    text = _text(data)
    if text is not None:
        return text
    return _hex(data)


def _spec_id(spec: SpecIdEvent) -> str:
    sizes = ", ".join(f"{bank} {size}" for bank, size in spec.digest_sizes.items())
    vendor = _text(spec.vendor_info) or _hex(spec.vendor_info) if spec.vendor_info else "(none)"
    return (
        f"Spec ID Event03: platformClass {spec.platform_class} "
        f"({_PLATFORM_CLASSES.get(spec.platform_class, 'other')}), "
        f"spec {spec.spec_version_major}.{spec.spec_version_minor} errata {spec.spec_errata}, "
        f"uintnSize {spec.uintn_size} ({_UINTN.get(spec.uintn_size, '?')}), "
        f"digest sizes {sizes}, vendorInfo {vendor}"
    )


def _variable(data: bytes) -> Optional[str]:
    """UEFI_VARIABLE_DATA: VariableName GUID, name and data lengths (u64), the
    UTF-16 name, the data."""
    if len(data) < 32:
        return None
    guid = uuid.UUID(bytes_le=data[:16])
    name_chars = int.from_bytes(data[16:24], "little")
    data_size = int.from_bytes(data[24:32], "little")
    if 32 + 2 * name_chars + data_size != len(data):
        return None
    try:
        name = data[32 : 32 + 2 * name_chars].decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    value = data[32 + 2 * name_chars :]
    shown = f": {_hex(value, sized=False)}" if value else ""
    return f"UEFI variable {guid}:{name!r}, {data_size} bytes{shown}"


def _printable(text: str) -> bool:
    return bool(text) and all(ch.isprintable() or ch in "\t\n\r" for ch in text)


def _text(data: bytes) -> Optional[str]:
    body = data[:-1] if data.endswith(b"\0") else data
    try:
        ascii_text = body.decode("ascii")
    except UnicodeDecodeError:
        ascii_text = ""
    if _printable(ascii_text):
        return repr(ascii_text)
    if len(data) % 2 == 0:
        wide = data[:-2] if data.endswith(b"\0\0") else data
        try:
            text = wide.decode("utf-16-le")
        except UnicodeDecodeError:
            return None
        if _printable(text):
            return f"{text!r} (UTF-16)"
    return None


def _hex(data: bytes, *, sized: bool = True) -> str:
    size = f" ({len(data)} bytes)" if sized else ""
    if len(data) <= _HEX_SHOWN:
        return f"{data.hex()}{size}"
    return f"{data[:_HEX_SHOWN].hex()}...{size}"
