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
from tpmdev.hw.ops import OP_DTYPE, OP_READ, OP_WRITE, Op, make_ops
from tpmdev.crb import CRB
from tpmdev.spapr import SPAPR
from tpmdev.tis import TIS, TISSysbus
from tpmdev.tis_i2c import TISI2C

__all__ = [
    "TIS",
    "TISSysbus",
    "CRB",
    "SPAPR",
    "TISI2C",
    "USE_EXTENSIONS",
    "OP_DTYPE",
    "OP_READ",
    "OP_WRITE",
    "Op",
    "make_ops",
    "AccessError",
    "BackendError",
    "ConfigurationError",
    "StateError",
    "TpmDevError",
    "backends",
    "__version__",
]

__version__ = "0.1.0"
