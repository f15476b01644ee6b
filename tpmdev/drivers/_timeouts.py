"""The Linux TPM driver core's timeouts (``include/linux/tpm.h``, ``tpm_tis_core.h``,
``tpm2-cmd.c``), shared by every driver in :mod:`tpmdev.drivers`.

Two kinds of bound:

* the interface timeouts A..D: A for a locality request and a zero burst
  count (TPM 2.0; D on TPM 1.2), B for commandReady, C for stsValid after a
  chunk and for each chunk of a response;
* the command durations, by command class: how long the driver polls for a
  response after tpmGo / START before it gives up and cancels. TPM 2.0 puts
  each command code in a class (short, medium, long, long-long; any other
  code gets the default of 120 s). TPM 1.2 durations come from the TPM's
  capabilities in Linux; a device model reports none, so the TIS defaults
  apply: ``TIS_SHORT_TIMEOUT`` for quick ordinals, ``TIS_LONG_TIMEOUT`` for
  the rest, two minutes for key generation and the full self test.

A :class:`Timeouts` is immutable; :meth:`Timeouts.scaled` gives a faster or
slower copy (a slow simulator, a test).
"""

from __future__ import annotations

import dataclasses
import struct

__all__ = ["Timeouts", "TPM2_TIMEOUTS", "TPM12_TIMEOUTS", "for_version"]

# TPM 2.0 command codes -> Linux's duration class
_SHORT, _MEDIUM, _LONG, _LONG_LONG = range(4)
_TPM2_CLASSES = {
    0x144: _SHORT,  # Startup
    0x143: _LONG,  # SelfTest
    0x17B: _LONG,  # GetRandom
    0x15C: _MEDIUM,  # SequenceUpdate
    0x13E: _MEDIUM,  # SequenceComplete
    0x185: _MEDIUM,  # EventSequenceComplete
    0x186: _MEDIUM,  # HashSequenceStart
    0x177: _LONG_LONG,  # VerifySignature
    0x182: _MEDIUM,  # PCR_Extend
    0x121: _LONG,  # HierarchyControl
    0x129: _LONG,  # HierarchyChangeAuth
    0x17A: _MEDIUM,  # GetCapability
    0x14E: _LONG,  # NV_Read
    0x131: _LONG_LONG,  # CreatePrimary
    0x153: _LONG_LONG,  # Create
    0x191: _LONG_LONG,  # CreateLoaded
}
# TPM 1.2 ordinals that take minutes (key generation, the full self test)
_TPM12_SLOW = {
    0x1F,
    0x0D,
    0x79,
    0x78,
    0x50,
}  # CreateWrapKey, TakeOwnership, MakeIdentity, CreateEK, SelfTestFull
# TPM 1.2 ordinals that are quick (state queries, PCR access, Startup)
_TPM12_QUICK = {0x99, 0x65, 0x14, 0x15, 0x46, 0x53, 0x54}


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds the drivers wait for each kind of event.

    ``a``..``d``: the interface timeouts; ``short``, ``medium``, ``long``,
    ``long_long``: TPM 2.0 command classes; ``default``: any other TPM 2.0
    command; ``tpm12_short`` / ``tpm12_long`` / ``tpm12_slow``: TPM 1.2.
    """

    a: float = 0.75
    b: float = 2.0
    c: float = 0.2
    d: float = 0.03
    short: float = 0.02
    medium: float = 0.75
    long: float = 2.0
    long_long: float = 300.0
    default: float = 120.0
    tpm12_short: float = 0.75
    tpm12_long: float = 2.0
    tpm12_slow: float = 120.0

    def duration(self, command: bytes) -> float:
        """How long to wait for the response to *command* (by its code and tag)."""
        if len(command) < 10:
            return self.default
        tag, _, code = struct.unpack_from(">HII", command)
        if tag in (0x8001, 0x8002):
            klass = _TPM2_CLASSES.get(code)
            if klass is None:
                return self.default
            return (self.short, self.medium, self.long, self.long_long)[klass]
        if code in _TPM12_SLOW:
            return self.tpm12_slow
        return self.tpm12_short if code in _TPM12_QUICK else self.tpm12_long

    def scaled(self, factor: float) -> Timeouts:
        """Every timeout multiplied by *factor*."""
        return Timeouts(**{f.name: getattr(self, f.name) * factor for f in dataclasses.fields(self)})

    def uniform(self, seconds: float) -> Timeouts:
        """Every timeout set to *seconds* (the drivers' ``timeout=`` option)."""
        return Timeouts(**{f.name: seconds for f in dataclasses.fields(self)})


#: Linux's values for a TPM 2.0 (TIMEOUT_A..D of ``tpm.h``, the TPM2 durations).
TPM2_TIMEOUTS = Timeouts()
#: Linux's TIS values for a TPM 1.2 (``TIS_TIMEOUT_{A,B,C,D}_MAX``).
TPM12_TIMEOUTS = Timeouts(a=0.75, b=2.0, c=0.75, d=0.75)


def for_version(tpm_version: int) -> Timeouts:
    """The kernel's timeouts for a TPM of *tpm_version* (1 or 2)."""
    return TPM12_TIMEOUTS if tpm_version == 1 else TPM2_TIMEOUTS
