"""Well-formed TPM commands the conformance tests send, and what may be sent.

Every command here has a header size of at least 10 that matches its length
(swtpm 0.7.1 waits forever for a command shorter than its header says, and
QEMU's main loop then blocks on the next cancel or reset). Responses of the
commands in :data:`DETERMINISTIC` depend only on the commands sent before,
so two fresh swtpm instances fed the same sequence answer byte for byte the
same; GetRandom is the exception and is compared with its payload masked.
"""

from __future__ import annotations

import struct

__all__ = [
    "TPM2",
    "TPM12",
    "DETERMINISTIC",
    "header_size",
    "ordinal",
    "safe_to_send",
]


def _cmd(hexstr: str) -> bytes:
    data = bytes.fromhex(hexstr.replace(" ", ""))
    assert struct.unpack(">I", data[2:6])[0] == len(data), hexstr
    return data


TPM2 = {
    "startup": _cmd("8001 0000000c 00000144 0000"),
    "startup_state": _cmd("8001 0000000c 00000144 0001"),
    "selftest": _cmd("8001 0000000b 00000143 01"),
    "get_random8": _cmd("8001 0000000c 0000017b 0008"),
    "get_random32": _cmd("8001 0000000c 0000017b 0020"),
    "pcr_extend10": _cmd(
        "8002 00000041 00000182 0000000a 00000009 40000009 0000 00 0000 00000001 000b"
        + "74657374"
        + "00" * 28
    ),
    "pcr_read10": _cmd("8001 00000014 0000017e 00000001 000b 03 000400"),
    "pcr_read_all": _cmd("8001 00000014 0000017e 00000001 000b 03 ffffff"),
    "get_cap_tpm_props": _cmd("8001 00000016 0000017a 00000006 00000100 00000010"),
    # Asks for every algorithm: a response of several hundred bytes.
    "get_cap_algs": _cmd("8001 00000016 0000017a 00000000 00000001 00000080"),
    # Deliberately wrong: a known ordinal with a bad tag (error response).
    "bad_tag": _cmd("1234 0000000c 00000144 0000"),
}

TPM12 = {
    "startup": _cmd("00c1 0000000c 00000099 0001"),
    "continue_selftest": _cmd("00c1 0000000a 00000053"),
    "get_random8": _cmd("00c1 0000000e 00000046 00000008"),
    "pcr_read10": _cmd("00c1 0000000e 00000015 0000000a"),
    "extend10": _cmd("00c1 00000022 00000014 0000000a" + "74657374" + "00" * 16),
    "get_cap_version": _cmd("00c1 00000012 00000065 00000006 00000000"),
    "get_cap_props": _cmd("00c1 00000016 00000065 00000005 00000004 00000115"),
    "bad_tag": _cmd("1234 0000000c 00000099 0001"),
}

_RANDOM = {0x17B, 0x46}

#: Ordinals whose responses are reproducible across swtpm instances.
DETERMINISTIC = frozenset(
    struct.unpack(">I", c[6:10])[0]
    for table in (TPM2, TPM12)
    for c in table.values()
    if struct.unpack(">I", c[6:10])[0] not in _RANDOM
)


def header_size(data: bytes) -> int:
    return int(struct.unpack(">I", data[2:6])[0])


def ordinal(data: bytes) -> int:
    return int(struct.unpack(">I", data[6:10])[0])


def safe_to_send(head: bytes, length: int, allowed: frozenset[int] = DETERMINISTIC) -> bool:
    """Whether swtpm answers a *length*-byte command starting with *head* at once, reproducibly.

    swtpm reads header-size bytes: a header size below 10 or above the bytes
    sent leaves it waiting. Extra bytes after the header size are fine (swtpm
    answers TPM_RC_COMMAND_SIZE).
    """
    if length < 10 or len(head) < 10:
        return False
    return 10 <= header_size(head) <= length and ordinal(head) in allowed
