"""Fuzz target: the builtin TPM's command parser (:class:`tpmdev.backends.Builtin`), both TPM families.

Input: a configuration byte (bit 0: TPM 1.2 instead of TPM 2.0; bit 1: send
TPM(2)_Startup(CLEAR) first, so that inputs start past the initialisation
check), then operations, each an opcode byte ``op`` and its operands:

* ``op & 0x80``: power cycle (``startup()``, _TPM_Init);
* else ``op & 0x40``: save and restore: the state blobs of ``get_state()``
  loaded with ``set_state()`` into a fresh Builtin, which carries on;
* else a command at locality ``(op & 7) % 5``: a 2-byte little-endian length
  ``n``, then ``n`` command bytes (fewer at the end of the input).

The TPM is seeded (deterministic random numbers and clock). Findings: any
exception out of ``execute`` (the engine must answer any bytes) or out of the
state round trip, and a response that is not a well-formed TPM response
(shorter than a header, a header size other than its length, a tag the
family does not answer with).

Run: ``tpmdev fuzz builtin`` or ``python -m tpmdev.fuzz.builtin [libFuzzer flags] [CORPUS]``.
"""

from __future__ import annotations

from typing import Optional

from collections.abc import Iterable

from tpmdev.backends import Builtin
from tpmdev.drivers import commands as C
from tpmdev.fuzz._harness import STATS, Finding, Reader, fuzz_main
from tpmdev.wire import HEADER_SIZE, TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS

__all__ = ["TestOneInput", "main", "CONFIG_TPM12", "CONFIG_STARTUP", "CommandEncoder"]

CONFIG_TPM12 = 0x01
CONFIG_STARTUP = 0x02

OP_POWER = 0x80
OP_STATE = 0x40

#: Response tags each family answers with (TPM 1.2: TPM_TAG_RSP_COMMAND, _AUTH1, _AUTH2).
_TAGS = {2: (TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS), 1: (0x00C4, 0x00C5, 0x00C6)}


def _check(response: object, version: int, command: bytes) -> None:
    if type(response) is not bytes or len(response) < HEADER_SIZE:
        raise Finding(f"command {command[:16].hex()}...: response {response!r} is not a TPM response")
    tag = int.from_bytes(response[0:2], "big")
    size = int.from_bytes(response[2:6], "big")
    if size != len(response) or tag not in _TAGS[version]:
        raise Finding(
            f"command {command[:16].hex()}...: malformed response header {response[:10].hex()} "
            f"({len(response)} bytes)"
        )


def TestOneInput(data: bytes) -> None:
    """Run one input (see the module doc); raises on a finding."""
    STATS.inputs += 1
    reader = Reader(data)
    config = reader.u8()
    version = 1 if config & CONFIG_TPM12 else 2
    tpm = Builtin(version, seed=0)
    tpm.startup()
    if config & CONFIG_STARTUP:
        startup = C.tpm12_startup() if version == 1 else C.tpm2_startup()
        _check(tpm.execute(startup, 0), version, startup)
    ops = 0
    while not reader.done:
        op = reader.u8()
        ops += 1
        if op & OP_POWER:
            tpm.startup()
        elif op & OP_STATE:
            state = tpm.get_state()
            tpm = Builtin(version, seed=0)
            tpm.set_state(state)
        else:
            command = reader.take(reader.u16())
            _check(tpm.execute(command, (op & 7) % 5), version, command)
    STATS.ops += ops


class CommandEncoder:
    """Builds an input in this target's format."""

    def __init__(self, config: int = 0) -> None:
        self._out = bytearray([config & 0xFF])

    def command(self, command: bytes, locality: int = 0) -> CommandEncoder:
        self._out += bytes([locality & 7]) + len(command).to_bytes(2, "little") + command
        return self

    def commands(self, commands: Iterable[bytes], locality: int = 0) -> CommandEncoder:
        for command in commands:
            self.command(command, locality)
        return self

    def power_cycle(self) -> CommandEncoder:
        self._out.append(OP_POWER)
        return self

    def save_restore(self) -> CommandEncoder:
        self._out.append(OP_STATE)
        return self

    def bytes(self) -> bytes:
        return bytes(self._out)


def main(argv: Optional[list[str]] = None, module: Optional[str] = None) -> None:
    """Fuzz this target under libFuzzer; *argv* (default ``sys.argv``) holds libFuzzer's
    flags and corpus directories, *module* is given when run as ``python -m``."""
    fuzz_main(TestOneInput, ("tpmdev.backends.builtin", "tpmdev.backends.base"), argv, module)


if __name__ == "__main__":
    main(module=__spec__.name if __spec__ is not None else None)
