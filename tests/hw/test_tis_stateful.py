"""Invariants of the TIS register model under any guest behaviour.

A Hypothesis state machine plays a guest (and, for commands in flight, the
device layer) against each variant of the core, and checks after every step
what must hold whatever the guest did: one active locality at most and it is
the one ACCESS says; STS all ones except for the active locality, never with
its write-only or reserved bits; interrupt registers within their masks; the
IRQ callback called only on changes.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tpmdev.hw import regs as R
from tpmdev.hw.tis import REQUEST_COMMAND, REQUEST_ESTABLISHED

localities = st.integers(0, 4)
guest_localities = st.integers(0, 3)
STS_NEVER_READ = 0xF0000000 | R.TPM_STS_COMMAND_CANCEL | R.TPM_STS_RESET_ESTABLISHMENT | R.TPM_STS_GO
STS_NEVER_READ |= R.TPM_STS_RESPONSE_RETRY | 0x01


def loc(locality: int, reg: int) -> int:
    return (locality << 12) + reg


class TisMachine(RuleBasedStateMachine):
    core_class: type = object

    @initialize(version=st.sampled_from([1, 2]), hold=st.booleans())
    def start(self, version: int, hold: bool) -> None:
        self.levels: list[int] = []
        self.hold = hold
        self.version = version
        self.core = self.core_class(version, 4096, 5, self.levels.append, self.on_request)

    def on_request(self, kind: int) -> None:
        if kind == REQUEST_COMMAND and not self.hold:
            self.core.complete(bytes.fromhex("8001 0000000e 00000000 00000000"))
        elif kind == REQUEST_ESTABLISHED:
            self.core.set_established(False)

    @rule(locality=guest_localities, value=st.sampled_from([0x02, 0x20, 0x08, 0x10, 0x0A, 0x22, 0x3A, 0xFF]))
    def access(self, locality: int, value: int) -> None:
        self.core.write(loc(locality, R.TPM_ACCESS), value, 1)

    @rule(locality=guest_localities, value=st.sampled_from([0x40, 0x20, 0x02, 0x01000000, 0x02000000, 0x60]))
    def sts(self, locality: int, value: int) -> None:
        self.core.write(loc(locality, R.TPM_STS), value)

    @rule(locality=guest_localities, data=st.binary(min_size=1, max_size=16), xfifo=st.booleans())
    def fifo_write(self, locality: int, data: bytes, xfifo: bool) -> None:
        port = R.TPM_XDATA_FIFO if xfifo else R.TPM_DATA_FIFO
        for byte in data:
            self.core.write(loc(locality, port), byte, 1)

    @rule(locality=guest_localities, header=st.sampled_from([10, 12, 14, 0x10006, 0xFFFF]))
    def fifo_header(self, locality: int, header: int) -> None:
        for byte in bytes.fromhex("8001") + header.to_bytes(4, "big") + bytes.fromhex("0000017b"):
            self.core.write(loc(locality, R.TPM_DATA_FIFO), byte, 1)

    @rule(locality=localities, n=st.integers(1, 20), size=st.sampled_from([1, 2, 4]))
    def fifo_read(self, locality: int, n: int, size: int) -> None:
        for _ in range(n):
            self.core.read(loc(locality, R.TPM_DATA_FIFO), size)

    @rule(locality=guest_localities, value=st.integers(0, 0xFFFFFFFF))
    def int_enable(self, locality: int, value: int) -> None:
        self.core.write(loc(locality, R.TPM_INT_ENABLE), value)

    @rule(locality=guest_localities, value=st.integers(0, 0xFF))
    def int_status(self, locality: int, value: int) -> None:
        self.core.write(loc(locality, R.TPM_INT_STATUS), value)

    @precondition(lambda self: self.core.pending_command is not None)
    @rule(size=st.integers(10, 40))
    def complete(self, size: int) -> None:
        self.core.complete(bytes.fromhex("8001") + size.to_bytes(4, "big") + bytes(size - 6))

    @rule()
    def reset(self) -> None:
        self.core.reset(self.version, 4096)

    # -- invariants --------------------------------------------------------
    @invariant()
    def one_active_locality(self) -> None:
        active = [
            n for n in range(5) if self.core.read(loc(n, R.TPM_ACCESS), 1) & R.TPM_ACCESS_ACTIVE_LOCALITY
        ]
        assert active == ([] if self.core.active_locality is None else [self.core.active_locality])

    @invariant()
    def access_bits(self) -> None:
        requests = [bool(self.core.mmio[loc(n, R.TPM_ACCESS)] & R.TPM_ACCESS_REQUEST_USE) for n in range(5)]
        for n in range(5):
            value = self.core.read(loc(n, R.TPM_ACCESS), 1)
            assert value & R.TPM_ACCESS_TPM_REG_VALID_STS and not value & (R.TPM_ACCESS_SEIZE | 0x40)
            pending = any(requests[m] for m in range(5) if m != n)
            assert bool(value & R.TPM_ACCESS_PENDING_REQUEST) == pending

    @invariant()
    def sts_shape(self) -> None:
        for n in range(5):
            value = self.core.read(loc(n, R.TPM_STS))
            if n != self.core.active_locality:
                assert value == 0xFFFFFFFF
                continue
            assert not value & STS_NEVER_READ, hex(value)
            assert value & R.TPM_STS_TPM_FAMILY_MASK == R.sts_family(self.version)
            assert (value & R.TPM_STS_BURST_COUNT_MASK) >> 8 <= 4096

    @invariant()
    def interrupt_registers(self) -> None:
        for n in range(5):
            assert self.core.read(loc(n, R.TPM_INT_ENABLE)) & ~R.TPM_INT_ENABLE_WRITABLE == 0
            assert self.core.read(loc(n, R.TPM_INT_STATUS)) & ~R.TPM_INT_SUPPORTED == 0
        assert all(a != b for a, b in zip(self.levels, self.levels[1:]))
        assert self.core.irq_level == (self.levels[-1] if self.levels else 0)


def test_invariants(core_class: type) -> None:
    machine: type[TisMachine] = type(
        f"TisMachine_{core_class.__module__}", (TisMachine,), {"core_class": core_class}
    )
    machine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
    machine.TestCase("runTest").runTest()
