"""Fuzz harness speed: the seed corpus of each target replayed, in plain Python.

Two modes per register target: ``lockstep`` is what the harness runs (the
pure model, then the compiled one, on every operation, one builtin TPM
between them) and ``pure`` is the pure model alone (what the fuzzer's
coverage sees). ``extra_info["ops"]`` is the number of operations one round
applies, so operations per second = ops / mean time. Under libFuzzer the
pure model is instrumented and runs slower; those figures come from the
campaigns' ``tpmdev-fuzz-stats`` lines (tests/fuzz/README.md).

Run: ``python -m pytest benchmarks/test_fuzz.py --benchmark-only --benchmark-group-by=group``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tpmdev.fuzz import TARGETS, _harness, target

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fuzz" / "corpus"
_LOCKSTEP = {"tis": ("_TIS", "_SYSBUS"), "crb": ("_CRB",), "tis_i2c": ("_I2C",)}


#: (target, mode): sPAPR and the builtin TPM have one variant, so only "pure".
CASES = [
    (name, mode) for name in TARGETS for mode in (("lockstep", "pure") if name in _LOCKSTEP else ("pure",))
]


@pytest.mark.benchmark(group="fuzz harness: seed corpus replayed")
@pytest.mark.parametrize(("name", "mode"), CASES)
def test_replay_corpus(
    benchmark: Callable[..., object], name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = target(name)
    if mode == "pure" and name in _LOCKSTEP:
        for attr in _LOCKSTEP[name]:
            monkeypatch.setattr(module, attr, getattr(module, attr)[:1])
    inputs = [p.read_bytes() for p in sorted((CORPUS / name).iterdir())]

    def replay() -> None:
        for data in inputs:
            module.TestOneInput(data)

    _harness.STATS.reset()
    replay()
    benchmark.extra_info["ops"] = _harness.STATS.ops  # type: ignore[attr-defined]
    benchmark(replay)
