"""Glue between tpmdev's devices and machine simulators (unicorn, Qiling, avatar2).

Each adapter is a module of its own, imported by name
(``tpmdev.adapters.unicorn``, ``tpmdev.adapters.qiling``,
``tpmdev.adapters.avatar2``), so that a simulator is needed only by those
who use it.
"""

from __future__ import annotations

__all__: list[str] = []
