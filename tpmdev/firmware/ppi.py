"""The Physical Presence Interface page, and what firmware does with it at boot.

Implements the memory QEMU's ``tpm-tis`` (ISA) and ``tpm-crb`` give the guest
with ``ppi=on`` (qemu-tpm-spec section 6; QEMU's ``hw/tpm/tpm_ppi.c`` and its
TPM document) and the firmware side of the TCG PC Client Platform Physical
Presence Interface Specification 1.3 as OVMF drives that page
(``Tcg2PhysicalPresenceLibQemu``).

Theory of operation
-------------------

The page is 0x400 bytes of plain RAM at guest-physical 0xFED45000
(:data:`PPI_ADDRESS`). QEMU never reads or writes it except at a machine
reset; the firmware owns the contents and the ACPI methods QEMU generates
into the TPM device (``_DSM``, section 6.1) are the OS's way in:

* the OS asks for an operation with ``_DSM`` function 2 or 7: the AML writes
  the operation code to ``pprq`` (offset 0x109) and its parameter to
  ``pprm`` (0x10D), after checking ``func[op]`` (offset 0, one byte per
  operation: 0 not implemented, 1 firmware only, 2 blocked, 3 allowed with
  physical presence, 4 allowed without);
* the OS reboots; at boot the firmware sees ``pprq``, asks the physically
  present user, sends the TPM commands, and writes ``lppr`` (the operation it
  ran), ``pprp`` (its result) and clears ``pprq`` / ``pprm``
  (:func:`run_pending`);
* the OS reads the outcome with ``_DSM`` function 5 (``lppr``, ``pprp``).

Independently, ``movv`` (0x15A) is the TCG memory-overwrite request: at every
reset of the TPM frontend, if its bit 0 is set, QEMU zeroes all guest RAM
(the PPI page itself, a RAM-device region, is spared). QEMU never clears
``movv``, so the wipe repeats at every reset until firmware or OS clears the
bit. Here the device calls the ``memory_clear`` callback the host gave it
(:meth:`PpiPage.reset`, called by the frontend's reset before its registers
are reset, QEMU's order).

:class:`PpiPage` is the page: :attr:`PpiPage.memory` is a numpy ``uint8``
array of 0x400 bytes a simulator maps as RAM, and :attr:`PpiPage.fields` a
numpy structured view of the same bytes (:data:`PPI_DTYPE`), a 0-d array
whose named fields are writable views (``page.fields["pprq"] = 5``,
``int(page.fields["lppr"])``, ``page.fields["func"][5]``).

Firmware at boot (:func:`init_functions`, then :func:`run_pending`) follows
OVMF's QEMU library, the firmware QEMU's page was designed with: for TPM 2.0
it offers operations 0, 5, 14, 21, 22 (clear), 23 (set PCR banks), 24
(change EPS), 33 (log all digests) and 96 / 97 (block SID) with physical
presence required, and runs them with ``TPM2_ClearControl`` +
``TPM2_Clear``, ``TPM2_PCR_Allocate``, ``TPM2_ChangeEPS``, all authorized by
the platform hierarchy (empty password, as firmware before it locks the
platform hierarchy). A new PCR allocation takes effect only at the next TPM
power-on: the result says so (``reboot``), the host then resets the device
and the firmware sends TPM2_Startup again. The optional :class:`PpFlags`
(EDK2's "PP required" firmware settings, kept in firmware NV storage) add
the operations that change them. For TPM 1.2 the operations SeaBIOS offers in
its TPM menu (enable, disable, activate, deactivate, clear, owner install,
and the combinations of PPI 1.2) run with the TPM 1.2 physical-presence
commands.

Where we differ from the firmware, on purpose
----------------------------------------------

* The physically present user is a callback (``confirm``); None accepts
  every prompt, as a user pressing F12 would.
* The machine reset firmware performs after an operation is not done here:
  :attr:`PpiResult.reboot` says it is due, and the host resets the device.
* OVMF has no TPM 1.2 PPI and upstream SeaBIOS runs its TPM 1.2 operations
  from its boot menu, not from the page; here the page's request runs them,
  the response being the TPM_RESULT of the first failing command (PPI 1.2).
* Operation numbers and names follow EDK2 (``MdePkg`` TcgPhysicalPresence.h),
  including its numbering of 17 (SET_PP_REQUIRED_FOR_CLEAR_TRUE) and 18.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol

import numpy as np

from tpmdev.drivers import commands as _cmd
from tpmdev.errors import ConfigurationError
from tpmdev.wire import (
    TPM_ST_SESSIONS,
    TPM_TAG_RQU_COMMAND,
    build_command,
    response_code,
)

if TYPE_CHECKING:
    from tpmdev._device import Device

__all__ = [
    "PPI_ADDRESS",
    "PPI_SIZE",
    "PPI_FUNC",
    "PPI_FUNC_SIZE",
    "PPI_PPIN",
    "PPI_PPIP",
    "PPI_PPRP",
    "PPI_PPRQ",
    "PPI_PPRM",
    "PPI_LPPR",
    "PPI_FRET",
    "PPI_RES1",
    "PPI_RES1_SIZE",
    "PPI_NEXT_STEP",
    "PPI_MOVV",
    "PPI_DTYPE",
    "PPI_FUNC_NOT_IMPLEMENTED",
    "PPI_FUNC_BIOS_ONLY",
    "PPI_FUNC_BLOCKED",
    "PPI_FUNC_ALLOWED_USR_REQ",
    "PPI_FUNC_ALLOWED_USR_NOT_REQ",
    "PPI_FUNC_MASK",
    "RESPONSE_SUCCESS",
    "RESPONSE_USER_ABORT",
    "RESPONSE_BIOS_FAILURE",
    "PPI_OPERATIONS_TPM2",
    "PPI_OPERATIONS_TPM12",
    "PpiPage",
    "PpFlags",
    "PpiResult",
    "Transmitter",
    "init_functions",
    "run_pending",
]

# -- the page (qemu-tpm-spec section 6) -------------------------------------
#: Guest-physical address of the page (QEMU's TPM_PPI_ADDR_BASE).
PPI_ADDRESS = 0xFED45000
#: Size of the page (QEMU's TPM_PPI_ADDR_SIZE).
PPI_SIZE = 0x400

PPI_FUNC = 0x000  #: func[256]: per-operation flags (firmware)
PPI_FUNC_SIZE = 0x100
PPI_PPIN = 0x100  #: SMI interrupt to use (unused by QEMU; OVMF: 1 once initialised)
PPI_PPIP = 0x101  #: ACPI function index for SMM (unused)
PPI_PPRP = 0x105  #: result of the last operation the firmware ran
PPI_PPRQ = 0x109  #: the operation requested by the OS (ACPI)
PPI_PPRM = 0x10D  #: its parameter (ACPI; PCR bank bitmap for operation 23)
PPI_LPPR = 0x111  #: the last operation the firmware ran
PPI_FRET = 0x115  #: SMM result (unused)
PPI_RES1 = 0x119  #: reserved
PPI_RES1_SIZE = 0x40
PPI_NEXT_STEP = 0x159  #: firmware use
PPI_MOVV = 0x15A  #: memory overwrite variable (bit 0: clear memory at reset)

#: The page as one packed little-endian record of PPI_SIZE bytes.
PPI_DTYPE = np.dtype(
    {
        "names": ["func", "ppin", "ppip", "pprp", "pprq", "pprm", "lppr", "fret", "res1", "next_step",
                  "movv"],
        "formats": [("u1", PPI_FUNC_SIZE), "u1", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4",
                    ("u1", PPI_RES1_SIZE), "u1", "u1"],
        "offsets": [PPI_FUNC, PPI_PPIN, PPI_PPIP, PPI_PPRP, PPI_PPRQ, PPI_PPRM, PPI_LPPR, PPI_FRET,
                    PPI_RES1, PPI_NEXT_STEP, PPI_MOVV],
        "itemsize": PPI_SIZE,
    }
)  # fmt: skip

# func[] values (bits 0..2), as QEMU's document and its AML read them
PPI_FUNC_NOT_IMPLEMENTED = 0
PPI_FUNC_BIOS_ONLY = 1
PPI_FUNC_BLOCKED = 2
PPI_FUNC_ALLOWED_USR_REQ = 3
PPI_FUNC_ALLOWED_USR_NOT_REQ = 4
PPI_FUNC_MASK = 7

# TPM operation responses (pprp; PPI 1.3 "Return TPM Operation Response to OS")
RESPONSE_SUCCESS = 0x00000000
RESPONSE_USER_ABORT = 0xFFFFFFF0
RESPONSE_BIOS_FAILURE = 0xFFFFFFF1

#: PPI 1.3 operations for TPM 2.0, by code (the names EDK2 gives them).
PPI_OPERATIONS_TPM2: dict[int, str] = {
    0: "NO_ACTION",
    1: "ENABLE",
    2: "DISABLE",
    5: "CLEAR",
    14: "ENABLE_CLEAR",
    17: "SET_PP_REQUIRED_FOR_CLEAR_TRUE",
    18: "SET_PP_REQUIRED_FOR_CLEAR_FALSE",
    21: "ENABLE_CLEAR_2",
    22: "ENABLE_CLEAR_3",
    23: "SET_PCR_BANKS",
    24: "CHANGE_EPS",
    25: "SET_PP_REQUIRED_FOR_CHANGE_PCRS_FALSE",
    26: "SET_PP_REQUIRED_FOR_CHANGE_PCRS_TRUE",
    27: "SET_PP_REQUIRED_FOR_TURN_ON_FALSE",
    28: "SET_PP_REQUIRED_FOR_TURN_ON_TRUE",
    29: "SET_PP_REQUIRED_FOR_TURN_OFF_FALSE",
    30: "SET_PP_REQUIRED_FOR_TURN_OFF_TRUE",
    31: "SET_PP_REQUIRED_FOR_CHANGE_EPS_FALSE",
    32: "SET_PP_REQUIRED_FOR_CHANGE_EPS_TRUE",
    33: "LOG_ALL_DIGESTS",
    34: "DISABLE_ENDORSEMENT_ENABLE_STORAGE_HIERARCHY",
    96: "ENABLE_BLOCK_SID",
    97: "DISABLE_BLOCK_SID",
}
#: PPI 1.2 operations for TPM 1.2 that firmware here runs, by code.
PPI_OPERATIONS_TPM12: dict[int, str] = {
    0: "NO_ACTION",
    1: "ENABLE",
    2: "DISABLE",
    3: "ACTIVATE",
    4: "DEACTIVATE",
    5: "CLEAR",
    6: "ENABLE_ACTIVATE",
    7: "DEACTIVATE_DISABLE",
    8: "SET_OWNER_INSTALL_TRUE",
    9: "SET_OWNER_INSTALL_FALSE",
    10: "ENABLE_ACTIVATE_OWNER_TRUE",
    11: "DEACTIVATE_DISABLE_OWNER_FALSE",
    14: "CLEAR_ENABLE_ACTIVATE",
    21: "ENABLE_ACTIVATE_CLEAR",
    22: "ENABLE_ACTIVATE_CLEAR_ENABLE_ACTIVATE",
}

_CLEAR_OPS = (5, 14, 21, 22)
_SET_PCR_BANKS, _CHANGE_EPS, _LOG_ALL_DIGESTS = 23, 24, 33
_BLOCK_SID_OPS = (96, 97)
#: The last operation code of the TPM 2.0 table (EDK2's NO_ACTION_MAX): codes
#: up to it that firmware does not offer "succeed" without doing anything.
_NO_ACTION_MAX = 34
#: What OVMF offers (func[] = 3) for TPM 2.0.
_OVMF_OFFERED = (0, *_CLEAR_OPS, _SET_PCR_BANKS, _CHANGE_EPS, _LOG_ALL_DIGESTS, *_BLOCK_SID_OPS)
#: Operations that need a reboot to take effect (the firmware resets the machine).
_REBOOT_OPS = (*_CLEAR_OPS, _SET_PCR_BANKS, _CHANGE_EPS, _LOG_ALL_DIGESTS, *_BLOCK_SID_OPS)


class PpiPage:
    """The 0x400-byte PPI page of a TIS (ISA) or CRB with ``ppi=True``.

    :attr:`memory` is the storage (zero-initialised, as a re-implementation
    should: QEMU 7.2 no longer zeroes it explicitly); :attr:`fields` views the
    same bytes through :data:`PPI_DTYPE`. Contents persist across resets.
    """

    #: Guest-physical address of the page.
    address: int = PPI_ADDRESS
    #: Its size.
    size: int = PPI_SIZE

    def __init__(self) -> None:
        #: The page's bytes: map these as RAM at :attr:`address`.
        self.memory: np.ndarray = np.zeros(PPI_SIZE, dtype=np.uint8)
        #: A 0-d structured view of :attr:`memory`; each field is a writable view.
        self.fields: np.ndarray = self.memory.view(PPI_DTYPE).reshape(())

    @property
    def memory_clear_requested(self) -> bool:
        """movv bit 0: the next reset clears guest RAM."""
        return bool(self.memory[PPI_MOVV] & 1)

    def reset(self, memory_clear: Optional[Callable[[], object]]) -> None:
        """What QEMU's ``tpm_ppi_reset`` does at a frontend reset: if movv
        asks for it, clear guest memory (here: call *memory_clear*). The page
        itself, movv included, is left as it is."""
        if memory_clear is not None and self.memory_clear_requested:
            memory_clear()

    def __repr__(self) -> str:
        f = self.fields
        return (
            f"<PpiPage at {self.address:#x}: pprq={int(f['pprq'])} pprm={int(f['pprm'])} "
            f"lppr={int(f['lppr'])} pprp={int(f['pprp']):#x} movv={int(f['movv']):#x}>"
        )


# -- firmware at boot ----------------------------------------------------------
class Transmitter(Protocol):
    """A guest driver: sends one command through the device, returns the response
    (:class:`tpmdev.drivers.TisDriver`, :class:`tpmdev.drivers.CrbDriver`)."""

    def transmit(self, command: bytes) -> bytes: ...


@dataclass
class PpFlags:
    """Firmware settings of EDK2's TCG2 physical-presence library (kept in
    firmware NV storage, not in the page): whether an operation needs the
    physically present user's confirmation. Operations 17/18, 25/26 and
    31/32 change them; without a ``PpFlags`` firmware behaves as OVMF's
    QEMU library, where every offered operation needs confirmation and the
    flag operations are not offered."""

    pp_required_for_clear: bool = True
    pp_required_for_change_pcrs: bool = True
    pp_required_for_change_eps: bool = True


#: flag operation -> (PpFlags attribute, new value)
_FLAG_OPS: dict[int, tuple[str, bool]] = {
    17: ("pp_required_for_clear", True),
    18: ("pp_required_for_clear", False),
    25: ("pp_required_for_change_pcrs", False),
    26: ("pp_required_for_change_pcrs", True),
    31: ("pp_required_for_change_eps", False),
    32: ("pp_required_for_change_eps", True),
}


def _needs_confirmation(op: int, flags: Optional[PpFlags]) -> bool:
    if op in (0, _LOG_ALL_DIGESTS):
        return False
    if flags is None:
        return True
    if op in _CLEAR_OPS:
        return flags.pp_required_for_clear
    if op == _SET_PCR_BANKS:
        return flags.pp_required_for_change_pcrs
    if op == _CHANGE_EPS:
        return flags.pp_required_for_change_eps
    if op in _FLAG_OPS:
        return not _FLAG_OPS[op][1]  # relaxing a requirement needs the user; tightening does not
    return True


def _offered_tpm2(flags: Optional[PpFlags]) -> dict[int, int]:
    if flags is None:  # OVMF: everything it offers needs the user, even NO_ACTION
        return dict.fromkeys(_OVMF_OFFERED, PPI_FUNC_ALLOWED_USR_REQ)
    return {
        op: PPI_FUNC_ALLOWED_USR_REQ if _needs_confirmation(op, flags) else PPI_FUNC_ALLOWED_USR_NOT_REQ
        for op in (*_OVMF_OFFERED, *_FLAG_OPS)
    }


def _page(dev: Device) -> PpiPage:
    page = getattr(dev, "ppi", None)
    if not isinstance(page, PpiPage):
        raise ConfigurationError(
            f"{type(dev).__name__} has no PPI page: create the device with ppi=True (a TIS on the ISA "
            "bus or a CRB)"
        )
    return page


def _tpm_version(dev: Device) -> int:
    """1 or 2: the operations and commands differ, and an unknown version
    (0: the backend has not told) must not pass for TPM 1.2."""
    version = dev.tpm_version
    if version not in (1, 2):
        raise ConfigurationError(
            f"{type(dev).__name__}'s TPM version is unknown ({version!r}): the PPI functions and "
            "operations depend on it; use a backend that reports TPM 1.2 or 2.0"
        )
    return int(version)


def init_functions(dev: Device, *, flags: Optional[PpFlags] = None) -> None:
    """Fill ``func[]`` as firmware does at every boot, so that ``_DSM``
    functions 2, 7 and 8 answer for the operations the firmware runs.

    TPM 2.0: OVMF's table (every entry cleared, then 0, 5, 14, 21, 22, 23,
    24, 33, 96 and 97 "allowed, physical presence required"); with *flags*,
    also the flag operations, and "allowed, PP not required" (4) where the
    flags say so. TPM 1.2: the operations of :data:`PPI_OPERATIONS_TPM12`,
    "allowed, PP required". Also marks the page initialised as OVMF does: if
    ``ppin`` is 0 it becomes 1 and ``pprq``, ``lppr``, ``next_step`` are cleared.
    """
    page = _page(dev)
    tpm2 = _tpm_version(dev) == 2
    f = page.fields
    f["func"] = 0
    if tpm2:
        for op, value in _offered_tpm2(flags).items():
            f["func"][op] = value
    else:
        for op in PPI_OPERATIONS_TPM12:
            f["func"][op] = PPI_FUNC_ALLOWED_USR_REQ
    if int(f["ppin"]) == 0:
        f["ppin"] = 1
        f["pprq"] = 0
        f["lppr"] = 0
        f["next_step"] = 0


@dataclass(frozen=True)
class PpiResult:
    """What :func:`run_pending` did.

    ``operation`` / ``parameter``: what was pending (``pprq`` / ``pprm``);
    ``response``: what was written to ``pprp`` (None when nothing was pending
    and the page was left alone); ``confirmed``: whether the user accepted
    (or no confirmation was needed); ``reboot``: the firmware would now reset
    the machine for the change to take effect (a new PCR allocation needs a
    TPM power cycle: reset the device, then TPM2_Startup); ``responses``: the
    TPM response codes of the commands sent, in order.
    """

    operation: int
    parameter: int
    response: Optional[int]
    confirmed: bool = True
    reboot: bool = False
    responses: tuple[int, ...] = field(default=())


Confirm = Callable[[int, int], bool]


class _Tpm:
    """Sends commands through the driver and records their response codes."""

    def __init__(self, driver: Transmitter, platform_auth: bytes) -> None:
        self.driver = driver
        self.auth = platform_auth
        self.codes: list[int] = []

    def send(self, command: bytes) -> bytes:
        response = self.driver.transmit(command)
        self.codes.append(response_code(response) if len(response) >= 10 else 0xFFFFFFFF)
        return response

    def ok(self, command: bytes) -> bool:
        response = self.send(command)
        return len(response) >= 10 and response_code(response) == 0

    # -- TPM 2.0 (Part 3), authorized by the platform hierarchy ------------
    def _platform_session(self) -> bytes:
        auth = struct.pack(">IHBH", _cmd.TPM_RS_PW, 0, 1, len(self.auth)) + self.auth  # continueSession
        return struct.pack(">I", len(auth)) + auth

    def platform(self, code: int, params: bytes = b"") -> bytes:
        body = struct.pack(">I", _TPM_RH_PLATFORM) + self._platform_session() + params
        return build_command(TPM_ST_SESSIONS, code, body)


_TPM_RH_PLATFORM = 0x4000000C
_TPM2_CC_CLEAR = 0x126
_TPM2_CC_CLEAR_CONTROL = 0x127
_TPM2_CC_CHANGE_EPS = 0x124
_TPM2_CC_PCR_ALLOCATE = 0x12B
_PCR_SELECT_MAX = 3  # 24 PCRs, PC Client
#: EFI_TCG2_BOOT_HASH_ALG_* bits (the PCR bank bitmap of operation 23) -> TPM_ALG_ID
_BANK_BITS: dict[int, int] = {0x01: 0x0004, 0x02: 0x000B, 0x04: 0x000C, 0x08: 0x000D, 0x10: 0x0012}


def _pcr_banks(tpm: _Tpm) -> Optional[tuple[int, int]]:
    """(supported, active) bank bitmaps from TPM2_GetCapability(TPM_CAP_PCRS),
    as EDK2's Tpm2GetCapabilitySupportedAndActivePcrs derives them."""
    rsp = tpm.send(_cmd.tpm2_get_capability(_cmd.TPM_CAP_PCRS, 0, 1))
    try:
        if response_code(rsp) != 0:
            return None
        selections = _cmd.decode_pcr_selection(rsp)
    except (struct.error, ValueError):
        return None
    supported = active = 0
    for alg, select in selections:
        for bit, known in _BANK_BITS.items():
            if alg == known:
                supported |= bit
                if any(select):
                    active |= bit
    return supported, active


def _allocate(tpm: _Tpm, supported: int, banks: int) -> bool:
    """TPM2_PCR_Allocate: every PCR of each bank in *banks*, none of the other
    supported banks (EDK2's Tpm2PcrAllocateBanks)."""
    selections = [
        struct.pack(">HB", alg, _PCR_SELECT_MAX) + (b"\xff" if bit & banks else b"\x00") * _PCR_SELECT_MAX
        for bit, alg in _BANK_BITS.items()
        if bit & supported
    ]
    params = struct.pack(">I", len(selections)) + b"".join(selections)
    rsp = tpm.send(tpm.platform(_TPM2_CC_PCR_ALLOCATE, params))
    # response: header, parameterSize, allocationSuccess (TPMI_YES_NO), ...
    return len(rsp) > 14 and response_code(rsp) == 0 and rsp[14] == 1


def _execute_tpm2(tpm: _Tpm, op: int, parameter: int, flags: Optional[PpFlags]) -> int:
    """OVMF's Tcg2ExecutePhysicalPresence (plus EDK2's flag operations)."""
    if op in _CLEAR_OPS:
        if tpm.ok(tpm.platform(_TPM2_CC_CLEAR_CONTROL, b"\x00")) and tpm.ok(tpm.platform(_TPM2_CC_CLEAR)):
            return RESPONSE_SUCCESS
        return RESPONSE_BIOS_FAILURE
    if op in (_SET_PCR_BANKS, _LOG_ALL_DIGESTS):
        banks = _pcr_banks(tpm)
        if banks is None:
            return RESPONSE_BIOS_FAILURE
        supported, _active = banks
        wanted = parameter if op == _SET_PCR_BANKS else supported
        # PPI: every requested bank must be supported, and at least one requested.
        if wanted == 0 or wanted & ~supported:
            return RESPONSE_BIOS_FAILURE
        return RESPONSE_SUCCESS if _allocate(tpm, supported, wanted) else RESPONSE_BIOS_FAILURE
    if op == _CHANGE_EPS:
        return RESPONSE_SUCCESS if tpm.ok(tpm.platform(_TPM2_CC_CHANGE_EPS)) else RESPONSE_BIOS_FAILURE
    if flags is not None and op in _FLAG_OPS:
        name, value = _FLAG_OPS[op]
        setattr(flags, name, value)
        return RESPONSE_SUCCESS
    # QUIRK: OVMF offers block-SID (96/97) but has nothing to run for them:
    # they fall to "not a no-action code" and report a firmware failure.
    return RESPONSE_SUCCESS if op <= _NO_ACTION_MAX else RESPONSE_BIOS_FAILURE


# -- TPM 1.2 (Main Part 3), physical presence asserted as SeaBIOS does -----
_TPM_ORD_PHYSICAL_ENABLE = 0x6F
_TPM_ORD_PHYSICAL_DISABLE = 0x70
_TPM_ORD_PHYSICAL_SET_DEACTIVATED = 0x72
_TPM_ORD_SET_OWNER_INSTALL = 0x71
_TPM_ORD_FORCE_CLEAR = 0x5D
_TSC_ORD_PHYSICAL_PRESENCE = 0x4000000A
_TPM12_MAX = 22  # the last operation of the PPI 1.2 table
#: TPM 1.2 operations that change the activation: effective at the next TPM_Startup.
_TPM12_REBOOT_OPS = (3, 4, 6, 7, 10, 11, 14, 21, 22)
_TPM_PHYSICAL_PRESENCE_CMD_ENABLE = 0x0020
_TPM_PHYSICAL_PRESENCE_PRESENT = 0x0008


def _tpm12(ordinal: int, body: bytes = b"") -> bytes:
    return build_command(TPM_TAG_RQU_COMMAND, ordinal, body)


def _execute_tpm12(tpm: _Tpm, op: int) -> int:
    """The TPM 1.2 operations, each a sequence of owner-less physical-presence
    commands; the first failing command's TPM_RESULT is the response (PPI 1.2)."""
    enable = _tpm12(_TPM_ORD_PHYSICAL_ENABLE)
    disable = _tpm12(_TPM_ORD_PHYSICAL_DISABLE)
    activate = _tpm12(_TPM_ORD_PHYSICAL_SET_DEACTIVATED, b"\x00")
    deactivate = _tpm12(_TPM_ORD_PHYSICAL_SET_DEACTIVATED, b"\x01")
    clear = _tpm12(_TPM_ORD_FORCE_CLEAR)
    owner_true = _tpm12(_TPM_ORD_SET_OWNER_INSTALL, b"\x01")
    owner_false = _tpm12(_TPM_ORD_SET_OWNER_INSTALL, b"\x00")
    sequences: dict[int, list[bytes]] = {
        1: [enable],
        2: [disable],
        3: [activate],
        4: [deactivate],
        5: [clear],
        6: [enable, activate],
        7: [deactivate, disable],
        8: [owner_true],
        9: [owner_false],
        10: [enable, activate, owner_true],
        11: [owner_false, deactivate, disable],
        14: [clear, enable, activate],
        21: [enable, activate, clear],
        22: [enable, activate, clear, enable, activate],
    }
    if op not in sequences:
        return RESPONSE_SUCCESS if op <= _TPM12_MAX else RESPONSE_BIOS_FAILURE
    # Firmware asserts physical presence before running an operation (SeaBIOS:
    # TSC_PhysicalPresence(CMD_ENABLE) then (PRESENT)); refusals of the first
    # (the lifetime lock already set) do not matter if the second succeeds.
    tpm.send(_tpm12(_TSC_ORD_PHYSICAL_PRESENCE, struct.pack(">H", _TPM_PHYSICAL_PRESENCE_CMD_ENABLE)))
    tpm.send(_tpm12(_TSC_ORD_PHYSICAL_PRESENCE, struct.pack(">H", _TPM_PHYSICAL_PRESENCE_PRESENT)))
    for command in sequences[op]:
        rsp = tpm.send(command)
        code = response_code(rsp) if len(rsp) >= 10 else RESPONSE_BIOS_FAILURE
        if code:
            return code
    return RESPONSE_SUCCESS


def run_pending(
    dev: Device,
    driver: Transmitter,
    *,
    confirm: Optional[Confirm] = None,
    flags: Optional[PpFlags] = None,
    platform_auth: bytes = b"",
) -> PpiResult:
    """Carry out the operation pending in *dev*'s PPI page, as firmware does at boot.

    :param dev: a TIS or CRB with ``ppi=True`` whose TPM has been started
        (TPM2_Startup / TPM_Startup sent, as firmware does before this).
    :param driver: the guest driver the commands go through (its
        ``transmit``), e.g. ``TisDriver(dev)`` or ``CrbDriver(dev)``.
    :param confirm: the physically present user: called as
        ``confirm(operation, parameter)`` where the operation needs
        confirmation; False aborts (``pprp`` = 0xFFFFFFF0). None: the user
        accepts everything.
    :param flags: EDK2's firmware PP flags (see :class:`PpFlags`), updated in
        place by the flag operations; None: OVMF's QEMU behaviour.
    :param platform_auth: the platform hierarchy's password (empty until
        firmware changes it, which it does after this step).

    Nothing pending (``pprq`` == 0): nothing is written. Otherwise, after the
    operation, ``lppr`` := operation, ``pprp`` := response, ``pprq`` :=
    ``pprm`` := 0, as OVMF does. An operation the firmware does not run
    reports success if its code is within the PPI table, a firmware failure
    (0xFFFFFFF1) otherwise. TPM 2.0: a failing TPM command makes the response
    0xFFFFFFF1. TPM 1.2: the response is the failing command's TPM_RESULT.
    """
    page = _page(dev)
    if confirm is not None and not callable(confirm):
        raise ConfigurationError(
            f"confirm must be a callable (operation, parameter) -> bool or None, got {confirm!r}"
        )
    if flags is not None and not isinstance(flags, PpFlags):
        raise ConfigurationError(f"flags must be a PpFlags or None, got {flags!r}")
    if not isinstance(platform_auth, (bytes, bytearray)):
        raise ConfigurationError(f"platform_auth must be bytes, got {type(platform_auth).__name__}")
    f = page.fields
    op = int(f["pprq"])
    parameter = int(f["pprm"])
    if op == 0:
        return PpiResult(0, parameter, None)
    tpm2 = _tpm_version(dev) == 2
    tpm = _Tpm(driver, bytes(platform_auth))
    reboot = False
    confirmed = True
    if tpm2 and op not in _OVMF_OFFERED and not (flags is not None and op in _FLAG_OPS):
        # Not a request this firmware knows: report and drop it (no reboot).
        response = RESPONSE_SUCCESS if op <= _NO_ACTION_MAX else RESPONSE_BIOS_FAILURE
    else:
        needs = _needs_confirmation(op, flags) if tpm2 else op in PPI_OPERATIONS_TPM12 and op != 0
        if needs and confirm is not None:
            confirmed = bool(confirm(op, parameter))
        if not confirmed:
            response = RESPONSE_USER_ABORT
        elif tpm2:
            response = _execute_tpm2(tpm, op, parameter, flags)
            reboot = op in _REBOOT_OPS
        else:
            response = _execute_tpm12(tpm, op)
            reboot = op in _TPM12_REBOOT_OPS
    f["lppr"] = op
    f["pprp"] = response
    f["pprq"] = 0
    f["pprm"] = 0
    return PpiResult(op, parameter, response, confirmed, reboot, tuple(tpm.codes))
