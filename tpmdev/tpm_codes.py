"""Names for TPM command codes and response codes, for people reading traces.

TPM 2.0 command codes are TPM_CC from TPM 2.0 Part 2 (table "TPM_CC
Constants"); response codes are decoded by their format as Part 2 describes
TPM_RC: format zero (TPM_RC_VER1 errors, TPM_RC_WARN warnings, vendor and
TPM 1.2 codes) and format one (an error number with the handle, session or
parameter it concerns). TPM 1.2 ordinals and return codes are from TPM 1.2
Main Part 2; only the ones software commonly sends are named, the others
print as numbers. Nothing here is on a hot path.
"""

from __future__ import annotations

__all__ = ["command_name", "response_name", "TPM2_CC_NAMES", "TPM12_ORD_NAMES"]

TPM2_CC_NAMES: dict[int, str] = {
    0x11F: "NV_UndefineSpaceSpecial", 0x120: "EvictControl", 0x121: "HierarchyControl",
    0x122: "NV_UndefineSpace", 0x124: "ChangeEPS", 0x125: "ChangePPS", 0x126: "Clear",
    0x127: "ClearControl", 0x128: "ClockSet", 0x129: "HierarchyChangeAuth", 0x12A: "NV_DefineSpace",
    0x12B: "PCR_Allocate", 0x12C: "PCR_SetAuthPolicy", 0x12D: "PP_Commands", 0x12E: "SetPrimaryPolicy",
    0x12F: "FieldUpgradeStart", 0x130: "ClockRateAdjust", 0x131: "CreatePrimary",
    0x132: "NV_GlobalWriteLock", 0x133: "GetCommandAuditDigest", 0x134: "NV_Increment",
    0x135: "NV_SetBits", 0x136: "NV_Extend", 0x137: "NV_Write", 0x138: "NV_WriteLock",
    0x139: "DictionaryAttackLockReset", 0x13A: "DictionaryAttackParameters", 0x13B: "NV_ChangeAuth",
    0x13C: "PCR_Event", 0x13D: "PCR_Reset", 0x13E: "SequenceComplete", 0x13F: "SetAlgorithmSet",
    0x140: "SetCommandCodeAuditStatus", 0x141: "FieldUpgradeData", 0x142: "IncrementalSelfTest",
    0x143: "SelfTest", 0x144: "Startup", 0x145: "Shutdown", 0x146: "StirRandom",
    0x147: "ActivateCredential", 0x148: "Certify", 0x149: "PolicyNV", 0x14A: "CertifyCreation",
    0x14B: "Duplicate", 0x14C: "GetTime", 0x14D: "GetSessionAuditDigest", 0x14E: "NV_Read",
    0x14F: "NV_ReadLock", 0x150: "ObjectChangeAuth", 0x151: "PolicySecret", 0x152: "Rewrap",
    0x153: "Create", 0x154: "ECDH_ZGen", 0x155: "HMAC", 0x156: "Import", 0x157: "Load",
    0x158: "Quote", 0x159: "RSA_Decrypt", 0x15B: "HMAC_Start", 0x15C: "SequenceUpdate",
    0x15D: "Sign", 0x15E: "Unseal", 0x160: "PolicySigned", 0x161: "ContextLoad",
    0x162: "ContextSave", 0x163: "ECDH_KeyGen", 0x164: "EncryptDecrypt", 0x165: "FlushContext",
    0x167: "LoadExternal", 0x168: "MakeCredential", 0x169: "NV_ReadPublic", 0x16A: "PolicyAuthorize",
    0x16B: "PolicyAuthValue", 0x16C: "PolicyCommandCode", 0x16D: "PolicyCounterTimer",
    0x16E: "PolicyCpHash", 0x16F: "PolicyLocality", 0x170: "PolicyNameHash", 0x171: "PolicyOR",
    0x172: "PolicyTicket", 0x173: "ReadPublic", 0x174: "RSA_Encrypt", 0x176: "StartAuthSession",
    0x177: "VerifySignature", 0x178: "ECC_Parameters", 0x179: "FirmwareRead", 0x17A: "GetCapability",
    0x17B: "GetRandom", 0x17C: "GetTestResult", 0x17D: "Hash", 0x17E: "PCR_Read", 0x17F: "PolicyPCR",
    0x180: "PolicyRestart", 0x181: "ReadClock", 0x182: "PCR_Extend", 0x183: "PCR_SetAuthValue",
    0x184: "NV_Certify", 0x185: "EventSequenceComplete", 0x186: "HashSequenceStart",
    0x187: "PolicyPhysicalPresence", 0x188: "PolicyDuplicationSelect", 0x189: "PolicyGetDigest",
    0x18A: "TestParms", 0x18B: "Commit", 0x18C: "PolicyPassword", 0x18D: "ZGen_2Phase",
    0x18E: "EC_Ephemeral", 0x18F: "PolicyNvWritten", 0x190: "PolicyTemplate", 0x191: "CreateLoaded",
    0x192: "PolicyAuthorizeNV", 0x193: "EncryptDecrypt2", 0x194: "AC_GetCapability", 0x195: "AC_Send",
    0x196: "Policy_AC_SendSelect", 0x197: "CertifyX509", 0x198: "ACT_SetTimeout",
    0x199: "ECC_Encrypt", 0x19A: "ECC_Decrypt", 0x20000000: "Vendor_TCG_Test",
}  # fmt: skip

TPM12_ORD_NAMES: dict[int, str] = {
    0x0A: "OIAP", 0x0B: "OSAP", 0x0C: "ChangeAuth", 0x0D: "TakeOwnership", 0x14: "Extend",
    0x15: "PcrRead", 0x16: "Quote", 0x17: "Seal", 0x18: "Unseal", 0x1F: "CreateWrapKey",
    0x20: "LoadKey", 0x21: "GetPubKey", 0x3C: "Sign", 0x3E: "Quote2", 0x41: "LoadKey2",
    0x46: "GetRandom", 0x47: "StirRandom", 0x50: "SelfTestFull", 0x53: "ContinueSelfTest",
    0x54: "GetTestResult", 0x5A: "Reset", 0x5B: "OwnerClear", 0x5C: "DisableOwnerClear",
    0x5D: "ForceClear", 0x5E: "DisableForceClear", 0x65: "GetCapability", 0x6E: "OwnerSetDisable",
    0x6F: "PhysicalEnable", 0x70: "PhysicalDisable", 0x71: "SetOwnerInstall",
    0x72: "PhysicalSetDeactivated", 0x73: "SetTempDeactivated", 0x78: "CreateEndorsementKeyPair",
    0x7C: "ReadPubek", 0x98: "SaveState", 0x99: "Startup", 0xBA: "FlushSpecific", 0xC8: "PCR_Reset",
    0xCC: "NV_DefineSpace", 0xCD: "NV_WriteValue", 0xCF: "NV_ReadValue", 0xF1: "GetTicks",
    0x4000000A: "TSC_PhysicalPresence", 0x4000000B: "TSC_ResetEstablishmentBit",
}  # fmt: skip

_TPM12_RC_NAMES: dict[int, str] = {
    0x01: "AUTHFAIL", 0x02: "BADINDEX", 0x03: "BAD_PARAMETER", 0x04: "AUDITFAILURE",
    0x05: "CLEAR_DISABLED", 0x06: "DEACTIVATED", 0x07: "DISABLED", 0x08: "DISABLED_CMD", 0x09: "FAIL",
    0x0A: "BAD_ORDINAL", 0x0B: "INSTALL_DISABLED", 0x0C: "INVALID_KEYHANDLE", 0x0D: "KEYNOTFOUND",
    0x0E: "INAPPROPRIATE_ENC", 0x0F: "MIGRATEFAIL", 0x10: "INVALID_PCR_INFO", 0x11: "NOSPACE",
    0x12: "NOSRK", 0x13: "NOTSEALED_BLOB", 0x14: "OWNER_SET", 0x15: "RESOURCES", 0x16: "SHORTRANDOM",
    0x17: "SIZE", 0x18: "WRONGPCRVAL", 0x19: "BAD_PARAM_SIZE", 0x1A: "SHA_THREAD", 0x1B: "SHA_ERROR",
    0x1C: "FAILEDSELFTEST", 0x1D: "AUTH2FAIL", 0x1E: "BADTAG", 0x1F: "IOERROR", 0x20: "ENCRYPT_ERROR",
    0x21: "DECRYPT_ERROR", 0x22: "INVALID_AUTHHANDLE", 0x23: "NO_ENDORSEMENT", 0x24: "INVALID_KEYUSAGE",
    0x25: "WRONG_ENTITYTYPE", 0x26: "INVALID_POSTINIT", 0x27: "INAPPROPRIATE_SIG", 0x28: "BAD_KEY_PROPERTY",
    0x2D: "BAD_LOCALITY", 0x3D: "BAD_COUNTER", 0x800: "RETRY", 0x801: "NEEDS_SELFTEST",
    0x802: "DOING_SELFTEST", 0x803: "DEFEND_LOCK_RUNNING",
}  # fmt: skip

_RC_VER1_NAMES: dict[int, str] = {
    0x000: "INITIALIZE", 0x001: "FAILURE", 0x003: "SEQUENCE", 0x00B: "PRIVATE", 0x019: "HMAC",
    0x020: "DISABLED", 0x021: "EXCLUSIVE", 0x024: "AUTH_TYPE", 0x025: "AUTH_MISSING", 0x026: "POLICY",
    0x027: "PCR", 0x028: "PCR_CHANGED", 0x02D: "UPGRADE", 0x02E: "TOO_MANY_CONTEXTS",
    0x02F: "AUTH_UNAVAILABLE", 0x030: "REBOOT", 0x031: "UNBALANCED", 0x042: "COMMAND_SIZE",
    0x043: "COMMAND_CODE", 0x044: "AUTHSIZE", 0x045: "AUTH_CONTEXT", 0x046: "NV_RANGE", 0x047: "NV_SIZE",
    0x048: "NV_LOCKED", 0x049: "NV_AUTHORIZATION", 0x04A: "NV_UNINITIALIZED", 0x04B: "NV_SPACE",
    0x04C: "NV_DEFINED", 0x050: "BAD_CONTEXT", 0x051: "CPHASH", 0x052: "PARENT", 0x053: "NEEDS_TEST",
    0x054: "NO_RESULT", 0x055: "SENSITIVE",
}  # fmt: skip

_RC_FMT1_NAMES: dict[int, str] = {
    0x01: "ASYMMETRIC", 0x02: "ATTRIBUTES", 0x03: "HASH", 0x04: "VALUE", 0x05: "HIERARCHY",
    0x07: "KEY_SIZE", 0x08: "MGF", 0x09: "MODE", 0x0A: "TYPE", 0x0B: "HANDLE", 0x0C: "KDF",
    0x0D: "RANGE", 0x0E: "AUTH_FAIL", 0x0F: "NONCE", 0x10: "PP", 0x12: "SCHEME", 0x15: "SIZE",
    0x16: "SYMMETRIC", 0x17: "TAG", 0x18: "SELECTOR", 0x1A: "INSUFFICIENT", 0x1B: "SIGNATURE",
    0x1C: "KEY", 0x1D: "POLICY_FAIL", 0x1F: "INTEGRITY", 0x20: "TICKET", 0x21: "RESERVED_BITS",
    0x22: "BAD_AUTH", 0x23: "EXPIRED", 0x24: "POLICY_CC", 0x25: "BINDING", 0x26: "CURVE",
    0x27: "ECC_POINT",
}  # fmt: skip

_RC_WARN_NAMES: dict[int, str] = {
    0x01: "CONTEXT_GAP", 0x02: "OBJECT_MEMORY", 0x03: "SESSION_MEMORY", 0x04: "MEMORY",
    0x05: "SESSION_HANDLES", 0x06: "OBJECT_HANDLES", 0x07: "LOCALITY", 0x08: "YIELDED",
    0x09: "CANCELED", 0x0A: "TESTING", 0x20: "NV_RATE", 0x21: "LOCKOUT", 0x22: "RETRY",
    0x23: "NV_UNAVAILABLE",
    **{0x10 + n: f"REFERENCE_H{n}" for n in range(7)},
    **{0x18 + n: f"REFERENCE_S{n}" for n in range(7)},
}  # fmt: skip

_RC_VER1 = 0x100
_RC_FMT1 = 0x080
_RC_WARN = 0x900
_RC_VENDOR = 0x400


def command_name(code: int, tpm_version: int = 2) -> str:
    """``TPM2_GetRandom``, ``TPM_ORD_Extend``, or the code in hex."""
    if tpm_version == 1:
        name = TPM12_ORD_NAMES.get(code)
        return f"TPM_ORD_{name}" if name else f"ordinal {code:#x}"
    name = TPM2_CC_NAMES.get(code)
    return f"TPM2_{name}" if name else f"command code {code:#x}"


def response_name(rc: int, tpm_version: int = 2) -> str:
    """``TPM_RC_SUCCESS``, ``TPM_RC_VALUE (parameter 1)``, ``TPM_RC_RETRY``...;
    a code with no name prints as hex."""
    if rc == 0:
        return "TPM_RC_SUCCESS" if tpm_version == 2 else "TPM_SUCCESS"
    if tpm_version == 1:
        name = _TPM12_RC_NAMES.get(rc)
        return f"TPM_{name}" if name else f"{rc:#x}"
    if rc & _RC_FMT1:
        name = _RC_FMT1_NAMES.get(rc & 0x3F)
        if name is None:
            return f"{rc:#x}"
        number = (rc >> 8) & 0xF
        if rc & 0x40:
            where = f"parameter {number}"
        elif number & 0x8:
            where = f"session {number & 0x7}"
        else:
            where = f"handle {number}" if number else ""
        return f"TPM_RC_{name}" + (f" ({where})" if where else "")
    if rc & _RC_VENDOR and rc & _RC_VER1:
        return f"vendor {rc:#x}"
    if rc & 0xF00 == _RC_WARN:
        name = _RC_WARN_NAMES.get(rc & 0x7F)
    elif rc & 0xF80 == _RC_VER1:
        name = _RC_VER1_NAMES.get(rc & 0x7F)
    else:  # a TPM 1.2 code from a TPM 2.0 (QEMU's fatal response is one)
        name = _TPM12_RC_NAMES.get(rc)
        return f"TPM_{name}" if name else f"{rc:#x}"
    return f"TPM_RC_{name}" if name else f"{rc:#x}"
