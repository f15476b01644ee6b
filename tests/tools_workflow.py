"""tpm2-tools workflows, for the tests of ``tpmdev tcti`` and ``tpmdev serve``.

:func:`run_workflow` runs a list of tpm2-tools steps with one ``-T`` TCTI in
a work directory and returns what the TPM determined at each step (PCR
values, NV contents, verification results), so runs through tpmdev can be
compared with the same steps run directly against a swtpm
(:class:`ReferenceSwtpm`). Tools without a resource manager leave transient
objects loaded; the steps flush them (``tpm2_flushcontext -t``) as any
client of a bare TPM must.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

__all__ = [
    "FULL",
    "SHORT",
    "ReferenceSwtpm",
    "run_workflow",
    "free_port_pair",
    "tpmdev_env",
    "tcti_cmd",
    "REPO",
]

REPO = Path(__file__).resolve().parent.parent
DIGEST = hashlib.sha256(b"tpmdev workflow").hexdigest()
NV_INDEX = "0x1500016"
NV_DATA = b"tpmdev: NV through the registers"  # 32 bytes

# (name, tpm2-tools arguments after the tool name, whether its stdout is TPM-determined)
Step = tuple[str, list[str], bool]

_START: list[Step] = [
    ("tpm2_startup", ["-c"], False),
    ("tpm2_selftest", ["--fulltest"], False),
    ("tpm2_getcap", ["properties-fixed"], True),
    ("tpm2_getrandom", ["16", "-o", "random.bin"], False),
    ("tpm2_pcrextend", [f"16:sha256={DIGEST}"], False),
    ("tpm2_pcrread", ["sha256:16"], True),
]
_NV: list[Step] = [
    (
        "tpm2_nvdefine",
        [NV_INDEX, "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite|authread|authwrite"],
        False,
    ),
    ("tpm2_nvwrite", [NV_INDEX, "-C", "o", "-i", "nv.in"], False),
    ("tpm2_nvread", [NV_INDEX, "-C", "o", "-s", "32", "-o", "nv.out"], False),
]
_KEYS: list[Step] = [
    ("tpm2_createprimary", ["-C", "o", "-g", "sha256", "-G", "ecc", "-c", "primary.ctx"], False),
    ("tpm2_flushcontext", ["-t"], False),
    ("tpm2_create", ["-C", "primary.ctx", "-G", "ecc", "-u", "key.pub", "-r", "key.priv"], False),
    ("tpm2_flushcontext", ["-t"], False),
    ("tpm2_load", ["-C", "primary.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx"], False),
    ("tpm2_flushcontext", ["-t"], False),
    ("tpm2_sign", ["-c", "key.ctx", "-g", "sha256", "-o", "sig.bin", "message.dat"], False),
    ("tpm2_flushcontext", ["-t"], False),
    ("tpm2_verifysignature", ["-c", "key.ctx", "-g", "sha256", "-m", "message.dat", "-s", "sig.bin"], False),
    ("tpm2_flushcontext", ["-t"], False),
    ("tpm2_readpublic", ["-c", "key.ctx", "-f", "pem", "-o", "key.pem"], False),
    ("tpm2_flushcontext", ["-t"], False),
    (
        "tpm2_quote",
        [
            *("-c", "key.ctx", "-l", "sha256:16", "-q", "abcdef", "-m", "quote.msg", "-s", "quote.sig"),
            *("-o", "quote.pcrs", "-g", "sha256"),
        ],
        False,
    ),
    ("tpm2_flushcontext", ["-t"], False),
    (
        "tpm2_checkquote",
        [
            "-u",
            "key.pem",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            "abcdef",
        ],
        True,
    ),
]
_END: list[Step] = [
    ("tpm2_clear", ["-c", "p"], False),
    ("tpm2_nvreadpublic", [], True),  # the index is gone: an empty list
]

#: Tools that do not talk to a TPM (they check files)
_OFFLINE = {"tpm2_checkquote"}

#: Every tool the issue names, in a workflow whose results are compared
FULL: list[Step] = _START + _NV + _KEYS + _END
#: A short workflow: startup, PCRs, NV
SHORT: list[Step] = [_START[0], _START[4], _START[5], *_NV]


def tpmdev_env() -> dict[str, str]:
    """The environment for ``python -m tpmdev`` from this tree (no install needed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def tcti_cmd(*args: str) -> str:
    """The ``-T`` of tpm2-tss's cmd TCTI running ``tpmdev tcti ARGS``."""
    return "cmd:" + " ".join([sys.executable, "-m", "tpmdev", "tcti", *args])


def run_workflow(tcti: str, workdir: Path, steps: list[Step], timeout: float = 120) -> dict[str, object]:
    """Run *steps* with ``-T tcti`` in *workdir*; returns the TPM-determined results:
    each marked step's stdout under its name, ``nv`` (the bytes read back),
    ``verified`` (tpm2_verifysignature's and tpm2_checkquote's exit status)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nv.in").write_bytes(NV_DATA)
    (workdir / "message.dat").write_bytes(b"signed through tpmdev's registers\n")
    results: dict[str, object] = {}
    env = tpmdev_env()
    for tool, args, compare in steps:
        tcti_args = [] if tool in _OFFLINE else ["-T", tcti]
        proc = subprocess.run(
            [tool, *tcti_args, *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} -T {tcti} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        if compare:
            # a quote's signature is random (ECDSA): what is compared is what the TPM attested
            results[tool] = proc.stdout.split("sig:")[0]
    if (workdir / "nv.out").exists():
        results["nv"] = (workdir / "nv.out").read_bytes()
    return results


def free_port_pair() -> int:
    """A port N with N and N+1 free on 127.0.0.1 (as far as one can tell)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports")


def wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ReferenceSwtpm:
    """``swtpm socket --tpm2`` on TCP (data N, control N+1), for ``-T swtpm:port=N``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tpmdev-ref-"))
        self.port = free_port_pair()
        swtpm = shutil.which("swtpm")
        if swtpm is None:
            raise RuntimeError("swtpm is not installed")
        self.process: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
            [
                swtpm,
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={self.dir}",
                "--server",
                f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port + 1)

    @property
    def tcti(self) -> str:
        return f"swtpm:port={self.port}"

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
