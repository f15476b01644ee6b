"""tpm2-pytss's ESAPI in process through :class:`tpmdev.tcti.TCTI` on every frontend.

On Libtpms the whole set (startup, getrandom, PCR extend and read, NV
define / write / read, a primary key, a child key created, loaded, signing
and verifying, a quote verified by its key); on the Builtin TPM, which has
no keys, what it implements; on swtpm one frontend. Every value the TPM
determines is checked against what it must be (PCR values computed here, NV
contents, signatures verified by the TPM and by ``cryptography``).
"""

from __future__ import annotations

import hashlib
from types import ModuleType
from typing import Any

import pytest
from guests import FRONTENDS, make_device

import tpmdev
from tpmdev.backends.emulator import Emulator
from tpmdev.drivers import TisTimeout

NV_INDEX = 0x01000010
SIGNING_KEY = "userwithauth|sign|fixedtpm|fixedparent|sensitivedataorigin"


def _esapi(tss: ModuleType, dev: Any) -> Any:
    from tpmdev.tcti import TCTI

    tcti = TCTI(dev)
    return tss.ESAPI(tcti), tcti


def _basics(tss: ModuleType, esapi: Any) -> None:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SU, TPMA_NV
    from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPML_DIGEST_VALUES, TPMS_NV_PUBLIC, TPMT_HA, TPMU_HA

    esapi.startup(TPM2_SU.CLEAR)
    assert len(bytes(esapi.get_random(24))) == 24
    digest = hashlib.sha256(b"measured").digest()
    esapi.pcr_extend(
        ESYS_TR.PCR16,
        TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]),
    )
    _, _, values = esapi.pcr_read("sha256:16")
    assert bytes(values[0]) == hashlib.sha256(bytes(32) + digest).digest()
    attrs = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(nvIndex=NV_INDEX, nameAlg=TPM2_ALG.SHA256, attributes=attrs, dataSize=32)
    )
    index = esapi.nv_define_space(b"", public)
    esapi.nv_write(index, b"tpmdev through ESAPI", 0, auth_handle=ESYS_TR.OWNER)
    assert bytes(esapi.nv_read(index, 20, 0, auth_handle=ESYS_TR.OWNER)) == b"tpmdev through ESAPI"


def _keys(tss: ModuleType, esapi: Any) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from tpm2_pytss.constants import TPM2_ALG, TPM2_ST
    from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMS_ATTEST, TPMT_SIG_SCHEME

    primary, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), "ecc256:aes128cfb")
    private, public, *_ = esapi.create(
        primary,
        TPM2B_SENSITIVE_CREATE(),
        TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256",
            objectAttributes="userwithauth|sign|fixedtpm|fixedparent|sensitivedataorigin",
        ),
    )
    key = esapi.load(primary, private, public)
    digest = hashlib.sha256(b"signed through the registers").digest()
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    signature = esapi.sign(key, digest, scheme)
    verified = esapi.verify_signature(key, digest, signature)
    assert verified.tag == TPM2_ST.VERIFIED
    # the same signature checked outside the TPM
    point = public.publicArea.unique.ecc
    pub = ec.EllipticCurvePublicNumbers(
        int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big"), ec.SECP256R1()
    ).public_key()
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

    ecdsa = signature.signature.ecdsa
    der = encode_dss_signature(
        int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")
    )
    pub.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    attest, quote_sig = esapi.quote(key, "sha256:0,16", b"nonce-1234", scheme)
    info, _ = TPMS_ATTEST.unmarshal(bytes(attest))
    assert bytes(info.extraData) == b"nonce-1234"
    quoted = hashlib.sha256(bytes(attest)).digest()
    assert esapi.verify_signature(key, quoted, quote_sig).tag == TPM2_ST.VERIFIED
    esapi.flush_context(key)
    esapi.flush_context(primary)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_esapi_on_libtpms(tss: ModuleType, impl: str, frontend: str) -> None:
    with make_device(frontend, tpmdev.backends.Libtpms(), impl) as dev:
        esapi, tcti = _esapi(tss, dev)
        try:
            _basics(tss, esapi)
            _keys(tss, esapi)
        finally:
            esapi.close()
        assert tcti.commands > 10 and dev.backend_error is None


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_esapi_on_builtin(tss: ModuleType, impl: str, frontend: str) -> None:
    with make_device(frontend, tpmdev.backends.Builtin(), impl) as dev:
        esapi, _ = _esapi(tss, dev)
        try:
            _basics(tss, esapi)
        finally:
            esapi.close()


@pytest.mark.swtpm
def test_esapi_on_swtpm(tss: ModuleType, impl: str) -> None:
    with make_device("crb", Emulator.spawn(None, tpm_version=2), impl) as dev:
        esapi, _ = _esapi(tss, dev)
        try:
            _basics(tss, esapi)
            _keys(tss, esapi)
        finally:
            esapi.close()


def test_tcti_errors_reach_the_caller(tss: ModuleType, impl: str) -> None:
    """A TPM error code is the TSS's exception; a driver's error the caller's exception."""
    from tpm2_pytss.constants import TPM2_SU

    with make_device("tis", tpmdev.backends.Builtin(), impl) as dev:
        esapi, tcti = _esapi(tss, dev)
        esapi.startup(TPM2_SU.CLEAR)
        with pytest.raises(tss.TSS2_Exception, match="handle"):
            esapi.tr_from_tpmpublic(0x01000099)  # no such NV index: TPM_RC_HANDLE
        seen: list[object] = []
        real = tcti.driver.transmit

        def recording(command: bytes, locality: object = None) -> bytes:
            seen.append(locality)
            return real(command, locality)  # type: ignore[arg-type]

        tcti.driver.transmit = recording  # type: ignore[method-assign]
        tcti.do_set_locality(2)
        assert len(bytes(esapi.get_random(8))) == 8 and seen == [2]
        tcti.driver.transmit = _broken  # type: ignore[method-assign]
        with pytest.raises(tss.TSS2_Exception, match="tcti"):
            esapi.get_random(8)
        assert isinstance(tcti.last_error, TisTimeout)
        with pytest.raises(TisTimeout, match="stalled"):
            tcti.transmit(b"\x80\x01\x00\x00\x00\x0c\x00\x00\x01\x7b\x00\x08")
        esapi.close()


def _broken(command: bytes, locality: object = None) -> bytes:
    raise TisTimeout("stalled")


def test_importing_tpmdev_does_not_import_tpm2_pytss() -> None:
    import subprocess
    import sys

    code = "import sys, tpmdev, tpmdev.drivers, tpmdev.cli; print('tpm2_pytss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
