"""``tpmdev bench``: runs the benchmark suite and prints one table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tpmdev
from tpmdev import _cli_bench


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", "bench", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_quick_run_prints_progress_and_one_table() -> None:
    result = _bench("--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("PASSED" in line and "test_execute_mix[py]" in line for line in lines)  # progress
    header = next(i for i, line in enumerate(lines) if line.startswith("operation"))
    assert lines[header].split() == ["operation", "variant", "time/op", "floor/op", "ratio"]
    rows = lines[header + 2 :]
    cells = [re.split(r"\s{2,}", line) for line in rows if line.strip()]
    for operation in (
        "execute: execute mix",
        "unicorn STS poll: unicorn sts poll",
        "read STS call: read sts call",
    ):
        variants = {cell[1] for cell in cells if cell[0] == operation}
        assert variants == ({"c", "py"} if tpmdev.USE_EXTENSIONS else {"py"}), operation
    assert all(cell[4].endswith("x") for cell in cells if cell[0].startswith("execute: "))


def test_no_suite_says_what_to_do(tmp_path: Path) -> None:
    result = _bench("--suite", str(tmp_path))
    assert result.returncode == 2
    assert "benchmarks/ of a source checkout" in result.stderr


def test_table_divides_by_ops_and_compares_with_the_floor() -> None:
    report = {
        "benchmarks": [
            {"name": "test_floor_copy", "group": "g", "stats": {"min": 1e-6}, "extra_info": {"ops": 1000}},
            {"name": "test_op[c]", "group": "g", "stats": {"min": 3e-6}, "extra_info": {"ops": 1000}},
            {"name": "test_op[py]", "group": "g", "stats": {"min": 2e-6}, "extra_info": {}},
            {"name": "test_lonely", "group": None, "stats": {"min": 5e-9}, "extra_info": {}},
        ]
    }
    assert _cli_bench.table(report) == [
        ("g: op", "c", "3.0 ns", "1.0 ns", "3.00x"),
        ("g: op", "py", "2.00 us", "1.0 ns", "2000.00x"),
        ("test_lonely: lonely", "-", "5.0 ns", "-", "-"),
    ]
