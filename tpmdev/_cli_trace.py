"""``tpmdev trace``: record a session's register accesses to a file, or show one decoded.

``tpmdev trace record FILE`` builds ``--frontend`` (an MMIO one: tis,
tis-sysbus, crb) on ``--backend``, runs commands through the driver Linux
would use (``--command HEX``, repeatable; by default TPM2_Startup,
GetRandom, PCR_Extend and PCR_Read) and writes every register access to FILE
(:mod:`tpmdev.trace`). ``--seed N`` makes the builtin TPM deterministic, so
``tpmdev replay FILE --seed N`` reproduces the session exactly.

``tpmdev trace show FILE`` prints it: register names, decoded bits, FIFO and
buffer runs folded, commands and responses decoded by their TPM codes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any

from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.drivers import for_device
from tpmdev.errors import TpmDevError

__all__ = ["register", "run", "make_device", "TRACE_FRONTENDS"]

#: the frontends a register trace can be taken of
TRACE_FRONTENDS = ("tis", "tis-sysbus", "crb")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "trace",
        help="record a session's register accesses to a file, or show one decoded",
        description="Record the register accesses of a session (trace record), or print a recorded one "
        "with register names, decoded bits, commands and responses (trace show).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    rec = actions.add_parser("record", help="run commands through a device and record its register accesses")
    rec.add_argument("file", help="the trace file to write")
    rec.add_argument("--frontend", choices=TRACE_FRONTENDS, default="tis", help="default tis")
    rec.add_argument("--backend", default="builtin", help="builtin (default), libtpms, swtpm, ...")
    rec.add_argument("--seed", type=int, help="seed of the builtin TPM (deterministic: replayable)")
    rec.add_argument(
        "--command",
        action="append",
        metavar="HEX",
        help="a TPM command in hex (repeatable; default: Startup, GetRandom, PCR_Extend, PCR_Read)",
    )
    show = actions.add_parser("show", help="print a trace decoded")
    show.add_argument("file", help="the trace file to read")
    p.set_defaults(func=run)


def make_device(frontend: str, backend: str, seed: Any) -> Any:
    """A TIS, sysbus TIS or CRB on *backend* (a builtin TPM with *seed* when given)."""
    import tpmdev
    from tpmdev._frontends import _backend

    be: Backend
    if seed is not None:
        if backend.partition(":")[0] != "builtin":
            raise TpmDevError("--seed is for the builtin backend (the others are not deterministic)")
        be = tpmdev.backends.Builtin(seed=seed)
    else:
        be = _backend(backend, 2)
    cls = {"tis": tpmdev.TIS, "tis-sysbus": tpmdev.TISSysbus, "crb": tpmdev.CRB}[frontend]
    return cls(be)


def run(args: argparse.Namespace) -> int:
    from tpmdev import trace

    try:
        if args.action == "show":
            for line in trace.describe(trace.load(args.file)):
                print(line)
            return 0
        commands = [bytes.fromhex(h) for h in args.command] if args.command else _default_commands()
        with make_device(args.frontend, args.backend, args.seed) as dev:
            recorder = trace.Recorder(dev)
            driver = for_device(recorder)
            for command in commands:
                driver.transmit(command)
            trace.save(recorder.trace, args.file)
        print(
            f"tpmdev trace: {len(recorder.accesses)} register accesses, "
            f"{len(commands)} commands, in {args.file}"
        )
        return 0
    except ValueError as exc:
        print(f"tpmdev trace: --command must be hex: {exc}", file=sys.stderr)
        return 2
    except (TpmDevError, OSError) as exc:
        print(f"tpmdev trace: {exc}", file=sys.stderr)
        return 1


def _default_commands() -> list[bytes]:
    digest = hashlib.sha256(b"tpmdev trace").digest()
    return [C.tpm2_startup(), C.tpm2_get_random(16), C.tpm2_pcr_extend(16, digest), C.tpm2_pcr_read([16])]
