"""``tpmdev bench``: run the benchmark suite and print one table.

The suite is pytest-benchmark's, in ``benchmarks/`` of a source checkout
(it is not part of the installed package: it needs the test extra, and its
QEMU comparisons need QEMU). This command finds it next to the ``tpmdev``
package it runs from (a checkout built in place, ``python setup.py
build_ext --inplace``), runs it in a child ``python -m pytest`` with the
benchmarks enabled, shows each benchmark as it finishes, then prints one
table: for each operation and variant (``c`` compiled, ``py`` pure Python),
its time, the floor measured beside it in the same run, and the ratio.

Conventions the suite follows for this table: the benchmarks of one
operation share a pytest-benchmark group; the floor's test name contains
``floor``; a benchmark that times many operations per round says how many in
``extra_info["ops"]`` (the table shows time per operation). Times are CPU
time of the process (``time.process_time``) unless ``--wall``: on a shared
machine that is the steadier measure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, TextIO

import tpmdev

__all__ = ["register", "find_suite", "table", "QUICK_FILES"]

#: What ``--quick`` runs (small sizes, few rounds): the native-speed benchmarks.
QUICK_FILES = ("test_native_speed.py",)


def register(subparsers: Any) -> None:
    """Add ``tpmdev bench`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (source checkout) and print each operation beside its floor",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and few rounds of the native-speed benchmarks only"
    )
    parser.add_argument(
        "-k", dest="keyword", default=None, help="only benchmarks matching this pytest -k expression"
    )
    parser.add_argument(
        "--wall", action="store_true", help="wall-clock time instead of the process's CPU time"
    )
    parser.add_argument(
        "--json", dest="json_path", default=None, help="also keep pytest-benchmark's JSON here"
    )
    parser.add_argument("--suite", default=None, help="the benchmarks directory (default: the checkout's)")
    parser.set_defaults(func=run)


def find_suite() -> Optional[Path]:
    """``benchmarks/`` of the source checkout this ``tpmdev`` runs from, or None."""
    root = Path(tpmdev.__file__).resolve().parent.parent
    suite = root / "benchmarks"
    return suite if (suite / "conftest.py").is_file() else None


def _ns(seconds: float) -> str:
    ns = seconds * 1e9
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.1f} ns"


def _variant(name: str) -> str:
    found = re.search(r"\[(c|py)(?:-[^\]]*)?\]$", name)
    return found.group(1) if found else "-"


def table(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows ``(operation, variant, time, floor, ratio)`` from pytest-benchmark's JSON."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in report.get("benchmarks", []):
        groups.setdefault(bench.get("group") or bench["name"], []).append(bench)
    rows = []
    for group, benches in groups.items():

        def per_op(bench: dict[str, Any]) -> float:
            return float(bench["stats"]["min"]) / float(bench.get("extra_info", {}).get("ops", 1))

        floors = [b for b in benches if "floor" in b["name"]]
        floor = per_op(floors[0]) if floors else None
        for bench in benches:
            if bench in floors:
                continue
            op = re.sub(r"^test_|\[.*\]$", "", bench["name"]).replace("_", " ")
            time = per_op(bench)
            rows.append(
                (
                    f"{group}: {op}" if op != group else group,
                    _variant(bench["name"]),
                    _ns(time),
                    _ns(floor) if floor is not None else "-",
                    f"{time / floor:.2f}x" if floor else "-",
                )
            )
    return rows


def _print_table(rows: list[tuple[str, str, str, str, str]], out: TextIO) -> None:
    head = ("operation", "variant", "time/op", "floor/op", "ratio")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for row in [head, tuple("-" * w for w in widths), *rows]:
        out.write(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            )
        )
        out.write("\n")


def run(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Run the suite (see the module doc); 0 when every benchmark ran."""
    out = sys.stdout if out is None else out  # (the stream of the moment)
    suite = Path(args.suite) if args.suite else find_suite()
    if suite is None or not (suite / "conftest.py").is_file():
        print(
            "tpmdev bench: no benchmark suite found. It lives in benchmarks/ of a source checkout: clone the "
            "repository, install the test extra (pip install -e '.[test]', or build in place with "
            "`python setup.py build_ext --inplace`), and run `tpmdev bench` (or `python -m tpmdev bench`) "
            "from that checkout; or point --suite at its benchmarks directory",
            file=sys.stderr,
        )
        return 2
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        print("tpmdev bench: needs pytest-benchmark (pip install -e '.[test]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tpmdev-bench-") as tmp:
        json_path = Path(args.json_path) if args.json_path else Path(tmp) / "bench.json"
        targets = [str(suite / f) for f in QUICK_FILES] if args.quick else [str(suite)]
        command = [
            sys.executable, "-m", "pytest", *targets, "-o", "addopts=", "-p", "no:cacheprovider",
            "--benchmark-only", f"--benchmark-json={json_path}", "-v", "--no-header",
            f"--benchmark-timer={'time.perf_counter' if args.wall else 'time.process_time'}",
        ]  # fmt: skip
        if args.keyword:
            command += ["-k", args.keyword]
        # A pytest of its own: nothing from a pytest this may run under (its
        # options, such as a JUnit report path, or an xdist worker's identity).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        if args.quick:
            env["TPMDEV_BENCH_QUICK"] = "1"
        out.write(f"tpmdev bench: {'quick run of ' if args.quick else ''}{suite}\n")
        out.flush()
        done = 0
        if json_path.exists():
            json_path.unlink()  # (a report left from another run must not pass for this one's)
        failures: list[str] = []
        with subprocess.Popen(
            command, cwd=suite.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:  # (ended and waited for on every path, an interrupt included)
            assert process.stdout is not None
            for line in process.stdout:  # progress: one line per benchmark as it finishes
                verdict = re.search(r"(\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED)", line)
                if verdict:
                    done += 1
                    out.write(f"  [{done}] {verdict.group(2):7} {verdict.group(1).split('::', 1)[1]}\n")
                    out.flush()
                    if verdict.group(2) in ("FAILED", "ERROR"):
                        failures.append(verdict.group(1))
            code = process.wait()
        if not json_path.is_file():
            print(f"tpmdev bench: pytest exited with {code} and produced no results", file=sys.stderr)
            return 1
        report = json.loads(json_path.read_text())
    out.write("\n")
    _print_table(table(report), out)
    timer = "wall-clock" if args.wall else "CPU"
    out.write(f"\n{timer} time, fastest round, per operation; ratio = time / floor of the same group\n")
    if failures:
        print(f"tpmdev bench: {len(failures)} benchmark(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0 if code in (0, 5) else 1
