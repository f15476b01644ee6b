"""Shared by the client tests: every frontend built on a backend, in either
variant of its register core, and a gate that makes a backend stall.

``make_device(frontend, backend, impl, **options)`` builds one of
:data:`FRONTENDS` (``tis``, ``tis-sysbus``, ``crb``, ``tis-i2c``, ``spapr``;
the sPAPR vTPM on a fresh :class:`~tpmdev.drivers.SpaprPlatform`) whose
register core is the compiled one (``impl="c"``) or the pure one (``"py"``).

:class:`Gate` is the fault injection of the timeout tests: armed, it holds
the next command inside the backend (the device runs it on its worker, in
asynchronous mode) until the backend is asked to cancel, then answers
TPM_RC_CANCELED; the real cancel of the backend (swtpm: CMD_CANCEL_TPM_CMD)
still runs.
"""

from __future__ import annotations

import threading
from typing import Any

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import SpaprPlatform

__all__ = ["FRONTENDS", "make_device", "Gate", "TPM_RC_CANCELED"]

FRONTENDS = ("tis", "tis-sysbus", "crb", "tis-i2c", "spapr")

TPM_RC_CANCELED = 0x909
_CLASSES: dict[str, tuple[type, str, str]] = {
    "tis": (tpmdev.TIS, "tis", "TisCore"),
    "tis-sysbus": (tpmdev.TISSysbus, "tis", "TisCore"),
    "crb": (tpmdev.CRB, "crb", "CrbCore"),
    "tis-i2c": (tpmdev.TISI2C, "tis", "TisCore"),
    "spapr": (tpmdev.SPAPR, "spapr", "SpaprCore"),
}


def device_class(frontend: str, impl: str) -> type:
    cls, module, core = _CLASSES[frontend]
    if impl == "c" or module not in tpmdev.hw.HOT_MODULES:  # (the sPAPR core is pure Python only)
        return cls
    pure_core = getattr(tpmdev.hw.pure(module), core)
    if pure_core is cls._Core:
        return cls
    return type(cls.__name__, (cls,), {"_Core": pure_core})


def make_device(frontend: str, backend: Backend, impl: str = "c", **options: Any) -> Any:
    cls = device_class(frontend, impl)
    if frontend == "spapr":
        platform = SpaprPlatform()
        options.update(dma_read=platform.dma_read, dma_write=platform.dma_write, send_crq=platform.send_crq)
    return cls(backend, **options)


class Gate:
    """Makes *backend* stall on the next command once :meth:`arm` ed."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cancels = 0
        self.held = threading.Event()  # a command is being held
        self._armed = False
        self._release = threading.Event()
        inner_execute = backend._execute
        inner_cancel = backend._cancel

        def execute(command: bytes, locality: int) -> bytes:
            if self._armed:
                self._armed = False
                self.held.set()
                self._release.wait(60)
                return bytes.fromhex("8001 0000000a") + TPM_RC_CANCELED.to_bytes(4, "big")
            return inner_execute(command, locality)

        def cancel() -> None:
            self.cancels += 1
            inner_cancel()
            self._release.set()

        backend._execute = execute  # type: ignore[method-assign]
        backend._cancel = cancel  # type: ignore[method-assign]

    def arm(self) -> None:
        self._release.clear()
        self.held.clear()
        self._armed = True

    def release(self) -> None:
        """Let a held command finish without a cancel (the bus has none)."""
        self._release.set()
