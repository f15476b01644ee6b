"""One deterministic command corpus through every backend, compared field by field.

The same commands go to the built-in TPM, to libtpms in process and to a
real swtpm (the reference). Responses must be byte-identical, except where a
TPM is free to differ; each such place is named in :data:`ALLOWED` with the
reason, and only the bytes it names are masked.

A TPM may answer TPM_RC_RETRY (0x922) to any command and expects it to be
sent again; the runner does that for every backend alike (libtpms does it
for the first password-authorised NV command after Startup).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.wire import parse_header

TPM_RC_RETRY = 0x922
NV_INDEX = 0x01500010


@dataclass(frozen=True)
class Step:
    name: str
    command: bytes
    #: bytes of the response not compared (random data); None compares all
    mask: Callable[[bytes], bytes] | None = None
    locality: int = 0


def _random_payload(response: bytes) -> bytes:
    # TPM2B_DIGEST / TPM 1.2 randomBytes: keep header and the size field
    return response[:12] + b"\0" * (len(response) - 12)


def _tpm12_random_payload(response: bytes) -> bytes:
    return response[:14] + b"\0" * (len(response) - 14)


SHA = {
    C.TPM_ALG_SHA1: hashlib.sha1,
    C.TPM_ALG_SHA256: hashlib.sha256,
    C.TPM_ALG_SHA384: hashlib.sha384,
    C.TPM_ALG_SHA512: hashlib.sha512,
}
ALL_BANKS = list(SHA)


def _props(first: int, count: int) -> bytes:
    return C.tpm2_get_capability(C.TPM_CAP_TPM_PROPERTIES, first, count)


TPM2_CORPUS = [
    # before TPM2_Startup
    Step("GetRandom before Startup", C.tpm2_get_random(8)),
    Step("PCR_Read before Startup", C.tpm2_pcr_read([0])),
    Step("ReadClock probe before Startup", bytes.fromhex("8001 0000000a 00000181")),
    # malformed
    Step("size field larger than the command", bytes.fromhex("8001 00000014 0000017b 0008")),
    Step("size field smaller than the command", bytes.fromhex("8001 0000000b 0000017b 0008")),
    Step("bad tag", bytes.fromhex("8003 0000000c 00000144 0000")),
    Step("TPM 1.2 tag", bytes.fromhex("00c1 0000000c 00000144 0000")),
    Step("unknown command code", bytes.fromhex("8001 0000000a 000001ff")),
    Step("vendor command code", bytes.fromhex("8001 0000000a 20000000")),
    # power on
    Step("Startup(CLEAR)", C.tpm2_startup()),
    Step("second Startup", C.tpm2_startup()),
    Step("Startup with trailing byte", bytes.fromhex("8001 0000000d 00000144 0000 00")),
    # fixed properties no TPM may differ in
    Step("TPM_PT_FAMILY_INDICATOR", _props(0x100, 1)),
    Step("TPM_PT_LEVEL", _props(0x101, 1)),
    Step("TPM_PT_PCR_COUNT, PCR_SELECT_MIN", _props(0x112, 2)),
    Step("TPM_PT_MAX_COMMAND/RESPONSE_SIZE, MAX_DIGEST", _props(0x11E, 3)),
    # PCRs in several banks
    Step(
        "PCR_Extend PCR 16, all banks",
        C.tpm2_pcr_extend_banks(16, [(alg, SHA[alg](b"corpus").digest()) for alg in ALL_BANKS]),
    ),
    Step("PCR_Extend PCR 16, sha256 only", C.tpm2_pcr_extend(16, hashlib.sha256(b"two").digest())),
    *[Step(f"PCR_Read PCR 16 bank {alg:#06x}", C.tpm2_pcr_read([16], alg)) for alg in ALL_BANKS],
    Step("PCR_Read PCRs 0-23 sha256 (8-digest limit)", C.tpm2_pcr_read(list(range(24)))),
    Step("PCR_Event PCR 16", C.tpm2_pcr_event(16, b"event data")),
    Step("PCR_Read PCR 16 sha1 after event", C.tpm2_pcr_read([16], C.TPM_ALG_SHA1)),
    Step("PCR_Extend PCR 17 at locality 0", C.tpm2_pcr_extend(17, bytes(32))),
    Step("PCR_Extend PCR 17 at locality 3", C.tpm2_pcr_extend(17, bytes(32)), locality=3),
    Step("PCR_Read PCR 17", C.tpm2_pcr_read([17])),
    Step("PCR_Reset PCR 16", C.tpm2_pcr_reset(16)),
    Step("PCR_Reset PCR 0", C.tpm2_pcr_reset(0)),
    Step("PCR_Read PCR 16 after reset", C.tpm2_pcr_read([16])),
    Step("PCR_Extend bad PCR handle", C.tpm2_pcr_extend(24, bytes(32))),
    Step("PCR_Extend wrong digest size", C.tpm2_pcr_extend(16, bytes(20))),
    # hashing
    *[Step(f"Hash {alg:#06x}", C.tpm2_hash(b"abc", alg)) for alg in ALL_BANKS],
    Step("Hash with TPM_ALG_NULL", C.tpm2_hash(b"abc", C.TPM_ALG_NULL)),
    # random
    Step("GetRandom(16)", C.tpm2_get_random(16), mask=_random_payload),
    # NV
    Step("NV_DefineSpace", C.tpm2_nv_define_space(NV_INDEX, 16)),
    Step("NV_DefineSpace again", C.tpm2_nv_define_space(NV_INDEX, 16)),
    Step("NV_ReadPublic", C.tpm2_nv_read_public(NV_INDEX)),
    Step("NV_Read before written", C.tpm2_nv_read(NV_INDEX, 4)),
    Step("NV_Write", C.tpm2_nv_write(NV_INDEX, b"hello nv")),
    Step("NV_Write beyond the index", C.tpm2_nv_write(NV_INDEX, b"x" * 10, offset=10)),
    Step("NV_Read", C.tpm2_nv_read(NV_INDEX, 8)),
    Step("NV_Read at an offset", C.tpm2_nv_read(NV_INDEX, 4, offset=2)),
    Step("NV_ReadPublic after write", C.tpm2_nv_read_public(NV_INDEX)),
    Step("NV_UndefineSpace", C.tpm2_nv_undefine_space(NV_INDEX)),
    Step("NV_Read after undefine", C.tpm2_nv_read(NV_INDEX, 4)),
    # power off
    Step("Shutdown(CLEAR)", C.tpm2_shutdown()),
]

TPM12_CORPUS = [
    Step("TPM_GetRandom before Startup", C.tpm12_get_random(8)),
    Step("TPM_GetTicks probe before Startup", bytes.fromhex("00c1 0000000a 000000f1"), mask=lambda r: r[:10]),
    Step("unknown ordinal", bytes.fromhex("00c1 0000000a 000000ff")),
    Step("TPM_Startup(ST_CLEAR)", C.tpm12_startup()),
    Step("second TPM_Startup", C.tpm12_startup()),
    Step("TPM_PcrRead 10", C.tpm12_pcr_read(10)),
    Step("TPM_Extend 10", C.tpm12_extend(10, hashlib.sha1(b"corpus").digest())),
    Step("TPM_PcrRead 10 again", C.tpm12_pcr_read(10)),
    Step("TPM_PcrRead bad index", C.tpm12_pcr_read(24)),
    Step("TPM_Extend 17 at locality 0", C.tpm12_extend(17, bytes(20))),
    Step("TPM_GetRandom(16)", C.tpm12_get_random(16), mask=_tpm12_random_payload),
    Step(
        "TPM_GetCapability TPM_CAP_PROP_PCR",
        bytes.fromhex("00c1 00000016 00000065 00000005 00000004 00000101"),
    ),
    Step(
        "TPM_GetCapability TPM_CAP_PROP_INPUT_BUFFER",
        bytes.fromhex("00c1 00000016 00000065 00000005 00000004 00000124"),
    ),
    Step("TPM_ContinueSelfTest", bytes.fromhex("00c1 0000000a 00000053")),
    Step("size field lies", bytes.fromhex("00c1 00000010 00000015 0000000a")),
]

#: (backend, step name) -> reason: places where a TPM is free to differ.
ALLOWED: dict[tuple[str, str], str] = {}


def run(backend: Backend, corpus: list[Step]) -> list[bytes]:
    out = []
    for step in corpus:
        for _ in range(3):
            response = backend.execute(step.command, step.locality)
            if parse_header(response)[2] != TPM_RC_RETRY:
                break
        out.append(step.mask(response) if step.mask else response)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, list[bytes]]]:
    """swtpm's answers to both corpora (fresh TPMs)."""
    answers = {}
    for version, corpus in ((2, TPM2_CORPUS), (1, TPM12_CORPUS)):
        state: Path = tmp_path_factory.mktemp(f"swtpm{version}")
        with tpmdev.backends.Emulator.spawn(state, tpm_version=version) as swtpm:
            answers[version] = run(swtpm, corpus)
    yield answers


def make(kind: str, version: int) -> Backend:
    if kind == "builtin" and version == 2:
        # swtpm's default allocation: all four banks
        return tpmdev.backends.Builtin(tpm_version=2, pcr_banks=("sha1", "sha256", "sha384", "sha512"))
    if kind == "builtin":
        return tpmdev.backends.Builtin(tpm_version=1)
    return tpmdev.backends.Libtpms(tpm_version=version)


@pytest.mark.swtpm
@pytest.mark.parametrize("version", [2, 1], ids=["tpm2", "tpm12"])
@pytest.mark.parametrize("kind", ["builtin", "libtpms"])
def test_corpus_matches_swtpm(reference: dict[int, list[bytes]], kind: str, version: int) -> None:
    corpus = TPM2_CORPUS if version == 2 else TPM12_CORPUS
    with make(kind, version) as backend:
        got = run(backend, corpus)
    differences = []
    for step, want, have in zip(corpus, reference[version], got):
        if want != have and (kind, step.name) not in ALLOWED:
            differences.append(f"{step.name}: swtpm {want.hex()} {kind} {have.hex()}")
    assert not differences, "\n".join(differences)


def test_corpus_is_well_formed() -> None:
    for step in TPM2_CORPUS + TPM12_CORPUS:
        tag, size, _ = parse_header(step.command)
        assert size >= 10 and tag in (0x8001, 0x8002, 0x8003, 0x00C1), step.name
    assert len({s.name for s in TPM2_CORPUS}) == len(TPM2_CORPUS)
    assert struct.unpack(">I", C.tpm2_get_random(1)[2:6])[0] == 12
