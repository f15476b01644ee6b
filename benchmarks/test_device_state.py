"""Device state: rollback beside a copy of the register image, save/load beside the backend's own.

Targets (issue: migration and snapshots): ``rollback`` of a TIS or a CRB on
a Builtin within 3x of ``dev.mmio.copy()`` (the floor: copying the register
image once). ``save`` / ``load`` with each backend beside that backend's own
``get_state`` / ``set_state`` (what the device adds: the register capture,
the encoding and the SHA-256).

Run: ``python -m pytest benchmarks/test_device_state.py --benchmark-only
--benchmark-group-by=group``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

import tpmdev
from tpmdev.backends import Backend, Builtin
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver

ROUNDS = 200
ITERATIONS = 50  # rollbacks per round: a round is long enough to time


def _busy_tis(tis_class: type[tpmdev.TIS], backend: Backend) -> tpmdev.TIS:
    dev = tis_class(backend)
    drv = TisDriver(dev)
    drv.request_locality()
    drv.transmit(C.tpm2_startup())
    drv.transmit(C.tpm2_pcr_extend(16, bytes(32)))
    return dev


# -- rollback beside mmio.copy() -------------------------------------------------------
@pytest.mark.benchmark(group="rollback TIS + Builtin")
def test_tis_mmio_copy(benchmark: Callable[..., Any], tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(seed=1)) as dev:
        benchmark.pedantic(dev.mmio.copy, rounds=ROUNDS, iterations=ITERATIONS)


@pytest.mark.benchmark(group="rollback TIS + Builtin")
def test_tis_rollback(benchmark: Callable[..., Any], tis_class: type[tpmdev.TIS]) -> None:
    with _busy_tis(tis_class, Builtin(seed=1)) as dev:
        snap = dev.snapshot()
        dev.write(0x018, 0x40)  # (the registers move on; the TPM does not)
        benchmark.pedantic(dev.rollback, args=(snap,), rounds=ROUNDS, iterations=ITERATIONS)
        assert dev.core.capture() == snap.core_state


@pytest.mark.benchmark(group="rollback TIS + Builtin")
def test_tis_rollback_after_a_command(benchmark: Callable[..., Any], tis_class: type[tpmdev.TIS]) -> None:
    """The TPM ran a command since the snapshot: its state is copied back too."""
    with _busy_tis(tis_class, Builtin(seed=1)) as dev:
        snap = dev.snapshot()
        command = C.tpm2_pcr_extend(16, bytes(32))

        def ran() -> None:
            dev.backend.execute(command)

        benchmark.pedantic(dev.rollback, args=(snap,), setup=ran, rounds=ROUNDS)


@pytest.mark.benchmark(group="rollback CRB + Builtin")
def test_crb_mmio_copy(benchmark: Callable[..., Any], crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(Builtin(seed=1)) as dev:
        benchmark.pedantic(dev.mmio.copy, rounds=ROUNDS, iterations=ITERATIONS)


@pytest.mark.benchmark(group="rollback CRB + Builtin")
def test_crb_rollback(benchmark: Callable[..., Any], crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(Builtin(seed=1)) as dev:
        dev.write(0x08, 1)
        snap = dev.snapshot()
        dev.write(0x08, 2)
        benchmark.pedantic(dev.rollback, args=(snap,), rounds=ROUNDS, iterations=ITERATIONS)
        assert dev.active_locality == 0


# -- save / load beside the backend's get_state / set_state ---------------------------------
@pytest.fixture(params=["builtin", "libtpms", "swtpm"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _backend(kind: str) -> Backend:
    if kind == "builtin":
        return Builtin(seed=1)
    if kind == "libtpms":
        from tpmdev.backends import Libtpms

        return Libtpms(2)
    from tpmdev.backends import Emulator

    return Emulator.spawn(None, tpm_version=2)


@pytest.fixture
def device(backend_kind: str) -> Iterator[tpmdev.TIS]:
    with _busy_tis(tpmdev.TIS, _backend(backend_kind)) as dev:
        yield dev


def test_backend_get_state(benchmark: Callable[..., Any], device: tpmdev.TIS, backend_kind: str) -> None:
    benchmark.group = f"save {backend_kind}"
    benchmark.pedantic(device.backend.get_state, rounds=20)


def test_device_save(benchmark: Callable[..., Any], device: tpmdev.TIS, backend_kind: str) -> None:
    benchmark.group = f"save {backend_kind}"
    benchmark.pedantic(device.save, rounds=20)


def test_backend_set_state(benchmark: Callable[..., Any], device: tpmdev.TIS, backend_kind: str) -> None:
    benchmark.group = f"load {backend_kind}"
    state = device.backend.get_state()
    benchmark.pedantic(device.backend.set_state, args=(state,), rounds=20)


def test_device_load(benchmark: Callable[..., Any], device: tpmdev.TIS, backend_kind: str) -> None:
    benchmark.group = f"load {backend_kind}"
    blob = device.save()
    benchmark.pedantic(device.load, args=(blob,), rounds=20)


def test_device_rollback_with_tpm(
    benchmark: Callable[..., Any], device: tpmdev.TIS, backend_kind: str
) -> None:
    """Rollback when the TPM ran a command since the snapshot."""
    benchmark.group = f"rollback after a command, {backend_kind}"
    snap = device.snapshot()
    command = C.tpm2_pcr_extend(16, bytes(32))

    def ran() -> None:
        device.backend.execute(command)

    benchmark.pedantic(device.rollback, args=(snap,), setup=ran, rounds=20)
