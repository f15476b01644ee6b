"""Saving and loading the builtin TPM's state: three versioned, checked blobs.

The blobs are :meth:`Builtin.get_state`'s ``permanent``, ``volatile`` and
``savestate`` (swtpm's three kinds of state, :data:`~tpmdev.backends.base.
STATE_KEYS`). Our own format, the same for all three::

    offset  size  field
    0       8     magic b"TPMDEVbi"
    8       2     format version (big-endian, currently 1)
    10      1     TPM family: 2 = TPM 2.0, 1 = TPM 1.2
    11      1     kind: 1 permanent, 2 volatile, 3 savestate
    12      4     payload length N (big-endian)
    16      N     payload: a UTF-8 JSON object (byte strings as hex)
    16+N    32    SHA-256 of bytes 0 .. 16+N (integrity, not secrecy)

An empty blob means "nothing of that kind": an empty ``savestate`` means no
TPM2_Shutdown(STATE) data, an empty ``volatile`` a TPM that lost power (it
waits for TPM2_Startup). ``permanent`` is required.

What goes where (TPM 2.0):

* permanent: PCR allocation (in use and pending), hierarchy proofs and
  authValues, NV indices (public area, authValue, contents), the largest
  deleted counter, dictionary-attack state, the orderly state
  (``shutdown_type``), clock, reset and restart counts, the DRBG key of a
  seeded TPM;
* volatile: whether TPM2_Startup ran, PCR values and ``pcrUpdateCounter``,
  loaded sequence objects, time since power-on, a pending PCR_Allocate, the
  virtual clock of a seeded TPM;
* savestate: the PCR values and counter TPM2_Shutdown(STATE) saved.

TPM 1.2: permanent holds the DRBG key; volatile the PCRs, post-init /
deactivated / failure flags and the tick session; savestate is always empty
(TPM_SaveState is not implemented).

Every check happens before anything is changed: a blob that is garbage,
truncated, nested too deeply to read, of another format version, of the other
TPM family, of another kind, or that describes an impossible TPM raises
:class:`tpmdev.StateError` and leaves the TPM as it was. Impossible includes
NV indices no TPM2_NV_DefineSpace could have made, or whose contents no NV
command could have left (:func:`~._nv.check_defined`: a counter of other
than 8 bytes, an extend index not of its digest size, an undefined index
type, ...), and more NV indices than the TPM's NV memory holds. The digest
guards against corruption, not against a crafted blob; what such a blob can
still describe is a TPM the engine runs without raising (fuzzed in the
tests).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable

from tpmdev.backends.builtin import _constants as c
from tpmdev.backends.builtin import _crypto
from tpmdev.backends.builtin._nv import NV_MEMORY_SIZE, TPMA_NV_RESERVED, NvIndex, check_defined
from tpmdev.errors import StateError

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "decode",
    "encode",
    "tpm2_dump",
    "tpm2_load",
    "tpm12_dump",
    "tpm12_load",
]

MAGIC = b"TPMDEVbi"
FORMAT_VERSION = 1
KINDS = {"permanent": 1, "volatile": 2, "savestate": 3}
_HEADER = struct.Struct(">8sHBBI")
_DIGEST_SIZE = 32
_FAMILY_NAMES = {1: "TPM 1.2", 2: "TPM 2.0"}

Json = dict[str, Any]


def encode(family: int, kind: str, payload: Json) -> bytes:
    """One blob of *kind* for a TPM of *family* (1 or 2)."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, family, KINDS[kind], len(body)) + body
    return head + _crypto.digest("sha256", head)


def decode(blob: bytes, family: int, kind: str) -> Json:
    """The payload of *blob*; StateError says what is wrong with it."""
    what = f"builtin TPM state blob {kind!r}"
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise StateError(f"{what} must be bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEADER.size or blob[:8] != MAGIC:
        raise StateError(
            f"{what} is not a tpmdev builtin state (bad magic); pass what Builtin.get_state() returned"
        )
    _magic, version, blob_family, blob_kind, size = _HEADER.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise StateError(
            f"{what} has format version {version}; this tpmdev reads version {FORMAT_VERSION} only"
        )
    if blob_family != family:
        theirs = _FAMILY_NAMES.get(blob_family, f"family {blob_family}")
        raise StateError(f"{what} is from a {theirs}, but this Builtin is a {_FAMILY_NAMES[family]}")
    if blob_kind != KINDS[kind]:
        names = {v: k for k, v in KINDS.items()}
        raise StateError(f"{what} holds {names.get(blob_kind, 'unknown')!r} state; the keys are mixed up")
    end = _HEADER.size + size
    if len(blob) != end + _DIGEST_SIZE:
        raise StateError(
            f"{what} is truncated or has trailing bytes ({len(blob)} bytes, expected {end + 32})"
        )
    if _crypto.digest("sha256", blob[:end]) != blob[end:]:
        raise StateError(f"{what} is corrupt (integrity check failed)")
    try:
        payload = json.loads(blob[_HEADER.size : end].decode())
    except ValueError as err:
        raise StateError(f"{what} has an unreadable payload: {err}") from None
    except RecursionError:
        raise StateError(f"{what} has an unreadable payload: nested too deeply") from None
    if not isinstance(payload, dict):
        raise StateError(f"{what} has an unreadable payload (not an object)")
    return payload


# -- typed access to a payload (every failure becomes StateError) -------------


class _Bad(Exception):
    pass


def _int(value: object, low: int = 0, high: int = 2**64 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _Bad(f"{value!r} is not an integer in [{low}, {high}]")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"{value!r} is not a boolean")
    return value


def _bytes(value: object, size: int | None = None, max_size: int = 1 << 20) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{value!r} is not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise _Bad(f"{value[:20]!r} is not hex") from None
    if (size is not None and len(raw) != size) or len(raw) > max_size:
        raise _Bad(f"a byte string of {len(raw)} bytes where {size if size is not None else max_size} fit")
    return raw


def _alg_map(value: object, item: Callable[[int, object], Any]) -> dict[int, Any]:
    """A JSON object keyed by hash algorithm id (as a decimal string)."""
    if not isinstance(value, dict):
        raise _Bad("a table of hash algorithms is not an object")
    out = {}
    for key, entry in value.items():
        alg = int(key)
        if alg not in c.HASH_ALGS:
            raise _Bad(f"unknown hash algorithm {alg:#06x}")
        out[alg] = item(alg, entry)
    return out


def _banks(value: object) -> dict[int, list[bytes]]:
    def bank(alg: int, entry: object) -> list[bytes]:
        if not isinstance(entry, list) or len(entry) != c.IMPLEMENTATION_PCR:
            raise _Bad(f"PCR bank {alg:#06x} does not have {c.IMPLEMENTATION_PCR} PCRs")
        return [_bytes(v, c.HASH_ALGS[alg][1]) for v in entry]

    return _alg_map(value, bank)


def _allocation(value: object) -> dict[int, int]:
    alloc = _alg_map(value, lambda _alg, mask: _int(mask, 0, (1 << c.IMPLEMENTATION_PCR) - 1))
    return {alg: alloc.get(alg, 0) for alg in c.HASH_ALGS}


def _hex_banks(banks: dict[int, list[bytes]]) -> Json:
    return {str(alg): [v.hex() for v in bank] for alg, bank in banks.items()}


def _load(kind: str, build: Callable[[], None]) -> None:
    try:
        build()
    except StateError:
        raise
    except (_Bad, KeyError, TypeError, ValueError, AttributeError) as err:
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise StateError(f"builtin TPM state blob {kind!r} describes no valid TPM: {detail}") from None


# -- TPM 2.0 --------------------------------------------------------------------


def tpm2_dump(engine: Any, drbg: bytes | None, virtual: Callable[[], int | None]) -> dict[str, bytes]:
    """The three blobs of a :class:`~._tpm2.Tpm2` engine. *virtual* gives the
    virtual clock of a seeded TPM (read after the engine's clock), or None."""
    s = engine.state
    now = engine.now_ms()
    virtual_ms = virtual()
    since_power_on = max(0, now - s.power_on_ms)
    permanent = {
        "allocation": {str(a): m for a, m in s.allocation.items()},
        "pending_allocation": {str(a): m for a, m in s.pending_allocation.items()},
        "reset_count": s.reset_count,
        "restart_count": s.restart_count,
        "clock_ms": s.clock_ms + since_power_on,
        "clock_safe": s.clock_safe,
        "clock_unsafe_epoch": s.clock_unsafe_epoch,
        "proofs": {str(h): v.hex() for h, v in s.proofs.items()},
        "hierarchy_auth": {str(h): v.hex() for h, v in s.hierarchy_auth.items()},
        "nv": [
            {
                "handle": i.handle,
                "name_alg": i.name_alg,
                "attributes": i.attributes,
                "auth_policy": i.auth_policy.hex(),
                "data_size": i.data_size,
                "auth": i.auth.hex(),
                "data": bytes(i.data).hex(),
            }
            for i in s.nv.values()
        ],
        "max_counter": s.max_counter,
        "failed_tries": s.failed_tries,
        "da_heal_ms": s.da_heal_ms,
        "lockout_auth_enabled": s.lockout_auth_enabled,
        "lockout_failed_ms": s.lockout_failed_ms,
        "disable_clear": s.disable_clear,
        "da_used_pending": s.da_used_pending,
        "shutdown_type": s.shutdown_type,
        "drbg": drbg.hex() if drbg is not None else None,
    }
    volatile = {
        "started": s.started,
        "pcrs": _hex_banks(s.pcrs),
        "pcr_update_counter": s.pcr_update_counter,
        "orderly": s.orderly,
        "pcr_reconfig": s.pcr_reconfig,
        "da_used": s.da_used,
        "since_power_on_ms": since_power_on,
        "virtual_ms": virtual_ms,
        "objects": {
            str(h): {
                "event": o.event,
                "hash_alg": o.hash_alg,
                "auth": o.auth.hex(),
                "data": bytes(o.data).hex(),
                "first_block": o.first_block,
                "ticket_safe": o.ticket_safe,
            }
            for h, o in s.objects.items()
        },
    }
    out = {"permanent": encode(2, "permanent", permanent), "volatile": encode(2, "volatile", volatile)}
    if s.shutdown_type == c.TPM_SU_STATE:
        saved = {"pcrs": _hex_banks(s.saved_pcrs), "pcr_update_counter": s.saved_pcr_update_counter}
        out["savestate"] = encode(2, "savestate", saved)
    else:
        out["savestate"] = b""
    return out


def _blobs(state: object) -> dict[str, bytes]:
    if not isinstance(state, dict):
        raise StateError(f"a state is a dict of blobs, not {type(state).__name__}")
    unknown = set(state) - set(KINDS)
    if unknown:
        raise StateError(f"unknown state keys {sorted(map(str, unknown))}; expected {list(KINDS)}")
    if not state.get("permanent"):
        raise StateError("the 'permanent' state blob is missing or empty; a TPM cannot start without it")
    return {k: state.get(k) or b"" for k in KINDS}


def tpm2_load(
    engine: Any, state: object, now: Callable[[int | None], int]
) -> tuple[bytes | None, int | None]:
    """Replace *engine*'s state; returns (DRBG key, virtual clock ms) to restore.
    ``now(virtual_ms)`` is the engine's time once the clock is restored."""
    from tpmdev.backends.builtin._tpm2 import Sequence, Tpm2State

    blobs = _blobs(state)
    perm = decode(blobs["permanent"], 2, "permanent")
    vol = decode(blobs["volatile"], 2, "volatile") if blobs["volatile"] else None
    saved = decode(blobs["savestate"], 2, "savestate") if blobs["savestate"] else None
    new = Tpm2State()
    result: list[Any] = [None, None]

    def build_permanent() -> None:
        new.allocation = _allocation(perm["allocation"])
        new.pending_allocation = _allocation(perm["pending_allocation"])
        new.reset_count = _int(perm["reset_count"], high=2**32 - 1)
        new.restart_count = _int(perm["restart_count"], high=2**32 - 1)
        new.clock_ms = _int(perm["clock_ms"])
        new.clock_safe = _bool(perm["clock_safe"])
        new.clock_unsafe_epoch = _int(perm["clock_unsafe_epoch"])
        proofs = {int(h): _bytes(v, 32) for h, v in perm["proofs"].items()}
        if sorted(proofs) != sorted((c.TPM_RH_OWNER, c.TPM_RH_ENDORSEMENT, c.TPM_RH_PLATFORM)):
            raise _Bad("the hierarchy proofs are incomplete")
        new.proofs = proofs
        auths = {int(h): _bytes(v, max_size=c.MAX_DIGEST_SIZE) for h, v in perm["hierarchy_auth"].items()}
        if not set(auths) <= {c.TPM_RH_OWNER, c.TPM_RH_ENDORSEMENT, c.TPM_RH_PLATFORM, c.TPM_RH_LOCKOUT}:
            raise _Bad("authValue of an unknown hierarchy")
        new.hierarchy_auth = auths
        if not isinstance(perm["nv"], list):
            raise _Bad("the NV indices are not a list")
        for entry in perm["nv"]:
            index = _nv_index(entry)
            if index.handle in new.nv:
                raise _Bad(f"NV index {index.handle:#010x} is defined twice")
            new.nv[index.handle] = index
        if sum(index.cost for index in new.nv.values()) > NV_MEMORY_SIZE:
            raise _Bad(f"the NV indices need more than the TPM's {NV_MEMORY_SIZE} bytes of NV memory")
        new.max_counter = _int(perm["max_counter"])
        new.failed_tries = _int(perm["failed_tries"], high=2**32 - 1)
        new.da_heal_ms = _int(perm["da_heal_ms"])
        new.lockout_auth_enabled = _bool(perm["lockout_auth_enabled"])
        new.lockout_failed_ms = _int(perm["lockout_failed_ms"])
        new.disable_clear = _bool(perm.get("disable_clear", False))  # absent from older blobs
        new.da_used_pending = _bool(perm["da_used_pending"])
        shutdown = perm["shutdown_type"]
        new.shutdown_type = None if shutdown is None else _int(shutdown, 0, 1)
        drbg = perm["drbg"]
        result[0] = None if drbg is None else _bytes(drbg, 32)

    _load("permanent", build_permanent)

    def build_savestate() -> None:
        if saved is None:
            if new.shutdown_type == c.TPM_SU_STATE:
                new.shutdown_type = None  # the saved state is lost: Startup(STATE) fails
            return
        if new.shutdown_type != c.TPM_SU_STATE:
            raise _Bad("there is a savestate but the TPM was not shut down with TPM2_Shutdown(STATE)")
        new.saved_pcrs = _banks(saved["pcrs"])
        new.saved_pcr_update_counter = _int(saved["pcr_update_counter"], high=2**32 - 1)

    _load("savestate", build_savestate)

    def build_volatile() -> None:
        if vol is None:  # power was lost: as after _TPM_Init
            new.power_on_ms = now(None)
            new.allocation = dict(new.pending_allocation)
            new.pcrs = {alg: [bytes(c.HASH_ALGS[alg][1])] * c.IMPLEMENTATION_PCR for alg in new.banks}
            return
        new.started = _bool(vol["started"])
        new.pcrs = _banks(vol["pcrs"])
        if sorted(new.pcrs) != sorted(new.banks):
            raise _Bad("the PCR values do not match the PCR allocation")
        new.pcr_update_counter = _int(vol["pcr_update_counter"], high=2**32 - 1)
        new.orderly = _bool(vol["orderly"])
        new.pcr_reconfig = _bool(vol["pcr_reconfig"])
        new.da_used = _bool(vol["da_used"])
        since = _int(vol["since_power_on_ms"])
        if since > new.clock_ms:
            raise _Bad("more time since power-on than the TPM clock counts")
        virtual = vol["virtual_ms"]
        result[1] = None if virtual is None else _int(virtual)
        new.clock_ms -= since
        new.power_on_ms = now(result[1]) - since
        for key, entry in vol["objects"].items():
            handle = int(key)
            if not c.TRANSIENT_FIRST <= handle <= c.TRANSIENT_LAST:
                raise _Bad(f"object handle {handle:#x} outside the object slots")
            event = _bool(entry["event"])
            alg = _int(entry["hash_alg"], high=0xFFFF)
            if (event and alg != c.TPM_ALG_NULL) or (not event and alg not in c.HASH_ALGS):
                raise _Bad(f"sequence object {handle:#x} has hash algorithm {alg:#06x}")
            new.objects[handle] = Sequence(
                event=event,
                hash_alg=alg,
                auth=_bytes(entry["auth"], max_size=c.MAX_DIGEST_SIZE),
                data=bytearray(_bytes(entry["data"], max_size=1 << 30)),
                first_block=_bool(entry["first_block"]),
                ticket_safe=_bool(entry["ticket_safe"]),
            )

    _load("volatile", build_volatile)
    engine.state = new
    return result[0], result[1]


def _nv_index(entry: Any) -> NvIndex:
    handle = _int(entry["handle"], c.NV_INDEX_FIRST, c.NV_INDEX_LAST)
    name_alg = _int(entry["name_alg"], high=0xFFFF)
    if name_alg not in c.HASH_ALGS:
        raise _Bad(f"NV index {handle:#010x} has nameAlg {name_alg:#06x}")
    attributes = _int(entry["attributes"], high=2**32 - 1)
    if attributes & TPMA_NV_RESERVED:
        raise _Bad(f"NV index {handle:#010x} has reserved attribute bits set")
    size = _int(entry["data_size"], high=c.MAX_NV_INDEX_SIZE)
    policy = _bytes(entry["auth_policy"], max_size=c.MAX_DIGEST_SIZE)
    auth = _bytes(entry["auth"], max_size=c.MAX_DIGEST_SIZE)
    data = _bytes(entry["data"], size)
    index = NvIndex(handle, name_alg, attributes, policy, size, auth, bytearray(data))
    reason = check_defined(index)
    if reason is not None:
        raise _Bad(f"NV index {handle:#010x} cannot exist: {reason}")
    return index


# -- TPM 1.2 --------------------------------------------------------------------


def tpm12_dump(engine: Any, drbg: bytes | None, virtual: Callable[[], int | None]) -> dict[str, bytes]:
    """The blobs of a :class:`~._tpm12.Tpm12` engine."""
    s = engine.state
    ticks_us = max(0, engine.now_ms() * 1000 - s.power_on_us)
    virtual_ms = virtual()
    permanent = {"drbg": drbg.hex() if drbg is not None else None}
    volatile = {
        "pcrs": [v.hex() for v in s.pcrs],
        "post_initialise": s.post_initialise,
        "deactivated": s.deactivated,
        "failure_mode": s.failure_mode,
        "ticks_us": ticks_us,
        "tick_nonce": s.tick_nonce.hex(),
        "virtual_ms": virtual_ms,
    }
    return {
        "permanent": encode(1, "permanent", permanent),
        "volatile": encode(1, "volatile", volatile),
        "savestate": b"",
    }


def tpm12_load(
    engine: Any, state: object, now: Callable[[int | None], int]
) -> tuple[bytes | None, int | None]:
    """As :func:`tpm2_load`, for a :class:`~._tpm12.Tpm12` engine."""
    from tpmdev.backends.builtin._tpm12 import Tpm12State

    blobs = _blobs(state)
    perm = decode(blobs["permanent"], 1, "permanent")
    vol = decode(blobs["volatile"], 1, "volatile") if blobs["volatile"] else None
    if blobs["savestate"]:
        decode(blobs["savestate"], 1, "savestate")
        raise StateError("builtin TPM state blob 'savestate' must be empty for a TPM 1.2 (no TPM_SaveState)")
    new = Tpm12State()
    result: list[Any] = [None, None]

    def build() -> None:
        drbg = perm["drbg"]
        result[0] = None if drbg is None else _bytes(drbg, 32)
        if vol is None:
            return
        pcrs = vol["pcrs"]
        if not isinstance(pcrs, list) or len(pcrs) != 24:
            raise _Bad("a TPM 1.2 has 24 PCRs")
        new.pcrs = [_bytes(v, 20) for v in pcrs]
        new.post_initialise = _bool(vol["post_initialise"])
        new.deactivated = _bool(vol["deactivated"])
        new.failure_mode = _bool(vol["failure_mode"])
        new.tick_nonce = _bytes(vol["tick_nonce"], 20)
        virtual = vol["virtual_ms"]
        result[1] = None if virtual is None else _int(virtual)
        new.power_on_us = now(result[1]) * 1000 - _int(vol["ticks_us"])

    _load("volatile" if vol is not None else "permanent", build)
    engine.state = new
    if vol is None:  # power was lost: as after TPM_Init
        engine.power_on()
    return result[0], result[1]
