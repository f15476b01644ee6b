"""The sysbus TIS against QEMU's ``tpm-tis-device`` on Arm virt.

QEMU's sysbus TIS is its ISA TIS on another bus (qemu-tpm-spec section 3),
so this module runs a representative subset of the ISA suite's own scenario
functions on a pair of sysbus devices: ``qemu-system-aarch64 -machine virt``
with the device at 0x0C000000 against ``tpmdev.TISSysbus``, both on fresh
swtpm instances, every value read compared. The interrupt line is compared
too: qtest intercepts the GIC's inputs, and virt wires the device's sysbus
IRQ 0 through the platform bus to GIC input 112.

The subset: the reset values, locality arbitration, command flows at every
FIFO access size, the interrupt scenarios, a few seeded random sequences
(fewer seeds than the ISA suite; the register code is shared) and the
``irq`` property, which on sysbus is a 32-bit value shown only in
INT_VECTOR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from . import test_tis_access as access
from . import test_tis_commands as cmds
from . import test_tis_irq as irq
from . import test_tis_random as rand
from . import test_tis_reset as reset
from .conftest import Pair

pytestmark = pytest.mark.oracle

# name -> scenario of the ISA suite, run on a fresh sysbus pair
SCENARIOS: dict[str, Callable[[Pair], Any]] = {
    "reset_values_no_locality": reset.test_reset_values_no_locality,
    "reset_values_active_locality_0": lambda p: reset.test_reset_values_active_locality(p, 0),
    "reset_values_active_locality_3": lambda p: reset.test_reset_values_active_locality(p, 3),
    "byte_lanes_no_locality": reset.test_byte_lanes_no_locality,
    "byte_lanes_active_locality": reset.test_byte_lanes_active_locality,
    "system_reset_restores_reset_values": reset.test_system_reset_restores_reset_values,
    "localities": access.test_localities,
    "check_access_reg": access.test_check_access_reg,
    "check_access_reg_seize": access.test_check_access_reg_seize,
    "check_access_reg_release": access.test_check_access_reg_release,
    "word_write_relinquishes": access.test_word_write_relinquishes,
    "reset_drops_pending_requests": access.test_reset_drops_pending_requests,
    "transmit_startup_exact_sts": cmds.test_transmit_startup_exact_sts,
    "command_sequence": cmds.test_command_sequence,
    "large_response": cmds.test_large_response,
    "command_ready_in_every_state": cmds.test_command_ready_in_every_state,
    "ignored_actions": cmds.test_ignored_actions,
    "fifo_from_non_active_locality": cmds.test_fifo_from_non_active_locality,
    "overlong_command_drops_expect": cmds.test_overlong_command_drops_expect,
    "selftest_done": cmds.test_selftest_done,
    "commands_after_reset": cmds.test_commands_after_reset,
    "int_enable_only_from_active_locality": irq.test_int_enable_only_from_active_locality,
    "int_enable_byte_lanes": irq.test_int_enable_byte_lanes,
    "locality_change_and_status_clear": irq.test_locality_change_and_status_clear,
    "full_command_interrupts": irq.test_full_command_interrupts,
    "two_localities_pending": irq.test_two_localities_pending,
    "reset_keeps_line_raised": irq.test_reset_keeps_line_raised,
    "random_sequence_0": lambda p: rand.Walk(p, 0).run(300),
    "random_sequence_1": lambda p: rand.Walk(p, 1).run(300),
    "random_sequence_2": lambda p: rand.Walk(p, 2).run(300),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(sysbus_pair: Pair, name: str) -> None:
    SCENARIOS[name](sysbus_pair)


def test_arbitration_cases(make_pair: Callable[..., Pair], tpm2: bool) -> None:
    """Every arbitration case of the ISA suite, each on a fresh sysbus pair."""
    for case in sorted(access.CASES):
        access.test_arbitration_case(make_pair(tpm2, platform="sysbus"), case)


@pytest.mark.parametrize(("size", "offset"), [(1, 0x24), (4, 0x24), (2, 0x0A0), (4, 0x025), (4, 0x0BE)])
def test_fifo_access_sizes(sysbus_pair: Pair, size: int, offset: int) -> None:
    cmds.test_fifo_access_sizes(sysbus_pair, size, offset)


@pytest.mark.parametrize("enable", [0x80000001, 0x80000004, 0x0000008F])
def test_single_enables(sysbus_pair: Pair, enable: int) -> None:
    irq.test_single_enables(sysbus_pair, enable)


@pytest.mark.parametrize("name", ["sequence", "command_ready"])
def test_asynchronous_device(async_sysbus_pair: Pair, name: str) -> None:
    cmds.ASYNC_SEQUENCES[name](async_sysbus_pair)


def test_random_sequence_asynchronous(async_sysbus_pair: Pair) -> None:
    rand.Walk(async_sysbus_pair, 100).run(300)


@pytest.mark.parametrize("irq_num", [11, 300, 0xFFFFFFFF])
def test_int_vector_is_the_32_bit_irq_property(
    make_pair: Callable[..., Pair], tpm2: bool, irq_num: int
) -> None:
    """Sysbus ``irq`` is not range-checked (ISA: at most 15); INT_VECTOR shows all 32 bits."""
    pair = make_pair(tpm2, irq_num=irq_num, platform="sysbus")
    for loc in range(5):
        for size in (1, 2, 4):
            assert pair.read(loc << 12 | 0x00C, size) == irq_num & ((1 << 8 * size) - 1)


def test_nothing_past_the_region(sysbus_pair: Pair) -> None:
    """No PPI page after the registers on sysbus: QEMU maps nothing at 0x5000.. (reads 0,
    ignores writes), and tpmdev's region ends at 0x5000 (it refuses the host's access)."""
    for offset in (0x5000, 0x5100, 0x515A, 0x53FC):
        sysbus_pair.q.write(offset, 0xFFFFFFFF)
        assert sysbus_pair.q.read(offset) == 0
    assert sysbus_pair.dev.region_size == 0x5000 and sysbus_pair.dev.ppi is None
