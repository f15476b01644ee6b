"""``tpmdev tcti`` run as tpm2-tss's cmd TCTI runs it: commands on stdin,
responses on stdout, SIGTERM at the end; its state file and its error paths."""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tools_workflow import tpmdev_env

from tpmdev._cli_tcti import FAILURE_RESPONSE, serve_pipe
from tpmdev.drivers import commands as C
from tpmdev.errors import BackendError
from tpmdev.wire import FATAL_RESPONSE, response_code


def _tcti(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tpmdev", "tcti", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tpmdev_env(),
    )


def _exchange(proc: subprocess.Popen[bytes], command: bytes) -> bytes:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command)
    proc.stdin.flush()
    head = proc.stdout.read(10)
    return head + proc.stdout.read(int.from_bytes(head[2:6], "big") - 10)


@pytest.mark.parametrize("frontend", ["tis", "tis-sysbus", "crb", "tis-i2c", "spapr"])
def test_commands_in_responses_out_until_end_of_input(frontend: str) -> None:
    proc = _tcti("--frontend", frontend, "--backend", "builtin")
    assert response_code(_exchange(proc, C.tpm2_startup())) == 0
    assert len(C.decode_get_random(_exchange(proc, C.tpm2_get_random(16)))) == 16
    out, err = proc.communicate(timeout=60)  # end of input: done
    assert proc.returncode == 0 and out == b"", err


@pytest.mark.parametrize("stop", ["eof", "SIGTERM", "SIGINT"])
def test_state_is_kept_between_runs(stop: str, tmp_path: Path) -> None:
    """tpm2-tss sends SIGTERM when a tool is done, and only then closes the pipes."""
    state = tmp_path / "tpm.state"
    digest = hashlib.sha256(stop.encode()).digest()
    proc = _tcti("--backend", "libtpms", "--state", str(state))
    assert response_code(_exchange(proc, C.tpm2_startup())) == 0
    assert response_code(_exchange(proc, C.tpm2_pcr_extend(16, digest))) == 0
    if stop == "eof":
        proc.communicate(timeout=60)
    else:
        proc.send_signal(signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT)
        proc.wait(60)  # with its input still open
        proc.communicate(timeout=60)
    assert proc.returncode == 0 and state.stat().st_size > 1000
    proc = _tcti("--backend", "libtpms", "--state", str(state))
    _, values = C.decode_pcr_read(_exchange(proc, C.tpm2_pcr_read([16])))
    assert values == [hashlib.sha256(bytes(32) + digest).digest()]
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_a_signal_before_any_command_keeps_the_started_tpm(tmp_path: Path) -> None:
    state = tmp_path / "tpm.state"
    proc = _tcti("--backend", "builtin", "--state", str(state))
    assert response_code(_exchange(proc, C.tpm2_startup())) == 0
    proc.communicate(timeout=60)
    proc = _tcti("--backend", "builtin", "--state", str(state))
    time.sleep(0.2)  # (at any point of its start: the state file is never replaced by a fresh TPM)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    proc.communicate(timeout=60)
    proc = _tcti("--backend", "builtin", "--state", str(state))
    assert response_code(_exchange(proc, C.tpm2_get_random(4))) == 0  # started: not TPM_RC_INITIALIZE
    proc.communicate(timeout=60)


def _run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=tpmdev_env(),
        check=False,
    )


def test_tcti_help() -> None:
    result = _run("tcti", "--help")
    assert result.returncode == 0 and b"cmd TCTI" in result.stdout and b"--state FILE" in result.stdout


def test_errors_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    result = _run("tcti", "--backend", "nosuch")
    assert result.returncode == 1 and b"unknown backend spec 'nosuch'" in result.stderr
    result = _run("tcti", "--frontend", "nosuch")
    assert result.returncode == 2 and b"invalid choice: 'nosuch'" in result.stderr
    damaged = tmp_path / "damaged.state"
    damaged.write_bytes(b"not a state")
    result = _run("tcti", "--backend", "builtin", "--state", str(damaged))
    assert result.returncode == 1 and b"is not a tpmdev state file" in result.stderr
    assert damaged.read_bytes() == b"not a state"  # never overwritten
    unreadable = tmp_path / "a-directory.state"
    unreadable.mkdir()
    result = _run("tcti", "--backend", "builtin", "--state", str(unreadable))
    assert result.returncode == 1 and b"cannot read the state file" in result.stderr


def test_malformed_input_ends_the_run() -> None:
    result = _run("tcti", "--backend", "builtin", stdin=bytes.fromhex("8001 00000005 00000144"))
    assert result.returncode == 1 and b"not a TPM command" in result.stderr and result.stdout == b""
    result = _run("tcti", "--backend", "builtin", stdin=C.tpm2_startup()[:11])
    assert result.returncode == 1 and b"input ended inside a 12-byte command" in result.stderr


def test_a_closed_output_pipe_ends_the_run_with_a_message(tmp_path: Path) -> None:
    state = tmp_path / "tpm.state"
    proc = _tcti("--backend", "builtin", "--state", str(state))
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader has gone: the response cannot be written
    proc.stdin.write(C.tpm2_startup())
    proc.stdin.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) == 1
    assert b"the pipe to the TSS failed" in err and b"Traceback" not in err and b"Exception" not in err, err
    assert state.stat().st_size > 0  # saved all the same


class _FailingDriver:
    """Fault injection: a driver whose every command fails in the device."""

    def __init__(self, tpm_version: int) -> None:
        self.tpm_version = tpm_version

    def transmit(self, command: bytes, locality: int = 0) -> bytes:
        raise BackendError("injected: the backend is gone")


@pytest.mark.parametrize(
    ("version", "command", "name", "failure"),
    [
        (1, C.tpm12_extend(10, bytes(20)), b"TPM_ORD_Extend", FATAL_RESPONSE),
        (2, C.tpm2_get_random(4), b"TPM2_GetRandom", FAILURE_RESPONSE),
    ],
    ids=["tpm12", "tpm2"],
)
def test_a_failed_command_is_named_and_answered_in_its_tpm_version(
    version: int, command: bytes, name: bytes, failure: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    sink = io.BytesIO()
    assert serve_pipe(_FailingDriver(version), io.BytesIO(command), sink) == 1
    assert sink.getvalue() == failure
    assert name.decode() + " failed in the device" in capfd.readouterr().err
