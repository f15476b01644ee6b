"""Guest-side drivers: software that uses a frontend the way Linux's drivers
(and, for the CRB, EDK2) do, for demos, tests, benchmarks and the TSS
bridges (:mod:`tpmdev.tcti`, ``tpmdev tcti``, ``tpmdev serve``).

Every driver has ``transmit(command, locality=0) -> bytes`` and the kernel's
timeouts (:class:`Timeouts`); :func:`for_device` builds the one a frontend
needs. The TIS driver needs only an object with ``read(offset, size)`` and
``write(offset, value, size)``; the TIS-over-I2C driver one with
``i2c_write(data)`` and ``i2c_read(count)``.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Union

from tpmdev.drivers._timeouts import TPM2_TIMEOUTS, TPM12_TIMEOUTS, Timeouts, for_version
from tpmdev.drivers.crb import CrbDriver, CrbError, CrbTimeout
from tpmdev.drivers.spapr import IbmvtpmDriver, SpaprDriverError, SpaprPlatform, SpaprTimeout
from tpmdev.drivers.tis import TisDriver, TisError, TisTimeout
from tpmdev.drivers.tis_i2c import TisI2CDriver, TisI2CError, TisI2CTimeout
from tpmdev.errors import ConfigurationError

__all__ = [
    "Driver",
    "AnyDriver",
    "for_device",
    "Timeouts",
    "TPM2_TIMEOUTS",
    "TPM12_TIMEOUTS",
    "for_version",
    "TisDriver",
    "TisTimeout",
    "TisError",
    "CrbDriver",
    "CrbError",
    "CrbTimeout",
    "TisI2CDriver",
    "TisI2CError",
    "TisI2CTimeout",
    "IbmvtpmDriver",
    "SpaprPlatform",
    "SpaprDriverError",
    "SpaprTimeout",
    "TIMEOUT_ERRORS",
]

#: The exceptions a driver raises when a wait ran out (all are also TimeoutError).
TIMEOUT_ERRORS = (TisTimeout, CrbTimeout, TisI2CTimeout, SpaprTimeout)


class Driver(Protocol):
    """What every driver offers."""

    tpm_version: int
    cancels: int

    def transmit(self, command: bytes, locality: Optional[int] = None) -> bytes: ...


AnyDriver = Union[TisDriver, CrbDriver, TisI2CDriver, IbmvtpmDriver]


def for_device(
    dev: Any,
    *,
    timeouts: Optional[Timeouts] = None,
    timeout: Optional[float] = None,
    platform: Optional[SpaprPlatform] = None,
) -> AnyDriver:
    """The driver Linux would bind to *dev*, probed and ready for ``transmit``.

    * :class:`tpmdev.TIS`, :class:`tpmdev.TISSysbus`: ``tpm_tis`` (probe:
      TPM 2.0 or 1.2 from the answer to the TPM 2.0 probe);
    * :class:`tpmdev.CRB`: ``tpm_crb`` (TPM 2.0), at the device's ``address``;
    * :class:`tpmdev.TISI2C`: ``tpm_tis_i2c`` (its probe: guard times, locality
      0, the data checksum, then the TIS probe);
    * :class:`tpmdev.SPAPR`: ``tpm_ibmvtpm`` over *platform*, the
      :class:`SpaprPlatform` whose ``dma_read`` / ``dma_write`` / ``send_crq``
      the device was built with (found from those if not given).

    *timeouts* / *timeout* are the drivers' options of the same names.
    """
    from tpmdev.crb import CRB
    from tpmdev.spapr import SPAPR
    from tpmdev.tis import TIS, TISSysbus
    from tpmdev.tis_i2c import TISI2C

    kind = dev
    if isinstance(kind, (TIS, TISSysbus)):
        tis = TisDriver(dev, timeouts=timeouts, timeout=timeout)
        tis.probe()
        return tis
    if isinstance(kind, CRB):
        crb = CrbDriver(dev, address=kind.address, timeouts=timeouts, timeout=timeout)
        crb.probe()
        return crb
    if isinstance(kind, TISI2C):
        i2c = TisI2CDriver(dev, timeouts=timeouts, timeout=timeout, sleep=_no_sleep)
        i2c.probe()
        return i2c
    if isinstance(kind, SPAPR):
        if platform is None:
            platform = _platform_of(kind)
        spapr = IbmvtpmDriver(dev, platform, timeouts=timeouts, timeout=timeout)
        spapr.probe()
        return spapr
    raise ConfigurationError(
        f"no driver for {type(dev).__name__}: for_device takes a TIS, TISSysbus, CRB, TISI2C or SPAPR"
    )


def _no_sleep(seconds: float) -> None:
    """The I2C guard times: a model needs none (Linux sleeps them on real buses)."""


def _platform_of(dev: Any) -> SpaprPlatform:
    for fn in getattr(dev, "_host", ()):
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, SpaprPlatform):
            return owner
    raise ConfigurationError(
        "for_device: this SPAPR device was not built on a SpaprPlatform's dma_read/dma_write/send_crq; "
        "pass platform= (the guest memory and queue the device talks to)"
    )
