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
