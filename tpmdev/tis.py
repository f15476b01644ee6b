"""The TIS device: the compiled TIS register model on the shared device layer.

QEMU's ``tpm-tis`` (ISA, PC platform). The register semantics are the core's
(:mod:`tpmdev.hw.tis`); the plumbing (reset order, attach, close, the worker
of asynchronous mode, the backend-error policy) is :mod:`tpmdev._device`'s.
This module adds the TIS's own options (the interrupt line, PPI) and binds
the core's compiled methods on the instance (``dev.read`` / ``dev.write``
are the core's methods themselves, so the hot path has no Python frame).

Completion modes:

* synchronous (default): the backend runs inside the tpmGo write, so the
  response is in place when ``write`` returns. Deterministic: good for
  fuzzing and unit tests.
* ``asynchronous=True``: the command runs on a worker thread; STS shows the
  locality executing until the response is applied, which happens on the
  caller's thread at the next register access, :meth:`TIS.poll` or
  :meth:`TIS.wait` (as QEMU applies completions on its main loop).
  ``on_complete`` is called from the worker when a response is ready to be
  applied, for hosts that want to poll then.

Backend failures never reach the guest as exceptions: the guest reads QEMU's
fatal response (``00 C4 00 00 00 0A 00 00 00 09``), the error is logged and
kept in :attr:`TIS.backend_error`, and ``on_backend_error`` is called.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from tpmdev._device import MmioDevice
from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError, ConfigurationError
from tpmdev.hw import tis as _hw_tis
from tpmdev.hw.regs import TIS_BUFFER_MAX, TIS_REGION_SIZE

__all__ = ["TIS"]

IrqCallback = Callable[[int], object]


class TIS(MmioDevice):
    """A TPM TIS (FIFO) device at register level, as QEMU's ``tpm-tis``.

    :param backend: the TPM that runs commands (:mod:`tpmdev.backends`).
    :param tpm_version: 1 (TPM 1.2) or 2 (TPM 2.0) for the interface
        registers; None asks the backend.
    :param irq: called with the new level (0 or 1) of the interrupt line,
        only when it changes.
    :param ppi: whether the platform has the Physical Presence Interface page
        (QEMU's ``ppi`` property; used by the firmware descriptions).
    :param asynchronous: run commands on a worker thread (see module doc).
    :param irq_num: the interrupt number reported in TPM_INT_VECTOR (QEMU's
        ``irq`` property, 0..15, default 5).
    :param close_backend: close the backend when the device is closed.
    :param on_complete: with ``asynchronous``, called (from the worker) when
        a response is ready to be applied.
    :param on_backend_error: called with the :class:`BackendError` when the
        backend failed a command (the guest got a TPM failure response).

    Offsets given to :meth:`read` and :meth:`write` are relative to the
    device base (0 .. 0x4FFF; the PC platform maps it at 0xFED40000).
    """

    #: The register model class (compiled when available).
    _Core = _hw_tis.TisCore
    _name = "TIS"
    buffer_max = TIS_BUFFER_MAX

    #: Size of the MMIO region.
    region_size = TIS_REGION_SIZE

    def __init__(
        self,
        backend: Backend,
        *,
        tpm_version: Optional[int] = None,
        irq: Optional[IrqCallback] = None,
        ppi: bool = True,
        asynchronous: bool = False,
        irq_num: int = 5,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
    ) -> None:
        if isinstance(irq_num, bool) or not isinstance(irq_num, int) or not 0 <= irq_num <= 15:
            raise ConfigurationError(f"irq_num must be an ISA interrupt 0..15, got {irq_num!r}")
        if irq is not None and not callable(irq):
            raise ConfigurationError("irq must be a callable taking the new line level, or None")
        self.ppi = bool(ppi)
        self.irq_num = irq_num
        self._irq = irq
        super().__init__(
            backend,
            tpm_version=tpm_version,
            asynchronous=asynchronous,
            close_backend=close_backend,
            on_complete=on_complete,
            on_backend_error=on_backend_error,
        )

    def _make_core(self, request: Callable[[int], object]) -> Any:
        return self._Core(self._forced_version or 0, self.buffer_max, self.irq_num, self._irq, request)

    @property
    def irq_level(self) -> int:
        """The current level of the interrupt line."""
        return int(self.core.irq_level)

    @property
    def active_locality(self) -> Optional[int]:
        locality: Optional[int] = self.core.active_locality
        return locality
