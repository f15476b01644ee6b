"""``tpmdev fuzz TARGET``: run one fuzz harness under libFuzzer (atheris).

The harness runs as its own process, ``python -m tpmdev.fuzz.TARGET`` with
libFuzzer's flags: ``--time`` is ``-max_total_time``, ``--runs`` is ``-runs``,
``--max-len`` is ``-max_len`` (default 8192), ``--jobs N`` (N > 1) is
libFuzzer's ``-fork=N`` (N fuzzing processes that share one corpus,
restarted as they finish or crash); anything after ``--`` goes to libFuzzer
as it is (``-- -jobs=4 -workers=2``, ``-- -dict=...``).
Nothing here schedules processes itself.

The corpus directory (``--corpus``) is created when missing and seeded with
the target's seeds (:mod:`tpmdev.fuzz.seeds`) when empty; without
``--corpus`` a temporary one is used and removed afterwards. Crash
reproducers land in ``--artifacts`` (default: the current directory) as
libFuzzer names them (``crash-<sha1>``); ``python -m tpmdev.fuzz.TARGET FILE``
replays one. The exit status is libFuzzer's (0: no finding).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import tpmdev
from tpmdev.fuzz import TARGETS

__all__ = ["register", "run", "libfuzzer_command"]

#: libFuzzer's -max_len unless told: room for a whole 4096-byte command buffer written
#: through the FIFO and the operations around it (libFuzzer's own default, the longest
#: seed, would keep the builtin and sPAPR targets' inputs to a few hundred bytes).
DEFAULT_MAX_LEN = 8192

_FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


def register(subparsers: Any) -> None:
    """Add ``fuzz`` to the ``tpmdev`` command's subparsers."""
    p = subparsers.add_parser(
        "fuzz",
        help="fuzz one guest-facing surface with atheris/libFuzzer (needs the 'fuzz' extra)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("target", choices=TARGETS, help="the surface to fuzz")
    p.add_argument("--time", type=int, default=60, metavar="N", help="seconds to fuzz (default 60, 0: none)")
    p.add_argument("--runs", type=int, default=None, metavar="N", help="stop after N inputs (-runs)")
    p.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="fuzzing processes (libFuzzer -fork=N; default 1)"
    )
    p.add_argument("--corpus", default=None, metavar="DIR", help="corpus directory (kept; seeded when empty)")
    p.add_argument(
        "--artifacts", default=".", metavar="DIR", help="where crash reproducers go (default: current dir)"
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=DEFAULT_MAX_LEN,
        metavar="N",
        help=f"largest input (-max_len; default {DEFAULT_MAX_LEN})",
    )
    p.add_argument("libfuzzer_args", nargs="*", metavar="-- LIBFUZZER_FLAG", help="passed to libFuzzer")
    p.set_defaults(func=run)


def libfuzzer_command(
    target: str,
    corpus: str,
    *,
    time: int = 60,
    runs: int | None = None,
    jobs: int = 1,
    artifacts: str = ".",
    max_len: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The command line that fuzzes *target* (see the module doc)."""
    cmd = [sys.executable, "-m", f"tpmdev.fuzz.{target}"]
    if time:
        cmd.append(f"-max_total_time={time}")
    if runs is not None:
        cmd.append(f"-runs={runs}")
    if jobs > 1:
        cmd.append(f"-fork={jobs}")
    if max_len is not None:
        cmd.append(f"-max_len={max_len}")
    cmd += ["-print_final_stats=1", f"-artifact_prefix={os.path.join(os.path.abspath(artifacts), '')}"]
    cmd += list(extra or [])
    cmd.append(corpus)
    return cmd


def _check(args: argparse.Namespace) -> str:
    if importlib.util.find_spec("atheris") is None:
        return (
            "tpmdev fuzz needs atheris (libFuzzer for Python), which is not installed: "
            "pip install 'tpmdev[fuzz]' (or pip install atheris; wheels exist for Linux x86-64)"
        )
    for name in ("time", "jobs"):
        if getattr(args, name) < (1 if name == "jobs" else 0):
            return f"--{name} must be {'at least 1' if name == 'jobs' else '0 or more'}"
    if args.runs is not None and args.runs < 0:
        return "--runs must be 0 or more"
    return ""


def _findings(directory: str, before: set[str]) -> list[str]:
    try:
        names = set(os.listdir(directory))
    except OSError:
        return []
    return sorted(n for n in names - before if n.startswith(_FINDING_PREFIXES))


def run(args: argparse.Namespace) -> int:
    """Run the campaign the arguments describe; returns libFuzzer's exit status."""
    from tpmdev.fuzz.seeds import write_corpus

    problem = _check(args)
    if problem:
        print(f"tpmdev: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix=f"tpmdev-fuzz-{args.target}-") as scratch:
        corpus = args.corpus or os.path.join(scratch, "corpus")
        os.makedirs(corpus, exist_ok=True)
        if not os.listdir(corpus):
            seeded = write_corpus(scratch + "/seeds", [args.target])[args.target]
            for name in os.listdir(os.path.join(scratch, "seeds", args.target)):
                # (a move, not a rename: --corpus may be on another file system)
                shutil.move(os.path.join(scratch, "seeds", args.target, name), os.path.join(corpus, name))
            print(f"tpmdev: seeded {corpus} with {seeded} inputs", file=sys.stderr)
        os.makedirs(args.artifacts, exist_ok=True)
        before = set(os.listdir(args.artifacts))
        cmd = libfuzzer_command(
            args.target,
            corpus,
            time=args.time,
            runs=args.runs,
            jobs=args.jobs,
            artifacts=args.artifacts,
            max_len=args.max_len,
            extra=args.libfuzzer_args,
        )
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(tpmdev.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        print("tpmdev: " + " ".join(cmd), file=sys.stderr)
        status = subprocess.run(cmd, env=env, check=False).returncode
        found = _findings(args.artifacts, before)
    for name in found:
        print(
            f"tpmdev: finding {os.path.join(args.artifacts, name)} "
            f"(replay: python -m tpmdev.fuzz.{args.target} {os.path.join(args.artifacts, name)})",
            file=sys.stderr,
        )
    if status == 0 and not found:
        print(f"tpmdev: fuzz {args.target}: no finding", file=sys.stderr)
    return status if status or not found else 1
