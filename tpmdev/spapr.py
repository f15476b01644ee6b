"""The sPAPR vTPM device: QEMU's ``tpm-spapr`` (pSeries) joined to a backend.

Bus glue around the message core in :mod:`tpmdev.hw.spapr` on the shared
device layer (:class:`tpmdev._device.Device`: reset order, attach, close,
asynchronous worker, backend-error policy). The guest's H_SEND_CRQ entries
go to :meth:`SPAPR.receive_crq`; the device reaches the guest through three
host callables: ``dma_read`` and ``dma_write`` for the RTCE buffer and
``send_crq`` for answers. Putting an answer into the guest's queue, and
what happens when that queue is full (QEMU drops the answer), is the host's
business: the device ignores what ``send_crq`` returns. A host callable that
raises is contained (a failed DMA transfer answers the guest with QEMU's
error entry; a lost answer stays lost) and logged with its traceback.

In asynchronous mode the response reaches the guest when it is applied: at
the next :meth:`SPAPR.receive_crq`, :meth:`SPAPR.poll` or :meth:`SPAPR.wait`
(``on_complete`` tells when to poll).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from tpmdev._device import Device
from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError, ConfigurationError
from tpmdev.hw.spapr import SPAPR_VTPM_BUFFER_MAX, SPAPR_VTPM_DT_COMPATIBLE, SpaprCore

__all__ = ["SPAPR"]

log = logging.getLogger(__name__)


class SPAPR(Device):
    """A pSeries vTPM (VIO, CRQ and RTCE DMA), as QEMU's ``tpm-spapr``.

    :param dma_read: ``(addr, n) -> bytes`` reads guest memory at an I/O bus
        address; fewer bytes than asked (``b""``) means not mapped.
    :param dma_write: ``(addr, data)`` writes it; return False (or a byte
        count smaller than ``len(data)``) when the address is not mapped.
    :param send_crq: ``(entry)`` puts a 16-byte answer into the guest's queue.

    The other parameters are :class:`tpmdev._device.Device`'s.
    """

    _Core = SpaprCore
    buffer_max = SPAPR_VTPM_BUFFER_MAX
    _name = "SPAPR"

    receive_crq: Callable[[bytes], int]

    def __init__(
        self,
        backend: Backend,
        *,
        dma_read: Callable[[int, int], bytes],
        dma_write: Callable[[int, bytes], object],
        send_crq: Callable[[bytes], object],
        tpm_version: Optional[int] = None,
        asynchronous: bool = False,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
    ) -> None:
        for name, fn in (("dma_read", dma_read), ("dma_write", dma_write), ("send_crq", send_crq)):
            if not callable(fn):
                raise ConfigurationError(f"SPAPR needs {name} to be a callable, got {type(fn).__name__}")
        self._host = (dma_read, dma_write, send_crq)
        super().__init__(
            backend,
            tpm_version=tpm_version,
            asynchronous=asynchronous,
            close_backend=close_backend,
            on_complete=on_complete,
            on_backend_error=on_backend_error,
        )

    def _make_core(self, request: Callable[[int], object]) -> Any:
        version = self._forced_version or 0
        return self._Core(version, self.buffer_max, request, *self._host, self._host_failure)

    def _bind_core(self) -> None:
        self.receive_crq = self.core.receive_crq

    @staticmethod
    def _host_failure(what: str, exc: Exception) -> None:
        log.error("SPAPR: host callable %s failed", what, exc_info=exc)

    @property
    def dt_compatible(self) -> str:
        """The device tree ``compatible`` of the vTPM node for this TPM version."""
        return SPAPR_VTPM_DT_COMPATIBLE.get(self.tpm_version, "IBM,vtpm")
