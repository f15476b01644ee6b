"""Glue between tpmdev's devices and machine simulators (unicorn, Qiling, avatar2).

Each adapter is a module of its own, imported by name
(``tpmdev.adapters.qiling``, ...), so that a simulator is needed only by
those who use it.
"""

__all__: list[str] = []
