"""Native speed: batch execution, unicorn's MMIO path, a single read; each beside its floor.

Each benchmark times many operations per round and records how many in
``extra_info["ops"]`` (``tpmdev bench`` divides by it and prints ns per
operation). Groups, with the floor of each (measured in the same run) and
the issue's targets:

* ``execute``: ``dev.execute`` on a batch of STS reads and FIFO writes
  (1,000,000 rows; ``TPMDEV_BENCH_QUICK=1``: 10,000) beside a compiled loop
  that only copies the same bytes (numpy copying the batch): at most 15 ns
  per row compiled.
* ``unicorn STS poll``: guest code reading TIS STS in a loop under unicorn,
  through the adapter's native callbacks, beside the same loop on a
  do-nothing native MMIO callback (unicorn's own cost of an MMIO access):
  at most 1.5x; and at least 10x faster than Python callbacks (the ``py``
  variant: pure models, Python callbacks; ``python callbacks`` forces
  Python callbacks over the compiled core).
* ``read STS call``: ``dev.read(STS, 4)`` beside a bare C method taking two
  int arguments (``{}.get(0x18, 4)``), both called through ``map`` so no
  bytecode runs between calls: within 1.5x.

Run: ``python -m pytest benchmarks/test_native_speed.py --benchmark-only``,
or ``tpmdev bench``.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from itertools import repeat
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import tpmdev
from tpmdev.hw import regs as R

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.guest_x86 import sts_poll_program

QUICK = os.environ.get("TPMDEV_BENCH_QUICK", "") not in ("", "0")
N_BATCH = 10_000 if QUICK else 1_000_000
N_POLL = 2_000 if QUICK else 100_000
N_CALLS = 1_000 if QUICK else 10_000
ROUNDS = 3 if QUICK else 10
CODE = 0x1000


def _active_tis(tis_class: type[tpmdev.TIS]) -> tpmdev.TIS:
    dev = tis_class(tpmdev.backends.Builtin())
    dev.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
    dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY)
    return dev


def _mix(n: int) -> np.ndarray:
    """STS reads and FIFO writes, alternating (the FIFO takes the bytes: the TIS is receiving)."""
    ops = np.zeros(n, tpmdev.OP_DTYPE)
    ops["kind"][1::2] = tpmdev.OP_WRITE
    ops["size"] = 4
    ops["size"][1::2] = 1
    ops["offset"] = R.TPM_STS
    ops["offset"][1::2] = R.TPM_DATA_FIFO
    ops["value"][1::2] = 0x80
    return ops


def _run(
    benchmark: Any, fn: Callable[[], object], ops: int, setup: Callable[[], object] = lambda: None
) -> None:
    benchmark.extra_info["ops"] = ops
    benchmark.pedantic(fn, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)


# -- execute -----------------------------------------------------------------------


@pytest.mark.benchmark(group="execute")
def test_floor_copy_the_batch(benchmark: Any) -> None:
    ops = _mix(N_BATCH)
    source = ops.view(np.uint8)
    copy = np.empty_like(source)
    _run(benchmark, lambda: np.copyto(copy, source), N_BATCH)


@pytest.mark.benchmark(group="execute")
def test_execute_mix(benchmark: Any, tis_class: type[tpmdev.TIS]) -> None:
    n = N_BATCH if tis_class is tpmdev.TIS else N_BATCH // 100  # (the pure variant: ns do not matter there)
    ops = _mix(n)
    out = np.zeros(n, np.uint64)
    with _active_tis(tis_class) as dev:

        def fresh() -> None:  # a receiving TIS at every round: commandReady empties the FIFO
            dev.write(R.TPM_STS, R.TPM_STS_COMMAND_READY)

        _run(benchmark, lambda: dev.execute(ops, out), n, setup=fresh)
        assert out[1] == 0x80 and dev.core.rw_offset > 0


# -- unicorn -----------------------------------------------------------------------


def _poll_machine(count: int) -> tuple[Any, int]:
    unicorn = pytest.importorskip("unicorn")
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    code, end = sts_poll_program(CODE, R.TIS_BASE_ADDRESS, count)
    uc.mem_map(CODE, 0x1000)
    uc.mem_write(CODE, code)
    return uc, end


@pytest.mark.benchmark(group="unicorn STS poll")
def test_floor_null_native_mmio(benchmark: Any) -> None:
    from tpmdev.adapters import unicorn as adapter

    if not adapter.native_available():
        pytest.skip("the native unicorn module is not built")
    uc, end = _poll_machine(N_POLL)
    adapter.map_null(uc, R.TIS_BASE_ADDRESS, 0x5000)
    _run(benchmark, lambda: adapter.emu_start(uc, CODE, end), N_POLL)


@pytest.mark.benchmark(group="unicorn STS poll")
def test_unicorn_sts_poll(benchmark: Any, tis_class: type[tpmdev.TIS]) -> None:
    """c: native callbacks into the compiled core; py: Python callbacks into the pure core."""
    from tpmdev.adapters import unicorn as adapter

    count = N_POLL if tis_class is tpmdev.TIS else N_POLL // 20
    uc, end = _poll_machine(count)
    with _active_tis(tis_class) as dev:
        adapter.attach(uc, dev)
        _run(benchmark, lambda: adapter.emu_start(uc, CODE, end), count)


@pytest.mark.benchmark(group="unicorn STS poll")
def test_unicorn_sts_poll_python_callbacks(benchmark: Any) -> None:
    """Python callbacks over the compiled core: what the native path saves."""
    from tpmdev.adapters import unicorn as adapter

    count = N_POLL // 20
    uc, end = _poll_machine(count)
    with _active_tis(tpmdev.TIS) as dev:
        adapter.attach(uc, dev, native=False)
        _run(benchmark, lambda: adapter.emu_start(uc, CODE, end), count)


# -- a single read from Python ---------------------------------------------------------


@pytest.mark.benchmark(group="read STS call")
def test_floor_c_method_two_ints(benchmark: Any) -> None:
    get = {}.get
    _run(benchmark, lambda: deque(map(get, repeat(R.TPM_STS, N_CALLS), repeat(4, N_CALLS)), 0), N_CALLS)


@pytest.mark.benchmark(group="read STS call")
def test_read_sts_call(benchmark: Any, tis_class: type[tpmdev.TIS]) -> None:
    with _active_tis(tis_class) as dev:
        read = dev.read
        _run(benchmark, lambda: deque(map(read, repeat(R.TPM_STS, N_CALLS), repeat(4, N_CALLS)), 0), N_CALLS)
