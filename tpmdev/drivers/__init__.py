"""Guest-side drivers: software that uses a frontend the way firmware and OS
drivers do (for demos, tests and benchmarks). They need only an object with
``read(offset, size)`` and ``write(offset, value, size)``."""

from __future__ import annotations

from tpmdev.drivers.crb import CrbDriver, CrbError, CrbTimeout
from tpmdev.drivers.tis import TisDriver, TisTimeout

__all__ = ["TisDriver", "TisTimeout", "CrbDriver", "CrbError", "CrbTimeout"]
