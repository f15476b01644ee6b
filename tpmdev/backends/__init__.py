"""TPM backends: who runs the commands a frontend collects.

* :class:`Builtin` -- a software TPM in pure Python (the embedded default).
* :class:`Emulator` -- swtpm, driven exactly as QEMU's ``-tpmdev emulator``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tpmdev.backends.base import DEFAULT_BUFFER_SIZE, Backend

if TYPE_CHECKING:
    from tpmdev.backends.builtin import Builtin
    from tpmdev.backends.emulator import Emulator

__all__ = ["Backend", "DEFAULT_BUFFER_SIZE", "Builtin", "Emulator"]


def __getattr__(name: str) -> object:
    # Imported lazily so that using one backend never imports the others.
    if name == "Builtin":
        from tpmdev.backends.builtin import Builtin

        return Builtin
    if name == "Emulator":
        from tpmdev.backends.emulator import Emulator

        return Emulator
    raise AttributeError(f"module 'tpmdev.backends' has no attribute {name!r}")
