"""``tpmdev tcti``: tpm2-tss's ``cmd`` TCTI served through a device's registers.

tpm2-tss's command TCTI (``-T "cmd:PROGRAM ARGS"``, ``libtss2-tcti-cmd``)
starts PROGRAM with ``/bin/sh -c`` once per tool run, writes each TPM command
to its standard input and reads the response from its standard output: the
10-byte header first, then the rest of the size the header announces. When
the tool is done it sends SIGTERM and waits for the process to end, and
only then closes the pipes.

This command is that PROGRAM: it builds ``--frontend`` on ``--backend``, and
runs every command read from stdin through the driver Linux would use for
that frontend (:func:`tpmdev.drivers.for_device`), writing each response to
stdout as soon as it is complete. Each tool run is a new process, so
``--state FILE`` restores the device and TPM at start (when FILE exists)
and saves them at exit (end of input, SIGTERM, SIGINT): PCRs, NV, loaded
objects and sessions carry over from one tool to the next::

    tpm2_startup -c -T "cmd:tpmdev tcti --frontend crb --backend libtpms --state tpm.state"
    tpm2_getrandom -T "cmd:tpmdev tcti --frontend crb --backend libtpms --state tpm.state" 16

A command the driver cannot complete (a timeout, a protocol error) is
reported on stderr and answered with a failure response (TPM 2.0:
TPM_RC_FAILURE; TPM 1.2: TPM_FAIL), so the tool fails cleanly instead of
waiting. Nothing but responses is written to stdout. A pipe that fails (the
reader gone) ends the run with a message and status 1; the state is still
saved.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import Any, BinaryIO, Optional

from tpmdev._frontends import add_device_arguments, open_device, save_state
from tpmdev._progress import Progress
from tpmdev.errors import TpmDevError
from tpmdev.tpm_codes import command_name
from tpmdev.wire import FATAL_RESPONSE, HEADER_SIZE, header_size

__all__ = ["register", "run", "serve_pipe", "FAILURE_RESPONSE"]

#: TPM2 response with TPM_RC_FAILURE, for a command the device could not run
#: (a TPM 1.2 gets :data:`tpmdev.wire.FATAL_RESPONSE`, TPM_FAIL)
FAILURE_RESPONSE = bytes.fromhex("8001 0000000a 00000101")
#: The largest command accepted from the pipe (tpm2-tss's TPM2_MAX_COMMAND_SIZE)
MAX_COMMAND = 4096


class _Stop(Exception):
    """SIGTERM / SIGINT: finish, save the state, exit."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tcti",
        help="serve tpm2-tss's cmd TCTI on stdin/stdout through a device's registers",
        description=(
            "Run TPM commands read from stdin (tpm2-tss's cmd TCTI framing) through a frontend's "
            "registers and its Linux-style driver, and write the responses to stdout. Use it as "
            '-T "cmd:tpmdev tcti --frontend crb --backend libtpms --state tpm.state".'
        ),
    )
    add_device_arguments(
        p,
        backends="libtpms (default), builtin, swtpm (a swtpm process per run), swtpm:CTRL_SOCKET, "
        "passthrough[:/dev/tpmN]",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    version = 1 if args.tpm == "1.2" else 2
    stop = _install_stop_handlers()
    try:
        try:
            dev, driver = open_device(args.frontend, args.backend, tpm_version=version, state=args.state)
        except TpmDevError as exc:
            print(f"tpmdev tcti: {exc}", file=sys.stderr)
            return 1
        with dev:
            status = 0
            try:
                serve_pipe(driver, sys.stdin.buffer, sys.stdout.buffer)
            except _Stop:
                pass
            except TpmDevError as exc:
                print(f"tpmdev tcti: {exc}", file=sys.stderr)
                status = 1
            except OSError as exc:  # a pipe failed: the TSS has gone
                _drop_stdout()
                print(f"tpmdev tcti: the pipe to the TSS failed: {exc}", file=sys.stderr)
                status = 1
            finally:
                # the state is saved even when a signal ends the run (tpm2-tss
                # sends SIGTERM and waits for us before it goes on)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                if args.state:
                    try:
                        save_state(dev, args.state)
                    except (TpmDevError, OSError) as exc:
                        print(
                            f"tpmdev tcti: could not save the state to {args.state}: {exc}", file=sys.stderr
                        )
                        status = 1
            return status
    except _Stop:  # a signal before the first command: nothing to save
        return 1
    finally:
        stop()


def serve_pipe(driver: Any, source: BinaryIO, sink: BinaryIO) -> int:
    """Answer commands from *source* on *sink* until end of input; returns
    how many were run. A malformed command ends the run (TpmDevError)."""
    count = 0
    while True:
        header = _read(source, HEADER_SIZE)
        if not header:
            return count
        if len(header) < HEADER_SIZE:
            raise TpmDevError(f"input ended inside a command header ({len(header)} of {HEADER_SIZE} bytes)")
        size = header_size(header)
        if not HEADER_SIZE <= size <= MAX_COMMAND:
            raise TpmDevError(f"a command of {size} bytes (header {header.hex()}): not a TPM command")
        body = _read(source, size - HEADER_SIZE)
        if len(body) < size - HEADER_SIZE:
            raise TpmDevError(f"input ended inside a {size}-byte command")
        code = int.from_bytes(header[6:10], "big")
        version = int(getattr(driver, "tpm_version", 2))
        name = command_name(code, version)
        try:
            with Progress(f"tpmdev tcti: {name} running"):
                response = driver.transmit(header + body)
        except TpmDevError as exc:
            print(f"tpmdev tcti: {name} failed in the device: {exc}", file=sys.stderr)
            response = FATAL_RESPONSE if version == 1 else FAILURE_RESPONSE
        sink.write(response)
        sink.flush()
        count += 1


def _drop_stdout() -> None:
    """Point stdout at /dev/null: what is left in its buffer must not fail
    again when the interpreter flushes it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _read(source: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = source.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _install_stop_handlers() -> Any:
    def stop(signum: int, frame: Optional[FrameType]) -> None:
        raise _Stop(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore
