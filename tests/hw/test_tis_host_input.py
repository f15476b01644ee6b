"""What the host may pass to the core's entry points, on both variants.

Offsets, sizes, values and counts are ints or any integer type with
``__index__`` (numpy's scalars: what simulators pass); bool is refused
everywhere (an int by inheritance only); anything outside the region is
refused whatever its size, before any arithmetic could overflow. Every
refusal is an :class:`AccessError` (a ``ValueError`` and a ``TpmDevError``),
never a crash, never a silent access.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tpmdev import AccessError, TpmDevError
from tpmdev.hw import regs as R

HUGE = [2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 4, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100]
NEGATIVE = [-1, -2, -4, -(2**31), -(2**63), -(2**63) - 1, -(2**100)]
NOT_INTS = [True, False, np.True_, 1.0, 0.0, float("nan"), None, "0", b"\x00", [0], 1j, np.float64(0)]
NP_INTS = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64, np.intp]


@pytest.fixture
def core(core_class: type) -> Any:
    asked: list[int] = []
    return core_class(2, 4096, 5, None, asked.append)


def refused(call: Any, *args: Any) -> AccessError:
    with pytest.raises(AccessError) as info:
        call(*args)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, TpmDevError)
    assert "TIS" in str(error)
    return error


def untouched(core: Any) -> None:
    """No refused access reached the model: nothing became active."""
    assert core.active_locality is None
    assert all(core.locality_state(n) == R.TIS_STATE_IDLE for n in range(5))


# -- offsets ----------------------------------------------------------------


@pytest.mark.parametrize("offset", HUGE + NEGATIVE + [0x5000, 0x5001], ids=repr)
@pytest.mark.parametrize("size", [1, 2, 4])
def test_offset_outside_region_refused_everywhere(core: Any, offset: int, size: int) -> None:
    refused(core.read, offset, size)
    refused(core.write, offset, 0x02, size)  # requestUse, were it to land on an ACCESS register
    refused(core.read_many, offset, 1, size)
    refused(core.write_many, offset, bytes(size), size)
    untouched(core)


@pytest.mark.parametrize("offset, size", [(0x4FFF, 2), (0x4FFE, 4), (0x4FFD, 4), (0x4FFC, 8)])
def test_access_overlapping_the_end_refused(core: Any, offset: int, size: int) -> None:
    refused(core.read, offset, size)
    refused(core.read_many, offset, 1, size)


def test_issue_reproducer_refused_without_side_effect(core: Any) -> None:
    # The signed sum 2**63 - 1 + 4 wrapped in the old check: locality 0 became active.
    refused(core.write, 2**63 - 1, 0x0200, 4)
    refused(core.read, 2**63 - 1, 2)
    refused(core.read_many, 2**63 - 1, 4, 2)
    untouched(core)


@pytest.mark.parametrize("bad", NOT_INTS, ids=repr)
def test_non_int_offset_refused(core: Any, bad: object) -> None:
    refused(core.read, bad, 1)
    refused(core.write, bad, 0x02, 1)
    refused(core.read_many, bad, 1, 1)
    refused(core.write_many, bad, b"\x02", 1)
    untouched(core)


# -- sizes ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 3, 5, 8, -1, -4, 2**32 + 1, 2**63 - 1, 2**64 + 4, *NOT_INTS], ids=repr)
def test_bad_size_refused(core: Any, size: object) -> None:
    refused(core.read, 0, size)
    refused(core.write, 0, 0x02, size)
    refused(core.read_many, 0, 1, size)
    refused(core.write_many, 0, b"\x02\x00\x00\x00", size)
    untouched(core)


# -- write values -------------------------------------------------------------


@pytest.mark.parametrize("value", [*NOT_INTS, -1, 2**32, 2**63, 2**64, -(2**63) - 1], ids=repr)
def test_bad_value_refused(core: Any, value: object) -> None:
    refused(core.write, 0, value, 4)
    untouched(core)


@pytest.mark.parametrize("value, size", [(0x100, 1), (0x10000, 2), (0x1_0000_0000, 4)])
def test_value_wider_than_size_refused(core: Any, value: int, size: int) -> None:
    refused(core.write, 0, value, size)


# -- read_many counts ------------------------------------------------------------


@pytest.mark.parametrize("count", [-1, 0x1000001, 2**63, 2**64, -(2**64), *NOT_INTS], ids=repr)
def test_bad_count_refused(core: Any, count: object) -> None:
    refused(core.read_many, R.TPM_DATA_FIFO, count)


# -- numpy integers are ints --------------------------------------------------------


@pytest.mark.parametrize("np_type", NP_INTS, ids=lambda t: t.__name__)
def test_numpy_integers_accepted(core_class: type, np_type: Any) -> None:
    plain = core_class(2, 4096)
    numpy = core_class(2, 4096)
    plain.write(R.TPM_ACCESS, 0x02, 1)
    numpy.write(np_type(R.TPM_ACCESS), np_type(0x02), np_type(1))
    assert numpy.active_locality == 0
    value = numpy.read(np_type(R.TPM_STS), np_type(4))
    assert type(value) is int and value == plain.read(R.TPM_STS, 4) == 0x04100000
    assert numpy.read_many(np_type(R.TPM_STS), np_type(2), np_type(1)) == plain.read_many(R.TPM_STS, 2, 1)
    numpy.write_many(np_type(R.TPM_STS), b"\x40", np_type(1))
    assert numpy.locality_state(np_type(0)) == R.TIS_STATE_READY
    assert numpy.read(np_type(0x18), 1) == 0x40


def test_numpy_offsets_near_the_end(core: Any) -> None:
    assert core.read(np.uint32(0x4FFC), np.uint8(4)) == 0xFFFFFFFF
    refused(core.read, np.uint32(0x4FFD), 4)
    refused(core.read, np.uint64(2**64 - 1), 1)
    refused(core.read, np.int64(-1), 1)
    refused(core.write, np.int32(-4), np.uint32(0), 4)
    refused(core.write, 0, np.int8(-1), 1)
    refused(core.write, 0, np.uint64(2**32), 4)


def test_numpy_uint32_write_values(core: Any) -> None:
    core.write(R.TPM_ACCESS, 0x02, 1)
    core.write(R.TPM_INT_ENABLE, np.uint32(0xFFFFFFFF), 4)
    assert core.read(R.TPM_INT_ENABLE) == 0x8000009F


# -- locality_state -------------------------------------------------------------------


@pytest.mark.parametrize("locality", [5, -1, -5, 10**8, 2**63, 2**64, *NOT_INTS], ids=repr)
def test_locality_state_refuses_bad_locality(core: Any, locality: object) -> None:
    error = refused(core.locality_state, locality)
    assert "0 .. 4" in str(error)


def test_locality_state_takes_every_locality(core: Any) -> None:
    core.write(R.TPM_ACCESS, 0x02, 1)
    core.write(R.TPM_STS, R.TPM_STS_COMMAND_READY, 1)
    assert [core.locality_state(n) for n in range(5)] == [R.TIS_STATE_READY] + [R.TIS_STATE_IDLE] * 4
    assert core.locality_state(np.uint8(0)) == R.TIS_STATE_READY
