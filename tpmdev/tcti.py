"""tpm2-tss in process: a tpm2-pytss TCTI that reaches the TPM through a device's registers.

``ESAPI(tpmdev.tcti.TCTI(dev))`` runs every ESAPI call through *dev*'s guest
driver (:func:`tpmdev.drivers.for_device`: the register choreography of
Linux's driver for that frontend) to the backend behind the device: no
process boundary, no socket. Needs the optional extra ``tss``
(``pip install 'tpmdev[tss]'``: tpm2-pytss, which builds against the
system's tpm2-tss, Debian ``libtss2-dev``); importing :mod:`tpmdev` never
imports it.

The TCTI contract (tpm2-tss ``tss2_tcti.h``), as this TCTI keeps it:

* ``transmit(command)`` runs the command on the device at once, through the
  driver, at the locality last set (0 by default);
* ``receive(timeout)`` hands back that command's response (the driver has
  already bounded the wait by the kernel's duration for the command);
* ``cancel()`` is the driver's cancel; ``set_locality(n)`` picks the
  locality of the next commands; ``finalize()`` closes the device if the
  TCTI owns it (``close_device=True``).

A driver error (a timeout, a protocol error) fails the command: called
directly, ``tcti.transmit`` raises it; through ESAPI the caller gets the
TSS's ``TSS2_Exception`` (TCTI general failure) and :attr:`TCTI.last_error`
holds the error itself.
"""

from __future__ import annotations

from typing import Any, Optional

from tpmdev.drivers import AnyDriver, Timeouts, for_device
from tpmdev.errors import StateError

try:
    from tpm2_pytss.TCTI import PyTCTI
except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
    raise ImportError(
        "tpmdev.tcti needs tpm2-pytss: pip install 'tpmdev[tss]' "
        "(it builds against tpm2-tss: apt-get install libtss2-dev)"
    ) from exc

__all__ = ["TCTI"]

#: The magic of this TCTI's context (``TSS2_TCTI_CONTEXT_COMMON_V1.magic``).
MAGIC = b"tpmdev\x00\x00"


class TCTI(PyTCTI):  # type: ignore[misc]  # tpm2-pytss has no type information
    """A tpm2-pytss TCTI over a tpmdev device.

    :param dev: any frontend (:class:`tpmdev.TIS`, :class:`tpmdev.TISSysbus`,
        :class:`tpmdev.CRB`, :class:`tpmdev.TISI2C`, :class:`tpmdev.SPAPR`).
    :param driver: the guest driver to use (default: ``for_device(dev)``).
    :param timeouts: for the default driver (default: the kernel's).
    :param close_device: close *dev* when the TCTI is finalized.

    :attr:`driver` is the driver, :attr:`commands` the number of commands run,
    :attr:`last_error` the driver's exception when a command failed.
    """

    def __init__(
        self,
        dev: Any,
        *,
        driver: Optional[AnyDriver] = None,
        timeouts: Optional[Timeouts] = None,
        close_device: bool = False,
    ) -> None:
        self.dev = dev
        self.driver: AnyDriver = driver if driver is not None else for_device(dev, timeouts=timeouts)
        self.locality = 0
        self.commands = 0
        #: the exception of the last command that failed in the driver (None after a success)
        self.last_error: Optional[Exception] = None
        self._close_device = close_device
        self._response: Optional[bytes] = None
        super().__init__(max_size=4096, magic=MAGIC)

    def do_transmit(self, command: bytes) -> None:
        self._response = None
        try:
            self._response = self.driver.transmit(bytes(command), self.locality)
        except Exception as exc:
            self.last_error = exc
            raise
        self.last_error = None
        self.commands += 1

    def do_receive(self, timeout: int) -> bytes:
        response = self._response
        if response is None:
            raise StateError("TCTI receive without a command transmitted first")
        self._response = None
        return response

    def do_cancel(self) -> None:
        cancel = getattr(self.driver, "cancel", None)
        if cancel is not None:
            cancel()

    def do_set_locality(self, locality: int) -> None:
        self.locality = int(locality)

    def do_finalize(self) -> None:
        if self._close_device:
            self.dev.close()
