"""PCR attributes of the PC Client platform, as libtpms implements them.

TCG PC Client Platform TPM Profile (PTP) for TPM 2.0, section 4.6.3 ("PCR
attributes"), in the bit layout of the reference implementation: bit N of a
locality mask stands for locality N.

=======  ===========  ===================  ================  ====================
PCR      state saved  reset by PCR_Reset   extend allowed    value after Startup
=======  ===========  ===================  ================  ====================
0-15     yes          never                localities 0-4    0 (PCR 0: startup
                                                             locality in last byte)
16       no           localities 0-3       localities 0-4    0
17-18    no           never (locality 4    localities 2-4    all 0xFF
                      only, and a DRTM TPM
                      refuses it there)
19       no           never (as 17)        localities 2-3    all 0xFF
20       no           locality 2           localities 1-3    all 0xFF
21-22    no           locality 2           locality 2        all 0xFF
23       no           localities 0-3       localities 0-4    0
=======  ===========  ===================  ================  ====================

Changes to PCRs 16, 21, 22 and 23 do not increment ``pcrUpdateCounter``
(libtpms' PC Client choice of the "no increment" group); any other change
increments it once per bank changed. PCR_Reset at locality 4 always fails:
locality 4 belongs to the DRTM sequence (_TPM_Hash_Start), which resets
PCRs 17-22 itself. Both checked against swtpm 0.7.1 (libtpms 0.9.2).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_INCREMENT_PCRS", "PCR_ATTRIBUTES", "PcrAttributes", "initial_value"]


@dataclass(frozen=True)
class PcrAttributes:
    state_save: bool
    reset_localities: int  # bit N: PCR_Reset allowed at locality N
    extend_localities: int  # bit N: PCR_Extend/PCR_Event allowed at locality N


_STATIC = PcrAttributes(True, 0x00, 0x1F)

PCR_ATTRIBUTES: tuple[PcrAttributes, ...] = (_STATIC,) * 16 + (
    PcrAttributes(False, 0x0F, 0x1F),  # 16 debug
    PcrAttributes(False, 0x10, 0x1C),  # 17 DRTM, locality 4
    PcrAttributes(False, 0x10, 0x1C),  # 18 DRTM, locality 3
    PcrAttributes(False, 0x10, 0x0C),  # 19 DRTM, locality 2
    PcrAttributes(False, 0x14, 0x0E),  # 20 DRTM, locality 1
    PcrAttributes(False, 0x14, 0x04),  # 21 dynamic OS
    PcrAttributes(False, 0x14, 0x04),  # 22 dynamic OS
    PcrAttributes(False, 0x0F, 0x1F),  # 23 application
)

NO_INCREMENT_PCRS = frozenset({16, 21, 22, 23})


def initial_value(pcr: int, size: int, startup_locality: int) -> bytes:
    """The value of *pcr* after a Startup that did not restore it.

    PCRs reset only from locality 4 (the DRTM PCRs) start as all ones, so a
    verifier can tell "never measured" from "reset by a dynamic launch".
    """
    if PCR_ATTRIBUTES[pcr].reset_localities & 0x10:
        return b"\xff" * size
    if pcr == 0:
        return bytes(size - 1) + bytes((startup_locality,))
    return bytes(size)
