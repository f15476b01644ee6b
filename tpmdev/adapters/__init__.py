"""Glue between tpmdev's devices and machine simulators.

Each adapter is its own module, imported by name (it needs its simulator,
an optional dependency): :mod:`tpmdev.adapters.unicorn`.
"""

from __future__ import annotations

__all__: list[str] = []
