"""The ``Device (TPM)`` AML object QEMU puts in its DSDT, built from a device's settings.

Spec: qemu-tpm-spec sections 6.1 (the PPI methods) and 8.1 (the device
object), checked byte for byte against QEMU 7.2's DSDT (the live oracle):

* ISA TIS (q35; :class:`tpmdev.TIS`): ``Device (TPM)`` in the LPC bridge's
  scope (``\\_SB.PCI0.SF8`` on q35): ``_HID`` "MSFT0101" and ``_STR``
  "TPM 2.0 Device" for TPM 2.0, otherwise (1.2, unknown) EISAID("PNP0C31")
  and no ``_STR``; ``_UID`` 1; ``_STA`` 0x0F; ``_CRS`` Memory32Fixed over
  the 0x5000-byte region; the PPI objects when ``ppi`` is on.
* CRB (q35; :class:`tpmdev.CRB`): ``Device (TPM)`` in ``\\_SB``, always the
  TPM 2.0 identity, in QEMU's other order: ``_HID``, ``_STR``, ``_CRS``
  (the CRB region), ``_STA``, ``_UID``, then the PPI objects.
* sysbus TIS (Arm virt; :class:`tpmdev.TISSysbus`): ``Device (TPM0)`` in
  ``\\_SB``: ``_HID`` "MSFT0101", ``_STR``, ``_UID`` 0, ``_CRS`` at the
  platform-bus address; whatever the TPM version, never PPI.

The PPI objects (with ``ppi`` on): the operation regions TPP2 (PPIN, PPIP,
PPRP, PPRQ, PPRM, LPPR at page offset 0x100) and TPP3 (MOVV at 0x15A), the
method TPFN(op) reading ``func[op]`` through a region made inside the
method, the packages TPM2 and TPM3 that the methods fill and return, and
``_DSM`` answering the PPI UUID (functions 0 to 8) and the memory-clear UUID
(functions 0 and 1).

Not part of the device object: on q35 QEMU also adds the ISA TIS's
Memory32Fixed(ReadWrite, 0xFED40000, 0x5000) to ``\\_SB.PCI0._CRS``. A
table that carries this object outside QEMU's DSDT (an SSDT) wraps it in a
``Scope`` of :func:`device_scope` (which the DSDT must define).
"""

from __future__ import annotations

from typing import Any

from tpmdev.errors import ConfigurationError
from tpmdev.firmware import aml as A
from tpmdev.firmware.ppi import (
    PPI_ADDRESS,
    PPI_FUNC_BLOCKED,
    PPI_FUNC_MASK,
    PPI_FUNC_NOT_IMPLEMENTED,
    PPI_MOVV,
    PPI_PPIN,
)

__all__ = [
    "KIND_TIS",
    "KIND_CRB",
    "KIND_TIS_SYSBUS",
    "PPI_UUID",
    "MEMORY_CLEAR_UUID",
    "frontend_kind",
    "device_scope",
    "device_name",
    "tpm_device",
    "device_aml",
    "ppi_objects",
]

#: frontend kinds: QEMU's tpm-tis on q35, tpm-crb on q35, tpm-tis-device on Arm virt
KIND_TIS, KIND_CRB, KIND_TIS_SYSBUS = "tis", "crb", "tis-sysbus"

#: TCG Physical Presence Interface _DSM
PPI_UUID = "3DDDFAA6-361B-4EB4-A424-8D10089D1653"
#: TCG Platform Reset Attack Mitigation (memory clear) _DSM
MEMORY_CLEAR_UUID = "376054ED-CC13-4675-901C-4756D7F2D45D"

# The PPI page (tpmdev.firmware.ppi): the ACPI fields start at ppin and run
# up to the end of next_step; movv has a region of its own.
_PPI_FIELDS_LENGTH = PPI_MOVV - PPI_PPIN

_TPM2_HID, _TPM2_STR, _TPM12_EISAID = "MSFT0101", "TPM 2.0 Device", "PNP0C31"
_STA_PRESENT = 0x0F

_SCOPE = {KIND_TIS: "\\_SB.PCI0.SF8", KIND_CRB: "\\_SB", KIND_TIS_SYSBUS: "\\_SB"}
_NAME = {KIND_TIS: "TPM", KIND_CRB: "TPM", KIND_TIS_SYSBUS: "TPM0"}


def frontend_kind(dev: Any) -> str:
    """The kind of a tpmdev frontend: :data:`KIND_TIS`, :data:`KIND_CRB` or :data:`KIND_TIS_SYSBUS`."""
    from tpmdev.crb import CRB
    from tpmdev.tis import TIS, TISSysbus

    if isinstance(dev, TISSysbus):
        return KIND_TIS_SYSBUS
    if isinstance(dev, TIS):
        return KIND_TIS
    if isinstance(dev, CRB):
        return KIND_CRB
    raise ConfigurationError(
        f"{type(dev).__name__} has no ACPI description (only TIS, TISSysbus and CRB have one in QEMU)"
    )


def _check_kind(kind: str) -> str:
    if kind not in _SCOPE:
        raise ConfigurationError(f"frontend kind must be one of {sorted(_SCOPE)}, got {kind!r}")
    return kind


def device_scope(kind_or_dev: Any) -> str:
    """Where QEMU declares the device: ``\\_SB.PCI0.SF8`` (ISA TIS on q35) or ``\\_SB``."""
    kind = kind_or_dev if isinstance(kind_or_dev, str) else frontend_kind(kind_or_dev)
    return _SCOPE[_check_kind(kind)]


def device_name(kind_or_dev: Any) -> str:
    """The device object's name: ``TPM``, or ``TPM0`` for the sysbus TIS."""
    kind = kind_or_dev if isinstance(kind_or_dev, str) else frontend_kind(kind_or_dev)
    return _NAME[_check_kind(kind)]


def _tpfn_flags(op: bytes) -> bytes:
    """Local0 = DerefOf(Arg3[op]); Local1 = TPFN(Local0)."""
    return A.store(A.derefof(A.index(A.arg(3), op)), A.local(0)) + A.store(
        A.call("TPFN", A.local(0)), A.local(1)
    )


def _flags_are(value: int) -> bytes:
    """(Local1 & 7) == value."""
    return A.lequal(A.and_(A.local(1), A.integer(PPI_FUNC_MASK)), A.integer(value))


def ppi_objects() -> bytes:
    """The PPI operation regions, fields, TPFN, TPM2 / TPM3 and ``_DSM`` (qemu-tpm-spec 6.1)."""
    fn, rev, uuid, args = A.arg(2), A.arg(1), A.arg(0), A.arg(3)
    pprq, pprm = A.ref("PPRQ"), A.ref("PPRM")
    tpm2, tpm3 = A.ref("TPM2"), A.ref("TPM3")
    zero, one, two = A.integer(0), A.integer(1), A.integer(2)

    def function(n: int, *body: bytes) -> bytes:
        return A.if_(A.lequal(fn, A.integer(n)), *body)

    def revision(n: int, *body: bytes) -> bytes:
        return A.if_(A.lequal(rev, A.integer(n)), *body)

    tpfn = A.method(
        "TPFN",
        1,
        A.if_(A.lgreater_equal(A.arg(0), A.integer(0x100)), A.return_(zero)),
        # A region made per call: DerefOf of a SystemMemory buffer field breaks on Windows.
        A.operation_region(
            "TPP1", A.RegionSpace.SYSTEM_MEMORY, A.add(A.integer(PPI_ADDRESS), A.arg(0)), A.integer(1)
        ),
        A.field("TPP1", A.named_field("TPPF", 8), access=A.AccessType.BYTE),
        A.return_(A.ref("TPPF")),
        serialized=True,
    )
    ppi_dsm = A.if_(
        A.lequal(uuid, A.uuid(PPI_UUID)),
        function(0, A.return_(A.buffer(bytes([0xFF, 0x01])))),  # functions 0 to 8
        function(1, A.return_(A.string("1.3"))),  # PPI version
        function(  # submit a request
            2,
            _tpfn_flags(zero),
            A.if_(_flags_are(PPI_FUNC_NOT_IMPLEMENTED), A.return_(one)),
            A.store(A.local(0), pprq),
            A.store(zero, pprm),
            A.return_(zero),
        ),
        function(  # the pending request
            3,
            revision(1, A.store(pprq, A.index(tpm2, one)), A.return_(tpm2)),
            revision(
                2,
                A.store(pprq, A.index(tpm3, one)),
                A.store(pprm, A.index(tpm3, two)),
                A.return_(tpm3),
            ),
        ),
        function(4, A.return_(two)),  # transition to the pre-OS environment: reboot
        function(  # the last request and its response
            5,
            A.store(A.ref("LPPR"), A.index(tpm3, one)),
            A.store(A.ref("PPRP"), A.index(tpm3, two)),
            A.return_(tpm3),
        ),
        function(6, A.return_(A.integer(3))),  # preferred language: not implemented
        function(  # submit a request, 2
            7,
            _tpfn_flags(zero),
            A.if_(_flags_are(PPI_FUNC_NOT_IMPLEMENTED), A.return_(one)),
            A.if_(_flags_are(PPI_FUNC_BLOCKED), A.return_(A.integer(3))),
            revision(1, A.store(A.local(0), pprq), A.store(zero, pprm)),
            revision(2, A.store(A.local(0), pprq), A.store(A.derefof(A.index(args, one)), pprm)),
            A.return_(zero),
        ),
        function(  # user confirmation status of an operation
            8,
            _tpfn_flags(zero),
            A.return_(A.and_(A.local(1), A.integer(PPI_FUNC_MASK))),
        ),
        # QUIRK: function 3 with another revision falls through to here, as every unknown function.
        A.return_(A.buffer(bytes([0x00]))),
    )
    memory_clear_dsm = A.if_(
        A.lequal(uuid, A.uuid(MEMORY_CLEAR_UUID)),
        function(0, A.return_(A.buffer(bytes([0x03])))),  # functions 0 and 1
        function(
            1,
            A.store(A.derefof(A.index(args, zero)), A.local(0)),
            A.store(A.local(0), A.ref("MOVV")),
            A.return_(zero),
        ),
    )
    return b"".join(
        (
            A.operation_region(
                "TPP2",
                A.RegionSpace.SYSTEM_MEMORY,
                A.integer(PPI_ADDRESS + PPI_PPIN),
                A.integer(_PPI_FIELDS_LENGTH),
            ),
            A.field(
                "TPP2",
                A.named_field("PPIN", 8),
                A.named_field("PPIP", 32),
                A.named_field("PPRP", 32),
                A.named_field("PPRQ", 32),
                A.named_field("PPRM", 32),
                A.named_field("LPPR", 32),
            ),
            A.operation_region(
                "TPP3", A.RegionSpace.SYSTEM_MEMORY, A.integer(PPI_ADDRESS + PPI_MOVV), A.integer(1)
            ),
            A.field("TPP3", A.named_field("MOVV", 8), access=A.AccessType.BYTE),
            tpfn,
            # Packages filled and returned by _DSM (a fresh package upset Windows).
            A.name("TPM2", A.package(zero, zero)),
            A.name("TPM3", A.package(zero, zero, zero)),
            A.method("_DSM", 4, ppi_dsm, memory_clear_dsm, serialized=True),
        )
    )


def tpm_device(kind: str, *, tpm_version: int, address: int, size: int, ppi: bool) -> bytes:
    """The device object of a frontend of *kind* at *address* (*size* bytes), as QEMU 7.2 emits it."""
    _check_kind(kind)
    if tpm_version not in (0, 1, 2):
        raise ConfigurationError(f"tpm_version must be 0 (unknown), 1 or 2, got {tpm_version!r}")
    crs = A.name("_CRS", A.resource_template(A.memory32_fixed(address, size)))
    hid_str = A.name("_HID", A.string(_TPM2_HID)) + A.name("_STR", A.string(_TPM2_STR))
    uid1, sta = A.name("_UID", A.integer(1)), A.name("_STA", A.integer(_STA_PRESENT))
    if kind == KIND_TIS_SYSBUS:
        # Arm virt: TPM 2.0 identity whatever the version, _UID 0, no _STA, never PPI.
        return A.device(_NAME[kind], hid_str, A.name("_UID", A.integer(0)), crs)
    ppi_part = ppi_objects() if ppi else b""
    if kind == KIND_CRB:
        return A.device(_NAME[kind], hid_str, crs, sta, uid1, ppi_part)
    hid = hid_str if tpm_version == 2 else A.name("_HID", A.eisaid(_TPM12_EISAID))
    return A.device(_NAME[kind], hid, uid1, sta, crs, ppi_part)


def device_aml(dev: Any) -> bytes:
    """``dev.aml()``: the device object of a TIS, TISSysbus or CRB from its settings."""
    kind = frontend_kind(dev)
    if kind == KIND_CRB:
        address, size = dev.address, dev.region_size
    else:
        address, size = dev.base_address, dev.region_size
    return tpm_device(kind, tpm_version=dev.tpm_version, address=address, size=size, ppi=dev.ppi is not None)
