"""Guest-side drivers: software that uses a frontend the way firmware and OS
drivers do (for demos, tests and benchmarks). The TIS driver needs only an
object with ``read(offset, size)`` and ``write(offset, value, size)``; the
TIS-over-I2C driver one with ``i2c_write(data)`` and ``i2c_read(count)``."""

from __future__ import annotations

from tpmdev.drivers.crb import CrbDriver, CrbError, CrbTimeout
from tpmdev.drivers.tis import TisDriver, TisTimeout
from tpmdev.drivers.tis_i2c import TisI2CDriver, TisI2CError

__all__ = ["TisDriver", "TisTimeout", "CrbDriver", "CrbError", "CrbTimeout", "TisI2CDriver", "TisI2CError"]
