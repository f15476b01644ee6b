"""The TIS devices: the compiled TIS register model on the shared device layer.

QEMU's ``tpm-tis`` (ISA, PC platform) is :class:`TIS`; QEMU's
``tpm-tis-device`` (sysbus, Arm ``virt``) is :class:`TISSysbus`, the same
registers with the same values (QEMU shares one TIS state between them and
so does tpmdev: the sysbus class only changes the options, see qemu-tpm-spec
section 3). The register semantics are the core's
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
kept in :attr:`TIS.backend_error`, and ``on_backend_error`` is called. Nor
do the host's callbacks: an exception from ``irq``, ``on_complete`` or
``on_backend_error`` is logged and kept in :attr:`TIS.callback_error`.

An asynchronous TIS should be closed (or used as a context manager); one
that is dropped without :meth:`TIS.close` is still collected, and its worker
thread and the backend it owns go with it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from tpmdev._device import MmioDevice, check_callback, check_int
from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError
from tpmdev.firmware.described import FirmwareDescribed, PhysicalPresence
from tpmdev.hw import tis as _hw_tis
from tpmdev.hw.regs import TIS_BASE_ADDRESS, TIS_BUFFER_MAX, TIS_REGION_SIZE, TIS_SYSBUS_BASE_ADDRESS

__all__ = ["TIS", "TISSysbus"]

IrqCallback = Callable[[int], object]


class TIS(FirmwareDescribed, PhysicalPresence, MmioDevice):
    """A TPM TIS (FIFO) device at register level, as QEMU's ``tpm-tis``.

    :param backend: the TPM that runs commands (:mod:`tpmdev.backends`).
    :param tpm_version: 1 (TPM 1.2) or 2 (TPM 2.0) for the interface
        registers; None asks the backend.
    :param irq: called with the new level (0 or 1) of the interrupt line,
        only when it changes. An exception from it is logged and kept in
        :attr:`TIS.callback_error`; the register access goes on.
    :param ppi: whether the device has the Physical Presence Interface page
        (QEMU's ``ppi`` property): :attr:`ppi` is then its
        :class:`~tpmdev.firmware.ppi.PpiPage` (``ppi.memory``, 0x400 bytes a
        simulator maps as RAM at :attr:`ppi_address`), else None.
    :param memory_clear: called (no arguments) at every :meth:`reset` while
        the page's ``movv`` bit 0 is set: the host then zeroes all guest RAM
        but the PPI page, as QEMU does (the TCG memory-overwrite request).
        Contained like ``irq``. Never called without the PPI page.
    :param asynchronous: run commands on a worker thread (see module doc).
    :param irq_num: the interrupt number reported in TPM_INT_VECTOR (QEMU's
        ``irq`` property, 0..15, default 5).
    :param close_backend: close the backend when the device is closed.
    :param on_complete: with ``asynchronous``, called (from the worker) when
        a response is ready to be applied.
    :param on_backend_error: called with the :class:`BackendError` when the
        backend failed a command (the guest got a TPM failure response).

    Offsets given to :meth:`read` and :meth:`write` are relative to the
    device base (0 .. 0x4FFF; the PC platform maps it at
    :attr:`base_address`, 0xFED40000).
    """

    #: The register model class (compiled when available).
    _Core = _hw_tis.TisCore
    _name = "TIS"
    buffer_max = TIS_BUFFER_MAX

    #: Size of the MMIO region.
    region_size = TIS_REGION_SIZE
    #: Where the platform maps the region (QEMU's TPM_TIS_ADDR_BASE on PC).
    base_address = TIS_BASE_ADDRESS
    #: Largest ``irq_num`` the bus takes, and what it is called in messages.
    _irq_num_max = 15
    _irq_num_what = "an ISA interrupt"

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
        memory_clear: Optional[Callable[[], object]] = None,
    ) -> None:
        self.irq_num = check_int("irq_num", irq_num, 0, self._irq_num_max, self._irq_num_what)
        self._irq = check_callback("irq", irq, " taking the new line level")
        self._init_ppi(ppi, memory_clear)
        super().__init__(
            backend,
            tpm_version=tpm_version,
            asynchronous=asynchronous,
            close_backend=close_backend,
            on_complete=on_complete,
            on_backend_error=on_backend_error,
        )

    def _make_core(self, request: Callable[[int], object]) -> Any:
        irq = None if self._irq is None else self._contain("irq", self._irq)
        return self._Core(self._forced_version or 0, self.buffer_max, self.irq_num, irq, request)

    @property
    def irq_level(self) -> int:
        """The current level of the interrupt line."""
        return int(self.core.irq_level)

    @property
    def active_locality(self) -> Optional[int]:
        locality: Optional[int] = self.core.active_locality
        return locality

    def _state_config(self) -> dict[str, object]:
        return {"irq_num": self.irq_num, "ppi": bool(self.ppi)}


class TISSysbus(TIS):
    """A TPM TIS device on a system bus, as QEMU's ``tpm-tis-device``
    (Arm ``virt``; the Linux driver binds it as ``tcg,tpm-tis-mmio``).

    The registers, their values and every behaviour are the :class:`TIS`'s.
    What differs is the platform around them:

    * no Physical Presence Interface (QEMU's sysbus device has no ``ppi``
      property; :attr:`ppi` and :attr:`ppi_address` are always None, and
      there is no ``memory_clear``);
    * ``irq`` is the device's sysbus IRQ 0, which the platform wires (on
      ``virt``, through the platform bus to the GIC); ``irq_num`` is only the
      number reported in TPM_INT_VECTOR, a 32-bit property QEMU does not
      range-check (default 5);
    * the platform bus places the region: :attr:`base_address` is where Arm
      ``virt`` puts its first dynamic device, 0x0C000000.

    The other parameters are :class:`TIS`'s.
    """

    _name = "TIS-sysbus"
    base_address = TIS_SYSBUS_BASE_ADDRESS
    _irq_num_max = 0xFFFFFFFF
    _irq_num_what = "a 32-bit value"

    def __init__(
        self,
        backend: Backend,
        *,
        tpm_version: Optional[int] = None,
        irq: Optional[IrqCallback] = None,
        asynchronous: bool = False,
        irq_num: int = 5,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
    ) -> None:
        super().__init__(
            backend,
            tpm_version=tpm_version,
            irq=irq,
            ppi=False,
            asynchronous=asynchronous,
            irq_num=irq_num,
            close_backend=close_backend,
            on_complete=on_complete,
            on_backend_error=on_backend_error,
        )
