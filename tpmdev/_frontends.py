"""A device and its guest driver from command-line words, and its state in a file.

Shared by ``tpmdev tcti`` and ``tpmdev serve`` (:mod:`tpmdev.server` takes the
device these build):

* :func:`open_device` builds a frontend (:data:`FRONTENDS`) on a backend
  (:func:`tpmdev.backends.open` spec) and the driver Linux would bind to it
  (:func:`tpmdev.drivers.for_device`);
* :func:`save_state` / :func:`load_state` keep the whole device and TPM in a
  file between processes: ``dev.save()`` / ``dev.load()`` (the device's
  registers and its backend's TPM in one checked blob, see
  :mod:`tpmdev._state`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any, Optional

from tpmdev.backends import open as open_backend
from tpmdev.drivers import AnyDriver, SpaprPlatform, for_device
from tpmdev.errors import ConfigurationError, StateError

__all__ = ["FRONTENDS", "frontend_class", "add_device_arguments", "open_device", "save_state", "load_state"]

#: ``--frontend`` words -> what they are
FRONTENDS = {
    "tis": "TIS (tpm-tis, ISA)",
    "tis-sysbus": "TIS on sysbus (tpm-tis-device, Arm virt)",
    "tis-i2c": "TIS over I2C (tpm-tis-i2c)",
    "crb": "CRB (tpm-crb)",
    "spapr": "sPAPR vTPM (tpm-spapr, CRQ)",
}


def frontend_class(frontend: str) -> type:
    """The device class of a :data:`FRONTENDS` word."""
    import tpmdev

    classes: dict[str, type] = {
        "tis": tpmdev.TIS,
        "tis-sysbus": tpmdev.TISSysbus,
        "tis-i2c": tpmdev.TISI2C,
        "crb": tpmdev.CRB,
        "spapr": tpmdev.SPAPR,
    }
    if frontend not in classes:
        raise ConfigurationError(f"unknown frontend {frontend!r}: use one of {', '.join(FRONTENDS)}")
    return classes[frontend]


def add_device_arguments(parser: argparse.ArgumentParser, *, backends: str) -> None:
    """The options of a command that runs a device for a TSS: ``--frontend``,
    ``--backend`` (*backends* lists the choices for its help), ``--tpm`` and
    ``--state``."""
    parser.add_argument(
        "--frontend",
        choices=list(FRONTENDS),
        default="tis",
        help="the device: " + ", ".join(f"{k} = {v}" for k, v in FRONTENDS.items()) + " (default tis)",
    )
    parser.add_argument("--backend", default="libtpms", help=f"who runs the TPM: {backends}")
    parser.add_argument("--tpm", choices=["2.0", "2", "1.2"], default="2.0", help="TPM version (default 2.0)")
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="restore the device and TPM from FILE at start (if it exists) and save them there at exit",
    )


def open_device(
    frontend: str, backend: str, *, tpm_version: int = 2, state: Optional[str] = None
) -> tuple[Any, AnyDriver]:
    """``(device, driver)``: *frontend* (a :data:`FRONTENDS` word) on the backend
    *backend* describes, probed by its driver, then restored from the
    :func:`save_state` file *state* if one exists there. The device owns the
    backend."""
    import tpmdev

    if frontend not in FRONTENDS:
        raise ConfigurationError(f"unknown frontend {frontend!r}: use one of {', '.join(FRONTENDS)}")
    if frontend == "tis-i2c" and tpm_version != 2:
        raise ConfigurationError("the TIS over I2C is a TPM 2.0 interface (as QEMU's tpm-tis-i2c)")
    be = open_backend(backend, tpm_version=tpm_version)
    try:
        dev: Any
        if frontend == "spapr":
            platform = SpaprPlatform()
            dev = tpmdev.SPAPR(
                be,
                dma_read=platform.dma_read,
                dma_write=platform.dma_write,
                send_crq=platform.send_crq,
            )
        else:
            dev = frontend_class(frontend)(be)
    except BaseException:
        be.close()
        raise
    try:
        driver = for_device(dev)
        if state and os.path.exists(state):
            load_state(dev, state)
    except BaseException:
        dev.close()
        raise
    return dev, driver


def save_state(dev: Any, path: str) -> None:
    """Write *dev*'s state to *path* (atomically: a complete file or the old one)."""
    data = dev.save()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tpmdev-state.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_state(dev: Any, path: str) -> None:
    """Restore *dev* from a :func:`save_state` file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror}") from None
    try:
        dev.load(data)
    except StateError as exc:
        raise StateError(
            f"{path} is not a tpmdev state file this device can load ({exc}); delete it to start afresh"
        ) from None
