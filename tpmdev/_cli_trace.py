"""``tpmdev trace`` and ``tpmdev replay``: record a session's bus operations,
read a recording, and run one against a device (:mod:`tpmdev.trace`).

``tpmdev trace record -o FILE`` drives a device as a guest driver does
(the commands of ``tpmdev demo``, or the ones given with ``--command``) and
records every bus operation; ``tpmdev trace show FILE`` prints a recording
with register names, decoded bits and the TPM commands and responses;
``tpmdev replay FILE`` runs it against a new device (on the recorded
backend unless ``--backend`` says otherwise) and reports the first call
whose result differs. Exit status: 0 done (replay: no divergence), 1
divergence or a TPM/backend failure, 2 bad arguments or unreadable files.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

import tpmdev
from tpmdev import trace as _trace
from tpmdev._progress import Progress
from tpmdev.drivers import commands as C
from tpmdev.drivers import for_device

__all__ = ["register"]

_RECORDABLE = ("tis", "tis-sysbus", "crb", "tis-i2c")


def register(sub: Any) -> None:
    """Add ``trace`` (with ``record`` and ``show``) and ``replay``."""
    p_trace = sub.add_parser(
        "trace",
        help="record a session's register accesses to a file, or print a recording",
        description="Record the bus operations of a guest session, or print a recording decoded.",
    )
    actions = p_trace.add_subparsers(dest="trace_action", metavar="{record,show}")
    p_rec = actions.add_parser(
        "record",
        help="drive a device as a guest driver does and record every bus operation",
        description="Drive a device as a guest driver does (the demo's commands unless --command is "
        "given) and write every bus operation to a trace file.",
    )
    p_rec.add_argument("-o", "--output", required=True, help="the trace file to write")
    p_rec.add_argument("--frontend", choices=_RECORDABLE, default="tis", help="the device (default tis)")
    p_rec.add_argument(
        "--backend",
        default="builtin",
        help="who runs the commands (as tpmdev.backends.open takes it; default builtin)",
    )
    p_rec.add_argument("--tpm", choices=["2.0", "2", "1.2"], default="2.0", help="TPM version (default 2.0)")
    p_rec.add_argument(
        "--seed",
        type=int,
        help="make the builtin backend deterministic (random bytes and clock), so a replay matches exactly",
    )
    p_rec.add_argument(
        "--command",
        action="append",
        default=[],
        metavar="HEX",
        help="a TPM command in hex to send (repeatable; default: Startup, GetRandom, PCR_Extend, PCR_Read)",
    )
    p_rec.set_defaults(func=_record)
    p_show = actions.add_parser(
        "show",
        help="print a trace: register names, decoded bits, commands and responses",
        description="Print a trace file decoded: register names and bits, FIFO and buffer traffic, "
        "and each TPM command and response by its code.",
    )
    p_show.add_argument("file", help="a trace file (from `tpmdev trace record` or tpmdev.trace.record)")
    p_show.add_argument("--raw", action="store_true", help="print the events as stored, one per line")
    p_show.set_defaults(func=_show)
    p_trace.set_defaults(func=lambda args: _usage(p_trace))

    p_replay = sub.add_parser(
        "replay",
        help="run a recorded trace against a device and report the first divergence",
        description="Run a trace against a new device of the recorded kind and report the first bus "
        "operation whose result differs from the recording (exit status 1), or say that none did.",
    )
    p_replay.add_argument("file", help="a trace file")
    p_replay.add_argument(
        "--backend", help="who runs the commands (default: the backend the trace names, else builtin)"
    )
    p_replay.add_argument("--all", action="store_true", help="report every divergence, not only the first")
    p_replay.set_defaults(func=_replay)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _error(message: str, status: int = 2) -> int:
    print(f"tpmdev: {message}", file=sys.stderr)
    return status


def _load(path: str) -> Optional[_trace.Trace]:
    try:
        return _trace.load(path)
    except OSError as exc:
        print(f"tpmdev: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
    except _trace.TraceError as exc:
        print(f"tpmdev: {path}: {exc}", file=sys.stderr)
    return None


def _commands(args: argparse.Namespace, version: int) -> list[bytes]:
    if args.command:
        out = []
        for text in args.command:
            try:
                out.append(bytes.fromhex(text))
            except ValueError:
                raise SystemExit(_error(f"--command {text!r} is not hex")) from None
        return out
    if version == 2:
        return [
            C.tpm2_startup(),
            C.tpm2_get_random(16),
            C.tpm2_pcr_extend(16, bytes(32)),
            C.tpm2_pcr_read([16]),
        ]
    return [C.tpm12_startup(), C.tpm12_get_random(16), C.tpm12_extend(16, bytes(20)), C.tpm12_pcr_read(16)]


def _record(args: argparse.Namespace) -> int:
    version = 1 if args.tpm == "1.2" else 2
    if args.frontend == "tis-i2c" and version == 1:
        return _error("the TIS over I2C is a TPM 2.0 interface (as QEMU's tpm-tis-i2c); use --tpm 2.0")
    commands = _commands(args, version)
    if args.seed is not None and (args.backend != "builtin" or args.seed < 0):
        return _error(
            "--seed is the builtin backend's (an int >= 0); other backends draw their own random bytes"
        )
    try:
        if args.seed is not None:
            backend: Any = tpmdev.backends.Builtin(tpm_version=version, seed=args.seed)
        else:
            backend = tpmdev.backends.open(args.backend, tpm_version=version)
    except tpmdev.TpmDevError as exc:
        return _error(str(exc), 1)
    # The output is opened first: a path that cannot be written is a usage
    # error, found before any command runs.
    try:
        out = open(args.output, "w", encoding="ascii")  # noqa: SIM115 (closed below, on every path)
    except OSError as exc:
        backend.close()
        return _error(f"cannot write {args.output}: {exc.strerror or exc}")
    with out:
        try:
            dev = _trace.frontend_class(args.frontend)(backend)
        except BaseException:
            backend.close()  # (a device that failed to build has not taken it over)
            raise
        try:
            with dev, _trace.record(dev, out, backend=args.backend, seed=args.seed) as recorder:
                driver = for_device(dev)
                for command in commands:
                    driver.transmit(command)
        except tpmdev.TpmDevError as exc:
            return _error(f"{exc} (the bus operations up to here are in {args.output})", 1)
    print(f"recorded {len(recorder.events)} bus operations ({len(commands)} commands) to {args.output}")
    return 0


def _show(args: argparse.Namespace) -> int:
    trace = _load(args.file)
    if trace is None:
        return 2
    write = sys.stdout.write
    if args.raw:
        trace.dump(sys.stdout)
        return 0
    for line in _trace.describe(trace):
        write(line + "\n")
    return 0


def _replay(args: argparse.Namespace) -> int:
    trace = _load(args.file)
    if trace is None:
        return 2
    spec = args.backend or trace.backend or "builtin"
    try:
        backend = _trace.open_recorded_backend(trace, args.backend)
    except tpmdev.TpmDevError as exc:
        return _error(str(exc), 1)
    try:
        with Progress(f"replaying {args.file}", len(trace.events)) as progress:
            divergences = _run(trace, backend, stop_at_first=not args.all, progress=progress)
    except tpmdev.TpmDevError as exc:
        return _error(str(exc), 1)
    if not divergences:
        print(f"{args.file}: {len(trace.events)} events replayed on {spec}, no divergence")
        return 0
    for divergence in divergences:
        print(f"{args.file}: divergence at {divergence}")
    if args.all:
        print(f"{len(divergences)} of {len(trace.events)} events diverged")
    return 1


def _run(
    trace: _trace.Trace, backend: Any, *, stop_at_first: bool, progress: Progress
) -> list[_trace.Divergence]:
    # Replays in slices so the progress line moves; the device is one.
    try:
        dev = _trace.build_device(trace, backend)
    except BaseException:
        backend.close()
        raise
    found: list[_trace.Divergence] = []
    try:
        step = 4096
        for start in range(0, len(trace.events), step):
            part = _trace.Trace(
                trace.frontend,
                trace.tpm_version,
                trace.backend,
                trace.options,
                trace.events[start : start + step],
            )
            for divergence in _trace.replay(part, dev, stop_at_first=stop_at_first):
                found.append(
                    _trace.Divergence(
                        divergence.index + start, divergence.event, divergence.got, divergence.error
                    )
                )
            if found and stop_at_first:
                break
            progress.update(min(start + step, len(trace.events)))
    finally:
        dev.close()
    return found
