"""TIS register-access speed, each beside its floor measured in the same run.

Floor: a bare C method call from Python (``bytearray(1).__len__``), the
least a register access through a Python-visible method can cost. Targets
(issue: TIS frontend): the compiled ``read(STS)`` within 2.5x of the floor,
and at least 100x faster than the same read of QEMU's TIS over qtest.

Run: ``python -m pytest benchmarks --benchmark-only`` (add
``--benchmark-group-by=group`` to see each operation beside its floor).
"""

from __future__ import annotations

from typing import Callable

import pytest

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.hw import regs as R

STS = R.TPM_STS
FIFO = R.TPM_DATA_FIFO
N_WRITES = 4000  # FIFO writes per round: stays below the 4096-byte buffer


def _active(tis_class: type[tpmdev.TIS]) -> tpmdev.TIS:
    dev = tis_class(tpmdev.backends.Builtin())
    dev.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)
    return dev


# -- read(STS) ---------------------------------------------------------------


@pytest.mark.benchmark(group="read STS")
def test_floor_c_method_call(benchmark: Callable[..., object]) -> None:
    benchmark(bytearray(1).__len__)


@pytest.mark.benchmark(group="read STS")
def test_read_sts(benchmark: Callable[..., object], tis_class: type[tpmdev.TIS]) -> None:
    with _active(tis_class) as dev:
        value = benchmark(dev.read, STS)
        assert value == 0x04100000


@pytest.mark.benchmark(group="read STS")
def test_read_sts_qemu_qtest(benchmark: Callable[..., object], qemu_tis: object) -> None:
    qemu_tis.write(R.TPM_ACCESS, R.TPM_ACCESS_REQUEST_USE, 1)  # type: ignore[attr-defined]
    try:
        value = benchmark(qemu_tis.read, STS)  # type: ignore[attr-defined]
        assert value == 0x04100000
    finally:
        qemu_tis.write(R.TPM_ACCESS, R.TPM_ACCESS_ACTIVE_LOCALITY, 1)  # type: ignore[attr-defined]


# -- read(ACCESS): asks the device layer for the established flag -------------


@pytest.mark.benchmark(group="read ACCESS")
def test_floor_c_method_call_access(benchmark: Callable[..., object]) -> None:
    benchmark(bytearray(1).__len__)


@pytest.mark.benchmark(group="read ACCESS")
def test_read_access(benchmark: Callable[..., object], tis_class: type[tpmdev.TIS]) -> None:
    with _active(tis_class) as dev:
        value = benchmark(dev.read, R.TPM_ACCESS, 1)
        assert value == 0xA1


# -- FIFO byte writes (rounds of N_WRITES, beside N_WRITES floor calls) -------


def _loop(fn: Callable[..., object], *args: object) -> Callable[[], None]:
    def run() -> None:
        for _ in range(N_WRITES):
            fn(*args)

    return run


@pytest.mark.benchmark(group=f"FIFO byte write x{N_WRITES}")
def test_floor_c_method_call_loop(benchmark: Callable[..., object]) -> None:
    f = bytearray(1).__len__
    benchmark.pedantic(_loop(f), rounds=200)  # type: ignore[attr-defined]


@pytest.mark.benchmark(group=f"FIFO byte write x{N_WRITES}")
def test_fifo_byte_write(benchmark: Callable[..., object], tis_class: type[tpmdev.TIS]) -> None:
    with _active(tis_class) as dev:

        def setup() -> None:
            dev.write(STS, R.TPM_STS_COMMAND_READY, 1)  # back to READY, offset 0
            dev.write(STS, R.TPM_STS_COMMAND_READY, 1)
            for byte in bytes.fromhex("8001 0000ffff"):  # a header that keeps Expect set
                dev.write(FIFO, byte, 1)

        benchmark.pedantic(_loop(dev.write, FIFO, 0xA5, 1), setup=setup, rounds=200)  # type: ignore[attr-defined]
        assert dev.read(STS) & 0xFF == 0x88  # still receiving: every write was stored


# -- a whole command through the registers --------------------------------------

GET_RANDOM = C.tpm2_get_random(32)


@pytest.mark.benchmark(group="TPM2_GetRandom(32)")
def test_floor_c_method_call_cmd(benchmark: Callable[..., object]) -> None:
    benchmark(bytearray(1).__len__)


@pytest.mark.benchmark(group="TPM2_GetRandom(32)")
def test_get_random_builtin_direct(benchmark: Callable[..., object]) -> None:
    with tpmdev.backends.Builtin() as tpm:
        tpm.execute(C.tpm2_startup())
        response = benchmark(tpm.execute, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32


@pytest.mark.benchmark(group="TPM2_GetRandom(32)")
def test_get_random_through_tis(benchmark: Callable[..., object], tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(tpmdev.backends.Builtin()) as dev:
        driver = TisDriver(dev)
        driver.transmit(C.tpm2_startup())
        response = benchmark(driver.transmit, GET_RANDOM)
        assert len(C.decode_get_random(response)) == 32
