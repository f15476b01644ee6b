"""The TPM's random number generator.

Without a seed the bytes come from ``os.urandom``. With a seed they come from
a small hash DRBG (SHA-256 in counter mode over a key derived from the seed,
re-keyed after every request), so that a seeded TPM answers every command
sequence with the same bytes -- what fuzzers and golden tests want. The
seeded generator is for reproducibility, not for secrets.
"""

from __future__ import annotations

import os

from tpmdev.backends.builtin._crypto import digest

__all__ = ["Rng"]


class Rng:
    """Random bytes for GetRandom and internal secrets."""

    def __init__(self, seed: int | bytes | None = None) -> None:
        if seed is None:
            self._key: bytes | None = None
        else:
            raw = seed if isinstance(seed, bytes) else str(int(seed)).encode()
            self._key = digest("sha256", b"tpmdev-builtin-drbg" + raw)

    @property
    def deterministic(self) -> bool:
        return self._key is not None

    def generate(self, n: int) -> bytes:
        if self._key is None:
            return os.urandom(n)
        out = bytearray()
        counter = 0
        while len(out) < n:
            out += digest("sha256", self._key + counter.to_bytes(4, "big"))
            counter += 1
        self._key = digest("sha256", self._key + b"rekey")
        return bytes(out[:n])

    def stir(self, data: bytes) -> None:
        """Mix *data* in (TPM2_StirRandom); the OS pool needs no help."""
        if self._key is not None:
            self._key = digest("sha256", self._key + b"stir" + data)

    # state save/restore for a later get_state()/set_state()
    def get_key(self) -> bytes | None:
        return self._key

    def set_key(self, key: bytes | None) -> None:
        self._key = key
