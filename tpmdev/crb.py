"""The CRB device: QEMU's ``tpm-crb``, the CRB register core joined to a backend.

The registers are :mod:`tpmdev.hw.crb`; everything else (reset order,
attach, close, asynchronous mode, the backend-error policy) is the shared
device layer, :mod:`tpmdev._device`. The guest polls: the CRB has no
interrupt (QEMU wires none).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from tpmdev._device import MmioDevice
from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError, ConfigurationError
from tpmdev.firmware.described import FirmwareDescribed, PhysicalPresence
from tpmdev.hw import crb as _hw_crb
from tpmdev.hw.regs import CRB_BASE_ADDRESS, CRB_BUFFER_SIZE, CRB_LOCALITY_SIZE, CRB_NUM_LOCALITIES

__all__ = ["CRB"]


class CRB(FirmwareDescribed, PhysicalPresence, MmioDevice):
    """A TPM CRB (Command Response Buffer) device, as QEMU's ``tpm-crb``.

    :param backend: the TPM that runs commands (:mod:`tpmdev.backends`).
    :param tpm_version: 1 or 2; None asks the backend (the CRB registers are
        the same for both; QEMU does not refuse TPM 1.2).
    :param ppi: whether the device has the Physical Presence Interface page
        (QEMU's ``ppi`` property): :attr:`ppi` is then its
        :class:`~tpmdev.firmware.ppi.PpiPage`, else None (see :class:`tpmdev.TIS`).
    :param memory_clear: called at every :meth:`reset` while the page's
        ``movv`` bit 0 is set (the host zeroes guest RAM; see :class:`tpmdev.TIS`).
    :param asynchronous: run commands on a worker thread; CTRL_START reads 1
        until the response is applied (at the next access, :meth:`poll` or
        :meth:`wait`).
    :param localities: 1, QEMU's device (region 0x1000), or 5, the PTP layout
        with locality arbitration (region 0x5000; not in QEMU, see
        :mod:`tpmdev.hw.crb`).
    :param address: the guest-physical base, shown in the command and
        response address registers (QEMU: 0xFED40000).

    ``close_backend``, ``on_complete`` and ``on_backend_error`` are the
    device layer's (see :class:`tpmdev.TIS`). Offsets given to :meth:`read`
    and :meth:`write` are relative to the base; ``mmio`` holds the registers
    and the data buffer, ``buffer`` is the data buffer (``mmio[0x80:0x1000]``),
    which a simulator may map as plain RAM.
    """

    _Core = _hw_crb.CrbCore
    _name = "CRB"
    buffer_max = CRB_BUFFER_SIZE

    def __init__(
        self,
        backend: Backend,
        *,
        tpm_version: Optional[int] = None,
        ppi: bool = True,
        asynchronous: bool = False,
        localities: int = 1,
        address: int = CRB_BASE_ADDRESS,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
        memory_clear: Optional[Callable[[], object]] = None,
    ) -> None:
        if isinstance(localities, bool) or localities not in (1, CRB_NUM_LOCALITIES):
            raise ConfigurationError(
                f"localities must be 1 (QEMU's tpm-crb) or {CRB_NUM_LOCALITIES} (the PTP layout), "
                f"got {localities!r}"
            )
        self._init_ppi(ppi, memory_clear)
        self.localities = localities
        self.address = address  # checked by the core
        super().__init__(
            backend,
            tpm_version=tpm_version,
            asynchronous=asynchronous,
            close_backend=close_backend,
            on_complete=on_complete,
            on_backend_error=on_backend_error,
        )

    def _make_core(self, request: Callable[[int], object]) -> Any:
        return self._Core(self._forced_version or 0, self.buffer_max, request, self.localities, self.address)

    @property
    def region_size(self) -> int:  # type: ignore[override]
        """0x1000 per locality."""
        return self.localities * CRB_LOCALITY_SIZE

    @property
    def buffer(self) -> np.ndarray:
        """Locality 0's data buffer: a live view of ``mmio[0x80:0x1000]``."""
        buffer: np.ndarray = self.core.buffer
        return buffer

    @property
    def active_locality(self) -> Optional[int]:
        """The assigned locality (LOC_STATE.locAssigned), or None."""
        locality: Optional[int] = self.core.active_locality
        return locality

    def _state_config(self) -> dict[str, object]:
        return {"localities": self.localities, "address": self.address, "ppi": bool(self.ppi)}
