"""The fuzz harnesses: the seed corpus replayed, short libFuzzer campaigns, the comparison's teeth.

Replay is plain Python: ``TestOneInput`` on every corpus file, which runs the
pure and (when built) the compiled register model in lockstep, so each file
is replayed on both variants. The campaigns run each harness under atheris
for a few seconds from a copy of the corpus: zero crashes, timeouts or
disagreements (libFuzzer's exit status and artifacts say so).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tpmdev
from tpmdev import _cli_fuzz, cli
from tpmdev.fuzz import TARGETS, _harness, seeds, target
from tpmdev.fuzz import tis as fuzz_tis
from tpmdev.fuzz._mmio import MmioEncoder

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
ROOT = HERE.parent.parent

#: Seconds and inputs of each campaign in the test suite (CI budget: a few seconds a harness).
CAMPAIGN_SECONDS = 6
CAMPAIGN_RUNS = 400


def corpus_files(name: str) -> list[Path]:
    return sorted((CORPUS / name).iterdir())


def test_every_target_has_seeds() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(TARGETS)
    for name in TARGETS:
        assert len(corpus_files(name)) >= 3, name


def test_corpus_is_what_the_generator_writes() -> None:
    """The committed corpus is up to date (regenerate with tests/fuzz/make_corpus.py)."""
    expected = seeds.corpus()
    for name in TARGETS:
        on_disk = {p.name: p.read_bytes() for p in corpus_files(name)}
        assert on_disk == expected[name], f"tests/fuzz/corpus/{name} is stale: run tests/fuzz/make_corpus.py"


@pytest.mark.parametrize("name", TARGETS)
def test_lockstep_runs_both_variants(name: str) -> None:
    """With the compiled models built, every register target compares two variants."""
    found = {
        "tis": (fuzz_tis._TIS, "tis", "TisCore"),
        "crb": (target("crb")._CRB, "crb", "CrbCore"),
        "tis_i2c": (target("tis_i2c")._I2C, "tis", "TisCore"),
    }.get(name)
    if found is None:  # sPAPR and the builtin TPM are plain Python: one variant exists
        assert name in ("spapr", "builtin")
        return
    classes, module, core = found
    assert classes[0]._Core is getattr(tpmdev.hw.pure(module), core)
    if tpmdev.USE_EXTENSIONS:
        assert len(classes) == 2
        assert classes[1]._Core is getattr(getattr(tpmdev.hw, module), core)
    else:
        assert len(classes) == 1


@pytest.mark.parametrize("name", TARGETS)
def test_replay_corpus(name: str) -> None:
    """Every seed runs to its end on both variants with no finding."""
    module = target(name)
    for path in corpus_files(name):
        _harness.STATS.reset()
        module.TestOneInput(path.read_bytes())
        assert _harness.STATS.ops > 0, path.name


@pytest.mark.parametrize("name", TARGETS)
def test_replay_random_inputs(name: str) -> None:
    """Arbitrary bytes (and the empty input) are valid inputs: no finding on plain random data."""
    module = target(name)
    rng = random.Random(f"tpmdev-fuzz-{name}")
    module.TestOneInput(b"")
    for _ in range(40):
        module.TestOneInput(rng.randbytes(rng.randrange(1, 600)))


def test_seed_sessions_get_their_responses() -> None:
    """The recorded TIS session really runs commands: the builtin TPM sees five TPM2 commands."""
    counted: list[bytes] = []
    original = _harness._Leader._execute

    def spy(self: Any, command: bytes, locality: int) -> bytes:
        counted.append(command)
        return original(self, command, locality)

    _harness._Leader._execute = spy  # type: ignore[method-assign]
    try:
        fuzz_tis.TestOneInput((CORPUS / "tis" / "tpm2-session").read_bytes())
    finally:
        _harness._Leader._execute = original  # type: ignore[method-assign]
    assert [int.from_bytes(c[6:10], "big") for c in counted] == [0x144, 0x17B, 0x17E, 0x182, 0x17E]


# -- the comparison has teeth ------------------------------------------------------------
class _Skewed:
    """A device wrapper whose STS reads are off by one: a 'compiled model' that disagrees."""

    def __init__(self, dev: Any) -> None:
        self._dev = dev

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dev, name)

    def read(self, offset: int, size: int = 4) -> int:
        value = int(self._dev.read(offset, size))
        return value + 1 if offset == 0x18 else value


def test_disagreement_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    pure = _harness.pure_class(tpmdev.TIS, "tis", "TisCore")

    def skewed(backend: Any, **kwargs: Any) -> Any:
        return _Skewed(pure(backend, **kwargs))

    monkeypatch.setattr(fuzz_tis, "_TIS", [pure, skewed])
    data = MmioEncoder(0).read(0x00, 1).read(0x18).bytes()
    with pytest.raises(_harness.Disagreement, match=r"read\(0x18, 4\)"):
        fuzz_tis.TestOneInput(data)
    fuzz_tis.TestOneInput(MmioEncoder(0).read(0x00, 1).bytes())  # no STS read: no finding


def test_different_command_is_a_finding() -> None:
    leader, follower = _harness.backends(2, 2)
    leader.execute(bytes.fromhex("80010000000c000001440000"))
    with pytest.raises(_harness.Disagreement, match="different commands"):
        follower._execute(bytes.fromhex("80010000000c000001440001"), 0)
    with pytest.raises(_harness.Disagreement, match="only the compiled model"):
        follower._execute(b"\x00" * 10, 0)


def test_contained_backend_error_is_a_finding() -> None:
    class Dev:
        backend_error: object = tpmdev.BackendError("the TPM broke")
        callback_error = None
        backend = None

    with pytest.raises(_harness.Finding, match="the TPM broke"):
        _harness.check_contained([Dev()])


def test_builtin_malformed_response_is_a_finding() -> None:
    from tpmdev.fuzz import builtin

    builtin._check(bytes.fromhex("80010000000a00000000"), 2, b"")
    with pytest.raises(_harness.Finding):
        builtin._check(bytes.fromhex("80010000000b00000000"), 2, b"")  # size field says 11
    with pytest.raises(_harness.Finding):
        builtin._check(bytes.fromhex("00c40000000a00000000"), 2, b"")  # a TPM 1.2 tag from a TPM 2.0


def test_reader_never_runs_out() -> None:
    r = _harness.Reader(b"\x01\x02\x03")
    assert (r.u16(), r.u8(), r.done) == (0x0201, 3, True)
    assert (r.u8(), r.u16(), r.uint(4), r.take(5)) == (0, 0, 0, b"")


# -- campaigns under libFuzzer ------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.parametrize("name", TARGETS)
def test_bounded_campaign(name: str, tmp_path: Path) -> None:
    """A few seconds of real fuzzing from the seed corpus: libFuzzer finds nothing."""
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS / name, corpus)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cmd = _cli_fuzz.libfuzzer_command(
        name, str(corpus), time=CAMPAIGN_SECONDS, runs=CAMPAIGN_RUNS, artifacts=str(artifacts)
    )
    result = subprocess.run(
        [*cmd, "-timeout=20", "-rss_limit_mb=2048"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        check=False,
    )
    log = result.stderr[-3000:]
    assert result.returncode == 0, log
    assert list(artifacts.iterdir()) == [], log
    executed = re.search(r"stat::number_of_executed_units:\s+(\d+)", result.stderr)
    assert executed is not None and int(executed.group(1)) > len(corpus_files(name)), log


def test_cli_fuzz_short_run(tmp_path: Path) -> None:
    """``tpmdev fuzz`` seeds a new corpus directory, fuzzes and reports no finding."""
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tpmdev",
            "fuzz",
            "crb",
            "--runs",
            "40",
            "--time",
            "30",
            "--corpus",
            str(corpus),
            "--artifacts",
            str(tmp_path / "art"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no finding" in result.stderr
    assert {p.name for p in (CORPUS / "crb").iterdir()} <= {p.name for p in corpus.iterdir()}


def test_cli_fuzz_jobs_use_libfuzzer_fork() -> None:
    cmd = _cli_fuzz.libfuzzer_command("tis", "C", time=10, jobs=4, runs=7, max_len=512, extra=["-dict=d"])
    assert cmd[:3] == [sys.executable, "-m", "tpmdev.fuzz.tis"]
    assert {"-max_total_time=10", "-fork=4", "-runs=7", "-max_len=512", "-dict=d"} <= set(cmd)
    assert cmd[-1] == "C"


def test_cli_fuzz_without_atheris(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = _cli_fuzz.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "atheris" else real(name, *args)

    monkeypatch.setattr(_cli_fuzz.importlib.util, "find_spec", find_spec)
    assert cli.main(["fuzz", "tis"]) == 2
    assert "pip install 'tpmdev[fuzz]'" in capsys.readouterr().err


def test_harness_main_without_atheris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "atheris", None)  # import fails
    with pytest.raises(SystemExit, match=r"tpmdev\[fuzz\]"):
        fuzz_tis.main(["fuzz_tis"])
