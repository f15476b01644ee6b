"""ACPI tables describing a TPM: TPM2, TCPA and an SSDT carrying the device AML.

Specs: ACPI 6.x section 5.2 (system description table header, checksum);
TCG ACPI Specification, Family 1.2 and 2.0, Level 00 Revision 00.37 (TPM2
table revision 4 with the log-area fields; the client TCPA table); QEMU's
behaviour as written down in qemu-tpm-spec sections 7.2 and 8, checked on the
live QEMU 7.2 oracle.

Theory of operation
-------------------

QEMU describes its TPM to firmware in three places: the ``Device (TPM)``
object in its DSDT (built by :mod:`tpmdev.firmware.tpm_aml`), one table that
points at the event-log area, and the fw_cfg files of
:mod:`tpmdev.firmware.fw_cfg`. Which log table a device gets depends on the
platform and on the TPM version the frontend presents when the tables are
built (:func:`log_table`):

=====================  ==============  ==============  =========
frontend               TPM 2.0         TPM 1.2         unknown
=====================  ==============  ==============  =========
TIS (PC, ISA)          TPM2, method 6  TCPA            none
CRB (PC)               TPM2, method 7  TCPA            none
TIS on sysbus (virt)   TPM2, method 6  none            none
=====================  ==============  ==============  =========

Every table starts with the 36-byte header (signature, length, revision,
checksum, OEM ID, OEM table ID, OEM revision 1, creator ``BXPC`` revision 1,
as QEMU writes them). The checksum byte makes the bytes of the whole table
sum to zero modulo 256.

QEMU builds the tables into the fw_cfg blob ``etc/acpi/tables`` with the
checksum and the log-area start address (LASA) still zero; the firmware's
table loader allocates ``etc/tpm/log``, adds its address into LASA and then
computes the checksum. tpmdev has no loader: :func:`acpi_tables` takes the
address the log area was given (``log_address``) and returns finished tables,
so QEMU's blob is tpmdev's table with ``log_address=0`` and the checksum
byte zeroed.

Where we differ from QEMU, on purpose: QEMU puts the device AML into its
DSDT; tpmdev has no DSDT and wraps it in an SSDT instead (a
``DefinitionBlock`` whose only content is a ``Scope`` of the path QEMU puts
the device in, with an ``External`` declaration of that scope when it is not
a predefined one). A simulator loads it next to its own DSDT. The SSDT's
revision is the one of the DSDT QEMU puts the object in (1 on the PC
machines: 32-bit integers; 2 on Arm ``virt``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Optional

from tpmdev.errors import ConfigurationError
from tpmdev.firmware import aml as A
from tpmdev.firmware import tpm_aml
from tpmdev.hw.regs import TPM_CRB_CTRL_REQ

__all__ = [
    "ACPI_TABLE_HEADER_SIZE",
    "DEFAULT_OEM_ID",
    "DEFAULT_OEM_TABLE_ID",
    "OEM_REVISION",
    "CREATOR_ID",
    "CREATOR_REVISION",
    "TPM2_REVISION",
    "TPM2_TABLE_LENGTH",
    "TPM2_START_METHOD_MMIO",
    "TPM2_START_METHOD_CRB",
    "TPM2_LASA_OFFSET",
    "TCPA_REVISION",
    "TCPA_TABLE_LENGTH",
    "TCPA_LASA_OFFSET",
    "TPM_LOG_AREA_MINIMUM_SIZE",
    "CHECKSUM_OFFSET",
    "FirmwarePlatform",
    "platform_of",
    "log_table",
    "checksum",
    "table_header",
    "finish_table",
    "tpm2_table",
    "tcpa_table",
    "ssdt_table",
    "acpi_tables",
]

ACPI_TABLE_HEADER_SIZE = 36
#: offset of the checksum byte in the header
CHECKSUM_OFFSET = 9
#: QEMU's defaults (the machine properties ``x-oem-id`` / ``x-oem-table-id`` on 7.2)
DEFAULT_OEM_ID = "BOCHS "
DEFAULT_OEM_TABLE_ID = "BXPC    "
#: what QEMU writes in every table it builds
OEM_REVISION = 1
CREATOR_ID = "BXPC"
CREATOR_REVISION = 1

#: TPM2 table: revision 4 (with the log-area fields), 76 bytes
TPM2_REVISION = 4
TPM2_TABLE_LENGTH = 76
#: TPM2 start methods: the TIS (MMIO) interface and the Command Response Buffer
TPM2_START_METHOD_MMIO = 6
TPM2_START_METHOD_CRB = 7
#: TPM2 platform class: client
TPM2_PLATFORM_CLIENT = 0
TPM2_LASA_OFFSET = 68

#: TCPA table (client): revision 2, 50 bytes
TCPA_REVISION = 2
TCPA_TABLE_LENGTH = 50
TCPA_CLIENT = 0
TCPA_LASA_OFFSET = 42

#: the event-log area QEMU reserves: the tables' log area minimum length (LAML)
TPM_LOG_AREA_MINIMUM_SIZE = 0x10000

_HEADER = struct.Struct("<4sIBB6s8sI4sI")
# TPM2 body: platform class, reserved, control area address, start method,
# start-method parameters (12 bytes), LAML, LASA
_TPM2_BODY = struct.Struct("<HHQI12sIQ")
# TCPA (client) body: platform class, LAML, LASA
_TCPA_BODY = struct.Struct("<HIQ")


@dataclass(frozen=True)
class FirmwarePlatform:
    """What the firmware descriptions of one frontend depend on, besides the
    TPM version and ``ppi``: the machine QEMU runs that device on."""

    #: the frontend: "tis" (ISA TIS), "crb" or "tis-sysbus"
    kind: str
    #: a PC machine (q35): etc/tpm/config, TCPA for TPM 1.2, PPI page
    pc: bool
    #: where QEMU puts the device object in its DSDT
    scope: str
    #: revision of that DSDT (1: 32-bit integers, 2: 64-bit)
    dsdt_revision: int
    #: TPM2 start method
    start_method: int
    #: TPM2 address of the CRB control area (0 for a TIS)
    control_area: int


def platform_of(dev: Any) -> FirmwarePlatform:
    """The :class:`FirmwarePlatform` of a :class:`tpmdev.TIS` (ISA, on q35),
    :class:`tpmdev.TISSysbus` (Arm ``virt``) or :class:`tpmdev.CRB` (q35);
    a ConfigurationError for any other frontend."""
    kind = tpm_aml.frontend_kind(dev)
    scope = tpm_aml.device_scope(kind)
    if kind == tpm_aml.KIND_TIS_SYSBUS:
        return FirmwarePlatform(kind, False, scope, 2, TPM2_START_METHOD_MMIO, 0)
    if kind == tpm_aml.KIND_TIS:
        return FirmwarePlatform(kind, True, scope, 1, TPM2_START_METHOD_MMIO, 0)
    control_area = dev.address + TPM_CRB_CTRL_REQ
    return FirmwarePlatform(kind, True, scope, 1, TPM2_START_METHOD_CRB, control_area)


def log_table(dev: Any) -> Optional[str]:
    """The signature of the table that points at the event log for *dev*
    ("TPM2" or "TCPA"), or None when QEMU builds neither (an unknown TPM
    version; TPM 1.2 on Arm ``virt``)."""
    platform = platform_of(dev)
    version = dev.tpm_version
    if version == 2:
        return "TPM2"
    # QUIRK: a CRB with a TPM 1.2 behind it gets a TCPA (QEMU does not refuse
    # TPM 1.2 on its CRB, although the CRB is a TPM 2.0 interface); Arm virt
    # has no TPM 1.2 table at all.
    if version == 1 and platform.pc:
        return "TCPA"
    return None


# -- header and checksum ------------------------------------------------------


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The sum of *data*'s bytes modulo 256 (0 for a table whose checksum is right)."""
    return sum(data) & 0xFF


_ID_EXAMPLES = {"oem_id": DEFAULT_OEM_ID, "oem_table_id": DEFAULT_OEM_TABLE_ID}


def _check_id(name: str, value: object, length: int) -> bytes:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str of {length} ASCII characters, got {value!r}")
    if len(value) != length or not value.isascii() or not value.isprintable():
        example = _ID_EXAMPLES.get(name)
        pad = f" (pad with spaces, as QEMU's default {example!r})" if example else ""
        raise ConfigurationError(
            f"{name} must be exactly {length} printable ASCII characters{pad}, "
            f"got {value!r} ({len(value)} characters)"
        )
    return value.encode("ascii")


def table_header(
    signature: str,
    length: int,
    revision: int,
    *,
    oem_id: str = DEFAULT_OEM_ID,
    oem_table_id: str = DEFAULT_OEM_TABLE_ID,
    oem_revision: int = OEM_REVISION,
    creator_id: str = CREATOR_ID,
    creator_revision: int = CREATOR_REVISION,
) -> bytes:
    """A 36-byte system description table header, checksum byte zero."""
    sig = _check_id("signature", signature, 4)
    return _HEADER.pack(
        sig,
        A.check_unsigned("length", length, 32),
        A.check_unsigned("revision", revision, 8),
        0,
        _check_id("oem_id", oem_id, 6),
        _check_id("oem_table_id", oem_table_id, 8),
        A.check_unsigned("oem_revision", oem_revision, 32),
        _check_id("creator_id", creator_id, 4),
        A.check_unsigned("creator_revision", creator_revision, 32),
    )


def finish_table(table: bytes | bytearray) -> bytes:
    """*table* with its checksum byte set so that its bytes sum to zero."""
    out = bytearray(table)
    out[CHECKSUM_OFFSET] = 0
    out[CHECKSUM_OFFSET] = -checksum(out) & 0xFF
    return bytes(out)


# -- the tables ---------------------------------------------------------------


def tpm2_table(
    *,
    start_method: int,
    control_area: int = 0,
    log_address: int = 0,
    log_length: int = TPM_LOG_AREA_MINIMUM_SIZE,
    oem_id: str = DEFAULT_OEM_ID,
    oem_table_id: str = DEFAULT_OEM_TABLE_ID,
) -> bytes:
    """The TPM2 table (revision 4, client, 76 bytes), checksum set.

    :param start_method: :data:`TPM2_START_METHOD_MMIO` (TIS) or
        :data:`TPM2_START_METHOD_CRB`.
    :param control_area: the CRB control area's address (CRB base + 0x40); 0 for a TIS.
    :param log_address: the event-log area's address (LASA).
    :param log_length: its length (LAML).
    """
    body = _TPM2_BODY.pack(
        TPM2_PLATFORM_CLIENT,
        0,
        A.check_unsigned("control_area", control_area, 64),
        A.check_unsigned("start_method", start_method, 32),
        bytes(12),
        A.check_unsigned("log_length", log_length, 32),
        A.check_unsigned("log_address", log_address, 64),
    )
    header = table_header("TPM2", TPM2_TABLE_LENGTH, TPM2_REVISION, oem_id=oem_id, oem_table_id=oem_table_id)
    return finish_table(header + body)


def tcpa_table(
    *,
    log_address: int = 0,
    log_length: int = TPM_LOG_AREA_MINIMUM_SIZE,
    oem_id: str = DEFAULT_OEM_ID,
    oem_table_id: str = DEFAULT_OEM_TABLE_ID,
) -> bytes:
    """The client TCPA table (revision 2, 50 bytes) of a TPM 1.2, checksum set."""
    body = _TCPA_BODY.pack(
        TCPA_CLIENT,
        A.check_unsigned("log_length", log_length, 32),
        A.check_unsigned("log_address", log_address, 64),
    )
    header = table_header("TCPA", TCPA_TABLE_LENGTH, TCPA_REVISION, oem_id=oem_id, oem_table_id=oem_table_id)
    return finish_table(header + body)


# -- the SSDT -------------------------------------------------------------------

_EXTERNAL_OP = 0x15  # External (name, object type, argument count): ACPI 6.x 20.2.5.1
_OBJECT_TYPE_DEVICE = 0x06
#: scopes every ACPI namespace has (no External needed)
_PREDEFINED_SCOPES = frozenset({"\\", "\\_SB", "\\_GPE", "\\_PR", "\\_SI", "\\_TZ"})


def ssdt_table(
    aml: bytes,
    scope: str,
    *,
    revision: int = 1,
    oem_id: str = DEFAULT_OEM_ID,
    oem_table_id: str = DEFAULT_OEM_TABLE_ID,
) -> bytes:
    """An SSDT whose definition block puts the AML object(s) *aml* in *scope*
    (``External (scope, DeviceObj)`` first unless *scope* is predefined), checksum set.

    :param revision: 1 (integers are 32 bits, QEMU's PC DSDT) or 2 (64 bits).
    """
    if not isinstance(aml, (bytes, bytearray)):
        raise ConfigurationError(f"aml must be bytes, got {type(aml).__name__}")
    if isinstance(revision, bool) or revision not in (1, 2):
        raise ConfigurationError(f"revision must be 1 (32-bit integers) or 2 (64-bit), got {revision!r}")
    if not isinstance(scope, str) or not scope.startswith("\\"):
        raise ConfigurationError(f"scope must be an absolute ACPI path such as \\_SB, got {scope!r}")
    body = b""
    if scope not in _PREDEFINED_SCOPES:
        body += bytes([_EXTERNAL_OP]) + A.name_string(scope) + bytes([_OBJECT_TYPE_DEVICE, 0])
    body += bytes(aml) if scope == "\\" else A.scope(scope, bytes(aml))
    length = ACPI_TABLE_HEADER_SIZE + len(body)
    header = table_header("SSDT", length, revision, oem_id=oem_id, oem_table_id=oem_table_id)
    return finish_table(header + body)


# -- a device's tables ------------------------------------------------------------


def acpi_tables(
    dev: Any,
    *,
    log_address: int = 0,
    oem_id: str = DEFAULT_OEM_ID,
    oem_table_id: str = DEFAULT_OEM_TABLE_ID,
) -> dict[str, bytes]:
    """The ACPI tables of *dev* keyed by signature: the log table
    (``TPM2`` or ``TCPA``, see :func:`log_table`; absent when QEMU builds
    none) and an ``SSDT`` with the device's AML (``dev.aml()``) in the scope
    QEMU puts it in.

    :param log_address: guest-physical address of the event-log area (the
        64 KiB ``etc/tpm/log``), written to LASA: an int in 0 .. 2**64 - 1.
    :param oem_id: the header's OEM ID, exactly 6 printable ASCII characters.
    :param oem_table_id: the header's OEM table ID, exactly 8.

    Every argument is checked (ConfigurationError) before anything is built.
    """
    A.check_unsigned("log_address", log_address, 64)
    _check_id("oem_id", oem_id, 6)
    _check_id("oem_table_id", oem_table_id, 8)
    platform = platform_of(dev)
    tables: dict[str, bytes] = {}
    which = log_table(dev)
    if which == "TPM2":
        tables["TPM2"] = tpm2_table(
            start_method=platform.start_method,
            control_area=platform.control_area,
            log_address=log_address,
            oem_id=oem_id,
            oem_table_id=oem_table_id,
        )
    elif which == "TCPA":
        tables["TCPA"] = tcpa_table(log_address=log_address, oem_id=oem_id, oem_table_id=oem_table_id)
    tables["SSDT"] = ssdt_table(
        dev.aml(), platform.scope, revision=platform.dsdt_revision, oem_id=oem_id, oem_table_id=oem_table_id
    )
    return tables
