"""``tpmdev acpi``: run as a user runs it (``python -m tpmdev acpi ...``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tpmdev
from tpmdev.firmware import acpi


def run_acpi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", "acpi", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def library_output(frontend: str, version: int, ppi: bool, **kwargs: object) -> dict[str, bytes]:
    """What the library builds for the same settings, under the names the command uses."""
    backend = tpmdev.backends.open(f"builtin:{'2.0' if version == 2 else '1.2'}")
    cls = {"tis": tpmdev.TIS, "crb": tpmdev.CRB, "tis-sysbus": tpmdev.TISSysbus}[frontend]
    options = {} if frontend == "tis-sysbus" else {"ppi": ppi}
    with cls(backend, **options) as dev:
        out = {f"{sig}.dat": table for sig, table in dev.acpi_tables(**kwargs).items()}  # type: ignore[arg-type]
        out["tpm-device.aml"] = dev.aml()
        out.update({f"fw_cfg/{name}": data for name, data in dev.fw_cfg_files().items()})
    return out


@pytest.mark.parametrize("frontend", ["tis", "crb", "tis-sysbus"])
@pytest.mark.parametrize("version", [2, 1])
def test_writes_what_the_library_builds(tmp_path: Path, frontend: str, version: int) -> None:
    result = run_acpi(str(tmp_path / "out"), "--frontend", frontend, "--tpm-version", str(version))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    written = files_under(tmp_path / "out")
    assert written == library_output(frontend, version, ppi=True)
    log_table = {2: "TPM2.dat", 1: "TCPA.dat" if frontend != "tis-sysbus" else None}[version]
    assert sorted(n for n in written if n.endswith(".dat")) == sorted(filter(None, ["SSDT.dat", log_table]))
    for name in written:
        assert name in result.stdout
    assert f"TPM {'2.0' if version == 2 else '1.2'}" in result.stdout


def test_settings(tmp_path: Path) -> None:
    """--no-ppi, --log-address (hex), --oem-id, --oem-table-id, --tpm-version 1.2 spelt out."""
    out = tmp_path / "out"
    result = run_acpi(
        str(out),
        "--frontend",
        "crb",
        "--tpm-version",
        "1.2",
        "--no-ppi",
        "--log-address",
        "0x7ff0000",
        "--oem-id",
        "TPMDEV",
        "--oem-table-id",
        "TABLES01",
    )
    assert result.returncode == 0, result.stderr
    written = files_under(out)
    expected = library_output(
        "crb", 1, ppi=False, log_address=0x7FF0000, oem_id="TPMDEV", oem_table_id="TABLES01"
    )
    assert written == expected
    assert "fw_cfg/etc/tpm/config" not in written
    assert written["TCPA.dat"][42:50] == (0x7FF0000).to_bytes(8, "little")
    assert written["SSDT.dat"][10:24] == b"TPMDEVTABLES01"
    assert "PPI off" in result.stdout


def test_disassemble(tmp_path: Path) -> None:
    result = run_acpi(str(tmp_path), "--disassemble", "--log-address", "4096")
    assert result.returncode == 0, result.stderr
    ssdt = (tmp_path / "SSDT.dsl").read_text()
    assert "Device (TPM)" in ssdt and "_DSM" in ssdt and "Scope (\\_SB.PCI0.SF8)" in ssdt
    assert "Log Address : 0000000000001000" in " ".join((tmp_path / "TPM2.dsl").read_text().split())
    assert "SSDT.dsl" in result.stdout and "TPM2.dsl" in result.stdout


def test_disassemble_without_iasl(tmp_path: Path) -> None:
    """No iasl on PATH: a clear message, exit status 1, nothing written."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    assert shutil.which("iasl", path=str(bindir)) is None
    env = {**os.environ, "PATH": str(bindir)}
    result = run_acpi(str(tmp_path / "out"), "--disassemble", env=env)
    assert result.returncode == 1
    assert "--disassemble needs ACPICA's iasl" in result.stderr and "acpica-tools" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--oem-id", "BOCHS"), "oem_id must be exactly 6 printable ASCII characters"),
        (("--oem-table-id", "BXPC"), "oem_table_id must be exactly 8 printable ASCII characters"),
        (("--log-address", "-1"), "log_address must fit in 64 bits"),
    ],
)
def test_bad_settings(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """Refused with the builder's message and exit status 2, before anything is written."""
    result = run_acpi(str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("tpmdev acpi: ") and message in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--log-address", "zz"), "argument --log-address: not an integer"),
        (("--frontend", "spapr"), "argument --frontend: invalid choice: 'spapr'"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_acpi(str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_directory_argument() -> None:
    result = run_acpi()
    assert result.returncode == 2
    assert "the following arguments are required: directory" in result.stderr


def test_directory_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("not a directory")
    result = run_acpi(str(target))
    assert result.returncode == 1
    assert f"tpmdev acpi: cannot write to {target}" in result.stderr
    assert target.read_text() == "not a directory"


def test_checksums_reported_valid(tmp_path: Path) -> None:
    result = run_acpi(str(tmp_path), "--frontend", "tis-sysbus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("checksum valid") == 2 and "BAD" not in result.stdout
    for table in tmp_path.glob("*.dat"):
        assert acpi.checksum(table.read_bytes()) == 0


def test_disassemble_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An iasl that hangs (fault injection: a stand-in on PATH): stopped, a clear message, exit status 1."""
    from tpmdev import _cli_acpi
    from tpmdev.cli import main

    bindir = tmp_path / "bin"
    bindir.mkdir()
    iasl = bindir / "iasl"
    iasl.write_text("#!/bin/sh\nexec sleep 30\n")
    iasl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(_cli_acpi, "_IASL_TIMEOUT", 0.5)
    assert main(["acpi", str(tmp_path / "out"), "--disassemble"]) == 1
    err = capsys.readouterr().err
    assert "iasl -d TPM2.dat did not finish within 0.5 s" in err and str(iasl) in err
