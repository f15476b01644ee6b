"""Fuzz harnesses (atheris / libFuzzer) for every guest-facing surface of tpmdev.

One module per target, each with ``TestOneInput(data)`` (the libFuzzer entry
point; raises on a finding) and ``main()`` (runs it under atheris, taking
libFuzzer's command-line flags):

* :mod:`tpmdev.fuzz.tis` -- the TIS registers (ISA or sysbus flavour);
* :mod:`tpmdev.fuzz.crb` -- the CRB registers and data buffer;
* :mod:`tpmdev.fuzz.tis_i2c` -- the TIS over I2C: bus events and transactions;
* :mod:`tpmdev.fuzz.spapr` -- the sPAPR vTPM's CRQ messages and DMA;
* :mod:`tpmdev.fuzz.builtin` -- the builtin TPM's command parser (TPM 2.0 and 1.2).

The register targets run the pure-Python model (what coverage sees) and the
compiled one in lockstep and compare everything the guest can observe
(:mod:`tpmdev.fuzz._harness`). Seeds: :mod:`tpmdev.fuzz.seeds`. Nothing here
needs atheris except ``main()``: ``TestOneInput`` replays inputs in plain
Python (the tests replay the seed corpus so). ``tpmdev fuzz TARGET`` runs a
campaign; ``tests/fuzz/README.md`` has the OSS-Fuzz / ClusterFuzzLite set-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["TARGETS", "target"]

#: The fuzz targets, by name (the module of each is ``tpmdev.fuzz.<name>``).
TARGETS = ("tis", "crb", "tis_i2c", "spapr", "builtin")


def target(name: str) -> ModuleType:
    """The module of fuzz target *name* (one of :data:`TARGETS`)."""
    if name not in TARGETS:
        from tpmdev.errors import ConfigurationError

        raise ConfigurationError(f"unknown fuzz target {name!r}: choose one of {', '.join(TARGETS)}")
    return importlib.import_module(f"{__name__}.{name}")
