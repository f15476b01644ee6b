"""Disassemble AML with ACPICA's ``iasl -d`` and insist that it reports nothing wrong.

:func:`ssdt` wraps AML in a definition block (SSDT header, checksum);
:func:`disassemble` runs ``iasl -d`` on a table and returns the ASL it
wrote, failing the test when iasl exits non-zero or prints any line with
"Error" or "Warning" (a bad checksum, an invalid name, a table length that
does not match, a parse failure all do). :func:`compile_asl` compiles ASL
back to a table, for round trips (AML -> ASL -> AML).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["ssdt", "disassemble", "compile_asl", "IASL"]

IASL = shutil.which("iasl") or "iasl"

_COMPLAINT = re.compile(r"error|warning", re.IGNORECASE)


def ssdt(aml: bytes, *, oem_table_id: bytes = b"TPMDEV  ") -> bytes:
    """An SSDT (revision 2) carrying *aml*, with a valid checksum."""
    header = bytearray(b"SSDT")
    header += (36 + len(aml)).to_bytes(4, "little")
    header += bytes([2, 0])  # revision, checksum
    header += b"BOCHS " + oem_table_id + (1).to_bytes(4, "little") + b"BXPC" + (1).to_bytes(4, "little")
    table = header + aml
    table[9] = -sum(table) & 0xFF
    return bytes(table)


def disassemble(table: bytes, workdir: Path, stem: str = "table") -> str:
    """``iasl -d`` of *table*: the ASL text; fails the test on any error or warning."""
    if shutil.which(IASL) is None:
        pytest.fail("iasl is not installed (Debian: acpica-tools)")
    aml_path = workdir / f"{stem}.aml"
    aml_path.write_bytes(table)
    proc = subprocess.run(
        [IASL, "-d", aml_path.name], cwd=workdir, capture_output=True, text=True, timeout=60, check=False
    )
    output = proc.stdout + proc.stderr
    complaints = [line for line in output.splitlines() if _COMPLAINT.search(line)]
    assert proc.returncode == 0, f"iasl -d exited {proc.returncode}:\n{output}"
    assert not complaints, "iasl -d complained:\n" + "\n".join(complaints)
    return (workdir / f"{stem}.dsl").read_text()


def compile_asl(asl: str, workdir: Path, stem: str = "recompiled") -> bytes:
    """``iasl`` of *asl*: the table it compiles (remarks and warnings allowed, errors fail)."""
    if shutil.which(IASL) is None:
        pytest.fail("iasl is not installed (Debian: acpica-tools)")
    (workdir / f"{stem}.dsl").write_text(asl)
    proc = subprocess.run(
        [IASL, "-p", stem, f"{stem}.dsl"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"iasl exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return (workdir / f"{stem}.aml").read_bytes()
