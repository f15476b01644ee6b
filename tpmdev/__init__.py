"""tpmdev: register-level TPM device models that behave exactly as QEMU's.

Quick start::

    import tpmdev
    with tpmdev.TIS(tpmdev.backends.Builtin()) as dev:
        dev.write(0x000, 0x02, 1)          # ACCESS: requestUse, locality 0
        print(hex(dev.read(0x018)))        # STS

``USE_EXTENSIONS`` tells whether the compiled register models are loaded
(``TPMDEV_NO_EXTENSIONS=1`` forces the pure-Python ones).
"""

from __future__ import annotations

from tpmdev import backends
from tpmdev.errors import AccessError, BackendError, ConfigurationError, StateError, TpmDevError
from tpmdev.hw import USE_EXTENSIONS
from tpmdev.crb import CRB
from tpmdev.tis import TIS

__all__ = [
    "TIS",
    "CRB",
    "USE_EXTENSIONS",
    "AccessError",
    "BackendError",
    "ConfigurationError",
    "StateError",
    "TpmDevError",
    "backends",
    "__version__",
]

__version__ = "0.1.0"
