"""The digests and MACs of the built-in TPM, from ``cryptography``."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

__all__ = ["digest", "hmac"]

_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def digest(name: str, data: bytes) -> bytes:
    """The *name* ("sha1", "sha256", ...) digest of *data*."""
    h = hashes.Hash(_ALGORITHMS[name]())
    h.update(data)
    return h.finalize()


def hmac(name: str, key: bytes, data: bytes) -> bytes:
    """HMAC-*name* of *data* under *key*."""
    h = _hmac.HMAC(key, _ALGORITHMS[name]())
    h.update(data)
    return h.finalize()
