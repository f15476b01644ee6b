"""Register traces: recorded through a driver, saved and loaded, shown decoded,
replayed identically on the same deterministic TPM and divergent on another;
``tpmdev trace`` and ``tpmdev replay`` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from guests import make_device
from tools_workflow import tpmdev_env

import tpmdev
from tpmdev import trace
from tpmdev.drivers import commands as C
from tpmdev.drivers import for_device

MMIO = ("tis", "tis-sysbus", "crb")


def _record(frontend: str, impl: str, seed: int) -> trace.Trace:
    with make_device(frontend, tpmdev.backends.Builtin(seed=seed), impl) as dev:
        recorder = trace.Recorder(dev)
        driver = for_device(recorder)
        driver.transmit(C.tpm2_startup())
        driver.transmit(C.tpm2_get_random(8))
        driver.transmit(C.tpm2_pcr_read([0]))
        return recorder.trace


@pytest.mark.parametrize("frontend", MMIO)
def test_record_save_load_show_replay(impl: str, frontend: str, tmp_path: Path) -> None:
    recorded = _record(frontend, impl, seed=5)
    path = tmp_path / "session.trace"
    trace.save(recorded, str(path))
    loaded = trace.load(str(path))
    assert loaded == recorded and loaded.frontend == frontend and loaded.tpm_version == 2
    text = "\n".join(trace.describe(loaded))
    for name in ("TPM2_Startup", "TPM2_GetRandom", "TPM2_PCR_Read"):
        assert f"== command {name}" in text
    # Linux probes a TIS for TPM 2.0 (answered TPM_RC_INITIALIZE before Startup); a CRB is 2.0
    assert ("== command TPM2_GetCapability" in text) == (frontend != "crb")
    assert text.count("== response rc=0x0 (success") == 3  # (the probe answers TPM_RC_INITIALIZE)
    if frontend == "crb":
        assert "tpmRegValidSts|locAssigned" in text and "TPM_CRB_CTRL_START" in text
    else:
        assert "requestUse" in text and "stsValid|Expect" in text and "burstCount=" in text
    with make_device(frontend, tpmdev.backends.Builtin(seed=5), impl) as dev:
        assert trace.replay(loaded, dev) is None
    with make_device(frontend, tpmdev.backends.Builtin(seed=6), impl) as dev:
        divergence = trace.replay(loaded, dev)
    assert divergence is not None and divergence.access.op == "r"
    assert "DATA" in str(divergence) and "the trace has" in str(divergence)  # the random bytes


def test_replay_refuses_another_frontend_and_bad_files(tmp_path: Path) -> None:
    recorded = _record("tis", "py", seed=1)
    with tpmdev.CRB(tpmdev.backends.Builtin()) as dev, pytest.raises(tpmdev.ConfigurationError, match="tis"):
        trace.replay(recorded, dev)
    bad = tmp_path / "bad.trace"
    bad.write_text('{"tpmdev-trace": 1, "frontend": "tis", "tpm": 2}\n["x", 0, 4, 0]\n')
    with pytest.raises(tpmdev.StateError, match="not a tpmdev register trace"):
        trace.load(str(bad))
    with pytest.raises(tpmdev.StateError, match="cannot read the trace"):
        trace.load(str(tmp_path / "missing.trace"))
    with pytest.raises(tpmdev.ConfigurationError, match="MMIO frontends"):
        trace.Recorder(make_device("tis-i2c", tpmdev.backends.Builtin()))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=tpmdev_env(),
        cwd=cwd,
        check=False,
    )


def test_trace_and_replay_commands(tmp_path: Path) -> None:
    result = _run("trace", "record", "s.trace", "--frontend", "crb", "--seed", "3", cwd=tmp_path)
    assert result.returncode == 0 and "4 commands, in s.trace" in result.stdout, result.stderr
    result = _run("trace", "show", "s.trace", cwd=tmp_path)
    assert result.returncode == 0 and "== command TPM2_PCR_Extend" in result.stdout
    result = _run("replay", "s.trace", "--seed", "3", cwd=tmp_path)
    assert result.returncode == 0 and "every read as recorded" in result.stdout
    result = _run("replay", "s.trace", "--seed", "4", cwd=tmp_path)
    assert result.returncode == 1 and "first divergence at access" in result.stdout
    for args, status, message in [
        (("replay", "missing.trace"), 1, "cannot read the trace"),
        (
            ("trace", "record", "x.trace", "--backend", "libtpms", "--seed", "1"),
            1,
            "--seed is for the builtin",
        ),
        (("trace", "record", "x.trace", "--command", "zz"), 2, "--command must be hex"),
        (("trace", "record", "x.trace", "--frontend", "spapr"), 2, "invalid choice: 'spapr'"),
        (("trace",), 2, "required: action"),
    ]:
        result = _run(*args, cwd=tmp_path)
        assert result.returncode == status and message in result.stderr, (args, result.stderr)
    for sub in ("trace", "replay"):  # (tcti's and serve's: in their own tests)
        assert _run(sub, "--help", cwd=tmp_path).returncode == 0
