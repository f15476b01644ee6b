"""Register maps as data: offsets, bit masks and fixed values.

Names follow the TCG PC Client Platform TPM Profile (PTP) specification,
Family 2.0, and the TCG PC Client TIS 1.3 specification, as QEMU's TIS model
uses them. Device code, firmware builders, docs and tests read these tables;
no bare register numbers elsewhere.

All multi-byte register values are little-endian on the bus.
"""

from __future__ import annotations

__all__ = [
    # geometry
    "TIS_BASE_ADDRESS",
    "TIS_NUM_LOCALITIES",
    "TIS_LOCALITY_SHIFT",
    "TIS_LOCALITY_SIZE",
    "TIS_REGION_SIZE",
    "TIS_BUFFER_MAX",
    "TIS_NO_LOCALITY",
    # register offsets inside a locality window
    "TPM_ACCESS",
    "TPM_INT_ENABLE",
    "TPM_INT_VECTOR",
    "TPM_INT_STATUS",
    "TPM_INTF_CAPABILITY",
    "TPM_STS",
    "TPM_DATA_FIFO",
    "TPM_INTERFACE_ID",
    "TPM_XDATA_FIFO",
    "TPM_XDATA_FIFO_END",
    "TPM_DID_VID",
    "TPM_RID",
    "TPM_DEBUG",
    "TIS_REGISTERS",
    # ACCESS bits
    "TPM_ACCESS_TPM_ESTABLISHMENT",
    "TPM_ACCESS_REQUEST_USE",
    "TPM_ACCESS_PENDING_REQUEST",
    "TPM_ACCESS_SEIZE",
    "TPM_ACCESS_BEEN_SEIZED",
    "TPM_ACCESS_ACTIVE_LOCALITY",
    "TPM_ACCESS_TPM_REG_VALID_STS",
    # STS bits
    "TPM_STS_RESPONSE_RETRY",
    "TPM_STS_SELFTEST_DONE",
    "TPM_STS_EXPECT",
    "TPM_STS_DATA_AVAIL",
    "TPM_STS_GO",
    "TPM_STS_COMMAND_READY",
    "TPM_STS_VALID",
    "TPM_STS_BURST_COUNT_SHIFT",
    "TPM_STS_BURST_COUNT_MASK",
    "TPM_STS_COMMAND_CANCEL",
    "TPM_STS_RESET_ESTABLISHMENT",
    "TPM_STS_TPM_FAMILY_MASK",
    "TPM_STS_TPM_FAMILY1_2",
    "TPM_STS_TPM_FAMILY2_0",
    # interrupts
    "TPM_INT_DATA_AVAIL",
    "TPM_INT_STS_VALID",
    "TPM_INT_LOCALITY_CHANGE",
    "TPM_INT_COMMAND_READY",
    "TPM_INT_POLARITY_MASK",
    "TPM_INT_POLARITY_LOW_LEVEL",
    "TPM_INT_GLOBAL_ENABLE",
    "TPM_INT_SUPPORTED",
    "TPM_INT_ENABLE_WRITABLE",
    "TPM_INT_VECTOR_DEFAULT",
    # identification and capabilities
    "TPM_INTF_CAPABILITY_TPM12",
    "TPM_INTF_CAPABILITY_TPM20",
    "TPM_INTERFACE_ID_TPM12",
    "TPM_INTERFACE_ID_TPM20",
    "TPM_INTERFACE_ID_INT_SEL_LOCK",
    "TPM_DID",
    "TPM_VID",
    "TPM_DID_VID_VALUE",
    "TPM_RID_VALUE",
    "TIS_NO_DATA_BYTE",
    # command state machine (numbers are QEMU's, they are migrated)
    "TIS_STATE_IDLE",
    "TIS_STATE_READY",
    "TIS_STATE_COMPLETION",
    "TIS_STATE_EXECUTION",
    "TIS_STATE_RECEPTION",
    "TIS_STATE_NAMES",
    "intf_capability",
    "interface_id",
    "sts_family",
]

# --- geometry ----------------------------------------------------------------
TIS_BASE_ADDRESS = 0xFED40000  #: where PC platforms map the TIS
TIS_NUM_LOCALITIES = 5
TIS_LOCALITY_SHIFT = 12
TIS_LOCALITY_SIZE = 1 << TIS_LOCALITY_SHIFT  # 0x1000
TIS_REGION_SIZE = TIS_NUM_LOCALITIES * TIS_LOCALITY_SIZE  # 0x5000
TIS_BUFFER_MAX = 4096  #: the shared command/response buffer
TIS_NO_LOCALITY = 0xFF  #: "no locality" in active/next/aborting

# --- register offsets within a locality (4-byte slots) ----------------------
TPM_ACCESS = 0x000
TPM_INT_ENABLE = 0x008
TPM_INT_VECTOR = 0x00C
TPM_INT_STATUS = 0x010
TPM_INTF_CAPABILITY = 0x014
TPM_STS = 0x018
TPM_DATA_FIFO = 0x024
TPM_INTERFACE_ID = 0x030
TPM_XDATA_FIFO = 0x080
TPM_XDATA_FIFO_END = 0x0BC  #: last 4-byte slot of the XDATA_FIFO window
TPM_DID_VID = 0xF00
TPM_RID = 0xF04
TPM_DEBUG = 0xF90  #: QEMU's vendor debug register; reads all ones

#: name -> offset of every register the model implements
TIS_REGISTERS = {
    "TPM_ACCESS": TPM_ACCESS,
    "TPM_INT_ENABLE": TPM_INT_ENABLE,
    "TPM_INT_VECTOR": TPM_INT_VECTOR,
    "TPM_INT_STATUS": TPM_INT_STATUS,
    "TPM_INTF_CAPABILITY": TPM_INTF_CAPABILITY,
    "TPM_STS": TPM_STS,
    "TPM_DATA_FIFO": TPM_DATA_FIFO,
    "TPM_INTERFACE_ID": TPM_INTERFACE_ID,
    "TPM_XDATA_FIFO": TPM_XDATA_FIFO,
    "TPM_DID_VID": TPM_DID_VID,
    "TPM_RID": TPM_RID,
    "TPM_DEBUG": TPM_DEBUG,
}

# --- TPM_ACCESS_x (8 bits) -----------------------------------------------------
TPM_ACCESS_TPM_ESTABLISHMENT = 0x01  #: reads NOT(established flag)
TPM_ACCESS_REQUEST_USE = 0x02
TPM_ACCESS_PENDING_REQUEST = 0x04  #: computed: another locality requests use
TPM_ACCESS_SEIZE = 0x08  #: write-only; kept internally as "seize pending"
TPM_ACCESS_BEEN_SEIZED = 0x10
TPM_ACCESS_ACTIVE_LOCALITY = 0x20
TPM_ACCESS_TPM_REG_VALID_STS = 0x80

# --- TPM_STS_x (32 bits) --------------------------------------------------------
TPM_STS_RESPONSE_RETRY = 0x00000002
TPM_STS_SELFTEST_DONE = 0x00000004
TPM_STS_EXPECT = 0x00000008
TPM_STS_DATA_AVAIL = 0x00000010
TPM_STS_GO = 0x00000020
TPM_STS_COMMAND_READY = 0x00000040
TPM_STS_VALID = 0x00000080
TPM_STS_BURST_COUNT_SHIFT = 8
TPM_STS_BURST_COUNT_MASK = 0x00FFFF00
TPM_STS_COMMAND_CANCEL = 0x01000000  #: TPM 2.0 only
TPM_STS_RESET_ESTABLISHMENT = 0x02000000  #: TPM 2.0 only, localities 3 and 4
TPM_STS_TPM_FAMILY_MASK = 0x0C000000
TPM_STS_TPM_FAMILY1_2 = 0x00000000
TPM_STS_TPM_FAMILY2_0 = 0x04000000

# --- TPM_INT_ENABLE_x / TPM_INT_STATUS_x ------------------------------------------
TPM_INT_DATA_AVAIL = 0x01
TPM_INT_STS_VALID = 0x02
TPM_INT_LOCALITY_CHANGE = 0x04
TPM_INT_COMMAND_READY = 0x80
TPM_INT_POLARITY_MASK = 0x18  #: typePolarity; stored, not acted on
TPM_INT_POLARITY_LOW_LEVEL = 0x08  #: reset value of INT_ENABLE
TPM_INT_GLOBAL_ENABLE = 0x80000000
TPM_INT_SUPPORTED = TPM_INT_DATA_AVAIL | TPM_INT_STS_VALID | TPM_INT_LOCALITY_CHANGE | TPM_INT_COMMAND_READY
TPM_INT_ENABLE_WRITABLE = TPM_INT_GLOBAL_ENABLE | TPM_INT_POLARITY_MASK | TPM_INT_SUPPORTED
TPM_INT_VECTOR_DEFAULT = 5  #: QEMU's default ``irq`` property

# --- TPM_INTF_CAPABILITY_x --------------------------------------------------------
# interface version (31..28), 64-byte transfers (10..9), commandReady (7),
# interruptLevelLow (4), localityChange (2), stsValid (1), dataAvail (0)
TPM_INTF_CAPABILITY_TPM12 = 0x20000697  #: TIS 1.3
TPM_INTF_CAPABILITY_TPM20 = 0x30000697  #: TIS 1.3 for TPM 2.0

# --- TPM_INTERFACE_ID_x -----------------------------------------------------------
TPM_INTERFACE_ID_TPM12 = 0xFFFFFFFF  #: interface type 0xF: TIS 1.3, rest don't care
TPM_INTERFACE_ID_TPM20 = 0x00002100  #: FIFO, CapLocality (8), CapTIS (13)
TPM_INTERFACE_ID_INT_SEL_LOCK = 0x00080000  #: IntfSelLock, bit 19: sticky

# --- identification ---------------------------------------------------------------
TPM_DID = 0x0001
TPM_VID = 0x1014  #: IBM, as QEMU reports
TPM_DID_VID_VALUE = (TPM_DID << 16) | TPM_VID
TPM_RID_VALUE = 0x01
TIS_NO_DATA_BYTE = 0xFF  #: what an empty FIFO reads

# --- command state machine --------------------------------------------------------
TIS_STATE_IDLE = 0
TIS_STATE_READY = 1
TIS_STATE_COMPLETION = 2
TIS_STATE_EXECUTION = 3
TIS_STATE_RECEPTION = 4
TIS_STATE_NAMES = ("IDLE", "READY", "COMPLETION", "EXECUTION", "RECEPTION")


def intf_capability(tpm_version: int) -> int:
    """TPM_INTF_CAPABILITY for a backend version (0 = unknown)."""
    return {1: TPM_INTF_CAPABILITY_TPM12, 2: TPM_INTF_CAPABILITY_TPM20}.get(tpm_version, 0)


def interface_id(tpm_version: int) -> int:
    """TPM_INTERFACE_ID at reset for a backend version (unknown: 0)."""
    return {1: TPM_INTERFACE_ID_TPM12, 2: TPM_INTERFACE_ID_TPM20}.get(tpm_version, 0)


def sts_family(tpm_version: int) -> int:
    """The tpmFamily bits of TPM_STS for a backend version."""
    return TPM_STS_TPM_FAMILY2_0 if tpm_version == 2 else TPM_STS_TPM_FAMILY1_2


# =============================================================================
# CRB (Command Response Buffer) interface, TCG PC Client PTP section 6.5.3,
# as QEMU's ``tpm-crb`` presents it (locality 0 only) and as the PTP five-
# locality layout extends it. Offsets are within one locality's 0x1000 window.
# =============================================================================
__all__ += [
    # geometry
    "CRB_BASE_ADDRESS",
    "CRB_LOCALITY_SHIFT",
    "CRB_LOCALITY_SIZE",
    "CRB_NUM_LOCALITIES",
    "CRB_NO_LOCALITY",
    "CRB_BUFFER_SIZE",
    # registers
    "TPM_LOC_STATE",
    "TPM_LOC_CTRL",
    "TPM_LOC_STS",
    "TPM_CRB_INTF_ID",
    "TPM_CRB_INTF_ID_HIGH",
    "TPM_CRB_CTRL_EXT",
    "TPM_CRB_CTRL_REQ",
    "TPM_CRB_CTRL_STS",
    "TPM_CRB_CTRL_CANCEL",
    "TPM_CRB_CTRL_START",
    "TPM_CRB_INT_ENABLE",
    "TPM_CRB_INT_STS",
    "TPM_CRB_CTRL_CMD_SIZE",
    "TPM_CRB_CTRL_CMD_LADDR",
    "TPM_CRB_CTRL_CMD_HADDR",
    "TPM_CRB_CTRL_RSP_SIZE",
    "TPM_CRB_CTRL_RSP_ADDR",
    "TPM_CRB_CTRL_RSP_ADDR_HIGH",
    "TPM_CRB_DATA_BUFFER",
    "CRB_REGISTERS",
    # bits
    "TPM_LOC_STATE_TPM_ESTABLISHED",
    "TPM_LOC_STATE_LOC_ASSIGNED",
    "TPM_LOC_STATE_ACTIVE_LOCALITY_SHIFT",
    "TPM_LOC_STATE_ACTIVE_LOCALITY_MASK",
    "TPM_LOC_STATE_TPM_REG_VALID_STS",
    "TPM_LOC_CTRL_REQUEST_ACCESS",
    "TPM_LOC_CTRL_RELINQUISH",
    "TPM_LOC_CTRL_SEIZE",
    "TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT",
    "TPM_LOC_STS_GRANTED",
    "TPM_LOC_STS_BEEN_SEIZED",
    "TPM_CRB_CTRL_REQ_CMD_READY",
    "TPM_CRB_CTRL_REQ_GO_IDLE",
    "TPM_CRB_CTRL_STS_TPM_STS",
    "TPM_CRB_CTRL_STS_TPM_IDLE",
    "TPM_CRB_CTRL_CANCEL_INVOKE",
    "TPM_CRB_CTRL_START_INVOKE",
    # identification
    "TPM_CRB_INTF_TYPE_CRB_ACTIVE",
    "TPM_CRB_INTF_VERSION_CRB",
    "TPM_CRB_INTF_CAP_LOCALITY",
    "TPM_CRB_INTF_CAP_CRB_IDLE_BYPASS",
    "TPM_CRB_INTF_CAP_DATA_XFER_SIZE_64",
    "TPM_CRB_INTF_CAP_FIFO",
    "TPM_CRB_INTF_CAP_CRB",
    "TPM_CRB_INTF_SEL_CRB",
    "TPM_CRB_INTF_SEL_LOCK",
    "TPM_CRB_INTF_ID_VALUE",
    "TPM_CRB_INTF_ID_HIGH_VALUE",
    "crb_intf_id",
]

# --- geometry -------------------------------------------------------------------
CRB_BASE_ADDRESS = 0xFED40000  #: where PC platforms map the CRB (QEMU: TPM_CRB_ADDR_BASE)
CRB_LOCALITY_SHIFT = 12
CRB_LOCALITY_SIZE = 1 << CRB_LOCALITY_SHIFT  #: one locality's window: registers + data buffer
CRB_NUM_LOCALITIES = 5  #: the PTP layout; QEMU implements locality 0 only
CRB_NO_LOCALITY = 0xFF
TPM_CRB_DATA_BUFFER = 0x080  #: command and response share the buffer (plain RAM in QEMU)
CRB_BUFFER_SIZE = CRB_LOCALITY_SIZE - TPM_CRB_DATA_BUFFER  #: 0xF80 = 3968 bytes

# --- registers (4-byte slots) -------------------------------------------------------
TPM_LOC_STATE = 0x000
TPM_LOC_CTRL = 0x008  #: write-only actions, reads 0
TPM_LOC_STS = 0x00C
TPM_CRB_INTF_ID = 0x030  #: 64-bit: low dword here
TPM_CRB_INTF_ID_HIGH = 0x034  #: VID (15..0), DID (31..16)
TPM_CRB_CTRL_EXT = 0x038
TPM_CRB_CTRL_REQ = 0x040  #: write-only actions, reads 0
TPM_CRB_CTRL_STS = 0x044
TPM_CRB_CTRL_CANCEL = 0x048  #: write-only action, reads 0
TPM_CRB_CTRL_START = 0x04C
TPM_CRB_INT_ENABLE = 0x050  #: no interrupts: reads 0, writes ignored
TPM_CRB_INT_STS = 0x054
TPM_CRB_CTRL_CMD_SIZE = 0x058
TPM_CRB_CTRL_CMD_LADDR = 0x05C
TPM_CRB_CTRL_CMD_HADDR = 0x060
TPM_CRB_CTRL_RSP_SIZE = 0x064
TPM_CRB_CTRL_RSP_ADDR = 0x068  #: 64-bit: low dword here
TPM_CRB_CTRL_RSP_ADDR_HIGH = 0x06C

#: name -> offset of every CRB register
CRB_REGISTERS = {
    "TPM_LOC_STATE": TPM_LOC_STATE,
    "TPM_LOC_CTRL": TPM_LOC_CTRL,
    "TPM_LOC_STS": TPM_LOC_STS,
    "TPM_CRB_INTF_ID": TPM_CRB_INTF_ID,
    "TPM_CRB_INTF_ID_HIGH": TPM_CRB_INTF_ID_HIGH,
    "TPM_CRB_CTRL_EXT": TPM_CRB_CTRL_EXT,
    "TPM_CRB_CTRL_REQ": TPM_CRB_CTRL_REQ,
    "TPM_CRB_CTRL_STS": TPM_CRB_CTRL_STS,
    "TPM_CRB_CTRL_CANCEL": TPM_CRB_CTRL_CANCEL,
    "TPM_CRB_CTRL_START": TPM_CRB_CTRL_START,
    "TPM_CRB_INT_ENABLE": TPM_CRB_INT_ENABLE,
    "TPM_CRB_INT_STS": TPM_CRB_INT_STS,
    "TPM_CRB_CTRL_CMD_SIZE": TPM_CRB_CTRL_CMD_SIZE,
    "TPM_CRB_CTRL_CMD_LADDR": TPM_CRB_CTRL_CMD_LADDR,
    "TPM_CRB_CTRL_CMD_HADDR": TPM_CRB_CTRL_CMD_HADDR,
    "TPM_CRB_CTRL_RSP_SIZE": TPM_CRB_CTRL_RSP_SIZE,
    "TPM_CRB_CTRL_RSP_ADDR": TPM_CRB_CTRL_RSP_ADDR,
    "TPM_CRB_CTRL_RSP_ADDR_HIGH": TPM_CRB_CTRL_RSP_ADDR_HIGH,
    "TPM_CRB_DATA_BUFFER": TPM_CRB_DATA_BUFFER,
}

# --- TPM_LOC_STATE_x (shared by all localities) ---------------------------------------
TPM_LOC_STATE_TPM_ESTABLISHED = 0x01  #: reads NOT(established flag); computed at offset 0 only
TPM_LOC_STATE_LOC_ASSIGNED = 0x02
TPM_LOC_STATE_ACTIVE_LOCALITY_SHIFT = 2
TPM_LOC_STATE_ACTIVE_LOCALITY_MASK = 0x1C
TPM_LOC_STATE_TPM_REG_VALID_STS = 0x80

# --- TPM_LOC_CTRL_x (write-only) ---------------------------------------------------------
TPM_LOC_CTRL_REQUEST_ACCESS = 0x01
TPM_LOC_CTRL_RELINQUISH = 0x02
TPM_LOC_CTRL_SEIZE = 0x04
TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT = 0x08

# --- TPM_LOC_STS_x -------------------------------------------------------------------------
TPM_LOC_STS_GRANTED = 0x01
TPM_LOC_STS_BEEN_SEIZED = 0x02

# --- TPM_CRB_CTRL_REQ_x / _STS_x / _CANCEL_x / _START_x ------------------------------------
TPM_CRB_CTRL_REQ_CMD_READY = 0x01
TPM_CRB_CTRL_REQ_GO_IDLE = 0x02
TPM_CRB_CTRL_STS_TPM_STS = 0x01  #: fatal error; sticky until reset
TPM_CRB_CTRL_STS_TPM_IDLE = 0x02
TPM_CRB_CTRL_CANCEL_INVOKE = 0x01
TPM_CRB_CTRL_START_INVOKE = 0x01

# --- TPM_CRB_INTF_ID_x ---------------------------------------------------------------------
TPM_CRB_INTF_TYPE_CRB_ACTIVE = 0x1  #: InterfaceType (3..0)
TPM_CRB_INTF_VERSION_CRB = 0x1 << 4  #: InterfaceVersion (7..4)
TPM_CRB_INTF_CAP_LOCALITY = 1 << 8  #: more than locality 0 (QEMU: 0)
TPM_CRB_INTF_CAP_CRB_IDLE_BYPASS = 1 << 9  #: QEMU: 0
TPM_CRB_INTF_CAP_DATA_XFER_SIZE_64 = 3 << 11  #: CapDataXferSizeSupport: 64 bytes
TPM_CRB_INTF_CAP_FIFO = 1 << 13  #: QEMU: 0
TPM_CRB_INTF_CAP_CRB = 1 << 14
TPM_CRB_INTF_SEL_CRB = 1 << 17  #: InterfaceSelector (18..17) = 1: CRB
TPM_CRB_INTF_SEL_LOCK = 1 << 19  #: QEMU: 0 (and writes never set it)
#: QEMU's TPM_CRB_INTF_ID, low dword (RID, bits 31..24, is 0)
TPM_CRB_INTF_ID_VALUE = (
    TPM_CRB_INTF_TYPE_CRB_ACTIVE
    | TPM_CRB_INTF_VERSION_CRB
    | TPM_CRB_INTF_CAP_DATA_XFER_SIZE_64
    | TPM_CRB_INTF_CAP_CRB
    | TPM_CRB_INTF_SEL_CRB
)  # 0x00025811
TPM_CRB_INTF_ID_HIGH_VALUE = TPM_VID  #: VID 0x1014 (IBM), DID 0


def crb_intf_id(localities: int) -> int:
    """TPM_CRB_INTF_ID (low dword) for a CRB with *localities* localities."""
    return TPM_CRB_INTF_ID_VALUE | (TPM_CRB_INTF_CAP_LOCALITY if localities > 1 else 0)
