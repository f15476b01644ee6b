"""Scripted guest exchanges for the save/load tests, and the child process that resumes them.

A script is a list of steps (plain tuples, so they cross a pipe): register
accesses for the MMIO frontends, bus events for TIS over I2C, guest memory
writes and CRQ entries for sPAPR. :func:`run` plays steps on a device and
returns every value the guest (and the host watching it) reads: register
values, the IRQ line after each step, I2C bytes and ACKs, sPAPR answers and
the response bytes DMA put in guest memory.

Run as a program (``python tests/state_exchange.py``), this module is the
other process of the tests: it reads requests from stdin (length-prefixed
pickles) -- a frontend, a variant, a backend kind, a device state blob, the
guest memory and the remaining steps --, builds a fresh device on a fresh
backend (a fresh swtpm for ``swtpm``), loads the blob, plays the steps and
writes back what they read. One child serves a whole test.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

if __name__ == "__main__":  # (run as a program from the repository root)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tpmdev
import tpmdev.hw
from tpmdev.backends import Backend, Builtin
from tpmdev.drivers import commands as C
from tpmdev.hw.spapr import crq_entry

__all__ = ["Child", "Context", "SCRIPTS", "VARIANTS", "make_backend", "make_device", "run"]

#: The register-model variants under test, as tests/conftest.py chooses them.
VARIANTS = (
    ["c", "py"]
    if tpmdev.USE_EXTENSIONS or os.environ.get("TPMDEV_REQUIRE_EXTENSIONS", "").strip() not in ("", "0")
    else ["py"]
)

FRONTENDS = ("TIS", "TISSysbus", "TISI2C", "CRB", "SPAPR")
MEMORY_SIZE = 0x4000
_SEED = 7


def commands() -> list[bytes]:
    """Whole TPM 2.0 commands whose responses do not depend on time or randomness."""
    return [
        C.tpm2_startup(),
        C.tpm2_pcr_extend(16, hashlib.sha256(b"first").digest()),
        C.tpm2_pcr_read([16]),
        C.tpm2_hash(b"abc" * 20),
        C.tpm2_pcr_extend(16, hashlib.sha256(b"second").digest()),
        C.tpm2_pcr_read([16, 23]),
    ]


# -- scripts -----------------------------------------------------------------------
def _chunks(data: bytes, n: int) -> list[bytes]:
    step = max(1, -(-len(data) // n))
    return [data[i : i + step] for i in range(0, len(data), step)]


def tis_script() -> list[tuple[Any, ...]]:
    s: list[tuple[Any, ...]] = []
    locality = 0

    def base() -> int:
        return locality << 12

    s += [("w", 0x000, 0x02, 1), ("r", 0x000, 1), ("w", 0x008, 0x80000087, 4), ("r", 0x010, 4)]
    for i, cmd in enumerate(commands()):
        if i == 2:
            # locality change: 2 asks while 0 is active, 0 relinquishes
            s += [("w", 0x2000, 0x02, 1), ("r", 0x000, 1), ("r", 0x2000, 1), ("w", 0x000, 0x20, 1)]
            locality = 2
            s += [("r", 0x2000, 1), ("w", 0x2008, 0x80000087, 4), ("r", 0x2010, 4)]
        if i == 4:
            # locality 3 seizes
            s += [("w", 0x3000, 0x08, 1), ("r", 0x3000, 1), ("r", 0x2000, 1), ("w", 0x3008, 0x80000087, 4)]
            locality = 3
        b = base()
        s += [("w", b + 0x018, 0x40, 4), ("r", b + 0x018, 4), ("r", b + 0x010, 4), ("w", b + 0x010, 0x87, 4)]
        s += [("wm", b + 0x024, chunk) for chunk in _chunks(cmd, 3)]
        s += [("r", b + 0x018, 4), ("w", b + 0x018, 0x20, 4), ("r", b + 0x010, 4), ("r", b + 0x018, 4)]
        s += [("rm", b + 0x024, 6), ("r", b + 0x018, 4), ("rm", b + 0x024, 7), ("rm", b + 0x024, 64)]
        s += [("r", b + 0x018, 4), ("w", b + 0x010, 0x87, 4), ("r", b + 0x010, 4)]
    # a command left half written
    b = base()
    s += [("w", b + 0x018, 0x40, 4), ("wm", b + 0x024, commands()[2][:7]), ("r", b + 0x018, 4)]
    return s


def crb_script() -> list[tuple[Any, ...]]:
    s: list[tuple[Any, ...]] = [("w", 0x08, 1, 4), ("r", 0x00, 4), ("r", 0x0C, 4)]
    for i, cmd in enumerate(commands()):
        if i == 3:
            s += [("w", 0x08, 2, 4), ("r", 0x00, 4), ("w", 0x08, 1, 4), ("r", 0x00, 4)]
        s += [("w", 0x40, 1, 4), ("r", 0x44, 4)]
        off = 0x80
        for chunk in _chunks(cmd, 3):
            s.append(("wbuf", off, chunk))
            off += len(chunk)
        s += [("w", 0x4C, 1, 4), ("r", 0x4C, 4), ("r", 0x44, 4)]
        s += [("rbuf", 0x80, 6), ("rbuf", 0x86, 8), ("rbuf", 0x8E, 64), ("w", 0x40, 2, 4), ("r", 0x44, 4)]
    s += [("w", 0x40, 1, 4), ("wbuf", 0x80, commands()[2][:7]), ("r", 0x44, 4)]
    return s


def i2c_script() -> list[tuple[Any, ...]]:
    s: list[tuple[Any, ...]] = [("iw", bytes([0x00, 0x00])), ("iw", bytes([0x04, 0x02])), ("irr", 0x04, 1)]
    for i, cmd in enumerate(commands()):
        if i == 3:
            # locality change through TPM_I2C_LOC_SEL; a transaction left open across steps
            s += [("start", False), ("send", 0x04), ("send", 0x20), ("stop",), ("irr", 0x04, 1)]
            s += [
                ("iw", bytes([0x00, 0x01])),
                ("irr", 0x00, 1),
                ("iw", bytes([0x04, 0x02])),
                ("irr", 0x04, 1),
            ]
        s += [("iw", bytes([0x18, 0x40, 0, 0, 0])), ("irr", 0x18, 4)]
        for chunk in _chunks(cmd, 3):
            s.append(("iw", bytes([0x24]) + chunk))
        s += [("irr", 0x44, 2), ("irr", 0x18, 4), ("start", False), ("send", 0x18), ("send", 0x20)]
        s += [("send", 0), ("send", 0), ("send", 0), ("stop",), ("irr", 0x18, 4)]
        s += [("iw", bytes([0x24])), ("ir", 6), ("irr", 0x18, 4), ("start", True), ("recv",), ("recv",)]
        s += [("recv",), ("nack",), ("stop",), ("irr", 0x24, 64), ("irr", 0x44, 2)]
    s += [("iw", bytes([0x18, 0x40, 0, 0, 0])), ("iw", bytes([0x24]) + commands()[2][:7]), ("irr", 0x18, 4)]
    return s


def spapr_script() -> list[tuple[Any, ...]]:
    s: list[tuple[Any, ...]] = [("crq", crq_entry(0xC0, 0x01)), ("crq", crq_entry(0x80, 0x01))]
    s += [("crq", crq_entry(0x80, 0x03))]
    for i, cmd in enumerate(commands()):
        addr = 0x1000 + 0x1000 * (i % 2)
        s += [("mem", addr, cmd + bytes(16)), ("crq", crq_entry(0x80, 0x02, len(cmd), addr, i))]
        s += [("peek", addr, 64)]
    s += [("crq", crq_entry(0x80, 0x04)), ("peek", 0x1000, 16)]
    return s


SCRIPTS = {
    "TIS": tis_script,
    "TISSysbus": tis_script,
    "TISI2C": i2c_script,
    "CRB": crb_script,
    "SPAPR": spapr_script,
}


# -- devices ------------------------------------------------------------------------
class Context:
    """The guest side a device talks to: guest memory and the sPAPR answer queue."""

    def __init__(self, memory: Optional[bytes] = None) -> None:
        self.memory = bytearray(memory if memory is not None else bytes(MEMORY_SIZE))
        self.sent: list[bytes] = []

    def dma_read(self, addr: int, n: int) -> bytes:
        return bytes(self.memory[addr : addr + n])

    def dma_write(self, addr: int, data: bytes) -> bool:
        if addr + len(data) > len(self.memory):
            return False
        self.memory[addr : addr + len(data)] = data
        return True

    def send_crq(self, entry: bytes) -> None:
        self.sent.append(bytes(entry))


def make_backend(kind: str, tmp: Optional[Path] = None) -> Backend:
    if kind == "builtin":
        return Builtin(seed=_SEED)
    if kind == "swtpm":
        from tpmdev.backends import Emulator

        return Emulator.spawn(None, tpm_version=2)
    raise ValueError(kind)


def device_class(frontend: str, impl: str) -> type[Any]:
    cls: type[Any] = getattr(tpmdev, frontend)
    if impl == "c" and not tpmdev.USE_EXTENSIONS:
        raise AssertionError("the compiled register models are not in use (TPMDEV_REQUIRE_EXTENSIONS is set)")
    if impl == "c" or frontend == "SPAPR":
        return cls
    core = tpmdev.hw.pure("crb").CrbCore if frontend == "CRB" else tpmdev.hw.pure("tis").TisCore
    return type(cls.__name__, (cls,), {"_Core": core})


def make_device(frontend: str, impl: str, backend: Backend, ctx: Context) -> Any:
    cls = device_class(frontend, impl)
    if frontend == "SPAPR":
        return cls(backend, dma_read=ctx.dma_read, dma_write=ctx.dma_write, send_crq=ctx.send_crq)
    return cls(backend)


def _step(dev: Any, ctx: Context, step: tuple[Any, ...]) -> object:
    op = step[0]
    if op == "w":
        return dev.write(step[1], step[2], step[3])
    if op == "r":
        return dev.read(step[1], step[2])
    if op == "wm":
        return dev.write_many(step[1], step[2])
    if op == "rm":
        return dev.read_many(step[1], step[2])
    if op == "wbuf":
        for i, byte in enumerate(step[2]):
            dev.write(step[1] + i, byte, 1)
        return None
    if op == "rbuf":
        return bytes(dev.read(step[1] + i, 1) for i in range(step[2]))
    if op == "iw":
        return dev.i2c_write(step[1])
    if op == "irr":
        return dev.i2c_read_reg(step[1], step[2])
    if op == "ir":
        return dev.i2c_read(step[1])
    if op == "start":
        return dev.i2c_start(step[1])
    if op == "send":
        return dev.i2c_send(step[1])
    if op == "recv":
        return dev.i2c_recv()
    if op == "nack":
        return dev.i2c_nack()
    if op == "stop":
        return dev.i2c_stop()
    if op == "mem":
        ctx.memory[step[1] : step[1] + len(step[2])] = step[2]
        return None
    if op == "peek":
        return bytes(ctx.memory[step[1] : step[1] + step[2]])
    if op == "crq":
        status = dev.receive_crq(step[1])
        sent, ctx.sent = ctx.sent, []
        return status, sent
    raise ValueError(op)


def run(dev: Any, ctx: Context, steps: list[tuple[Any, ...]]) -> list[object]:
    """Play *steps*; every value read, with the IRQ line after each step (TIS)."""
    out: list[object] = []
    irq = hasattr(dev, "irq_level")
    for step in steps:
        value = _step(dev, ctx, step)
        out.append((value, dev.irq_level) if irq else value)
    return out


# -- the other process --------------------------------------------------------------
def _send(stream: Any, obj: object) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _recv(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    return pickle.loads(stream.read(n))


class Child:
    """A long-lived child process that resumes saved exchanges."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parent.parent),
        )

    def resume(
        self, frontend: str, impl: str, backend: str, blob: bytes, memory: bytes, steps: list[tuple[Any, ...]]
    ) -> list[object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _send(self.proc.stdin, (frontend, impl, backend, blob, memory, steps))
        answer = _recv(self.proc.stdout)
        assert answer is not None, "the child process died"
        ok, value = answer
        assert ok, f"the child failed: {value}"
        result: list[object] = value
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0
        self.proc.stdout.close()


def _serve() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        request = _recv(stdin)
        if request is None:
            return
        frontend, impl, kind, blob, memory, steps = request
        try:
            ctx = Context(memory)
            with make_device(frontend, impl, make_backend(kind), ctx) as dev:
                dev.load(blob)
                answer: tuple[bool, object] = (True, run(dev, ctx, steps))
        except Exception as exc:  # reported to the test
            answer = (False, repr(exc))
        _send(stdout, answer)


if __name__ == "__main__":
    _serve()
