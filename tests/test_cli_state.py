"""``tpmdev state save|load|show`` run as a user runs them (one process per step),
and the README's state section example."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tpmdev
from tpmdev import _state
from tpmdev.backends import Builtin

ROOT = Path(__file__).resolve().parent.parent


def tpmdev_state(*args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev", "state", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    if ok:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
    return result


def pcr16_after(*texts: str) -> str:
    value = bytes(32)
    for text in texts:
        value = hashlib.sha256(value + hashlib.sha256(text.encode()).digest()).digest()
    return value.hex()


@pytest.mark.parametrize("frontend", ["tis", "tis-i2c", "crb", "spapr"])
def test_saved_in_one_process_resumed_in_another(tmp_path: Path, frontend: str) -> None:
    first, second = tmp_path / "a.tpmstate", tmp_path / "b.tpmstate"
    out = tpmdev_state("save", first, "--frontend", frontend, "-c", "startup", "-c", "extend=kernel").stdout
    assert "rc=0x0, success" in out and f"saved {first.stat().st_size} bytes" in out
    out = tpmdev_state("load", first, "-c", "extend=initrd", "-c", "pcr-read", "--save", second).stdout
    assert out.splitlines()[0].startswith(f"loaded {first}")
    assert pcr16_after("kernel", "initrd") in out  # the PCR went on from where the first process left it
    shown = tpmdev_state("show", second).stdout
    kind = _state.parse(second.read_bytes()).frontend
    assert f"frontend:    {kind}" in shown and "backend:     builtin (Builtin)" in shown


@pytest.mark.swtpm
def test_swtpm_session_resumed_by_another_swtpm(tmp_path: Path) -> None:
    saved = tmp_path / "sw.tpmstate"
    tpmdev_state("save", saved, "--backend", "swtpm", "-c", "startup", "-c", "extend=kernel")
    assert "backend:     swtpm (Emulator)" in tpmdev_state("show", saved).stdout
    assert pcr16_after("kernel") in tpmdev_state("load", saved, "-c", "pcr-read").stdout
    # libtpms in this process takes swtpm's state
    out = tpmdev_state("load", saved, "--backend", "libtpms", "-c", "pcr-read").stdout
    assert "on Libtpms" in out and pcr16_after("kernel") in out


def test_show_prints_the_registers_and_sections(tmp_path: Path) -> None:
    saved = tmp_path / "s.tpmstate"
    tpmdev_state("save", saved, "-c", "startup")
    out = tpmdev_state("show", saved).stdout
    assert re.search(r"tpmdev device state, format version 1, \d+ bytes, SHA-256 verified", out)
    for line in ("frontend:    TIS", "TPM version: TPM 2.0", "config:      irq_num=5, ppi=True"):
        assert line in out
    assert re.search(r"DEVC +\d+ bytes", out) and re.search(r"TPMP +\d+ bytes", out)
    assert "locality states 0:READY" in out


def test_error_paths(tmp_path: Path) -> None:
    saved = tmp_path / "s.tpmstate"
    tpmdev_state("save", saved, "-c", "startup")
    bad = tmp_path / "bad.tpmstate"
    data = bytearray(saved.read_bytes())
    data[100] ^= 0x40
    bad.write_bytes(bytes(data))
    cases = [
        (("show", bad), 1, "integrity check failed"),
        (("load", bad), 1, "integrity check failed"),
        (("show", tmp_path / "missing"), 1, "No such file"),
        (("load", saved, "--backend", "builtin:1.2"), 1, "is of a TPM 2.0, this TIS presents TPM 1.2"),
        (("load", saved, "--backend", "libtpms"), 1, "which a Libtpms backend cannot load"),
        (("load", saved, "-c", "nonsense"), 1, "use startup, extend=TEXT"),
        (("load", saved, "-c", "0001"), 1, "at least 10 bytes"),
        (("load", saved, "-c", "random=65536"), 2, "at most 65535 bytes, got 65536"),
        (("load", saved, "-c", "random=\u00b2"), 2, "decimal digits"),
        (("load", saved, "-c", "random=\u0663"), 2, "decimal digits"),
        (("load", saved, "-c", "random=-1"), 2, "decimal digits"),
        (("save", tmp_path / "x", "--frontend", "tis-i2c", "--tpm", "1.2"), 2, "TPM 2.0 interface"),
        (("save", tmp_path / "x", "--frontend", "pci"), 2, "invalid choice"),
        ((), 2, "required"),
    ]
    for args, code, message in cases:
        result = tpmdev_state(*args, ok=False)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    truncated = tmp_path / "short.tpmstate"
    truncated.write_bytes(saved.read_bytes()[:40])
    assert "truncated" in tpmdev_state("show", truncated, ok=False).stderr


def test_crb_at_another_address_resumed(tmp_path: Path) -> None:
    """The state file's CRB configuration builds the device, and the driver
    finds the buffers at the device's own address."""
    saved = tmp_path / "crb.tpmstate"
    with tpmdev.CRB(Builtin(seed=1), address=0xFEB00000, localities=5, ppi=False) as dev:
        saved.write_bytes(dev.save())
    out = tpmdev_state("load", saved, "-c", "startup", "-c", "extend=kernel", "-c", "pcr-read").stdout
    assert "rc=0x0, success" in out and pcr16_after("kernel") in out
    assert "address=0xfeb00000, localities=5, ppi=False" in tpmdev_state("show", saved).stdout


def test_unknown_configuration_refused(tmp_path: Path) -> None:
    saved = tmp_path / "s.tpmstate"
    tpmdev_state("save", saved, "--frontend", "crb")
    p = _state.parse(saved.read_bytes())
    info = dict(p.info, config=dict(p.info["config"], turbo=True))
    sections = dict(p.sections)
    sections[b"DEVC"] = json.dumps(info, sort_keys=True).encode()
    forged = tmp_path / "forged.tpmstate"
    forged.write_bytes(_state._pack(p.frontend, p.tpm_version, p.backend, list(sections.items())))
    result = tpmdev_state("load", forged, "-c", "startup", ok=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "options this tpmdev does not know: 'turbo'" in result.stderr


def test_readme_state_section_runs() -> None:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Saving, loading and snapshots")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    response = namespace["pcr16"]
    assert isinstance(response, bytes) and response.endswith(pcr16_after_zero())


def pcr16_after_zero() -> bytes:
    return hashlib.sha256(bytes(32) + bytes(32)).digest()
