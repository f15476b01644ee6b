"""tpm2-tools through tpmdev's registers, compared with the same tools on a swtpm.

Two routes: ``tpmdev tcti`` (tpm2-tss's cmd TCTI: a process per tool run,
the TPM carried over in ``--state``) and ``tpmdev serve`` (the mssim
protocol, and swtpm's once). Every frontend on Libtpms and on Emulator
(swtpm) by each route: the whole workflow (every tool the issue names:
startup, selftest, getcap, getrandom, pcrextend / pcrread, createprimary,
create, load, sign, verifysignature, nvdefine / nvwrite / nvread, quote with
checkquote, clear) on one frontend per route and backend, a short one
(startup, PCRs, NV; by the cmd route startup and PCRs) on the others. What
the TPM determines (PCR values, the fixed properties, NV contents, what a
quote attests, the NV list after clear) must equal what the same steps
give directly against a swtpm (``-T swtpm:port=N``); a verification that
fails fails its tool, and the run.

Cost is kept small: one reference swtpm and one server per frontend and
backend for the module (started together), the workflows of a route run in
parallel threads.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tools_workflow import FULL, SHORT, ReferenceSwtpm, Step, run_workflow, tcti_cmd, tpmdev_env

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

FRONTENDS = ("tis", "tis-sysbus", "crb", "tis-i2c", "spapr")
BACKENDS = ("libtpms", "swtpm")
#: The frontend that runs the whole workflow on each route
FULL_ON = {"serve": "tis", "tcti": "crb"}
#: startup, extend, read: the PCR shows the extend of an earlier process
TINY: list[Step] = SHORT[:3]
#: TPM2_PT_MAX_COMMAND_SIZE / MAX_RESPONSE_SIZE are the frontend's buffer
#: (QEMU's CRB: 3968 bytes; swtpm alone: 4096), not the TPM's to determine
_BUFFER_PROPERTIES = re.compile(r"TPM2_PT_MAX_(COMMAND|RESPONSE)_SIZE:\n  raw: 0x[0-9A-F]+\n")


def _comparable(results: dict[str, object], frontend: str) -> dict[str, object]:
    out = dict(results)
    getcap = out.get("tpm2_getcap")
    if isinstance(getcap, str):
        want = "0xF80" if frontend == "crb" else "0x1000"
        assert getcap.count(f"raw: {want}\n") >= 2, getcap
        out["tpm2_getcap"] = _BUFFER_PROPERTIES.sub("", getcap)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The whole workflow run directly against a swtpm."""
    ref = ReferenceSwtpm()
    try:
        return _comparable(run_workflow(ref.tcti, tmp_path_factory.mktemp("reference"), FULL), "tis")
    finally:
        ref.close()


def _expect(reference: dict[str, object], steps: list[Step]) -> dict[str, object]:
    names = {tool for tool, _, compare in steps if compare}
    expected = {k: v for k, v in reference.items() if k in names}
    if any(tool == "tpm2_nvread" for tool, _, _ in steps):
        expected["nv"] = reference["nv"]
    return expected


_SERVE = [sys.executable, "-m", "tpmdev", "serve"]


class _Server:
    def __init__(self, frontend: str, backend: str, protocol: str = "mssim") -> None:
        self.frontend = frontend
        self.process = subprocess.Popen(
            [*_SERVE, "--frontend", frontend, "--backend", backend, "--protocol", protocol, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tpmdev_env(),
        )
        self.protocol = protocol
        self.port = 0

    def ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"port (\d+)", line)
        err = self.process.stderr.read() if self.process.stderr and not match else ""
        assert match, f"tpmdev serve did not start: {line!r} {err}"
        self.port = int(match.group(1))

    @property
    def tcti(self) -> str:
        return f"{self.protocol}:port={self.port}"

    def stop(self) -> str:
        self.process.terminate()
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return out


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[tuple[str, str], _Server]]:
    """``tpmdev serve`` for every frontend and backend (mssim), and one in swtpm's protocol."""
    made = {(f, b): _Server(f, b) for f in FRONTENDS for b in BACKENDS}
    made[("crb", "swtpm-protocol")] = _Server("crb", "libtpms", protocol="swtpm")
    try:
        for server in made.values():
            server.ready()
        yield made
    finally:
        for server in made.values():
            if server.process.poll() is None:
                out = server.stop()
                assert "stopped after" in out


def _run_all(jobs: dict[str, tuple[str, list[Step], str]], tmp_path: Path) -> dict[str, dict[str, object]]:
    """Run workflows ``name -> (tcti, steps, frontend)`` in parallel; their comparable results."""

    def one(name: str) -> dict[str, object]:
        tcti, steps, frontend = jobs[name]
        return _comparable(run_workflow(tcti, tmp_path / name, steps), frontend)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(one, name) for name in jobs}
        return {name: future.result() for name, future in futures.items()}


def test_tpm2_tools_through_tpmdev_serve(
    servers: dict[tuple[str, str], _Server], reference: dict[str, object], tmp_path: Path
) -> None:
    jobs: dict[str, tuple[str, list[Step], str]] = {}
    for (frontend, backend), server in servers.items():
        steps = FULL if frontend == FULL_ON["serve"] and backend in BACKENDS else SHORT
        jobs[f"{frontend}-{backend}"] = (server.tcti, steps, frontend)
    results = _run_all(jobs, tmp_path)
    for name, (_, steps, _) in jobs.items():
        assert results[name] == _expect(reference, steps), name
    full = [name for name, (_, steps, _) in jobs.items() if steps is FULL]
    assert len(full) == len(BACKENDS)


def test_tpm2_tools_through_tpmdev_tcti(reference: dict[str, object], tmp_path: Path) -> None:
    jobs: dict[str, tuple[str, list[Step], str]] = {}
    for frontend in FRONTENDS:
        for backend in BACKENDS:
            full = frontend == FULL_ON["tcti"] and backend == "libtpms"
            tcti = tcti_cmd("--frontend", frontend, "--backend", backend, "--state", "tpm.state")
            jobs[f"{frontend}-{backend}"] = (tcti, FULL if full else TINY, frontend)
    results = _run_all(jobs, tmp_path)
    for name, (_, steps, _) in jobs.items():
        assert results[name] == _expect(reference, steps), name
        assert (tmp_path / name / "tpm.state").stat().st_size > 1000
