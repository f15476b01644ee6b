"""TPM backends: who runs the commands a frontend collects.

* :class:`Builtin` -- a software TPM in pure Python (the embedded default).
* :class:`Libtpms` -- libtpms loaded into this process: a full TPM, no helper.
* :class:`Emulator` -- swtpm, driven exactly as QEMU's ``-tpmdev emulator``.
* :class:`Passthrough` -- the host's TPM character device, as QEMU's
  ``-tpmdev passthrough``.

:func:`open` builds one from a string (``"builtin:1.2"``, ``"swtpm"``, ...);
:func:`detect_version` asks any backend which TPM it runs, as QEMU asks.
Each backend module is imported only when its class is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tpmdev.backends._open import BACKEND_KINDS
from tpmdev.backends._open import open_backend as open
from tpmdev.backends._probe import probe_buffer_size, probe_version
from tpmdev.backends.base import DEFAULT_BUFFER_SIZE, LOCALITIES, MAX_COMMAND_SIZE, STATE_KEYS, Backend

if TYPE_CHECKING:
    from tpmdev.backends.builtin import Builtin
    from tpmdev.backends.emulator import Emulator
    from tpmdev.backends.libtpms import Libtpms
    from tpmdev.backends.passthrough import Passthrough

__all__ = [
    "Backend",
    "DEFAULT_BUFFER_SIZE",
    "LOCALITIES",
    "MAX_COMMAND_SIZE",
    "STATE_KEYS",
    "BACKEND_KINDS",
    "Builtin",
    "Emulator",
    "Libtpms",
    "Passthrough",
    "open",
    "detect_version",
    "detect_buffer_size",
]


def detect_version(backend: Backend) -> int:
    """The TPM version behind *backend* (2, 1, or 0 if unknown), found as QEMU's
    tpm_util finds it: TPM2_ReadClock, then TPM_GetTicks, judged by the
    response tags. Works before TPM(2)_Startup."""
    return probe_version(backend.execute)


def detect_buffer_size(backend: Backend, tpm_version: int) -> int:
    """The buffer size a TPM reports through GetCapability, as QEMU asks a
    passthrough TPM (4096 when it cannot tell)."""
    return probe_buffer_size(backend.execute, tpm_version)


_LAZY = {
    "Builtin": "tpmdev.backends.builtin",
    "Emulator": "tpmdev.backends.emulator",
    "Libtpms": "tpmdev.backends.libtpms",
    "Passthrough": "tpmdev.backends.passthrough",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tpmdev.backends' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
