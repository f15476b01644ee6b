"""QEMU's TPM probes (tpmdev.backends._probe), table-driven over answers.

The probes are pure functions of a ``transact`` callable, so the tables feed
them answers directly: good ones, short ones, a size field that lies, wrong
tags, lengths one off, transports that fail. Two tests at the end run them
against a real swtpm through :meth:`Emulator.execute`, the reuse the module
is meant for.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Optional, Union

import pytest

from tpmdev.backends import _probe
from tpmdev.backends._probe import (
    TPM2_BUFFER_SIZE_PROBE,
    TPM12_BUFFER_SIZE_PROBE,
    buffer_size_from_answer,
    buffer_size_probe,
    probe_buffer_size,
    probe_version,
    version_from_answer,
)
from tpmdev.backends.emulator import Emulator
from tpmdev.errors import BackendError, StateError
from tpmdev.wire import TPM2_READCLOCK_PROBE, TPM12_GETTICKS_PROBE

READCLOCK = TPM2_READCLOCK_PROBE
GETTICKS = TPM12_GETTICKS_PROBE

Answer = Union[bytes, BaseException]


def rsp(tag: int, code: int = 0, body: bytes = b"", size: Optional[int] = None) -> bytes:
    """A response; *size* overrides the size field (default: the true length)."""
    return struct.pack(">HII", tag, 10 + len(body) if size is None else size, code) + body


def fixed_transact(answers: dict[bytes, Answer]) -> tuple[Callable[[bytes], bytes], list[bytes]]:
    """A transact answering each command from *answers* (raising exceptions); logs what was sent."""
    sent: list[bytes] = []

    def transact(command: bytes) -> bytes:
        sent.append(command)
        answer = answers.get(command, BackendError("no answer"))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return transact, sent


# -- the commands ---------------------------------------------------------------
def test_buffer_size_commands_are_qemus() -> None:
    qemu12 = bytes.fromhex("00c1 00000016 00000065 00000005 00000004 00000124")
    qemu2 = bytes.fromhex("8001 00000016 0000017a 00000006 0000011e 00000002")
    assert qemu12 == TPM12_BUFFER_SIZE_PROBE
    assert qemu2 == TPM2_BUFFER_SIZE_PROBE
    assert len(TPM12_BUFFER_SIZE_PROBE) == len(TPM2_BUFFER_SIZE_PROBE) == 22
    assert buffer_size_probe(1) == TPM12_BUFFER_SIZE_PROBE
    assert buffer_size_probe(2) == TPM2_BUFFER_SIZE_PROBE
    for bad in (0, 3):
        with pytest.raises(ValueError, match="tpm_version"):
            buffer_size_probe(bad)


# -- version ----------------------------------------------------------------------
TPM2_ANSWER = rsp(0x8001, 0x100)  # TPM_RC_INITIALIZE: an error still says "TPM 2.0"
TPM12_ANSWER = rsp(0x00C4, 0x26)  # TPM_INVALID_POSTINIT
TPM12_TO_TPM2_CMD = rsp(0x00C4, 0x0A)  # a TPM 1.2 answering TPM2_ReadClock

# name: (answer to ReadClock, answer to GetTicks, version, commands sent)
VERSION_CASES: dict[str, tuple[Answer, Answer, int, int]] = {
    "TPM 2.0 error answer": (TPM2_ANSWER, TPM12_ANSWER, 2, 1),
    "TPM 2.0 success answer": (rsp(0x8001, 0, bytes(25)), BackendError("x"), 2, 1),
    "TPM 1.2": (TPM12_TO_TPM2_CMD, TPM12_ANSWER, 1, 2),
    "TPM 1.2 success": (TPM12_TO_TPM2_CMD, rsp(0x00C4, 0, bytes(32)), 1, 2),
    "ReadClock fails, GetTicks 1.2": (BackendError("timeout"), TPM12_ANSWER, 1, 2),
    "ReadClock OSError, GetTicks 1.2": (OSError(5, "EIO"), TPM12_ANSWER, 1, 2),
    "ReadClock short": (TPM2_ANSWER[:9], TPM12_ANSWER, 1, 2),
    "ReadClock size field too big": (rsp(0x8001, 0x100, size=11), TPM12_ANSWER, 1, 2),
    "ReadClock size field too small": (rsp(0x8001, 0x100, b"\0", size=10), TPM12_ANSWER, 1, 2),
    "ReadClock tag TPM_ST_SESSIONS": (rsp(0x8002, 0), TPM12_ANSWER, 1, 2),
    "ReadClock 1024 bytes": (rsp(0x8001, 0, bytes(1014)), TPM12_ANSWER, 2, 1),
    "ReadClock 1025 bytes (QEMU reads 1024)": (rsp(0x8001, 0, bytes(1015)), TPM12_ANSWER, 1, 2),
    "both short": (b"\x80\x01", b"", 0, 2),
    "both fail": (BackendError("x"), BackendError("y"), 0, 2),
    "GetTicks with the 2.0 tag": (BackendError("x"), rsp(0x8001, 0x100), 0, 2),
    "GetTicks with the request tag": (TPM12_TO_TPM2_CMD, rsp(0x00C1, 0), 0, 2),
    "GetTicks size field lies": (TPM12_TO_TPM2_CMD, rsp(0x00C4, 0, size=9), 0, 2),
    "GetTicks 1025 bytes": (TPM12_TO_TPM2_CMD, rsp(0x00C4, 0, bytes(1015)), 0, 2),
}


@pytest.mark.parametrize("name", list(VERSION_CASES))
def test_probe_version(name: str) -> None:
    to_readclock, to_getticks, version, n_sent = VERSION_CASES[name]
    transact, sent = fixed_transact({READCLOCK: to_readclock, GETTICKS: to_getticks})
    assert probe_version(transact) == version
    assert sent == [READCLOCK, GETTICKS][:n_sent]  # ReadClock first, GetTicks only if needed


def test_version_from_answer_limit() -> None:
    assert version_from_answer(rsp(0x8001, 0, bytes(1014)), READCLOCK) == 2
    assert version_from_answer(rsp(0x8001, 0, bytes(1015)), READCLOCK) == 0
    assert version_from_answer(TPM12_ANSWER, READCLOCK) == 0  # the tag must fit the probe
    assert version_from_answer(TPM2_ANSWER, GETTICKS) == 0


def test_probe_version_lets_other_errors_through() -> None:
    # A programming error or a closed backend is not "no TPM".
    def transact(command: bytes) -> bytes:
        raise StateError("closed")

    with pytest.raises(StateError):
        probe_version(transact)


# -- buffer size --------------------------------------------------------------------
def tpm2_caps(
    v1: int = 4096,
    v2: int = 4096,
    *,
    count: int = 2,
    tag: int = 0x8001,
    code: int = 0,
    extra: bytes = b"",
    size: Optional[int] = None,
) -> bytes:
    body = struct.pack(">BIIIIII", 1, 6, count, 0x11E, v1, 0x11F, v2) + extra
    return rsp(tag, code, body, size)


def tpm12_caps(
    value: int = 4096, *, length: int = 4, extra: bytes = b"", size: Optional[int] = None
) -> bytes:
    return rsp(0x00C4, 0, struct.pack(">II", length, value) + extra, size)


# name: (tpm version, answer, expected size or None for "unusable")
BUFFER_CASES: dict[str, tuple[int, Answer, Optional[int]]] = {
    "2.0 good": (2, tpm2_caps(), 4096),
    "2.0 max of command and response": (2, tpm2_caps(2048, 3072), 3072),
    "2.0 max, command larger": (2, tpm2_caps(8192, 1024), 8192),
    "2.0 zero taken as it is (QUIRK)": (2, tpm2_caps(0, 0), 0),
    "2.0 error response": (2, rsp(0x8001, 0x100), None),
    "2.0 short": (2, tpm2_caps()[:20], None),
    "2.0 9 bytes": (2, tpm2_caps()[:9], None),
    "2.0 34 bytes": (2, rsp(0x8001, 0, tpm2_caps()[10:34]), None),
    "2.0 36 bytes": (2, tpm2_caps(extra=b"\0"), None),
    "2.0 size field lies": (2, tpm2_caps(size=36), None),
    "2.0 count 1": (2, tpm2_caps(count=1), None),
    "2.0 count 3": (2, tpm2_caps(count=3), None),
    "2.0 wrong tag, right length (QUIRK: not checked)": (2, tpm2_caps(tag=0x00C4), 4096),
    "2.0 response code not checked (QUIRK)": (2, tpm2_caps(1024, 512, code=0x101), 1024),
    "2.0 transport fails": (2, BackendError("timeout"), None),
    "2.0 OSError": (2, OSError(5, "EIO"), None),
    "1.2 good": (1, tpm12_caps(), 4096),
    "1.2 other value": (1, tpm12_caps(1280), 1280),
    "1.2 inner length 2": (1, tpm12_caps(length=2), None),
    "1.2 inner length 8": (1, tpm12_caps(length=8), None),
    "1.2 error response": (1, rsp(0x00C4, 0x26), None),
    "1.2 19 bytes": (1, tpm12_caps(extra=b"\0"), None),
    "1.2 size field lies": (1, tpm12_caps(size=17), None),
    "1.2 short": (1, tpm12_caps()[:14], None),
    "1.2 given a 2.0 answer": (1, tpm2_caps(), None),
    "2.0 given a 1.2 answer": (2, tpm12_caps(), None),
}


@pytest.mark.parametrize("name", list(BUFFER_CASES))
def test_probe_buffer_size(name: str, caplog: pytest.LogCaptureFixture) -> None:
    version, answer, expected = BUFFER_CASES[name]
    command = buffer_size_probe(version)
    transact, sent = fixed_transact({command: answer})
    with caplog.at_level(logging.WARNING, logger=_probe.__name__):
        size = probe_buffer_size(transact, version)
    assert sent == [command]
    if expected is None:
        assert size == 4096  # QEMU's fallback
        assert caplog.records, "an unusable answer is logged"
    else:
        assert size == expected
        assert not caplog.records
    if isinstance(answer, bytes):
        assert buffer_size_from_answer(answer, version) == expected


def test_probe_buffer_size_default_and_unknown_version() -> None:
    transact, sent = fixed_transact({})
    assert probe_buffer_size(transact, 0) == 4096
    assert sent == []  # QEMU asks nothing of a TPM of unknown family
    assert probe_buffer_size(transact, 2, default=1234) == 1234
    assert buffer_size_from_answer(tpm2_caps(), 0) is None


# -- against a real swtpm, through another backend -------------------------------------
@pytest.mark.swtpm
@pytest.mark.usefixtures("no_leaked_swtpm")
@pytest.mark.parametrize("version", [1, 2])
def test_probes_reused_on_emulator(spawn: Callable[..., Emulator], version: int) -> None:
    emu = spawn(version)
    assert probe_version(emu.execute) == version == emu.tpm_version
    # Before TPM(2)_Startup the TPM refuses GetCapability: QEMU's 4096.
    assert probe_buffer_size(emu.execute, version) == 4096
    startup = "80010000000c000001440000" if version == 2 else "00c10000000c000000990001"
    assert emu.execute(bytes.fromhex(startup))[6:10] == bytes(4)
    size = probe_buffer_size(emu.execute, version, default=1)
    assert size == 4096  # what swtpm 0.7.1's libtpms reports, not the fallback (default=1)
