"""ctypes declarations of libtpms' public C API.

Mirrors the installed headers ``libtpms/tpm_library.h``, ``tpm_tis.h``,
``tpm_memory.h``, ``tpm_nvfilename.h`` and ``tpm_error.h`` of libtpms 0.9:
prototypes, the callback structure and the constants, named as there. No
behaviour lives here; :mod:`tpmdev.backends.libtpms` drives the library.

The library is found with ``ctypes.util.find_library("tpms")`` and, failing
that, by its soname ``libtpms.so.0``. :data:`LIBRARY_NAMES` is the list
tried; a missing library raises :class:`tpmdev.BackendError` saying how to
install it.

Memory ownership, as the headers define it:

* ``TPMLIB_Process`` grows the response buffer it is given with the C
  library's ``realloc`` (a NULL pointer and size 0 are fine), so that buffer
  belongs to libtpms' allocator and is released with ``TPM_Free``.
* ``TPMLIB_GetState`` hands back a buffer the caller releases with
  ``TPM_Free``; ``TPMLIB_GetInfo`` a string released the same way.
* The ``tpm_nvram_loaddata`` callback must return a buffer libtpms can
  release with ``free()``: it is allocated with the C library's ``malloc``
  (``TPM_Malloc`` refuses more than ``TPM_ALLOC_MAX`` bytes, which a
  well-filled TPM 2 NV image can exceed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from ctypes import CFUNCTYPE, POINTER, c_char_p, c_int, c_uint, c_uint8, c_uint32, c_void_p

from tpmdev.errors import BackendError
from tpmdev.wire import (
    TPM_BAD_LOCALITY,
    TPM_BAD_PARAMETER,
    TPM_BAD_TYPE,
    TPM_FAIL,
    TPM_INVALID_POSTINIT,
    TPM_IOERROR,
    TPM_NON_FATAL,
    TPM_SIZE,
    TPM_SUCCESS,
)

__all__ = [
    # loading
    "LIBRARY_NAMES",
    "INSTALL_HINT",
    "Api",
    "load",
    # tpm_library.h
    "TPMLIB_TPM_VERSION_1_2",
    "TPMLIB_TPM_VERSION_2",
    "TPMLIB_STATE_PERMANENT",
    "TPMLIB_STATE_VOLATILE",
    "TPMLIB_STATE_SAVE_STATE",
    "TPMLIB_INFO_TPMSPECIFICATION",
    "TPMLIB_INFO_TPMATTRIBUTES",
    "TPMLIB_INFO_TPMFEATURES",
    "TPMPROP_TPM_BUFFER_MAX",
    "LibtpmsCallbacks",
    "TpmNvramInit",
    "TpmNvramLoadData",
    "TpmNvramStoreData",
    "TpmNvramDeleteName",
    "TpmIoInit",
    "TpmIoGetLocality",
    "TpmIoGetPhysicalPresence",
    # tpm_nvfilename.h
    "TPM_PERMANENT_ALL_NAME",
    "TPM_VOLATILESTATE_NAME",
    "TPM_SAVESTATE_NAME",
    # tpm_memory.h
    "TPM_ALLOC_MAX",
    # tpm_error.h
    "TPM_SUCCESS",
    "TPM_BAD_PARAMETER",
    "TPM_FAIL",
    "TPM_SIZE",
    "TPM_IOERROR",
    "TPM_INVALID_POSTINIT",
    "TPM_BAD_TYPE",
    "TPM_BAD_LOCALITY",
    "TPM_RETRY",
    "result_name",
]

# -- tpm_library.h ----------------------------------------------------------
# enum TPMLIB_TPMVersion
TPMLIB_TPM_VERSION_1_2 = 0
TPMLIB_TPM_VERSION_2 = 1

# enum TPMLIB_StateType
TPMLIB_STATE_PERMANENT = 1 << 0
TPMLIB_STATE_VOLATILE = 1 << 1
TPMLIB_STATE_SAVE_STATE = 1 << 2

# enum TPMLIB_InfoFlags
TPMLIB_INFO_TPMSPECIFICATION = 1
TPMLIB_INFO_TPMATTRIBUTES = 2
TPMLIB_INFO_TPMFEATURES = 4

# enum TPMLIB_TPMProperty (only what we ask)
TPMPROP_TPM_BUFFER_MAX = 2

# -- tpm_nvfilename.h: the names given to the nvram callbacks ---------------
TPM_PERMANENT_ALL_NAME = "permall"
TPM_SAVESTATE_NAME = "savestate"
TPM_VOLATILESTATE_NAME = "volatilestate"

# -- tpm_memory.h -------------------------------------------------------------
TPM_ALLOC_MAX = 0x20000

# -- tpm_error.h: TPM 1.2 result codes (tpmdev.wire); the library API uses them
# for both families. TPM_RETRY (TPM_NON_FATAL) from tpm_nvram_loaddata means
# "no such blob yet".
TPM_RETRY = TPM_NON_FATAL

_RESULT_NAMES = {
    TPM_SUCCESS: "TPM_SUCCESS",
    TPM_BAD_PARAMETER: "TPM_BAD_PARAMETER",
    TPM_FAIL: "TPM_FAIL",
    TPM_SIZE: "TPM_SIZE",
    TPM_IOERROR: "TPM_IOERROR",
    TPM_INVALID_POSTINIT: "TPM_INVALID_POSTINIT",
    TPM_BAD_TYPE: "TPM_BAD_TYPE",
    TPM_BAD_LOCALITY: "TPM_BAD_LOCALITY",
    TPM_RETRY: "TPM_RETRY",
}


def result_name(result: int) -> str:
    """``TPM_FAIL (0x9)`` style text for a TPM_RESULT."""
    name = _RESULT_NAMES.get(result)
    return f"{name} (0x{result:X})" if name else f"0x{result:X}"


# -- struct libtpms_callbacks --------------------------------------------------
# TPM_RESULT is uint32_t, TPM_BOOL unsigned char, TPM_MODIFIER_INDICATOR uint32_t.
TpmNvramInit = CFUNCTYPE(c_uint32)
TpmNvramLoadData = CFUNCTYPE(c_uint32, POINTER(POINTER(c_uint8)), POINTER(c_uint32), c_uint32, c_char_p)
TpmNvramStoreData = CFUNCTYPE(c_uint32, POINTER(c_uint8), c_uint32, c_uint32, c_char_p)
TpmNvramDeleteName = CFUNCTYPE(c_uint32, c_uint32, c_char_p, c_uint8)
TpmIoInit = CFUNCTYPE(c_uint32)
TpmIoGetLocality = CFUNCTYPE(c_uint32, POINTER(c_uint32), c_uint32)
TpmIoGetPhysicalPresence = CFUNCTYPE(c_uint32, POINTER(c_uint8), c_uint32)


class LibtpmsCallbacks(ctypes.Structure):
    """``struct libtpms_callbacks``; ``sizeOfStruct`` must be ``sizeof`` it."""

    _fields_ = [
        ("sizeOfStruct", c_int),
        ("tpm_nvram_init", TpmNvramInit),
        ("tpm_nvram_loaddata", TpmNvramLoadData),
        ("tpm_nvram_storedata", TpmNvramStoreData),
        ("tpm_nvram_deletename", TpmNvramDeleteName),
        ("tpm_io_init", TpmIoInit),
        ("tpm_io_getlocality", TpmIoGetLocality),
        ("tpm_io_getphysicalpresence", TpmIoGetPhysicalPresence),
    ]


# -- loading ------------------------------------------------------------------
def _default_names() -> tuple[str, ...]:
    found = ctypes.util.find_library("tpms")
    names = [found] if found else []
    if "libtpms.so.0" not in names:
        names.append("libtpms.so.0")
    return tuple(names)


#: Names (or paths) tried in order by :func:`load` when none is given.
LIBRARY_NAMES: tuple[str, ...] = _default_names()

INSTALL_HINT = (
    "install libtpms (Debian/Ubuntu: apt-get install libtpms0; Fedora: dnf install libtpms) "
    "or pass library=<path to libtpms.so>"
)

_u8p = POINTER(c_uint8)


class Api:
    """The loaded library with its prototypes declared.

    Attributes are the C functions, named as in the headers; ``libc_malloc``
    is the C library's ``malloc`` (for buffers libtpms will ``free()``).
    """

    def __init__(self, lib: ctypes.CDLL, path: str) -> None:
        self.lib = lib
        self.path = path

        def fn(name: str, restype: object, *argtypes: object) -> ctypes._CFunctionType:
            f: ctypes._CFunctionType = getattr(lib, name)
            f.restype = restype  # type: ignore[assignment]
            f.argtypes = argtypes  # type: ignore[assignment]
            return f

        self.TPMLIB_GetVersion = fn("TPMLIB_GetVersion", c_uint32)
        self.TPMLIB_ChooseTPMVersion = fn("TPMLIB_ChooseTPMVersion", c_uint32, c_int)
        self.TPMLIB_RegisterCallbacks = fn("TPMLIB_RegisterCallbacks", c_uint32, POINTER(LibtpmsCallbacks))
        self.TPMLIB_MainInit = fn("TPMLIB_MainInit", c_uint32)
        self.TPMLIB_Terminate = fn("TPMLIB_Terminate", None)
        self.TPMLIB_Process = fn(
            "TPMLIB_Process",
            c_uint32,
            POINTER(_u8p),
            POINTER(c_uint32),
            POINTER(c_uint32),
            c_char_p,
            c_uint32,
        )
        self.TPMLIB_CancelCommand = fn("TPMLIB_CancelCommand", c_uint32)
        self.TPMLIB_GetTPMProperty = fn("TPMLIB_GetTPMProperty", c_uint32, c_int, POINTER(c_int))
        self.TPMLIB_GetInfo = fn("TPMLIB_GetInfo", c_void_p, c_int)
        self.TPMLIB_SetBufferSize = fn(
            "TPMLIB_SetBufferSize", c_uint32, c_uint32, POINTER(c_uint32), POINTER(c_uint32)
        )
        self.TPMLIB_GetState = fn("TPMLIB_GetState", c_uint32, c_int, POINTER(_u8p), POINTER(c_uint32))
        self.TPMLIB_SetState = fn("TPMLIB_SetState", c_uint32, c_int, c_char_p, c_uint32)
        self.TPM_IO_Hash_Start = fn("TPM_IO_Hash_Start", c_uint32)
        self.TPM_IO_Hash_Data = fn("TPM_IO_Hash_Data", c_uint32, c_char_p, c_uint32)
        self.TPM_IO_Hash_End = fn("TPM_IO_Hash_End", c_uint32)
        self.TPM_IO_TpmEstablished_Get = fn("TPM_IO_TpmEstablished_Get", c_uint32, POINTER(c_uint8))
        self.TPM_IO_TpmEstablished_Reset = fn("TPM_IO_TpmEstablished_Reset", c_uint32)
        # A second handle on TPM_IO_TpmEstablished_Get with no argtypes (ctypes
        # then converts nothing): for callers that always pass a byref(c_uint8).
        unchecked = ctypes.CDLL(path).TPM_IO_TpmEstablished_Get
        unchecked.restype = c_uint32
        self.established_get_unchecked = unchecked
        self.TPM_Free = fn("TPM_Free", None, c_void_p)
        self.TPMLIB_SetDebugLevel = fn("TPMLIB_SetDebugLevel", None, c_uint)

        libc = ctypes.CDLL(None)
        self.libc_malloc = libc.malloc
        self.libc_malloc.restype = c_void_p
        self.libc_malloc.argtypes = [ctypes.c_size_t]

    @property
    def version(self) -> tuple[int, int, int]:
        """libtpms' version as (major, minor, micro)."""
        v = int(self.TPMLIB_GetVersion())
        return (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF


_cache: dict[str, Api] = {}
_cache_lock = threading.Lock()


def load(library: str | None = None) -> Api:
    """Load libtpms (once per name) and declare its prototypes.

    *library* is a file name or path; None tries :data:`LIBRARY_NAMES`.
    Raises :class:`tpmdev.BackendError` with installation advice if no
    candidate loads or one lacks the symbols of libtpms 0.6 or later.
    """
    names = (library,) if library is not None else LIBRARY_NAMES
    errors: list[str] = []
    with _cache_lock:
        for name in names:
            api = _cache.get(name)
            if api is not None:
                return api
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                errors.append(str(exc))
                continue
            try:
                api = Api(lib, name)
            except AttributeError as exc:
                raise BackendError(
                    f"{name} does not look like libtpms 0.6 or later ({exc}); {INSTALL_HINT}"
                ) from None
            _cache[name] = api
            return api
    tried = ", ".join(repr(n) for n in names) or "nothing (no candidate names)"
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise BackendError(f"libtpms is not available: tried {tried}{detail}; {INSTALL_HINT}")
