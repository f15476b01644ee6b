"""Save and load are invisible: a guest exchange saved at any step and resumed in
another process, on a fresh device with a fresh backend, reads exactly what the
uninterrupted exchange reads.

For every frontend a scripted exchange (several whole commands, locality
changes, interrupts, a command left half written, a response half read, an
I2C transaction left open, sPAPR answers and DMA) runs once without saving
(the reference). A second run saves before every step, and every save is
sent with the remaining steps (and the guest memory) to one long-lived child
process (:mod:`state_exchange`), which builds a new device on a new backend
(a new swtpm for the Emulator, for the TIS, CRB and sPAPR), loads the state, plays the rest and returns
every value read: zero differences allowed. Saving does not disturb the
saving run either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from state_exchange import SCRIPTS, VARIANTS, Child, Context, make_backend, make_device, run

CASES = [
    pytest.param(frontend, impl, "builtin", id=f"{frontend}-builtin-{impl}")
    for frontend in ("TIS", "TISSysbus", "TISI2C", "CRB")
    for impl in VARIANTS
] + [pytest.param("SPAPR", "py", "builtin", id="SPAPR-builtin")]
SWTPM_CASES = [
    pytest.param(frontend, VARIANTS[0], "swtpm", id=f"{frontend}-swtpm", marks=pytest.mark.swtpm)
    for frontend in ("TIS", "CRB", "SPAPR")  # (TIS-I2C: the TIS core with Builtin, and its own I2C state)
]


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    c = Child()
    yield c
    c.close()


def _check(child: Child, frontend: str, impl: str, backend: str) -> None:
    steps = SCRIPTS[frontend]()
    ctx = Context()
    with make_device(frontend, impl, make_backend(backend), ctx) as dev:
        reference = run(dev, ctx, steps)
    ctx = Context()
    saves: list[tuple[bytes, bytes]] = []
    seen: list[object] = []
    with make_device(frontend, impl, make_backend(backend), ctx) as dev:
        for step in steps:
            saves.append((dev.save(), bytes(ctx.memory)))
            seen += run(dev, ctx, [step])
        saves.append((dev.save(), bytes(ctx.memory)))
    assert seen == reference, "saving changed the exchange"
    for i, (blob, memory) in enumerate(saves):
        resumed = child.resume(frontend, impl, backend, blob, memory, steps[i:])
        diffs = [(i + k, a, b) for k, (a, b) in enumerate(zip(resumed, reference[i:])) if a != b]
        assert not diffs and len(resumed) == len(steps) - i, f"resumed at step {i}: {diffs[:3]}"


@pytest.mark.parametrize(("frontend", "impl", "backend"), CASES)
def test_save_load_invisible(child: Child, frontend: str, impl: str, backend: str) -> None:
    _check(child, frontend, impl, backend)


@pytest.mark.parametrize(("frontend", "impl", "backend"), SWTPM_CASES)
def test_save_load_invisible_swtpm(child: Child, frontend: str, impl: str, backend: str) -> None:
    _check(child, frontend, impl, backend)


def test_scripts_cover_what_they_claim() -> None:
    """The TIS script raises the IRQ line and changes locality; every script
    leaves a command half written and reads a response in pieces."""
    ctx = Context()
    with make_device("TIS", VARIANTS[-1], make_backend("builtin"), ctx) as dev:
        values: list[Any] = run(dev, ctx, SCRIPTS["TIS"]())
        assert {irq for _, irq in values} == {0, 1}
        assert dev.active_locality == 3
        assert dev.core.locality_state(3) == 4  # RECEPTION: half written
