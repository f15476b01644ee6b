"""Saving, loading and snapshotting a device: the tpmdev device state format.

QEMU migrates a TPM as two things: the frontend's VMState (TIS: the buffer,
``rw_offset``, the locality numbers and five per-locality records; CRB: its
registers, the data buffer as RAM; sPAPR: the state, the buffer and the
request entry) and the backend's state (swtpm's permanent, volatile and
savestate blobs, fetched with GET_STATEBLOB after the command in flight has
finished; qemu-tpm-spec sections 1.13, 4.6, 5.4, 9.1.7). A tpmdev device
state blob carries the same two things, and everything else that defines
the device's behaviour (the IRQ line level, the locality of the command in
flight, the I2C transaction state, the PPI page), in one self-describing,
versioned, integrity-checked byte string.

Format (version 1; all integers big-endian)
-------------------------------------------
::

    offset  size  field
    0       8     magic b"TPMDEVst"
    8       2     format version (1)
    10      1     frontend kind: 1 TIS, 2 TIS-sysbus, 3 TIS-I2C, 4 CRB, 5 SPAPR
    11      1     TPM version: 1 (TPM 1.2) or 2 (TPM 2.0)
    12      1     backend kind: 1 Builtin, 2 Libtpms, 3 swtpm (Emulator), 0 another class
    13      1     number of sections N
    14      4     total length L of the blob, digest included
    18      8*N   section table: a 4-byte ASCII tag and a 4-byte payload length each
    ...           the payloads, in table order
    L-32    32    SHA-256 of bytes 0 .. L-32

Sections (``DEVC`` and ``CORE`` always; the others when the device has them):

* ``DEVC`` -- UTF-8 JSON: frontend kind, TPM version, backend kind and class,
  the buffer size in force, and the frontend's configuration (TIS: ``irq_num``
  and ``ppi``; CRB: ``localities``, ``address`` and ``ppi``), which the loading
  device must share.
* ``CORE`` -- the register core's :meth:`capture` tuple (see
  :meth:`tpmdev.hw.tis.TisCore.capture`, :meth:`tpmdev.hw.crb.CrbCore.capture`,
  :meth:`tpmdev.hw.spapr.SpaprCore.capture`) in a small typed encoding: each
  value is a tag byte, ``N`` (None), ``I`` (8-byte signed int), ``B`` (4-byte
  length, bytes) or ``T`` (4-byte count, values). It never holds a command
  in flight (save() lets it complete first): no TIS locality in EXECUTION,
  no command locality (TIS, CRB), no sPAPR EXECUTION state, and the last
  field, the posted completion, is always None (kept for the layout).
* ``I2C `` -- the I2C layer's capture (TIS-I2C); its ``tis_addr`` is not
  used: a load works it out again from the transaction, as QEMU does.
* ``PPI `` -- the Physical Presence Interface page (when the device has one).
* ``TPMP``, ``TPMV``, ``TPMS`` -- the backend's permanent, volatile and
  savestate blobs (:meth:`tpmdev.backends.Backend.get_state`; empty = none).

Loading checks everything before it changes anything, in this order: the
type and minimal length, the magic, the format version, the total length
(truncation), the digest (corruption), the section table, then the fit with
the device: frontend kind, TPM version, backend kind (Builtin loads Builtin
blobs; Libtpms and swtpm, both libtpms, load each other's; a backend of
another class loads blobs of its own class; Passthrough has no state), the
configuration, and every value of the core state (sizes, ranges, no command
in flight). A refusal
is a :class:`tpmdev.StateError` naming the problem, and the device and its
backend are as they were. Only the backend can still refuse after that (a
blob its TPM cannot use): Builtin and Libtpms then keep their state
themselves, and an Emulator is put back from a copy taken just before.

After a load everything the device derives from its backend is asked again,
as QEMU's destination does: the TPM version, the buffer size (the core's
buffer size is the new backend's, not the blob's), and the established flag
(never cached in a core; an Emulator's cache is dropped by the load).

Snapshots (:meth:`Device.snapshot` / :meth:`Device.rollback`) are the same
capture kept in memory: no encoding, no checks beyond "this device, this
backend". Register state comes back at the cost of copying the register
image (a core's ``restore`` copies the image and the buffer in one memory
copy each); the backend's state as cheaply as the backend allows (Builtin:
free when no command ran since the snapshot, else one unpickling of its
state, some 30 us; Libtpms and swtpm: ``get_state`` / ``set_state``, some
0.3 ms and 1 ms). Figures: ``benchmarks/test_device_state.py``.

Where we differ from QEMU, on purpose: QEMU leaves the IRQ line level to
the interrupt controller's state and migrates the sPAPR buffer only when a
response is held back; tpmdev keeps both with the device (the IRQ callable
is told when a load or rollback changes the level). A load on a swtpm
copies its state first (one GET_STATEBLOB round), so that a blob swtpm
refuses leaves the TPM as it was; QEMU would stop there.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from tpmdev.errors import BackendError, StateError
from tpmdev.hw.regs import (
    CRB_BUFFER_SIZE,
    CRB_LOCALITY_SIZE,
    CRB_NO_LOCALITY,
    TIS_BUFFER_MAX,
    TIS_NO_LOCALITY,
    TIS_NUM_LOCALITIES,
    TIS_REGION_SIZE,
    TIS_STATE_EXECUTION,
    TIS_STATE_NAMES,
)

if TYPE_CHECKING:
    from tpmdev._device import Device
    from tpmdev.backends.base import Backend

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "FRONTEND_KINDS",
    "BACKEND_KINDS",
    "DeviceSnapshot",
    "ParsedState",
    "parse",
    "describe",
    "save",
    "load",
    "snapshot",
    "rollback",
]

MAGIC = b"TPMDEVst"
FORMAT_VERSION = 1
#: Frontend kind codes (the device's ``_name``).
FRONTEND_KINDS = {"TIS": 1, "TIS-sysbus": 2, "TIS-I2C": 3, "CRB": 4, "SPAPR": 5}
#: Backend kind codes.
BACKEND_KINDS = {"other": 0, "builtin": 1, "libtpms": 2, "swtpm": 3}
_FRONTEND_NAMES = {v: k for k, v in FRONTEND_KINDS.items()}
_BACKEND_NAMES = {v: k for k, v in BACKEND_KINDS.items()}
#: Which backend kinds load which: both libtpms-based backends share blobs.
_FAMILY = {"builtin": "builtin", "libtpms": "libtpms", "swtpm": "libtpms", "other": "other"}
_VERSION_NAMES = {1: "TPM 1.2", 2: "TPM 2.0"}

_HEADER = struct.Struct(">8sHBBBBI")
_ENTRY = struct.Struct(">4sI")
_DIGEST = 32
_MIN_SIZE = _HEADER.size + _DIGEST
_BACKEND_TAGS = {"permanent": b"TPMP", "volatile": b"TPMV", "savestate": b"TPMS"}
_KNOWN_TAGS = (b"DEVC", b"CORE", b"I2C ", b"PPI ", *_BACKEND_TAGS.values())
_MAX_DEPTH = 4
_I64 = struct.Struct(">q")
_U32 = struct.Struct(">I")


# -- the typed tuple encoding ---------------------------------------------------
def _encode(value: object, out: bytearray) -> None:
    if value is None:
        out += b"N"
    elif isinstance(value, (bool, int)):
        out += b"I" + _I64.pack(int(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = value if type(value) is bytes else bytes(value)
        out += b"B"
        out += _U32.pack(len(data))
        out += data
    elif isinstance(value, tuple):
        out += b"T" + _U32.pack(len(value))
        for item in value:
            _encode(item, out)
    else:  # pragma: no cover - captures hold only these types
        raise TypeError(f"cannot encode {type(value).__name__}")


def encode_tuple(value: tuple[object, ...]) -> bytes:
    """*value* (ints, bytes, None and tuples of them) in the section encoding."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def decode_tuple(data: bytes, what: str) -> tuple[object, ...]:
    """The tuple :func:`encode_tuple` made; StateError naming *what* otherwise."""
    value, end = _decode(data, 0, what, 0)
    if end != len(data) or not isinstance(value, tuple):
        raise StateError(f"device state: the {what} section is not one encoded tuple")
    return value


def _decode(data: bytes, pos: int, what: str, depth: int) -> tuple[object, int]:
    bad = StateError(f"device state: the {what} section is malformed at byte {pos}")
    if pos >= len(data) or depth > _MAX_DEPTH:
        raise bad
    tag = data[pos]
    pos += 1
    if tag == ord("N"):
        return None, pos
    if tag == ord("I"):
        if pos + 8 > len(data):
            raise bad
        return _I64.unpack_from(data, pos)[0], pos + 8
    if tag in (ord("B"), ord("T")):
        if pos + 4 > len(data):
            raise bad
        n = _U32.unpack_from(data, pos)[0]
        pos += 4
        if tag == ord("B"):
            if pos + n > len(data):
                raise bad
            return data[pos : pos + n], pos + n
        if n > len(data):
            raise bad
        items = []
        for _ in range(n):
            item, pos = _decode(data, pos, what, depth + 1)
            items.append(item)
        return tuple(items), pos
    raise bad


# -- the blob -------------------------------------------------------------------------
class ParsedState:
    """A blob that passed the format checks: header fields and sections."""

    __slots__ = ("backend", "format_version", "frontend", "info", "sections", "size", "tpm_version")

    def __init__(
        self,
        format_version: int,
        frontend: str,
        tpm_version: int,
        backend: str,
        sections: dict[bytes, bytes],
        info: dict[str, Any],
        size: int,
    ) -> None:
        self.format_version = format_version
        self.frontend = frontend
        self.tpm_version = tpm_version
        self.backend = backend
        self.sections = sections
        self.info = info
        self.size = size

    def backend_state(self) -> dict[str, bytes]:
        return {key: self.sections.get(tag, b"") for key, tag in _BACKEND_TAGS.items()}


def _pack(frontend: str, tpm_version: int, backend: str, sections: list[tuple[bytes, bytes]]) -> bytes:
    table = b"".join(_ENTRY.pack(tag, len(payload)) for tag, payload in sections)
    total = _HEADER.size + len(table) + sum(len(p) for _, p in sections) + _DIGEST
    head = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        FRONTEND_KINDS[frontend],
        tpm_version,
        BACKEND_KINDS[backend],
        len(sections),
        total,
    )
    body = b"".join([head, table, *(p for _, p in sections)])
    return body + hashlib.sha256(body).digest()


def parse(blob: object) -> ParsedState:
    """Check a blob's format (not its fit with a device) and split it.

    Raises :class:`tpmdev.StateError` naming the first problem found."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise StateError(f"a device state must be bytes (from save()), got {type(blob).__name__}")
    data = bytes(blob)
    if len(data) < _MIN_SIZE:
        raise StateError(
            f"device state truncated: {len(data)} bytes, a tpmdev device state has at least {_MIN_SIZE}"
        )
    magic, version, front, tpm_version, back, count, total = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StateError(f"not a tpmdev device state: bad magic {magic!r} (expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise StateError(
            f"device state format version {version} is not supported: this tpmdev reads version "
            f"{FORMAT_VERSION} (save it again with a matching tpmdev)"
        )
    if total != len(data):
        what = "truncated" if len(data) < total else "has trailing bytes"
        raise StateError(f"device state {what}: its header says {total} bytes, got {len(data)}")
    body = data[:-_DIGEST]
    if hashlib.sha256(body).digest() != data[-_DIGEST:]:
        raise StateError("device state integrity check failed: SHA-256 mismatch (the blob is corrupted)")
    # (from here on the bytes are what save() wrote; the checks guard against a
    # blob written by something else)
    if front not in _FRONTEND_NAMES:
        raise StateError(f"device state: unknown frontend kind {front}")
    if tpm_version not in _VERSION_NAMES:
        raise StateError(f"device state: unknown TPM version {tpm_version}")
    if back not in _BACKEND_NAMES:
        raise StateError(f"device state: unknown backend kind {back}")
    pos = _HEADER.size + count * _ENTRY.size
    if pos > len(body):
        raise StateError(f"device state: the section table ({count} entries) runs past the end")
    sections: dict[bytes, bytes] = {}
    for i in range(count):
        tag, length = _ENTRY.unpack_from(data, _HEADER.size + i * _ENTRY.size)
        if tag not in _KNOWN_TAGS:
            raise StateError(f"device state: unknown section {tag!r}")
        if tag in sections:
            raise StateError(f"device state: section {tag!r} appears twice")
        if pos + length > len(body):
            raise StateError(f"device state: section {tag!r} ({length} bytes) runs past the end")
        sections[tag] = body[pos : pos + length]
        pos += length
    if pos != len(body):
        raise StateError(f"device state: {len(body) - pos} bytes after the last section")
    for tag in (b"DEVC", b"CORE"):
        if tag not in sections:
            raise StateError(f"device state: the {tag.decode().strip()} section is missing")
    try:
        info = json.loads(sections[b"DEVC"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # (RecursionError: JSON nested deeper than the parser goes)
        raise StateError("device state: the DEVC section is not UTF-8 JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise StateError("device state: the DEVC section is not a device description")
    frontend, backend = _FRONTEND_NAMES[front], _BACKEND_NAMES[back]
    described = (info.get("frontend"), info.get("tpm_version"), info.get("backend"))
    if described != (frontend, tpm_version, backend):
        raise StateError("device state: the DEVC section disagrees with the header")
    return ParsedState(version, frontend, tpm_version, backend, sections, info, len(data))


def describe(blob: object) -> str:
    """What a blob holds, for people (``tpmdev state show``)."""
    p = parse(blob)
    info = p.info
    lines = [
        f"tpmdev device state, format version {p.format_version}, {p.size} bytes, SHA-256 verified",
        f"frontend:    {p.frontend}",
        f"TPM version: {_VERSION_NAMES[p.tpm_version]}",
        f"backend:     {p.backend} ({info.get('backend_class', '?')})",
        f"buffer size: {info.get('bufsize', '?')}",
        "config:      "
        + (", ".join(f"{k}={_show(v)}" for k, v in sorted(info["config"].items())) or "(none)"),
        "sections:",
    ]
    for tag, payload in p.sections.items():
        lines.append(f"  {tag.decode('ascii')}  {len(payload):8d} bytes")
    core = decode_tuple(p.sections[b"CORE"], "CORE")
    lines.append("core state:")
    lines.extend(f"  {line}" for line in _describe_core(p.frontend, core))
    if b"I2C " in p.sections:
        i2c = decode_tuple(p.sections[b"I2C "], "I2C")
        names = ("operation", "offset", "data", "tis_addr", "loc_sel", "csum_enable")
        lines.append("I2C state:   " + ", ".join(f"{n}={_show(v)}" for n, v in zip(names, i2c)))
    return "\n".join(lines)


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 16 else f"<{len(value)} bytes>"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10:
        return hex(value)
    return repr(value)


def _describe_core(frontend: str, core: tuple[object, ...]) -> list[str]:
    from tpmdev.hw.spapr import SPAPR_VTPM_STATE_COMPLETION, SPAPR_VTPM_STATE_EXECUTION, SPAPR_VTPM_STATE_NONE

    if not core:
        raise _bad("0 fields")
    posted = "none" if core[-1] is None else "a response not yet applied"
    if frontend in ("TIS", "TIS-sysbus", "TIS-I2C") and len(core) == 10:
        states = core[2] if isinstance(core[2], bytes) else b""
        loc = ", ".join(
            f"{i}:{TIS_STATE_NAMES[s] if s < len(TIS_STATE_NAMES) else s}" for i, s in enumerate(states)
        )
        return [
            f"active locality {_loc(core[4])}, next {_loc(core[5])}, aborting {_loc(core[6])}",
            f"locality states {loc}",
            f"rw_offset {core[3]}, command locality {_loc(core[7])}, IRQ line {core[8]}",
            f"posted completion: {posted}",
        ]
    if frontend == "CRB" and len(core) == 6:
        return [
            f"active locality {_loc(core[1], CRB_NO_LOCALITY)}, waiting mask {_show(core[2])}",
            f"command locality {_loc(core[3], CRB_NO_LOCALITY)}, command length {core[4]}",
            f"posted completion: {posted}",
        ]
    if frontend == "SPAPR" and len(core) == 5:
        spapr_names = {
            SPAPR_VTPM_STATE_NONE: "NONE",
            SPAPR_VTPM_STATE_EXECUTION: "EXECUTION",
            SPAPR_VTPM_STATE_COMPLETION: "COMPLETION",
        }
        state = core[3]
        return [
            f"state {spapr_names.get(state, state) if isinstance(state, int) else state!r}",
            f"request entry {_show(core[1])}",
            f"posted completion: {posted}",
        ]
    return [repr(core)]


def _loc(value: object, none: int = TIS_NO_LOCALITY) -> str:
    return "none" if value == none else str(value)


# -- checks of a core state -----------------------------------------------------------
def _bad(what: str) -> StateError:
    return StateError(f"device state: the core state is not one a device could be in: {what}")


def _int(value: object, low: int, high: int, what: str, extra: tuple[int, ...] = ()) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (low <= value <= high or value in extra):
        raise _bad(f"{what} = {value!r}")
    return value


def _bytes(value: object, size: int, what: str, exact: bool = True) -> bytes:
    if not isinstance(value, bytes) or (len(value) != size if exact else len(value) > size):
        raise _bad(f"{what} of {len(value) if isinstance(value, bytes) else type(value).__name__} bytes")
    return value


def _not_posted(value: object) -> None:
    # (the field is always None in what save() and snapshot() write: both let
    # the command in flight complete first; kept for the format's layout)
    if value is not None:
        raise _bad("a posted completion (save() applies the response of the command in flight first)")


def _shape(state: tuple[object, ...], n: int) -> None:
    if len(state) != n:
        raise _bad(f"{len(state)} fields, expected {n}")


# A state blob never holds a command in flight: save() lets it complete first.
# A blob that did would leave the guest waiting for a response no one sends.
_IN_FLIGHT = "(save() completes the command in flight first)"


def check_tis_core(state: tuple[object, ...]) -> tuple[object, ...]:
    _shape(state, 10)
    locs = (TIS_NO_LOCALITY,)
    states = _bytes(state[2], TIS_NUM_LOCALITIES, "locality states")
    for i, s in enumerate(states):
        _int(s, 0, len(TIS_STATE_NAMES) - 1, "locality state")
        if s == TIS_STATE_EXECUTION:
            raise _bad(f"locality {i} in EXECUTION {_IN_FLIGHT}")
    if state[7] != TIS_NO_LOCALITY:
        raise _bad(f"command locality = {state[7]!r}, expected none {_IN_FLIGHT}")
    _not_posted(state[9])
    return (
        _bytes(state[0], TIS_REGION_SIZE, "register image"),
        _bytes(state[1], TIS_BUFFER_MAX, "buffer"),
        states,
        _int(state[3], 0, TIS_BUFFER_MAX + 3, "rw_offset"),
        _int(state[4], 0, TIS_NUM_LOCALITIES - 1, "active locality", locs),
        _int(state[5], 0, TIS_NUM_LOCALITIES - 1, "next locality", locs),
        _int(state[6], 0, TIS_NUM_LOCALITIES - 1, "aborting locality", locs),
        TIS_NO_LOCALITY,
        _int(state[8], 0, 1, "IRQ level"),
        None,
    )


def check_crb_core(state: tuple[object, ...], localities: int) -> tuple[object, ...]:
    _shape(state, 6)
    if state[3] != CRB_NO_LOCALITY:
        raise _bad(f"command locality = {state[3]!r}, expected none {_IN_FLIGHT}")
    _not_posted(state[5])
    return (
        _bytes(state[0], localities * CRB_LOCALITY_SIZE, "register image"),
        _int(state[1], 0, localities - 1, "active locality", (CRB_NO_LOCALITY,)),
        _int(state[2], 0, (1 << localities) - 1, "waiting localities"),
        CRB_NO_LOCALITY,
        _int(state[4], 0, CRB_BUFFER_SIZE, "command length"),
        None,
    )


def check_spapr_core(state: tuple[object, ...]) -> tuple[object, ...]:
    from tpmdev.hw.spapr import (
        SPAPR_VTPM_BUFFER_MAX,
        SPAPR_VTPM_CRQ_SIZE,
        SPAPR_VTPM_STATE_COMPLETION,
        SPAPR_VTPM_STATE_EXECUTION,
        SPAPR_VTPM_STATE_NONE,
    )

    _shape(state, 5)
    vtpm_state = _int(state[3], SPAPR_VTPM_STATE_NONE, SPAPR_VTPM_STATE_COMPLETION, "state")
    if vtpm_state == SPAPR_VTPM_STATE_EXECUTION:
        raise _bad(f"state EXECUTION {_IN_FLIGHT}")
    _not_posted(state[4])
    return (
        _bytes(state[0], SPAPR_VTPM_BUFFER_MAX, "buffer"),
        _bytes(state[1], SPAPR_VTPM_CRQ_SIZE, "request entry"),
        _bytes(state[2], SPAPR_VTPM_BUFFER_MAX, "command", exact=False),
        vtpm_state,
        None,
    )


def check_i2c(state: tuple[object, ...]) -> tuple[object, ...]:
    _shape(state, 6)
    return (
        _int(state[0], 0, 2, "I2C operation"),
        _int(state[1], 0, 5, "I2C offset"),
        _bytes(state[2], 5, "I2C transaction buffer"),
        # (the TIS address the transaction latched: not QEMU's, not used; the
        # restore works it out again from the register and the locality)
        _int(state[3], -(1 << 63), (1 << 63) - 1, "I2C register address"),
        _int(state[4], 0, TIS_NUM_LOCALITIES - 1, "I2C locality selection"),
        _int(state[5], 0, 1, "I2C checksum flag"),
    )


# -- the device side ----------------------------------------------------------------------
def backend_kind(backend: Backend) -> str:
    """``builtin``, ``libtpms``, ``swtpm``, ``passthrough`` or ``other``: the
    class's :attr:`tpmdev.backends.Backend.state_kind`."""
    kind = getattr(type(backend), "state_kind", "other")
    return kind if kind in BACKEND_KINDS or kind == "passthrough" else "other"


def _ppi_page(device: Device) -> Optional[np.ndarray]:
    # (the PPI page object has ``memory``, a numpy uint8 array; a bool ppi has none)
    page: Optional[np.ndarray] = getattr(getattr(device, "ppi", None), "memory", None)
    return page


def _frontend(device: Device, op: str) -> str:
    name = device._name
    if name not in FRONTEND_KINDS:
        raise StateError(f"{op}: the {name} frontend has no state format (frontends: {list(FRONTEND_KINDS)})")
    return name


def _check_core(device: Device, frontend: str, core: tuple[object, ...]) -> tuple[object, ...]:
    if frontend == "CRB":
        return check_crb_core(core, int(getattr(device, "localities", 1)))
    if frontend == "SPAPR":
        return check_spapr_core(core)
    return check_tis_core(core)


def save(device: Device) -> bytes:
    """The device's state blob (see the module doc); the command in flight
    completes first."""
    frontend = _frontend(device, f"{device._name} save")
    device._check_open()
    device.wait()
    backend = device.backend
    kind = backend_kind(backend)
    if kind == "passthrough":
        raise StateError(
            f"{device._name} save: a Passthrough backend's state lives in the host's TPM chip, which "
            "cannot be saved or moved (QEMU does not migrate passthrough TPMs either); use an emulated "
            "TPM (Builtin, Libtpms, Emulator)"
        )
    version = device.tpm_version
    if version not in _VERSION_NAMES:
        raise StateError(f"{device._name} save: the TPM version is unknown; reset the device first")
    blobs = backend.get_state()
    info = {
        "frontend": frontend,
        "tpm_version": version,
        "backend": kind,
        "backend_class": type(backend).__name__,
        "bufsize": device._bufsize,
        "config": device._state_config(),
    }
    sections = [
        (b"DEVC", json.dumps(info, sort_keys=True).encode()),
        (b"CORE", encode_tuple(device.core.capture())),
    ]
    bus = device._capture_bus()
    if bus is not None:
        sections.append((b"I2C ", encode_tuple(bus)))
    page = _ppi_page(device)
    if page is not None:
        sections.append((b"PPI ", page.tobytes()))
    for key, tag in _BACKEND_TAGS.items():
        blob = blobs.get(key, b"")
        if blob:
            sections.append((tag, bytes(blob)))
    return _pack(frontend, version, kind, sections)


def load(device: Device, blob: object) -> None:
    """Load a blob of :func:`save` into *device* (see the module doc)."""
    name = device._name
    frontend = _frontend(device, f"{name} load")
    device._check_open()
    p = parse(blob)
    if p.frontend != frontend:
        raise StateError(f"{name} load: the device state is of a {p.frontend}, this device is a {frontend}")
    if p.tpm_version != device.tpm_version:
        raise StateError(
            f"{name} load: the device state is of a {_VERSION_NAMES[p.tpm_version]}, this {name} presents "
            f"{_VERSION_NAMES.get(device.tpm_version, 'an unknown TPM version')}"
        )
    backend = device.backend
    if backend.tpm_version not in (0, p.tpm_version):
        raise StateError(
            f"{name} load: the device state is of a {_VERSION_NAMES[p.tpm_version]}, this {name}'s "
            f"{type(backend).__name__} runs {_VERSION_NAMES.get(backend.tpm_version, 'another TPM')}"
        )
    kind = backend_kind(backend)
    if kind == "passthrough":
        raise StateError(
            f"{name} load: a Passthrough backend cannot load a saved TPM state (it is the host's TPM "
            "chip); attach an emulated TPM (Builtin, Libtpms, Emulator) first"
        )
    if _FAMILY[p.backend] != _FAMILY[kind] or (
        kind == "other" and p.info.get("backend_class") != type(backend).__name__
    ):
        raise StateError(
            f"{name} load: the device state holds a {p.backend} ({p.info.get('backend_class')}) TPM state, "
            f"which a {type(backend).__name__} backend cannot load (Builtin loads Builtin states; Libtpms "
            "and Emulator (swtpm) load each other's)"
        )
    config = device._state_config()
    if p.info["config"] != config:
        diff = ", ".join(
            f"{k}: state {p.info['config'].get(k)!r}, device {config.get(k)!r}"
            for k in sorted(set(config) | set(p.info["config"]))
            if p.info["config"].get(k) != config.get(k)
        )
        raise StateError(f"{name} load: the device state is of a {frontend} configured otherwise ({diff})")
    core = _check_core(device, frontend, decode_tuple(p.sections[b"CORE"], "CORE"))
    bus_now = device._capture_bus()
    bus: Optional[tuple[object, ...]] = None
    if (b"I2C " in p.sections) != (bus_now is not None):
        missing = "missing" if bus_now is not None else "unexpected"
        raise StateError(f"{name} load: the device state's I2C section is {missing}")
    if bus_now is not None:
        bus = check_i2c(decode_tuple(p.sections[b"I2C "], "I2C"))
    page = _ppi_page(device)
    ppi = p.sections.get(b"PPI ")
    if (ppi is None) != (page is None) or (ppi is not None and page is not None and len(ppi) != page.nbytes):
        raise StateError(
            f"{name} load: the device state's PPI page ({'none' if ppi is None else f'{len(ppi)} bytes'}) "
            f"does not fit this device's ({'none' if page is None else f'{page.nbytes} bytes'})"
        )
    # Everything checked: only the backend can still refuse (a blob its TPM cannot use).
    device.wait()
    backup = backend.get_state() if kind == "swtpm" else None
    # Asked again, as QEMU's destination has them from its own backend; before
    # the TPM state goes in (an Emulator stops the TPM to tell its buffer size).
    version = device._forced_version or backend.tpm_version
    bufsize = min(backend.get_buffer_size(), device.buffer_max)
    try:
        backend.set_state(p.backend_state())
    except (StateError, BackendError) as exc:
        if backup is not None:
            backend.set_state(backup)
        raise StateError(f"{name} load: the {type(backend).__name__} refused the TPM state: {exc}") from exc
    device._version = version
    device._bufsize = bufsize
    device.core.restore(core, version, bufsize)
    if bus is not None:
        device._restore_bus(bus)
    if ppi is not None and page is not None:
        page[:] = np.frombuffer(ppi, dtype=np.uint8)


class DeviceSnapshot:
    """An in-memory copy of a device and its backend (:meth:`Device.snapshot`).

    Opaque; give it back to :meth:`Device.rollback` of the same device, as
    many times as needed. It holds copies, never live state."""

    __slots__ = ("backend", "backend_state", "bufsize", "bus", "core", "core_state", "ppi", "version")

    def __init__(
        self,
        core: object,
        backend: Backend,
        core_state: tuple[object, ...],
        backend_state: object,
        bus: Optional[tuple[object, ...]],
        ppi: Optional[bytes],
        version: int,
        bufsize: int,
    ) -> None:
        self.core = core
        self.backend = backend
        self.core_state = core_state
        self.backend_state = backend_state
        self.bus = bus
        self.ppi = ppi
        self.version = version
        self.bufsize = bufsize


def snapshot(device: Device) -> DeviceSnapshot:
    """See :meth:`Device.snapshot`."""
    _frontend(device, f"{device._name} snapshot")
    device._check_open()
    device.wait()
    backend = device.backend
    if backend_kind(backend) == "passthrough":
        raise StateError(
            f"{device._name} snapshot: a Passthrough backend's state lives in the host's TPM chip and "
            "cannot be rolled back; use an emulated TPM (Builtin, Libtpms, Emulator)"
        )
    page = _ppi_page(device)
    return DeviceSnapshot(
        device.core,
        backend,
        device.core.capture(),
        backend._snapshot(),
        device._capture_bus(),
        None if page is None else page.tobytes(),
        device._version,
        device._bufsize,
    )


def rollback(device: Device, snap: object) -> None:
    """See :meth:`Device.rollback`."""
    if type(snap) is not DeviceSnapshot or snap.core is not device.core:
        raise StateError(
            f"{device._name} rollback: takes a snapshot() of this same device, got "
            f"{'a snapshot of another device' if isinstance(snap, DeviceSnapshot) else type(snap).__name__}"
        )
    device._check_open()
    if device._job is not None:
        device.wait()
    if snap.backend is not device._owned.backend:
        raise StateError(
            f"{device._name} rollback: the backend was replaced (attach) since the snapshot was taken; "
            "take a new snapshot"
        )
    snap.backend._rollback(snap.backend_state)
    device._version = snap.version
    device._bufsize = snap.bufsize
    core: Any = device.core
    core.restore(snap.core_state, snap.version, snap.bufsize)
    if snap.bus is not None:
        device._restore_bus(snap.bus)
    if snap.ppi is not None:
        page = _ppi_page(device)
        if page is not None:
            page[:] = np.frombuffer(snap.ppi, dtype=np.uint8)
