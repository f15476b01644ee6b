"""``tpmdev replay``: run a recorded register trace against a device, report the first divergence.

``tpmdev replay FILE`` builds the trace's frontend on ``--backend``
(``--seed N``: the builtin TPM with the seed the session was recorded with),
performs every write of the trace and compares every read with the recorded
value (:func:`tpmdev.trace.replay`). Exit status 0 when all agree, 1 at the
first divergence (printed: the access, the register, both values), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tpmdev.errors import TpmDevError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="run a recorded register trace against a device and report the first divergence",
        description="Perform the writes of a register trace (tpmdev trace record) on a new device and "
        "compare every read with the recorded value; report the first that differs.",
    )
    p.add_argument("file", help="the trace file")
    p.add_argument("--backend", default="builtin", help="builtin (default), libtpms, swtpm, ...")
    p.add_argument("--seed", type=int, help="seed of the builtin TPM (the one the trace was recorded with)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tpmdev import trace
    from tpmdev._cli_trace import make_device

    try:
        recorded = trace.load(args.file)
        with make_device(recorded.frontend, args.backend, args.seed) as dev:
            divergence = trace.replay(recorded, dev)
    except (TpmDevError, OSError) as exc:
        print(f"tpmdev replay: {exc}", file=sys.stderr)
        return 1
    if divergence is not None:
        print(f"tpmdev replay: first divergence at {divergence}")
        return 1
    print(f"tpmdev replay: {len(recorded.accesses)} register accesses replayed, every read as recorded")
    return 0
