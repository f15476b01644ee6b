"""Backends from strings a user can put on a command line.

=============================  =============================================
spec                           backend
=============================  =============================================
``builtin``, ``builtin:2``     :class:`~tpmdev.backends.Builtin` TPM 2.0
``builtin:1.2``                :class:`~tpmdev.backends.Builtin` TPM 1.2
``libtpms``, ``libtpms:1.2``   :class:`~tpmdev.backends.Libtpms` in process
``swtpm``, ``swtpm:1.2``       :meth:`Emulator.spawn <tpmdev.backends.Emulator.spawn>`
                               on a private state directory (removed on close)
``swtpm:CTRL_SOCKET_PATH``     :class:`~tpmdev.backends.Emulator` on a running
                               ``swtpm socket --ctrl type=unixio,path=...``
``passthrough[:/dev/tpmN]``    :class:`~tpmdev.backends.Passthrough`
=============================  =============================================

The TPM version after a colon may be written ``1``, ``1.2``, ``2`` or ``2.0``.
"""

from __future__ import annotations

from tpmdev.backends.base import Backend
from tpmdev.errors import ConfigurationError

__all__ = ["open_backend", "BACKEND_KINDS"]

#: The backend kinds :func:`open_backend` knows.
BACKEND_KINDS = ("builtin", "libtpms", "swtpm", "passthrough")

_VERSIONS = {"1": 1, "1.2": 1, "2": 2, "2.0": 2}


def _version(kind: str, arg: str, default: int) -> int:
    if arg == "":
        return default
    try:
        return _VERSIONS[arg]
    except KeyError:
        raise ConfigurationError(
            f"backend spec {kind}:{arg}: the TPM version must be 1.2 or 2.0 (written 1, 1.2, 2 or 2.0)"
        ) from None


def open_backend(spec: str, tpm_version: int = 2) -> Backend:
    """Build the backend described by *spec* (see the module documentation);
    *tpm_version* (1 or 2) is the TPM a spec that names none runs."""
    if not isinstance(spec, str):
        raise ConfigurationError(f"a backend spec is a string, got {type(spec).__name__}")
    if isinstance(tpm_version, bool) or tpm_version not in (1, 2):
        raise ConfigurationError(f"tpm_version must be 1 (TPM 1.2) or 2 (TPM 2.0), got {tpm_version!r}")
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "builtin":
        from tpmdev.backends.builtin import Builtin

        return Builtin(tpm_version=_version(kind, arg, tpm_version))
    if kind == "libtpms":
        from tpmdev.backends.libtpms import Libtpms

        return Libtpms(tpm_version=_version(kind, arg, tpm_version))
    if kind == "swtpm":
        from tpmdev.backends.emulator import Emulator

        if arg in _VERSIONS or arg == "":
            return Emulator.spawn(None, tpm_version=_version(kind, arg, tpm_version))
        return Emulator(arg)
    if kind == "passthrough":
        from tpmdev.backends.passthrough import Passthrough

        return Passthrough(arg or "/dev/tpm0")
    raise ConfigurationError(
        f"unknown backend spec {spec!r}: use one of builtin[:1.2], libtpms[:1.2], swtpm[:1.2], "
        "swtpm:CTRL_SOCKET_PATH, passthrough[:/dev/tpmN]"
    )
