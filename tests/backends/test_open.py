"""``tpmdev.backends.open``: backends from command-line strings."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.wire import response_code


@pytest.mark.parametrize(
    "spec, cls, version",
    [
        ("builtin", "Builtin", 2),
        ("builtin:2.0", "Builtin", 2),
        ("builtin:1.2", "Builtin", 1),
        ("BUILTIN:1", "Builtin", 1),
        ("libtpms", "Libtpms", 2),
        ("swtpm", "Emulator", 2),
        ("swtpm:1.2", "Emulator", 1),
    ],
)
def test_open_specs(spec: str, cls: str, version: int) -> None:
    with tpmdev.backends.open(spec) as backend:
        assert type(backend).__name__ == cls and isinstance(backend, Backend)
        assert backend.tpm_version == version
        startup = C.tpm2_startup() if version == 2 else C.tpm12_startup()
        assert response_code(backend.execute(startup)) == 0


@pytest.mark.swtpm
def test_open_running_swtpm(tmp_path: Path) -> None:
    ctrl = tmp_path / "ctrl.sock"
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tmp_path}", "--ctrl", f"type=unixio,path={ctrl}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not ctrl.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "swtpm did not start"
            time.sleep(0.01)
        with tpmdev.backends.open(f"swtpm:{ctrl}") as backend:
            assert backend.tpm_version == 2 and backend.pid is None  # not ours
            assert response_code(backend.execute(C.tpm2_startup())) == 0
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize(
    "spec",
    ["", "qemu", "builtin:3", "libtpms:x", "swtpm:/nonexistent/ctrl.sock", "passthrough:/nonexistent/tpm9"],
)
def test_bad_specs(spec: str) -> None:
    with pytest.raises(tpmdev.TpmDevError):
        tpmdev.backends.open(spec)


def test_spawned_state_directory_removed_on_close() -> None:
    backend = tpmdev.backends.open("swtpm")
    pid = backend.pid
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    state = Path(next(a for a in argv if a.startswith(b"dir=")).decode()[4:])
    assert state.is_dir()
    backend.close()
    assert not state.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("spec", ["builtin", "builtin:1.2", "libtpms", "libtpms:1.2", "swtpm", "swtpm:1.2"])
def test_detect_version_of_every_backend(spec: str) -> None:
    with tpmdev.backends.open(spec) as backend:
        # before and after TPM(2)_Startup, as QEMU's probe sees it
        assert tpmdev.backends.detect_version(backend) == backend.tpm_version
        startup = C.tpm2_startup() if backend.tpm_version == 2 else C.tpm12_startup()
        assert response_code(backend.execute(startup)) == 0
        assert tpmdev.backends.detect_version(backend) == backend.tpm_version
        assert tpmdev.backends.detect_buffer_size(backend, backend.tpm_version) >= 1024


@pytest.mark.parametrize(
    ("spec", "default", "version"),
    [("builtin", 1, 1), ("builtin", 2, 2), ("builtin:2.0", 1, 2), ("libtpms", 1, 1), ("swtpm", 1, 1)],
)
def test_the_version_a_spec_leaves_open(spec: str, default: int, version: int) -> None:
    backend = tpmdev.backends.open(spec, tpm_version=default)
    try:
        assert tpmdev.backends.detect_version(backend) == version
    finally:
        backend.close()


@pytest.mark.parametrize("default", [0, 3, True, "2", None])
def test_a_bad_default_version_is_refused(default: object) -> None:
    with pytest.raises(tpmdev.ConfigurationError, match="tpm_version must be 1"):
        tpmdev.backends.open("builtin", tpm_version=default)  # type: ignore[arg-type]
