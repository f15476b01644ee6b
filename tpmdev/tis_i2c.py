"""The TIS-over-I2C device: QEMU's ``tpm-tis-i2c`` on the shared device layer.

The TIS register core (:mod:`tpmdev.hw.tis`, in the QEMU 8.0 variant that
takes INT_ENABLE and INT_STATUS writes from any locality, which came with the
I2C device) behind the I2C translation layer (:mod:`tpmdev.hw.tis_i2c`); the
plumbing (reset order, attach, close, asynchronous mode, backend errors) is
:mod:`tpmdev._device`'s. This module only joins them and puts the bus API on
the device.

Bus API (what a bus master sends never raises; host misuse such as
non-bytes data or a negative count raises :class:`~tpmdev.errors.AccessError`):

* transactions: ``i2c_write(data) -> int`` (START, the register address and
  value bytes, STOP; returns how many bytes were ACKed: the master stops at
  the first NAK), ``i2c_read(count) -> bytes`` (a read transaction of the
  register a previous write selected), ``i2c_read_reg(reg, count) -> bytes``
  (address write, repeated START, read; 0xFF bytes if the address is NAKed);
* events, for a simulator's I2C controller that moves one byte at a time:
  ``i2c_start(recv=False) -> bool``, ``i2c_send(byte) -> bool`` (True = ACK),
  ``i2c_recv() -> int``, ``i2c_nack()``, ``i2c_stop()``.

The device answers any address the bus routes to it; QEMU gives it one with
its ``address`` property (0x2E in QEMU's test). No interrupts over I2C.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from tpmdev._device import Device
from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError
from tpmdev.hw import tis as _hw_tis
from tpmdev.hw.regs import TIS_BUFFER_MAX, TPM_INT_VECTOR_DEFAULT
from tpmdev.hw.tis_i2c import TisI2CCore

__all__ = ["TISI2C"]


class TISI2C(Device):
    """A TPM on an I2C bus, as QEMU's ``tpm-tis-i2c`` (TCG I2C interface).

    :param backend: the TPM that runs commands (:mod:`tpmdev.backends`).
    :param tpm_version: 1 or 2 for the TIS registers behind the I2C ones;
        None asks the backend. (QEMU does not refuse a TPM 1.2 backend; the
        I2C capability register reads TPM 2.0 family all the same.)
    :param asynchronous: run commands on a worker thread; the response is
        applied at the next bus event, :meth:`poll` or :meth:`wait`.
    :param close_backend: close the backend when the device is closed.
    :param on_complete: with ``asynchronous``, called (from the worker) when
        a response is ready to be applied.
    :param on_backend_error: called with the :class:`BackendError` when the
        backend failed a command (the guest got a TPM failure response).

    ``dev.core`` is the TIS register core, ``dev.i2c`` the I2C layer.
    """

    #: The TIS register model class (compiled when available).
    _Core = _hw_tis.TisCore
    _name = "TIS-I2C"
    buffer_max = TIS_BUFFER_MAX

    i2c: TisI2CCore

    def __init__(
        self,
        backend: Backend,
        *,
        tpm_version: Optional[int] = None,
        asynchronous: bool = False,
        close_backend: bool = True,
        on_complete: Optional[Callable[[], object]] = None,
        on_backend_error: Optional[Callable[[BackendError], object]] = None,
    ) -> None:
        super().__init__(
            backend,
            tpm_version=tpm_version,
            asynchronous=asynchronous,
            close_backend=close_backend,
            on_complete=on_complete,
            on_backend_error=on_backend_error,
        )

    def _make_core(self, request: Callable[[int], object]) -> Any:
        # QEMU 8.0's TIS core (INT_ENABLE/INT_STATUS from any locality); no IRQ line
        return self._Core(
            self._forced_version or 0,
            TIS_BUFFER_MAX,
            TPM_INT_VECTOR_DEFAULT,
            None,
            request,
            int_any_locality=True,
        )

    def _bind_core(self) -> None:
        self.i2c = i2c = TisI2CCore(self.core)
        self.i2c_write = i2c.i2c_write
        self.i2c_read = i2c.i2c_read
        self.i2c_read_reg = i2c.i2c_read_reg
        self.i2c_start = i2c.i2c_start
        self.i2c_send = i2c.i2c_send
        self.i2c_recv = i2c.i2c_recv
        self.i2c_nack = i2c.i2c_nack
        self.i2c_stop = i2c.i2c_stop

    def _core_reset(self, tpm_version: int, bufsize: int) -> None:
        # QEMU: the I2C transaction state, locality selection and checksum
        # flag first, then the TIS
        self.i2c.reset(tpm_version, bufsize)

    @property
    def locality(self) -> int:
        """The locality selected through TPM_I2C_LOC_SEL (0..4)."""
        return self.i2c.locality

    @property
    def checksum_enabled(self) -> bool:
        """The TPM_I2C_DATA_CSUM_ENABLE flag (stored only, as by QEMU)."""
        return self.i2c.checksum_enabled

    def _capture_bus(self) -> Optional[tuple[object, ...]]:
        return self.i2c.capture()

    def _restore_bus(self, state: tuple[object, ...]) -> None:
        self.i2c.restore(state)
