"""``tpmdev demo``: the main job of the README's first command."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest


def run_demo(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "args",
    [(), ("--backend", "swtpm"), ("--backend", "libtpms")],
    ids=["builtin", "swtpm", "libtpms"],
)
def test_demo_tpm2(args: tuple[str, ...]) -> None:
    out = run_demo(*args)
    assert out.count("rc=0x0 (success)") == 4
    extended = hashlib.sha256(bytes(32) + hashlib.sha256(b"tpmdev demo").digest()).hexdigest()
    assert f"PCR 16 = {extended}" in out
    assert "read  TPM_STS" in out and "write TPM_DATA_FIFO" in out


@pytest.mark.parametrize("backend", ["builtin", "swtpm", "libtpms"])
def test_demo_tpm12(backend: str) -> None:
    out = run_demo("--backend", backend, "--tpm", "1.2")
    assert out.count("rc=0x0 (success)") == 4
    extended = hashlib.sha1(bytes(20) + hashlib.sha1(b"tpmdev demo").digest()).hexdigest()
    assert out.count(f"PCR 16 = {extended}") == 2


FRONTEND_HEADERS = {
    "tis": "TIS (tpm-tis, ISA) at 0xfed40000",
    "tis-sysbus": "TIS on sysbus (tpm-tis-device, Arm virt) at 0xc000000",
    "tis-i2c": "TIS over I2C (tpm-tis-i2c)",
    "crb": "CRB (tpm-crb) at 0xfed40000",
    "spapr": "sPAPR vTPM (tpm-spapr, CRQ)",
}
FRONTEND_OPERATIONS = {
    "tis": ("read  TPM_STS", "write TPM_DATA_FIFO"),
    "tis-sysbus": ("read  TPM_STS", "write TPM_DATA_FIFO"),
    "tis-i2c": ("read  TPM_I2C_DATA_CSUM", "write TPM_I2C_DATA_FIFO"),
    "crb": ("write TPM_CRB_CTRL_START", "read  TPM_CRB_DATA_BUFFER"),
    "spapr": ("write H_SEND_CRQ", "write send_crq"),
}


@pytest.mark.parametrize("frontend", sorted(FRONTEND_HEADERS))
def test_demo_each_frontend_tpm2(frontend: str) -> None:
    out = run_demo("--frontend", frontend)
    assert FRONTEND_HEADERS[frontend] in out.splitlines()[0] and "TPM 2.0" in out.splitlines()[0]
    assert out.count("rc=0x0 (success)") == 4
    extended = hashlib.sha256(bytes(32) + hashlib.sha256(b"tpmdev demo").digest()).hexdigest()
    assert f"PCR 16 = {extended}" in out
    for operation in FRONTEND_OPERATIONS[frontend]:
        assert operation in out


@pytest.mark.parametrize("frontend", ["tis", "tis-sysbus", "crb", "spapr"])
def test_demo_each_frontend_tpm12_on_swtpm(frontend: str) -> None:
    out = run_demo("--frontend", frontend, "--tpm", "1.2", "--backend", "swtpm")
    assert FRONTEND_HEADERS[frontend] in out.splitlines()[0] and "TPM 1.2" in out.splitlines()[0]
    assert out.count("rc=0x0 (success)") == 4
    extended = hashlib.sha1(bytes(20) + hashlib.sha1(b"tpmdev demo").digest()).hexdigest()
    assert out.count(f"PCR 16 = {extended}") == 2


def test_demo_i2c_refuses_tpm12() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev", "demo", "--frontend", "tis-i2c", "--tpm", "1.2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "TPM 2.0 interface" in result.stderr and result.stdout == ""


def test_demo_unknown_frontend() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev", "demo", "--frontend", "pci"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "invalid choice: 'pci'" in result.stderr


def test_no_command_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "demo" in result.stdout


def test_bad_backend_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev", "demo", "--backend", "qemu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "unknown backend spec" in result.stderr
