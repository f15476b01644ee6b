"""``tpmdev serve``: a long-running device behind a TPM simulator socket protocol.

Builds ``--frontend`` on ``--backend`` and serves it with
:class:`tpmdev.server.TpmServer` in the Microsoft simulator protocol
(``--protocol mssim``, the default: command port N, platform port N+1) or
swtpm's (``--protocol swtpm``: data port N, control port N+1)::

    tpmdev serve --frontend crb --backend libtpms --port 2321 &
    tpm2_startup -c -T mssim:port=2321
    tpm2_getrandom -T mssim:port=2321 16

Prints one line when it is listening (the protocol, address and ports),
listens on 127.0.0.1 unless ``--host`` says otherwise, serves one client at
a time, and ends cleanly on SIGINT / SIGTERM (or a client's STOP /
SHUTDOWN): connections closed, ``--state FILE`` saved, the backend closed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any, Optional

from tpmdev._frontends import FRONTENDS, add_device_arguments, open_device, save_state
from tpmdev.errors import TpmDevError
from tpmdev.server import DEFAULT_PORT, PROTOCOLS, TpmServer

__all__ = ["register", "run"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a device on the TPM simulator (mssim) or swtpm socket protocol",
        description=(
            "Serve a TPM device on two TCP ports in the Microsoft simulator protocol (mssim: command "
            "port N, platform port N+1) or swtpm's (data port N, control port N+1); every command "
            "goes through the frontend's registers. Use it with -T mssim:port=N or -T swtpm:port=N."
        ),
    )
    add_device_arguments(
        p, backends="libtpms (default), builtin, swtpm, swtpm:CTRL_SOCKET, passthrough[:/dev/tpmN]"
    )
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="mssim", help="default mssim")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"command/data port N; N+1 is the platform/control port (default {DEFAULT_PORT}; "
        "0: any free pair)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="tpmdev serve: %(message)s")
    if not 0 <= args.port <= 65534:
        print(
            f"tpmdev serve: --port must be 0..65534 (the next port is used too), got {args.port}",
            file=sys.stderr,
        )
        return 2
    if args.host not in _LOOPBACK:
        print(
            f"tpmdev serve: listening on {args.host}: anyone who can reach it can use this TPM",
            file=sys.stderr,
        )
    version = 1 if args.tpm == "1.2" else 2
    try:
        dev, driver = open_device(args.frontend, args.backend, tpm_version=version, state=args.state)
    except TpmDevError as exc:
        print(f"tpmdev serve: {exc}", file=sys.stderr)
        return 1
    with dev:
        try:
            server = TpmServer(dev, driver, protocol=args.protocol, host=args.host, port=args.port)
            server.start()
        except TpmDevError as exc:
            print(f"tpmdev serve: {exc}", file=sys.stderr)
            return 1
        names = ("command", "platform") if args.protocol == "mssim" else ("data", "control")

        def stop(signum: int, frame: Optional[FrameType]) -> None:
            server.shutdown()

        old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            print(
                f"tpmdev serve: {args.protocol} on {args.host} port {server.port} ({names[0]}) and "
                f"{server.port + 1} ({names[1]}): {FRONTENDS[args.frontend]} "
                f"on {type(dev.backend).__name__}; SIGINT or SIGTERM stops",
                flush=True,
            )
            server.serve_forever()
        finally:
            server.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        status = 0
        if args.state:
            try:
                save_state(dev, args.state)
            except (TpmDevError, OSError) as exc:
                print(f"tpmdev serve: could not save the state in {args.state}: {exc}", file=sys.stderr)
                status = 1
        print(
            f"tpmdev serve: stopped after {server.commands} commands"
            + (f" ({server.refused} connections refused)" if server.refused else ""),
            flush=True,
        )
        return status
