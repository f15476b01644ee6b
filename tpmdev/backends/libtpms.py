"""libtpms loaded into this process as a backend: a full TPM 1.2 or 2.0, no helper process.

Theory of operation
-------------------
libtpms is the TPM that swtpm runs; here it is called directly through
ctypes (:mod:`tpmdev.backends._libtpms_api` holds the declarations). The
library keeps one TPM in global variables, so a process has at most one:
a second live :class:`Libtpms` raises :class:`tpmdev.StateError` until the
first is closed (``TPMLIB_Terminate``).

Construction selects the family (``TPMLIB_ChooseTPMVersion``), registers the
callbacks and powers the TPM on (``TPMLIB_MainInit``), so a host can send
TPM(2)_Startup at once, as with the other backends. :meth:`Libtpms.startup`
is TPM_Init again: ``TPMLIB_Terminate``, optionally ``TPMLIB_SetBufferSize``,
``TPMLIB_MainInit``; the guest then sends Startup itself.

The callbacks libtpms calls back into Python:

* ``tpm_io_getlocality`` reports the locality given to :meth:`Libtpms.execute`
  (4 during :meth:`Libtpms.hash_start` / ``hash_data`` / ``hash_end``; the
  one asked for during :meth:`Libtpms.reset_established_flag`);
* ``tpm_io_getphysicalpresence`` reports :attr:`Libtpms.physical_presence`;
* the four ``tpm_nvram_*`` callbacks keep libtpms' named blobs (``permall``,
  ``volatilestate``, ``savestate``) in memory, or in *state_dir* as swtpm's
  ``dir`` backend does: files ``tpm2-00.<name>`` (``tpm-00.<name>`` for TPM
  1.2) in swtpm's unencrypted file format, written to ``TMP2-00.<name>``
  first and renamed, the directory locked through ``.lock``. A state
  directory can therefore move between swtpm and this backend. libtpms
  writes ``permall`` whenever its NV changes, so a new ``Libtpms`` on the
  same directory resumes with the same permanent state (volatile state is
  not saved at close, as swtpm's CMD_SHUTDOWN does not save it either).

State blobs (:meth:`Libtpms.get_state` / :meth:`Libtpms.set_state`) are
exactly swtpm's CMD_GET_STATEBLOB blobs (asked with the "decrypted" flag): a
10-byte header, then the libtpms blob inside two TLVs. ``permanent`` and
``volatile`` come from the running TPM (``TPMLIB_GetState``); ``savestate``
is the blob TPM 1.2 writes on TPM_SaveState, if any -- as swtpm, which reads
its file; a TPM 2.0 never has one (its Shutdown(STATE) data is part of the
permanent blob). Loading terminates the TPM, hands the blobs over with
``TPMLIB_SetState`` and powers it on again, like swtpm's CMD_STOP,
CMD_SET_STATEBLOB..., CMD_INIT(delete volatile) sequence: the TPM carries on
from the saved state without a new Startup. A blob libtpms refuses leaves
the TPM running from the state it had before.

Threads
-------
libtpms is not thread-safe: all of it works on global state. Every call into
it is made under one lock, except ``TPMLIB_CancelCommand``. For TPM 2.0 that
call only sets the "cancel" flag which long operations poll (prime search of
RSA key generation in TPM2_CreatePrimary, ECC signing, self tests); swtpm's
CUSE variant calls it the same way while its worker thread runs the command.
``TPMLIB_Process`` clears the flag when it starts, so a cancel that arrives
before the command started is lost, as on real hardware; the command then
ends with TPM_RC_CANCELED (0x909) if it polled the flag. TPM 1.2 in libtpms
cannot cancel (``TPMLIB_CancelCommand`` answers TPM_FAIL); :meth:`cancel` is
then a no-op. ctypes releases the GIL while libtpms runs, so another thread
can cancel, and :meth:`get_established_flag` reads the TPM's own flag
(``TPM_IO_TpmEstablished_Get``, a variable libtpms only reads there) at
every call without waiting for a running command: nothing is cached, nothing
goes stale. Both take a second lock that is held only while the TPM powers
on or off.

One TPM per process
-------------------
libtpms keeps the buffer size, the TPM 2.0 established flag and blobs
handed to ``TPMLIB_SetState`` in static variables that survive
``TPMLIB_Terminate``. A new :class:`Libtpms` puts them back to libtpms'
defaults before it powers the TPM on, so nothing leaks from an earlier
instance in the same process.

Trust
-----
In process, the TPM trusts its state: a state blob is unmarshalled by
libtpms inside this process, and libtpms does not check everything it later
relies on. :meth:`Libtpms.set_state` checks what can be checked first
(libtpms' own digests of TPM 1.2 permanent and all volatile blobs, and
:func:`tpmdev.backends._libtpms_state.check_tpm2_permanent` for TPM 2.0
permanent blobs, which carry none); a blob that passes and still breaks
libtpms takes this process down with it. For state from an untrusted
source, use :class:`~tpmdev.backends.Emulator`: swtpm runs the same
libtpms in a process of its own, and a crash there is a
:class:`tpmdev.BackendError` here.

Where we differ from the emulator (swtpm) backend and from QEMU
-----------------------------------------------------------------
* A missing library raises :class:`tpmdev.BackendError` from the constructor
  (not ImportError at import time); its message says how to install libtpms.
* :meth:`execute` hands every byte string to libtpms unchanged, short or
  long: libtpms answers malformed commands with its own error responses.
* :meth:`reset_established_flag` uses the locality it is given (QEMU's
  emulator backend sends the locality of the last command). libtpms accepts
  only 3 and 4; a refusal is logged, not raised. TPM 1.2: no-op, as in QEMU.
* :meth:`hash_start`, :meth:`hash_data`, :meth:`hash_end` (swtpm's
  CMD_HASH_*) are offered although QEMU does not use them.
* A volatile state found in the store at power-on (a ``volatilestate`` left
  by swtpm's CMD_STORE_VOLATILE) is used once and then deleted, as swtpm's
  CMD_INIT with the delete-volatile flag does.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import struct
import threading
import weakref
from collections.abc import Callable, Mapping
from ctypes import POINTER, c_uint8, c_uint32
from typing import Any, ClassVar, Protocol

from tpmdev.backends import _libtpms_api as api_mod
from tpmdev.backends._libtpms_api import (
    TPM_FAIL,
    TPM_PERMANENT_ALL_NAME,
    TPM_RETRY,
    TPM_SAVESTATE_NAME,
    TPM_SUCCESS,
    TPM_VOLATILESTATE_NAME,
    TPMLIB_STATE_PERMANENT,
    TPMLIB_STATE_SAVE_STATE,
    TPMLIB_STATE_VOLATILE,
    TPMLIB_TPM_VERSION_1_2,
    TPMLIB_TPM_VERSION_2,
    Api,
    LibtpmsCallbacks,
    result_name,
)
from tpmdev.backends._libtpms_state import check_tpm2_permanent
from tpmdev.backends.base import STATE_KEYS, Backend, as_bytes, check_path, check_tpm_version
from tpmdev.errors import AccessError, BackendError, ConfigurationError, StateError
from tpmdev.wire import HEADER_SIZE

__all__ = [
    "Libtpms",
    "wrap_state_blob",
    "unwrap_state_blob",
    "BLOB_HEADER_VERSION",
    "BLOB_FLAG_ENCRYPTED",
    "BLOB_FLAG_MIGRATION_ENCRYPTED",
    "BLOB_FLAG_MIGRATION_DATA",
    "TAG_DATA",
    "TAG_MIGRATION_DATA",
]

log = logging.getLogger(__name__)

# -- swtpm's blob envelope (state files and GET/SET_STATEBLOB) -------------------
# Header, big-endian: u8 version, u8 min_version, u16 hdrsize (10), u16 flags,
# u32 totlen (header included); then TLVs: u16 tag, u32 length, value.
BLOB_HEADER_VERSION = 2
BLOB_FLAG_ENCRYPTED = 0x01  # data encrypted with swtpm's state (file) key
BLOB_FLAG_MIGRATION_ENCRYPTED = 0x02  # encrypted with swtpm's migration key
BLOB_FLAG_MIGRATION_DATA = 0x04  # the data sit in a TAG_MIGRATION_DATA TLV
TAG_DATA = 1
TAG_MIGRATION_DATA = 4

_HEADER = struct.Struct(">BBHHI")
_TLV = struct.Struct(">HI")

#: Map of Backend state keys to libtpms state types and nvram names.
_STATE_TYPES = {
    "permanent": (TPMLIB_STATE_PERMANENT, TPM_PERMANENT_ALL_NAME),
    "volatile": (TPMLIB_STATE_VOLATILE, TPM_VOLATILESTATE_NAME),
    "savestate": (TPMLIB_STATE_SAVE_STATE, TPM_SAVESTATE_NAME),
}

_RELEASE_WAIT = 120.0  # seconds close() waits for a command in flight
_HASH_LOCALITY = 4  # TPM_HASH_START/DATA/END are locality-4 cycles


def _envelope(flags: int, tag: int, value: bytes) -> bytes:
    body = _TLV.pack(tag, len(value)) + value
    return _HEADER.pack(BLOB_HEADER_VERSION, 1, _HEADER.size, flags, _HEADER.size + len(body)) + body


def _find_tlv(data: bytes, tag: int) -> bytes | None:
    offset = 0
    while offset + _TLV.size <= len(data):
        t, length = _TLV.unpack_from(data, offset)
        offset += _TLV.size
        if offset + length > len(data):
            return None
        if t == tag:
            return data[offset : offset + length]
        offset += length
    return None


def _parse_header(blob: bytes) -> tuple[int, int] | None:
    """(version, flags) of a valid swtpm blob header, else None."""
    if len(blob) < _HEADER.size:
        return None
    version, min_version, hdrsize, flags, totlen = _HEADER.unpack_from(blob)
    if totlen != len(blob) or hdrsize != _HEADER.size or min_version > BLOB_HEADER_VERSION:
        return None
    return version, flags


def wrap_state_blob(raw: bytes) -> bytes:
    """Put a libtpms state blob in swtpm's CMD_GET_STATEBLOB envelope (unencrypted)."""
    return _envelope(BLOB_FLAG_MIGRATION_DATA, TAG_MIGRATION_DATA, _TLV.pack(TAG_DATA, len(raw)) + raw)


def unwrap_state_blob(blob: bytes) -> bytes:
    """The libtpms blob inside a swtpm state blob (CMD_GET_STATEBLOB, "decrypted").

    Raises :class:`tpmdev.StateError` for anything else, including blobs
    encrypted with a swtpm state or migration key (get them from swtpm with
    the "decrypted" flag, without ``--migration-key``).
    """
    blob = bytes(blob)
    header = _parse_header(blob)
    if header is None:
        raise StateError(
            f"not a swtpm state blob ({len(blob)} bytes; expected a 10-byte header whose total "
            "length matches); use wrap_state_blob() for a raw libtpms blob"
        )
    version, flags = header
    body = blob[_HEADER.size :]
    if version < 2:  # version 1 carries the bare data after the header
        return body
    if flags & (BLOB_FLAG_ENCRYPTED | BLOB_FLAG_MIGRATION_ENCRYPTED):
        which = "migration key" if flags & BLOB_FLAG_MIGRATION_ENCRYPTED else "state key"
        raise StateError(
            f"state blob is encrypted with a swtpm {which}; tpmdev cannot decrypt it "
            "(ask swtpm for decrypted blobs and do not give it --migration-key)"
        )
    inner = _find_tlv(body, TAG_MIGRATION_DATA)
    if inner is None:
        raise StateError("swtpm state blob has no migration-data TLV")
    data = _find_tlv(inner, TAG_DATA)
    if data is None:
        raise StateError("swtpm state blob has no data TLV")
    return data


# -- where libtpms' named blobs live -------------------------------------------------
class _Store(Protocol):
    def load(self, name: str) -> bytes | None: ...
    def store(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> bool: ...
    def close(self) -> None: ...


class _MemoryStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def load(self, name: str) -> bytes | None:
        return self._blobs.get(name)

    def store(self, name: str, data: bytes) -> None:
        self._blobs[name] = data

    def delete(self, name: str) -> bool:
        return self._blobs.pop(name, None) is not None

    def close(self) -> None:
        pass


class _DirStore:
    """swtpm's ``dir`` backend layout, unencrypted, locked through ``.lock``."""

    def __init__(self, path: str, tpm_version: int) -> None:
        self.path = path
        self._prefix = "2" if tpm_version == 2 else ""
        try:
            os.makedirs(path, exist_ok=True)
            fd = os.open(os.path.join(path, ".lock"), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o660)
        except OSError as exc:
            raise ConfigurationError(f"cannot use {path!r} as a TPM state directory ({exc})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise StateError(
                    f"TPM state directory {path!r} is in use by another TPM (a swtpm or another "
                    "process); stop it or use another directory"
                ) from None
            raise ConfigurationError(f"cannot lock TPM state directory {path!r} ({exc})") from None
        self._lock_fd: int | None = fd

    def _file(self, name: str, temp: bool = False) -> str:
        return os.path.join(self.path, f"{'TMP' if temp else 'tpm'}{self._prefix}-00.{name}")

    def load(self, name: str) -> bytes | None:
        """The blob stored as *name*, None if there is none.

        Raises :class:`tpmdev.StateError` for a file that cannot be read or
        is not a state file this backend can use.
        """
        path = self._file(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read the TPM state file {path!r} ({exc.strerror or exc})") from None
        header = _parse_header(data)
        if header is None:
            return data  # written before swtpm had headers: the bare blob
        version, flags = header
        body = data[_HEADER.size :]
        if version < 2:
            return body
        if flags & BLOB_FLAG_ENCRYPTED:
            raise StateError(
                f"{path} is encrypted with a swtpm state key; tpmdev cannot read it "
                "(use this directory with swtpm and its key)"
            )
        value = _find_tlv(body, TAG_DATA)
        if value is None:
            raise StateError(f"{path} is not a usable swtpm state file (no data TLV)")
        return value

    def store(self, name: str, data: bytes) -> None:
        """Write *data* as *name* (a temporary file, then renamed).

        Raises :class:`tpmdev.BackendError` when the file cannot be written.
        """
        tmp = self._file(name, temp=True)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
            try:
                os.write(fd, _envelope(0, TAG_DATA, data))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._file(name))
        except OSError as exc:
            raise BackendError(f"cannot write the TPM state file {tmp!r} ({exc.strerror or exc})") from None

    def delete(self, name: str) -> bool:
        try:
            os.unlink(self._file(name))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BackendError(f"cannot delete {self._file(name)!r} ({exc.strerror or exc})") from None
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


# -- the one TPM of this process ----------------------------------------------------
class _Session:
    """Everything a live libtpms TPM holds; also what the finalizer releases."""

    def __init__(self, api: Api, tpm_version: int, store: _Store, description: str) -> None:
        self.api = api
        self.tpm_version = tpm_version
        self.store = store
        self.description = description
        # Lock order: lock, then power_lock.
        self.lock = threading.Lock()  # every libtpms call except the two below
        # Held while the TPM powers on or off (and by close): CancelCommand and
        # TpmEstablished_Get run under it alone, never waiting for a command.
        self.power_lock = threading.Lock()
        self.running = False  # between MainInit and Terminate
        self.released = False
        self.locality = 0
        self.physical_presence = False
        self.callback_error: str | None = None
        self.flag = c_uint8(0)  # TPM_IO_TpmEstablished_Get's answer
        self.flag_ref = ctypes.byref(self.flag)
        # The same C function without argtypes: no conversion per call (the
        # one argument is always flag_ref), for a read made at every ACCESS read.
        self.flag_get = api.established_get_unchecked
        # libtpms' response buffer: grown by libtpms (realloc), freed with TPM_Free
        self.rbuf = POINTER(c_uint8)()
        self.rsize = c_uint32(0)
        self.rtotal = c_uint32(0)
        self.cmdbuf = ctypes.create_string_buffer(4096)
        # TPMLIB_Process's first three arguments; rbuf is updated in place
        self.process_args = (ctypes.byref(self.rbuf), ctypes.byref(self.rsize), ctypes.byref(self.rtotal))

    # callbacks (called by libtpms on the thread that called into it) ------
    def nvram_load(self, name: str) -> bytes | None:
        return self.store.load(name)

    def main_init(self) -> int:
        """TPMLIB_MainInit (the caller holds :attr:`lock`)."""
        with self.power_lock:
            rc = int(self.api.TPMLIB_MainInit())
            if rc == TPM_SUCCESS:
                self.running = True
        if rc == TPM_SUCCESS:
            # A volatile state in the store is for this power-on only.
            self.store.delete(TPM_VOLATILESTATE_NAME)
        return rc

    def terminate(self) -> None:
        """TPMLIB_Terminate if running (the caller holds :attr:`lock`)."""
        with self.power_lock:
            if self.running:
                self.running = False
                self.api.TPMLIB_Terminate()


_owner_lock = threading.Lock()
_owner: _Session | None = None


def _active() -> _Session | None:
    return _owner


# The thunks libtpms calls; created once and kept for the life of the process
# (libtpms keeps the pointers after Terminate). They dispatch to the session
# that owns the library and never let an exception escape into C.
def _cb_nvram_init() -> int:
    return TPM_SUCCESS


def _cb_nvram_loaddata(
    data: ctypes._Pointer[ctypes._Pointer[c_uint8]],
    length: ctypes._Pointer[c_uint32],
    tpm_number: int,
    name: bytes | None,
) -> int:
    data[0] = POINTER(c_uint8)()
    length[0] = 0
    s = _active()
    if s is None or name is None:
        return TPM_FAIL
    try:
        blob = s.nvram_load(name.decode())
        if blob is None:
            return TPM_RETRY
        if not blob:
            return TPM_FAIL
        ptr = s.api.libc_malloc(len(blob))
        if not ptr:
            return TPM_FAIL
        ctypes.memmove(ptr, blob, len(blob))
        data[0] = ctypes.cast(ptr, POINTER(c_uint8))
        length[0] = len(blob)
        return TPM_SUCCESS
    except Exception as exc:  # noqa: BLE001 (must not propagate into libtpms)
        s.callback_error = f"loading {name!r}: {exc}"
        log.error("libtpms nvram: cannot load %r: %s", name, exc)
        return TPM_FAIL


def _cb_nvram_storedata(
    data: ctypes._Pointer[c_uint8], length: int, tpm_number: int, name: bytes | None
) -> int:
    s = _active()
    if s is None or name is None:
        return TPM_FAIL
    try:
        s.store.store(name.decode(), ctypes.string_at(data, length))
        return TPM_SUCCESS
    except Exception as exc:  # noqa: BLE001 (must not propagate into libtpms)
        s.callback_error = f"storing {name!r}: {exc}"
        log.error("libtpms nvram: cannot store %r: %s", name, exc)
        return TPM_FAIL


def _cb_nvram_deletename(tpm_number: int, name: bytes | None, must_exist: int) -> int:
    s = _active()
    if s is None or name is None:
        return TPM_FAIL
    try:
        existed = s.store.delete(name.decode())
    except Exception as exc:  # noqa: BLE001 (must not propagate into libtpms)
        log.error("libtpms nvram: cannot delete %r: %s", name, exc)
        return TPM_FAIL
    return TPM_FAIL if must_exist and not existed else TPM_SUCCESS


def _cb_io_init() -> int:
    return TPM_SUCCESS


def _cb_io_getlocality(locality: ctypes._Pointer[c_uint32], tpm_number: int) -> int:
    s = _owner
    locality[0] = s.locality if s is not None else 0
    return TPM_SUCCESS


def _cb_io_getphysicalpresence(pp: ctypes._Pointer[c_uint8], tpm_number: int) -> int:
    s = _owner
    pp[0] = 1 if s is not None and s.physical_presence else 0
    return TPM_SUCCESS


_CALLBACKS = LibtpmsCallbacks(
    ctypes.sizeof(LibtpmsCallbacks),
    api_mod.TpmNvramInit(_cb_nvram_init),
    api_mod.TpmNvramLoadData(_cb_nvram_loaddata),
    api_mod.TpmNvramStoreData(_cb_nvram_storedata),
    api_mod.TpmNvramDeleteName(_cb_nvram_deletename),
    api_mod.TpmIoInit(_cb_io_init),
    api_mod.TpmIoGetLocality(_cb_io_getlocality),
    api_mod.TpmIoGetPhysicalPresence(_cb_io_getphysicalpresence),
)


def _tpmlib_get_state(s: _Session, key: str) -> bytes:
    """``TPMLIB_GetState`` of the running TPM; b"" when there is none."""
    st, _ = _STATE_TYPES[key]
    ptr = POINTER(c_uint8)()
    length = c_uint32(0)
    rc = s.api.TPMLIB_GetState(st, ctypes.byref(ptr), ctypes.byref(length))
    try:
        if rc != TPM_SUCCESS:
            raise BackendError(f"TPMLIB_GetState({key}) failed: {result_name(rc)}")
        return ctypes.string_at(ptr, length.value) if ptr else b""
    finally:
        if ptr:
            s.api.TPM_Free(ptr)


def _release(session: _Session) -> None:
    """Terminate the TPM, free libtpms' buffer, unlock the store, give the library up.

    Also the weak finalizer of a Libtpms that was never closed.
    """
    global _owner
    if session.released:
        return
    with session.power_lock:
        session.released = True
    # A command in flight finishes first (libtpms commands are bounded).
    # Only a finalizer at interpreter exit could find a thread stuck here.
    got = session.lock.acquire(timeout=_RELEASE_WAIT)
    try:
        if not got:
            log.error("a libtpms command did not finish in %.0f s; not terminating the TPM", _RELEASE_WAIT)
            return
        session.terminate()
        if session.rbuf:
            session.api.TPM_Free(session.rbuf)
            session.rbuf = POINTER(c_uint8)()
        session.store.close()
    finally:
        if got:
            session.lock.release()
        with _owner_lock:
            if _owner is session:
                _owner = None


class Libtpms(Backend):
    """A TPM 1.2 (*tpm_version* 1) or 2.0 (2) run by libtpms inside this process.

    *state_dir* keeps the TPM's NVRAM in a directory laid out as swtpm's
    (created if missing, locked while open); None keeps it in memory.
    *library* names or locates the shared library (default: found as
    ``libtpms.so.0``).

    A new instance starts from libtpms' defaults whatever an earlier one in
    this process did: the largest buffer size, the established flag clear
    (TPM 2.0; a TPM 1.2 keeps it in its permanent state), no state blob
    pending from an earlier :meth:`set_state`.

    Raises :class:`tpmdev.BackendError` if libtpms cannot be loaded or
    refuses to start, :class:`tpmdev.StateError` if a Libtpms is already
    open in this process (close it first) or *state_dir* is in use,
    :class:`tpmdev.ConfigurationError` for a bad *tpm_version*, directory
    or library.
    """

    state_kind: ClassVar[str] = "libtpms"

    def __init__(
        self,
        tpm_version: int = 2,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        library: str | os.PathLike[str] | None = None,
    ) -> None:
        global _owner
        self._closed = True  # until fully set up
        tpm_version = check_tpm_version(tpm_version)
        state_path = check_path(state_dir, "state_dir") if state_dir is not None else None
        library_path = check_path(library, "library") if library is not None else None
        api = api_mod.load(library_path)
        self._version = tpm_version
        self._state_dir = os.path.abspath(state_path) if state_path is not None else None
        where = f"state_dir={self._state_dir!r}" if self._state_dir else "in memory"
        description = f"TPM {'2.0' if tpm_version == 2 else '1.2'}, {where}"
        with _owner_lock:
            if _owner is not None:
                raise StateError(
                    f"libtpms runs one TPM per process and a Libtpms backend is open "
                    f"({_owner.description}); close() it before creating another"
                )
            store: _Store = (
                _DirStore(self._state_dir, tpm_version) if self._state_dir is not None else _MemoryStore()
            )
            session = _Session(api, tpm_version, store, description)
            _owner = session
        self._s = session
        self._finalizer = weakref.finalize(self, _release, session)
        try:
            with session.lock:
                choice = TPMLIB_TPM_VERSION_2 if tpm_version == 2 else TPMLIB_TPM_VERSION_1_2
                # Choosing the other family first makes libtpms drop any blob an
                # earlier instance handed to TPMLIB_SetState and never used
                # (it clears them on a change of family; a build with one
                # family refuses the first call, and then has nothing cached
                # from another family either).
                api.TPMLIB_ChooseTPMVersion(TPMLIB_TPM_VERSION_1_2 + TPMLIB_TPM_VERSION_2 - choice)
                rc = api.TPMLIB_ChooseTPMVersion(choice)
                if rc != TPM_SUCCESS:
                    raise BackendError(
                        f"this libtpms ({api.path}) cannot run a {description.split(',')[0]} "
                        f"(TPMLIB_ChooseTPMVersion: {result_name(rc)})"
                    )
                rc = api.TPMLIB_RegisterCallbacks(ctypes.byref(_CALLBACKS))
                if rc != TPM_SUCCESS:
                    raise BackendError(f"TPMLIB_RegisterCallbacks failed: {result_name(rc)}")
                _library_defaults(session)
                rc = session.main_init()
                if rc != TPM_SUCCESS:
                    raise BackendError(self._init_failure("TPMLIB_MainInit", rc))
        except BaseException:
            self._finalizer()
            raise
        self._closed = False
        log.debug("libtpms %s started (%s)", ".".join(map(str, api.version)), description)

    def _init_failure(self, what: str, rc: int) -> str:
        detail = f"; {self._s.callback_error}" if self._s.callback_error else ""
        return f"libtpms could not start the TPM ({what}: {result_name(rc)}{detail})"

    # -- identity ---------------------------------------------------------------
    @property
    def tpm_version(self) -> int:
        return self._version

    @property
    def state_dir(self) -> str | None:
        """The absolute state directory, None when the NVRAM is in memory."""
        return self._state_dir

    @property
    def library_version(self) -> tuple[int, int, int]:
        """The version of the loaded libtpms, e.g. (0, 9, 2)."""
        return self._s.api.version

    @property
    def physical_presence(self) -> bool:
        """What the physical-presence callback reports (default False)."""
        return self._s.physical_presence

    @physical_presence.setter
    def physical_presence(self, value: bool) -> None:
        self._s.physical_presence = bool(value)

    def get_info(self, flags: int = 3) -> str:
        """``TPMLIB_GetInfo``: a JSON text (flags: 1 specification, 2 attributes, 4 features)."""
        if isinstance(flags, bool) or not isinstance(flags, int) or not 0 <= flags <= 0x7FFFFFFF:
            raise AccessError(f"flags must be an int of TPMLIB_INFO_* bits, got {flags!r}")
        s = self._use()
        with s.lock:
            ptr = s.api.TPMLIB_GetInfo(flags)
            if not ptr:
                raise BackendError(f"TPMLIB_GetInfo({flags}) returned nothing")
            try:
                return ctypes.string_at(ptr).decode()
            finally:
                s.api.TPM_Free(ptr)

    # -- power and buffer size ----------------------------------------------------
    def _get_buffer_size(self) -> int:
        """``TPMLIB_SetBufferSize(0)``: the buffer size in force."""
        s = self._s
        with s.lock:
            return int(s.api.TPMLIB_SetBufferSize(0, None, None))

    @property
    def buffer_size_limits(self) -> tuple[int, int]:
        """(minimum, maximum) buffer size libtpms accepts (TPM 2.0: 2808, 4096)."""
        s = self._use()
        lo, hi = c_uint32(0), c_uint32(0)
        with s.lock:
            s.api.TPMLIB_SetBufferSize(0, ctypes.byref(lo), ctypes.byref(hi))
        return lo.value, hi.value

    def _startup(self, buffer_size: int) -> None:
        """TPM_Init: ``TPMLIB_Terminate``, ``TPMLIB_SetBufferSize(n)`` (n != 0,
        clamped by libtpms to :attr:`buffer_size_limits`), ``TPMLIB_MainInit``.

        The guest sends TPM(2)_Startup next. Raises :class:`tpmdev.BackendError`
        if libtpms does not come up (the backend is then failed for good).
        """
        s = self._s
        with s.lock:
            self._check_usable()
            s.terminate()
            if buffer_size:
                s.api.TPMLIB_SetBufferSize(buffer_size, None, None)
            rc = s.main_init()
            if rc != TPM_SUCCESS:
                reason = self._init_failure("TPMLIB_MainInit", rc)
                self._fail(reason)
                raise BackendError(reason)

    # reset: nothing to do, a command runs to its end under the lock.

    # -- commands ---------------------------------------------------------------------
    def _execute(self, command: bytes, locality: int) -> bytes:
        """``TPMLIB_Process`` at *locality*; return the whole response.

        Any bytes are handed over; libtpms answers malformed commands itself.
        Raises :class:`tpmdev.BackendError` only if libtpms produced no response.
        """
        s = self._s
        with s.lock:
            if not s.running:
                self._check_running()  # closed or failed while we waited for the lock
            n = len(command)
            if n > len(s.cmdbuf):
                s.cmdbuf = ctypes.create_string_buffer(n)
            # libtpms may decrypt parameters in place: give it our own copy.
            ctypes.memmove(s.cmdbuf, command, n)
            s.locality = locality
            s.rsize.value = 0
            rc = s.api.TPMLIB_Process(*s.process_args, s.cmdbuf, n)
            size = s.rsize.value
            if rc != TPM_SUCCESS or not s.rbuf or size < HEADER_SIZE:
                raise BackendError(
                    f"libtpms produced no response (TPMLIB_Process: {result_name(rc)}, {size} bytes)"
                )
            return ctypes.string_at(s.rbuf, size)

    def _cancel(self) -> None:
        """``TPMLIB_CancelCommand``; callable from any thread while :meth:`execute` runs.

        TPM 2.0 only (libtpms' TPM 1.2 cannot cancel: no-op). Never raises.
        """
        s = self._s
        with s.power_lock:
            if s.released or not s.running:
                return
            rc = s.api.TPMLIB_CancelCommand()
        if rc != TPM_SUCCESS:
            log.debug("TPMLIB_CancelCommand: %s (TPM %d cannot cancel)", result_name(rc), self._version)

    # -- established flag and the locality-4 hash interface ---------------------------
    def _get_established_flag(self) -> bool:
        """``TPM_IO_TpmEstablished_Get``: the TPM's own flag, read at each call.

        Nothing is cached, so the answer is right after anything that
        changed the flag (a hash sequence, a reset, TPM 1.2's
        TSC_ResetEstablishmentBit, a state load). Never waits for a command
        in flight: libtpms keeps the flag in a variable it only reads here.
        """
        s = self._s
        if self._version == 2:
            # TPM 2.0 keeps the flag in a static variable, readable in any
            # power state: no lock at all (the call cannot fail).
            s.flag_get(s.flag_ref)
            return bool(s.flag.value)
        # TPM 1.2 reads it from a TPM instance that TPMLIB_Terminate frees.
        with s.power_lock:
            if not s.running:
                self._check_usable()
                raise BackendError("the libtpms TPM is not running; create a new backend")
            rc = s.flag_get(s.flag_ref)
            flag = s.flag.value
        if rc != TPM_SUCCESS:
            raise BackendError(f"TPM_IO_TpmEstablished_Get failed: {result_name(rc)}")
        return bool(flag)

    def _reset_established_flag(self, locality: int) -> None:
        """``TPM_IO_TpmEstablished_Reset`` at *locality* (TPM 2.0; 1.2: no-op).

        libtpms resets only from locality 3 or 4; a refusal is logged.
        """
        if self._version != 2:
            return
        s = self._s
        with s.lock:
            self._check_running()
            s.locality = locality
            rc = s.api.TPM_IO_TpmEstablished_Reset()
        if rc != TPM_SUCCESS:
            log.warning(
                "libtpms did not reset the established flag at locality %d: %s", locality, result_name(rc)
            )

    def hash_start(self) -> None:
        """``TPM_IO_Hash_Start`` (TPM_HASH_START at locality 4): start a DRTM
        sequence, reset PCRs 17..22 and set the established flag."""
        self._hash_op("TPM_IO_Hash_Start", lambda a: a.TPM_IO_Hash_Start())

    def hash_data(self, data: bytes) -> None:
        """``TPM_IO_Hash_Data``: add *data* (bytes-like) to the DRTM measurement."""
        buf = as_bytes(data, "data")
        self._hash_op("TPM_IO_Hash_Data", lambda a: a.TPM_IO_Hash_Data(buf, len(buf)))

    def hash_end(self) -> None:
        """``TPM_IO_Hash_End``: extend the measurement into the DRTM PCR (17)."""
        self._hash_op("TPM_IO_Hash_End", lambda a: a.TPM_IO_Hash_End())

    def _hash_op(self, name: str, call: Callable[[Api], int]) -> None:
        s = self._use()
        with s.lock:
            self._check_running()
            s.locality = _HASH_LOCALITY
            rc = call(s.api)
        if rc != TPM_SUCCESS:
            raise BackendError(f"{name} failed: {result_name(rc)}")

    # -- state ----------------------------------------------------------------------------
    def _get_state(self) -> dict[str, bytes]:
        """swtpm-compatible ``permanent``, ``volatile`` and ``savestate`` blobs.

        An empty blob means "none" (swtpm's 0x800 answer). Waits for a
        command in flight.
        """
        s = self._s
        with s.lock:
            self._check_running()
            raw = self._raw_state(s)
        return {key: wrap_state_blob(blob) if blob else b"" for key, blob in raw.items()}

    def _raw_state(self, s: _Session) -> dict[str, bytes]:
        # as swtpm: the blob TPM_SaveState stored, not a fresh one
        savestate = s.store.load(TPM_SAVESTATE_NAME) or b""
        return {
            "permanent": _tpmlib_get_state(s, "permanent"),
            "volatile": _tpmlib_get_state(s, "volatile"),
            "savestate": savestate,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restart the TPM from blobs of :meth:`get_state` or swtpm's GET_STATEBLOB.

        Keys are a subset of ``permanent``, ``volatile``, ``savestate``;
        empty or missing blobs are skipped (the permanent state then stays
        as it is; no volatile state means a fresh TPM_Init that waits for
        Startup). Raises :class:`tpmdev.StateError` for an unusable blob;
        the TPM then keeps running from its previous state.

        libtpms checks a TPM 1.2 permanent blob and every volatile blob
        against a digest they carry, and unmarshals what it is given; a TPM
        2.0 permanent blob carries no digest, so it is first checked here
        (:func:`tpmdev.backends._libtpms_state.check_tpm2_permanent`) for
        values libtpms would use unchecked. A blob crafted to pass both can
        still take this process down: the TPM runs in it and trusts its
        state. Load untrusted state into an :class:`~tpmdev.backends.Emulator`,
        whose swtpm is a process of its own.
        """
        raw = {key: unwrap_state_blob(blob) for key, blob in state.items() if blob}
        if self._version == 2 and raw.get("savestate"):
            raise StateError("a TPM 2.0 has no savestate blob (swtpm reports it empty); pass b''")
        if self._version == 2 and raw.get("permanent"):
            check_tpm2_permanent(raw["permanent"])
        s = self._s
        with s.lock:
            self._check_running()
            backup = self._raw_state(s)
            s.terminate()
            try:
                self._load_state(s, raw)
            except StateError as exc:
                log.warning("restoring the previous TPM state: %s", exc)
                try:
                    self._load_state(s, {k: v for k, v in backup.items() if v})
                except StateError as exc2:
                    reason = f"libtpms refused the new state ({exc}) and then the previous one ({exc2})"
                    self._fail(reason)
                    raise BackendError(f"{reason}; the TPM is down, create a new backend") from None
                raise

    def _load_state(self, s: _Session, raw: Mapping[str, bytes]) -> None:
        for key in STATE_KEYS:
            blob = raw.get(key)
            st, name = _STATE_TYPES[key]
            if not blob:
                if key != "permanent":
                    s.store.delete(name)  # nothing stale may be picked up
                continue
            rc = s.api.TPMLIB_SetState(st, blob, len(blob))
            if rc != TPM_SUCCESS:
                raise StateError(
                    f"libtpms refused the {key} state blob ({len(blob)} bytes): {result_name(rc)}"
                )
            if key == "savestate":
                s.store.store(name, blob)  # libtpms deletes it at Startup(ST_STATE)
        rc = s.main_init()
        if rc != TPM_SUCCESS:
            raise StateError(self._init_failure("TPMLIB_MainInit after TPMLIB_SetState", rc))
        # TPM 1.2 does not write a cached permanent state back by itself.
        perm = raw.get("permanent")
        if perm:
            s.store.store(TPM_PERMANENT_ALL_NAME, _tpmlib_get_state(s, "permanent"))

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """``TPMLIB_Terminate``, release libtpms for a new instance. Idempotent.

        Waits for a command in flight. NV changes are already in the store.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    # -- internals ----------------------------------------------------------------------------
    def _use(self) -> _Session:
        self._check_open()
        return self._s

    def _check_running(self) -> None:
        self._check_usable()
        if not self._s.running:  # pragma: no cover - every way down latches the failure
            raise BackendError("the libtpms TPM is not running; create a new backend")


def _library_defaults(s: _Session) -> None:
    """Undo what an earlier Libtpms in this process left in libtpms' globals.

    libtpms keeps the buffer size and the TPM 2.0 established flag in
    static variables that outlive TPMLIB_Terminate; a new TPM must not
    inherit them. Called before the first TPMLIB_MainInit (a volatile state
    found then sets the flag again).
    """
    lo, hi = c_uint32(0), c_uint32(0)
    s.api.TPMLIB_SetBufferSize(0, ctypes.byref(lo), ctypes.byref(hi))
    s.api.TPMLIB_SetBufferSize(hi.value, None, None)  # the default is the largest
    if s.tpm_version == 2:
        s.locality = _HASH_LOCALITY  # libtpms resets the flag from locality 3 or 4 only
        rc = s.api.TPM_IO_TpmEstablished_Reset()
        s.locality = 0
        if rc != TPM_SUCCESS:
            raise BackendError(f"libtpms could not clear the established flag: {result_name(rc)}")
