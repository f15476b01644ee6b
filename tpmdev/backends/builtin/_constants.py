"""Numeric constants of the TPM 2.0 and TPM 1.2 wire formats.

Names and values follow TCG TPM 2.0 Library Part 2 ("Structures"), section 6
(constants) and the TPM 1.2 Main Part 2 ("Structures"). Only what the builtin
TPM uses is listed; every other module takes its numbers from here.
"""

from __future__ import annotations

__all__ = [
    "HASH_ALGS",
    "IMPLEMENTATION_PCR",
    "MAX_CAP_BUFFER",
    "MAX_COMMAND_SIZE",
    "MAX_DIGEST_BUFFER",
    "MAX_DIGEST_SIZE",
    "MAX_SESSION_NUM",
    "PCR_SELECT_MAX",
    "PT_FIXED",
    "PT_VAR",
    "TPMA_SESSION_CONTINUESESSION",
    "TPMA_SESSION_RESERVED",
    "TPM_ALG_NULL",
    "TPM_ALG_SHA1",
    "TPM_ALG_SHA256",
    "TPM_ALG_SHA384",
    "TPM_ALG_SHA512",
    "TPM_BADINDEX",
    "TPM_BADTAG",
    "TPM_BAD_LOCALITY",
    "TPM_BAD_ORDINAL",
    "TPM_BAD_PARAMETER",
    "TPM_BAD_PARAM_SIZE",
    "TPM_CAP_ALGS",
    "TPM_CAP_COMMANDS",
    "TPM_CAP_HANDLES",
    "TPM_CAP_PCRS",
    "TPM_CAP_PROPERTY",
    "TPM_CAP_PROP_INPUT_BUFFER",
    "TPM_CAP_PROP_MANUFACTURER",
    "TPM_CAP_PROP_PCR",
    "TPM_CAP_TPM_PROPERTIES",
    "TPM_CAP_VERSION_VAL",
    "TPM_DEACTIVATED",
    "TPM_FAIL",
    "TPM_GENERATED_VALUE",
    "TPM_HT_HMAC_SESSION",
    "TPM_HT_POLICY_SESSION",
    "TPM_INVALID_POSTINIT",
    "TPM_PT_FAMILY_INDICATOR",
    "TPM_PT_INPUT_BUFFER",
    "TPM_PT_MANUFACTURER",
    "TPM_PT_MAX_COMMAND_SIZE",
    "TPM_PT_MAX_DIGEST",
    "TPM_PT_MAX_RESPONSE_SIZE",
    "TPM_PT_PCR_COUNT",
    "TPM_PT_PCR_SELECT_MIN",
    "TPM_PT_TOTAL_COMMANDS",
    "TPM_RC_ATTRIBUTES",
    "TPM_RC_AUTHSIZE",
    "TPM_RC_AUTH_MISSING",
    "TPM_RC_BAD_AUTH",
    "TPM_RC_BAD_TAG",
    "TPM_RC_COMMAND_CODE",
    "TPM_RC_COMMAND_SIZE",
    "TPM_RC_FAILURE",
    "TPM_RC_FMT1",
    "TPM_RC_H",
    "TPM_RC_HANDLE",
    "TPM_RC_HASH",
    "TPM_RC_HIERARCHY",
    "TPM_RC_INITIALIZE",
    "TPM_RC_INSUFFICIENT",
    "TPM_RC_LOCALITY",
    "TPM_RC_NONCE",
    "TPM_RC_P",
    "TPM_RC_REFERENCE_S0",
    "TPM_RC_RESERVED_BITS",
    "TPM_RC_S",
    "TPM_RC_SIZE",
    "TPM_RC_SUCCESS",
    "TPM_RC_VALUE",
    "TPM_RC_VER1",
    "TPM_RH_ENDORSEMENT",
    "TPM_RH_NULL",
    "TPM_RH_OWNER",
    "TPM_RH_PLATFORM",
    "TPM_RS_PW",
    "TPM_ST_CLEAR",
    "TPM_ST_DEACTIVATED",
    "TPM_ST_DEFINED",
    "TPM_ST_HASHCHECK",
    "TPM_ST_NO_SESSIONS",
    "TPM_ST_NULL",
    "TPM_ST_RSP_COMMAND",
    "TPM_ST_SESSIONS",
    "TPM_ST_STATE",
    "TPM_SUCCESS",
    "TPM_SU_CLEAR",
    "TPM_SU_STATE",
    "TPM_TAG_CAP_VERSION_INFO",
    "TPM_TAG_CURRENT_TICKS",
    "TPM_TAG_RQU_AUTH1_COMMAND",
    "TPM_TAG_RQU_AUTH2_COMMAND",
    "TPM_TAG_RQU_COMMAND",
    "TPM_TAG_RSP_COMMAND",
    "TPM_CC_GetCapability",
    "TPM_CC_GetRandom",
    "TPM_CC_GetTestResult",
    "TPM_CC_Hash",
    "TPM_CC_IncrementalSelfTest",
    "TPM_CC_PCR_Event",
    "TPM_CC_PCR_Extend",
    "TPM_CC_PCR_Read",
    "TPM_CC_PCR_Reset",
    "TPM_CC_ReadClock",
    "TPM_CC_SelfTest",
    "TPM_CC_Shutdown",
    "TPM_CC_Startup",
    "TPM_CC_StirRandom",
    "TPM_ORD_ContinueSelfTest",
    "TPM_ORD_Extend",
    "TPM_ORD_GetCapability",
    "TPM_ORD_GetRandom",
    "TPM_ORD_GetTicks",
    "TPM_ORD_PcrRead",
    "TPM_ORD_Startup",
]

# --- TPM 2.0 structure tags (TPM_ST, Part 2 6.9) -------------------------
TPM_ST_RSP_COMMAND = 0x00C4
TPM_ST_NULL = 0x8000
TPM_ST_NO_SESSIONS = 0x8001
TPM_ST_SESSIONS = 0x8002
TPM_ST_HASHCHECK = 0x8024
#: Every TPM_ST value a TPM unmarshals as a TPM_ST. A tag outside this set is
#: TPM_RC_VALUE; one inside it but not a command tag is TPM_RC_BAD_TAG (the
#: set is the one libtpms 0.9 accepts, checked against swtpm 0.7.1).
TPM_ST_DEFINED = frozenset(
    {
        0x00C4,
        0x8000,
        0x8001,
        0x8002,
        0x8014,
        0x8015,
        0x8016,
        0x8017,
        0x8018,
        0x8019,
        0x801A,
        0x8021,
        0x8022,
        0x8023,
        0x8024,
        0x8025,
    }
)

TPM_SU_CLEAR = 0x0000
TPM_SU_STATE = 0x0001

# --- command codes (TPM_CC, Part 2 6.5.2) ---------------------------------
TPM_CC_PCR_Event = 0x0000013C
TPM_CC_PCR_Reset = 0x0000013D
TPM_CC_IncrementalSelfTest = 0x00000142
TPM_CC_SelfTest = 0x00000143
TPM_CC_Startup = 0x00000144
TPM_CC_Shutdown = 0x00000145
TPM_CC_StirRandom = 0x00000146
TPM_CC_GetCapability = 0x0000017A
TPM_CC_GetRandom = 0x0000017B
TPM_CC_GetTestResult = 0x0000017C
TPM_CC_Hash = 0x0000017D
TPM_CC_PCR_Read = 0x0000017E
TPM_CC_ReadClock = 0x00000181
TPM_CC_PCR_Extend = 0x00000182

# --- response codes (TPM_RC, Part 2 6.6) -----------------------------------
TPM_RC_SUCCESS = 0x000
TPM_RC_BAD_TAG = 0x01E
TPM_RC_VER1 = 0x100
TPM_RC_INITIALIZE = TPM_RC_VER1 + 0x000
TPM_RC_FAILURE = TPM_RC_VER1 + 0x001
TPM_RC_COMMAND_SIZE = TPM_RC_VER1 + 0x042
TPM_RC_COMMAND_CODE = TPM_RC_VER1 + 0x043
TPM_RC_AUTHSIZE = TPM_RC_VER1 + 0x044
TPM_RC_AUTH_MISSING = TPM_RC_VER1 + 0x025
TPM_RC_FMT1 = 0x080
TPM_RC_ATTRIBUTES = TPM_RC_FMT1 + 0x002
TPM_RC_HASH = TPM_RC_FMT1 + 0x003
TPM_RC_VALUE = TPM_RC_FMT1 + 0x004
TPM_RC_HIERARCHY = TPM_RC_FMT1 + 0x005
TPM_RC_HANDLE = TPM_RC_FMT1 + 0x00B
TPM_RC_NONCE = TPM_RC_FMT1 + 0x00F
TPM_RC_SIZE = TPM_RC_FMT1 + 0x015
TPM_RC_INSUFFICIENT = TPM_RC_FMT1 + 0x01A
TPM_RC_RESERVED_BITS = TPM_RC_FMT1 + 0x021
TPM_RC_BAD_AUTH = TPM_RC_FMT1 + 0x022
TPM_RC_WARN = 0x900
TPM_RC_LOCALITY = TPM_RC_WARN + 0x007
TPM_RC_REFERENCE_S0 = TPM_RC_WARN + 0x018
# Which part of a command a format-one code refers to: handle, parameter or
# session number N is added as N << 8 (Part 2 6.6.3, Table 17).
TPM_RC_H = 0x000
TPM_RC_P = 0x040
TPM_RC_S = 0x800

# --- handles (Part 2 6.9, 7.4) ---------------------------------------------
TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
TPM_RH_NULL = 0x40000007
TPM_RH_ENDORSEMENT = 0x4000000B
TPM_RH_PLATFORM = 0x4000000C
TPM_HT_HMAC_SESSION = 0x02
TPM_HT_POLICY_SESSION = 0x03
TPM_GENERATED_VALUE = 0xFF544347

# --- algorithms (TCG Algorithm Registry) -----------------------------------
TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
#: The hash algorithms this TPM implements: id -> (algorithm name, digest size).
HASH_ALGS: dict[int, tuple[str, int]] = {
    TPM_ALG_SHA1: ("sha1", 20),
    TPM_ALG_SHA256: ("sha256", 32),
    TPM_ALG_SHA384: ("sha384", 48),
    TPM_ALG_SHA512: ("sha512", 64),
}

# --- capabilities (Part 2 6.12, 6.13) --------------------------------------
TPM_CAP_ALGS = 0x00000000
TPM_CAP_HANDLES = 0x00000001
TPM_CAP_COMMANDS = 0x00000002
TPM_CAP_PCRS = 0x00000005
TPM_CAP_TPM_PROPERTIES = 0x00000006
PT_FIXED = 0x100
PT_VAR = 0x200
TPM_PT_FAMILY_INDICATOR = PT_FIXED + 0
TPM_PT_MANUFACTURER = PT_FIXED + 5
TPM_PT_INPUT_BUFFER = PT_FIXED + 13
TPM_PT_PCR_COUNT = PT_FIXED + 18
TPM_PT_PCR_SELECT_MIN = PT_FIXED + 19
TPM_PT_MAX_COMMAND_SIZE = PT_FIXED + 30
TPM_PT_MAX_RESPONSE_SIZE = PT_FIXED + 31
TPM_PT_MAX_DIGEST = PT_FIXED + 32
TPM_PT_TOTAL_COMMANDS = PT_FIXED + 41

TPMA_SESSION_CONTINUESESSION = 0x01
TPMA_SESSION_RESERVED = 0x18

# --- implementation limits (Part 2 Annex / PC Client profile) -------------
IMPLEMENTATION_PCR = 24
PCR_SELECT_MAX = 3  # bytes of pcrSelect; libtpms accepts exactly 3
MAX_DIGEST_BUFFER = 1024  # TPM2B_MAX_BUFFER, TPM2B_EVENT use this too
MAX_CAP_BUFFER = 1024
MAX_COMMAND_SIZE = 4096
MAX_SESSION_NUM = 3
MAX_DIGEST_SIZE = 64  # sizeof(TPMU_HA) with SHA-512 implemented

# --- TPM 1.2 (Main Part 2) --------------------------------------------------
TPM_TAG_RQU_COMMAND = 0x00C1
TPM_TAG_RQU_AUTH1_COMMAND = 0x00C2
TPM_TAG_RQU_AUTH2_COMMAND = 0x00C3
TPM_TAG_RSP_COMMAND = 0x00C4
TPM_ST_CLEAR = 0x0001
TPM_ST_STATE = 0x0002
TPM_ST_DEACTIVATED = 0x0003
TPM_ORD_Extend = 0x00000014
TPM_ORD_PcrRead = 0x00000015
TPM_ORD_GetRandom = 0x00000046
TPM_ORD_GetCapability = 0x00000065
TPM_ORD_ContinueSelfTest = 0x00000053
TPM_ORD_GetTicks = 0x000000F1
TPM_ORD_Startup = 0x00000099
TPM_SUCCESS = 0x00
TPM_BADINDEX = 0x02
TPM_BAD_PARAMETER = 0x03
TPM_DEACTIVATED = 0x06
TPM_FAIL = 0x09
TPM_BAD_ORDINAL = 0x0A
TPM_BAD_PARAM_SIZE = 0x19
TPM_INVALID_POSTINIT = 0x26
TPM_BADTAG = 0x1E
TPM_BAD_LOCALITY = 0x3D
TPM_CAP_PROPERTY = 0x00000005
TPM_CAP_VERSION_VAL = 0x0000001A
TPM_CAP_PROP_PCR = 0x00000101
TPM_CAP_PROP_MANUFACTURER = 0x00000103
TPM_CAP_PROP_INPUT_BUFFER = 0x00000124
TPM_TAG_CAP_VERSION_INFO = 0x0030
TPM_TAG_CURRENT_TICKS = 0x0014
