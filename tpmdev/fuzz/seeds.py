"""The seed corpus: meaningful inputs for every fuzz target, in each target's own format.

Most seeds are recordings of real guest sessions: a driver of
:mod:`tpmdev.drivers` (written as Linux, EDK2 and SeaBIOS drive the
interfaces) runs TPM2_Startup, GetRandom, PCR_Read and more against a device
on the seeded builtin TPM, and every register access or bus transfer it made
is written down in the target's encoding. Replaying a seed therefore replays
the session exactly (the harness builds the same seeded TPM). A few seeds are
written by hand for what drivers never do: interrupts enabled, a command
aborted half way, a locality seized, a reset while a response waits, bad DMA.

:func:`corpus` gives ``{target: {name: bytes}}``; :func:`write_corpus` writes
it as ``DIR/<target>/<name>``. The repository's copy (``tests/fuzz/corpus``)
is made by ``python tests/fuzz/make_corpus.py`` and checked against this
module by the tests.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import tpmdev
from tpmdev.backends import Builtin
from tpmdev.drivers import commands as C
from tpmdev.drivers.crb import CrbDriver
from tpmdev.drivers.tis import TisDriver
from tpmdev.drivers.tis_i2c import TisI2CDriver
from tpmdev.fuzz import builtin as _builtin
from tpmdev.fuzz import crb as _crb
from tpmdev.fuzz import spapr as _spapr
from tpmdev.fuzz import tis as _tis
from tpmdev.fuzz import tis_i2c as _tis_i2c
from tpmdev.fuzz._mmio import MmioEncoder
from tpmdev.hw.regs import (
    TPM_ACCESS,
    TPM_ACCESS_ACTIVE_LOCALITY,
    TPM_ACCESS_REQUEST_USE,
    TPM_ACCESS_SEIZE,
    TPM_CRB_CTRL_REQ,
    TPM_CRB_CTRL_REQ_CMD_READY,
    TPM_CRB_CTRL_START,
    TPM_CRB_DATA_BUFFER,
    TPM_DATA_FIFO,
    TPM_INT_ENABLE,
    TPM_INT_STATUS,
    TPM_STS,
    TPM_STS_COMMAND_READY,
    TPM_STS_GO,
    TPM_STS_RESPONSE_RETRY,
    TPM_LOC_CTRL,
    TPM_LOC_CTRL_REQUEST_ACCESS,
)
from tpmdev.hw.spapr import (
    SPAPR_VTPM_GET_RTCE_BUFFER_SIZE,
    SPAPR_VTPM_GET_VERSION,
    SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT,
    SPAPR_VTPM_INIT_CRQ_RESULT,
    SPAPR_VTPM_PREPARE_TO_SUSPEND,
    SPAPR_VTPM_TPM_COMMAND,
    SPAPR_VTPM_VALID_COMMAND,
    SPAPR_VTPM_VALID_INIT_CRQ_COMMAND,
)

__all__ = ["TARGET_SEEDS", "corpus", "write_corpus", "session_commands"]

Access = tuple[str, int, int, int]

_MEASUREMENT = hashlib.sha256(b"tpmdev seed").digest()
_MEASUREMENT12 = hashlib.sha1(b"tpmdev seed").digest()
_NV_INDEX = 0x01500000


def session_commands(version: int) -> list[bytes]:
    """A boot's worth of commands: start-up, random bytes, a measurement, PCR reads."""
    if version == 1:
        return [
            C.tpm12_startup(),
            C.tpm12_get_random(16),
            C.tpm12_extend(10, _MEASUREMENT12),
            C.tpm12_pcr_read(10),
        ]
    return [
        C.tpm2_startup(),
        C.tpm2_get_random(16),
        C.tpm2_pcr_read([0]),
        C.tpm2_pcr_extend(16, _MEASUREMENT),
        C.tpm2_pcr_read([16]),
    ]


def _more_tpm2_commands() -> list[bytes]:
    return [
        C.tpm2_startup(),
        C.tpm2_get_capability(C.TPM_CAP_TPM_PROPERTIES, 0x100, 8),
        C.tpm2_hash(b"abc"),
        C.tpm2_pcr_event(16, b"event data"),
        C.tpm2_nv_define_space(_NV_INDEX, 32),
        C.tpm2_nv_write(_NV_INDEX, b"0123456789abcdef"),
        C.tpm2_nv_read(_NV_INDEX, 16),
        C.tpm2_nv_read_public(_NV_INDEX),
        C.tpm2_nv_undefine_space(_NV_INDEX),
        C.tpm2_shutdown(),
    ]


# -- recording --------------------------------------------------------------------------
def _record_mmio(
    make: Callable[[], tpmdev.TIS | tpmdev.CRB],
    drive: Callable[[object, Callable[[str, int, int, int], None]], None],
) -> list[Access]:
    accesses: list[Access] = []

    def trace(op: str, offset: int, size: int, value: int) -> None:
        accesses.append((op, offset, size, value))

    with make() as dev:
        drive(dev, trace)
    return accesses


def _tis_session(version: int, commands: list[bytes], locality: int = 0, sysbus: bool = False) -> bytes:
    cls = tpmdev.TISSysbus if sysbus else tpmdev.TIS

    def drive(dev: object, trace: Callable[[str, int, int, int], None]) -> None:
        driver = TisDriver(dev, locality, trace=trace)  # type: ignore[arg-type]
        for command in commands:
            driver.transmit(command)

    config = (_tis.CONFIG_TPM12 if version == 1 else 0) | (_tis.CONFIG_SYSBUS if sysbus else 0)
    return MmioEncoder(config).trace(_record_mmio(lambda: cls(Builtin(version, seed=0)), drive)).bytes()


def _tis_seeds() -> dict[str, bytes]:
    startup = C.tpm2_startup()
    seeds = {
        "tpm2-session": _tis_session(2, session_commands(2)),
        "tpm12-session": _tis_session(1, session_commands(1)),
        "tpm2-sysbus-session": _tis_session(2, session_commands(2), sysbus=True),
        "tpm2-locality3": _tis_session(2, session_commands(2)[:3], locality=3),
        "tpm2-more-commands": _tis_session(2, _more_tpm2_commands()),
    }
    loc1 = 1 << 12
    # interrupts on (global enable, dataAvail, localityChange, commandReady), a command,
    # the status read and acknowledged
    seeds["tpm2-interrupts"] = (
        MmioEncoder(0)
        .write(TPM_INT_ENABLE, 0x80000087)
        .write(TPM_ACCESS, TPM_ACCESS_REQUEST_USE, 1)
        .read(TPM_INT_STATUS)
        .write(TPM_INT_STATUS, 0xFFFFFFFF)
        .write(TPM_STS, TPM_STS_COMMAND_READY, 1)
        .write_many(TPM_DATA_FIFO, startup)
        .write(TPM_STS, TPM_STS_GO, 1)
        .read(TPM_INT_STATUS)
        .read(TPM_STS)
        .read_many(TPM_DATA_FIFO, 10)
        .write(TPM_STS, TPM_STS_RESPONSE_RETRY, 1)
        .read_many(TPM_DATA_FIFO, 4)
        .write(TPM_INT_STATUS, 0x87)
        .write(TPM_ACCESS, TPM_ACCESS_ACTIVE_LOCALITY, 1)
        .read(TPM_INT_STATUS)
        .bytes()
    )
    # half a command, aborted with commandReady; another locality seizes; reset with a response waiting
    seeds["tpm2-abort-seize-reset"] = (
        MmioEncoder(0)
        .write(TPM_ACCESS, TPM_ACCESS_REQUEST_USE, 1)
        .write(TPM_STS, TPM_STS_COMMAND_READY, 1)
        .write_many(TPM_DATA_FIFO, startup[:6])
        .read(TPM_STS)
        .write(TPM_STS, TPM_STS_COMMAND_READY, 1)
        .write_many(TPM_DATA_FIFO, startup)
        .write(TPM_STS, TPM_STS_GO, 1)
        .write(loc1 + TPM_ACCESS, TPM_ACCESS_SEIZE, 1)
        .read(loc1 + TPM_ACCESS, 1)
        .read(TPM_ACCESS, 1)
        .write(loc1 + TPM_STS, TPM_STS_COMMAND_READY, 1)
        .write_many(loc1 + TPM_DATA_FIFO, C.tpm2_get_random(8))
        .write(loc1 + TPM_STS, TPM_STS_GO, 1)
        .read(loc1 + TPM_STS)
        .reset()
        .read(TPM_ACCESS, 1)
        .read_many(loc1 + TPM_DATA_FIFO, 12)
        .poll()
        .bytes()
    )
    # a command longer than the buffer, word writes to the FIFO, the interface registers
    seeds["tpm2-overflow-wide"] = (
        MmioEncoder(0)
        .write(TPM_ACCESS, TPM_ACCESS_REQUEST_USE, 1)
        .read(0x14)
        .read(0xF00)
        .write(TPM_STS, TPM_STS_COMMAND_READY, 1)
        .write(TPM_DATA_FIFO, int.from_bytes(bytes.fromhex("80010000"), "little"))
        .write(TPM_DATA_FIFO, int.from_bytes(bytes.fromhex("11000000"), "little"))
        .write_many(TPM_DATA_FIFO, bytes(range(256)) * 17)
        .read(TPM_STS)
        .write(TPM_STS, TPM_STS_GO, 1)
        .read_many(TPM_DATA_FIFO, 40, 4)
        .read(0x80, 4)
        .bytes()
    )
    return seeds


def _crb_session(
    version: int, commands: list[bytes], style: str, localities: int = 1, locality: int = 0
) -> bytes:
    def drive(dev: object, trace: Callable[[str, int, int, int], None]) -> None:
        driver = CrbDriver(dev, locality, style=style, trace=trace)  # type: ignore[arg-type]
        for command in commands:
            driver.transmit(command)

    config = (_crb.CONFIG_TPM12 if version == 1 else 0) | (_crb.CONFIG_LOCALITIES5 if localities == 5 else 0)
    accesses = _record_mmio(lambda: tpmdev.CRB(Builtin(version, seed=0), localities=localities), drive)
    return MmioEncoder(config).trace(accesses).bytes()


def _crb_seeds() -> dict[str, bytes]:
    startup = C.tpm2_startup()
    seeds = {
        "tpm2-linux-session": _crb_session(2, session_commands(2), "linux"),
        "tpm2-edk2-session": _crb_session(2, session_commands(2), "edk2"),
        "tpm12-linux-session": _crb_session(1, session_commands(1), "linux"),
        "tpm2-five-localities": _crb_session(2, session_commands(2)[:3], "linux", localities=5, locality=2),
        "tpm2-more-commands": _crb_session(2, _more_tpm2_commands(), "linux"),
    }
    # CTRL_START with no locality, then a command written as bytes, started twice; 8-byte accesses
    seeds["tpm2-start-unassigned"] = (
        MmioEncoder(0)
        .write(TPM_CRB_CTRL_START, 1)
        .write(TPM_LOC_CTRL, TPM_LOC_CTRL_REQUEST_ACCESS)
        .write(TPM_CRB_CTRL_REQ, TPM_CRB_CTRL_REQ_CMD_READY)
        .write_many(TPM_CRB_DATA_BUFFER, startup)
        .write(TPM_CRB_CTRL_START, 1)
        .write(TPM_CRB_CTRL_START, 1)
        .read(TPM_CRB_CTRL_START)
        .read(0x60, 8)
        .read(0x68, 8)
        .write(0x60, 0xFFFFFFFFFFFFFFFF, 8)
        .read_many(TPM_CRB_DATA_BUFFER, 10)
        .reset()
        .read(TPM_CRB_DATA_BUFFER, 8)
        .bytes()
    )
    return seeds


def _appender(transfers: list[tuple[str, bytes]]) -> Callable[[str, bytes], None]:
    def trace(op: str, data: bytes) -> None:
        transfers.append((op, data))

    return trace


def _tis_i2c_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, commands in (
        ("tpm2-session", session_commands(2)),
        ("tpm2-more-commands", _more_tpm2_commands()),
    ):
        transfers: list[tuple[str, bytes]] = []
        with tpmdev.TISI2C(Builtin(2, seed=0)) as dev:
            driver = TisI2CDriver(dev, sleep=lambda s: None, trace=_appender(transfers))
            driver.probe()
            for command in commands:
                driver.transmit(command)
        seeds[name] = _tis_i2c.I2CEncoder(0).trace(transfers).bytes()
    # byte-level bus events: select the ACCESS register, request the locality, read STS
    # with a repeated START, a FIFO write, a NAKed address and a fifth value byte
    e = _tis_i2c.I2CEncoder(0)
    e.start().send(0x04).send(TPM_ACCESS_REQUEST_USE).stop()
    e.start().send(0x04).start(recv=True).recv().nack().stop()
    e.start().send(0x18).send(TPM_STS_COMMAND_READY).stop()
    e.start().send(0x24)
    for byte in C.tpm2_startup():
        e.send(byte)
    e.stop()
    e.start().send(0x18).send(TPM_STS_GO).stop()
    e.read_reg(0x18, 4).read_reg(0x24, 10).read_reg(0x2C, 2)
    e.start().send(0x7F).stop()
    e.start().send(0x18).send(1).send(2).send(3).send(4).send(5).stop()
    e.start(recv=True).recv().recv().stop()
    e.reset().read_reg(0x00, 1)
    seeds["tpm2-bus-events"] = e.bytes()
    return seeds


def _spapr_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    ioba = _spapr.BUFFER_IOBA
    for version in (2, 1):
        e = _spapr.CrqEncoder(_spapr.CONFIG_TPM12 if version == 1 else 0)
        e.crq(SPAPR_VTPM_VALID_INIT_CRQ_COMMAND, SPAPR_VTPM_INIT_CRQ_RESULT)
        e.crq(SPAPR_VTPM_VALID_INIT_CRQ_COMMAND, SPAPR_VTPM_INIT_CRQ_COMPLETE_RESULT)
        e.crq(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_GET_VERSION)
        e.crq(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_GET_RTCE_BUFFER_SIZE)
        for command in session_commands(version):
            e.command(command)
        e.crq(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_PREPARE_TO_SUSPEND).consume()
        seeds[f"tpm{'2' if version == 2 else '12'}-session"] = e.bytes()
    # a command from an unmapped buffer (copy-in error), one from a buffer that ends in an
    # unmapped page, a header claiming more than was written, a raw entry with reserved bytes
    e = _spapr.CrqEncoder(0)
    e.command(C.tpm2_startup())
    e.toggle_map()
    e.crq(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_TPM_COMMAND, 12, ioba)
    e.toggle_map()
    e.ram(0xFF0, C.tpm2_get_random(16))
    e.tpm_command(12)
    e.crq(SPAPR_VTPM_VALID_COMMAND, SPAPR_VTPM_TPM_COMMAND, 12, ioba + 0x1FF0, reserved=0x0123456789ABCDEF)
    e.ram(0, bytes.fromhex("8001 00000fff 0000017b 0010"))
    e.tpm_command(12)
    e.crq(0x80, 0x7F).crq(0x00, 0x00).crq(0xC0, 0x05).reset().poll()
    seeds["tpm2-dma-faults"] = e.bytes()
    return seeds


def _builtin_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    seeds["tpm2-session"] = _builtin.CommandEncoder(0).commands(session_commands(2)).bytes()
    seeds["tpm12-session"] = (
        _builtin.CommandEncoder(_builtin.CONFIG_TPM12).commands(session_commands(1)).bytes()
    )
    seeds["tpm2-more-commands"] = _builtin.CommandEncoder(0).commands(_more_tpm2_commands()).bytes()
    e = _builtin.CommandEncoder(_builtin.CONFIG_STARTUP)
    e.command(C.tpm2_pcr_extend(17, _MEASUREMENT), locality=4)
    e.command(C.tpm2_pcr_reset(17), locality=4)
    e.command(C.tpm2_nv_define_space(_NV_INDEX, 8))
    e.save_restore()
    e.command(C.tpm2_nv_read_public(_NV_INDEX))
    e.command(C.tpm2_shutdown(1))
    e.power_cycle()
    e.command(C.tpm2_startup(1), locality=3)
    e.command(C.tpm2_pcr_read([0, 16, 17]))
    seeds["tpm2-localities-state-power"] = e.bytes()
    e = _builtin.CommandEncoder(_builtin.CONFIG_TPM12 | _builtin.CONFIG_STARTUP)
    e.command(C.tpm12_extend(10, _MEASUREMENT12)).save_restore().command(C.tpm12_pcr_read(10))
    e.power_cycle().commands(session_commands(1)[1:])
    seeds["tpm12-state-power"] = e.bytes()
    return seeds


#: Target name -> the function that makes its seeds.
TARGET_SEEDS: dict[str, Callable[[], dict[str, bytes]]] = {
    "tis": _tis_seeds,
    "crb": _crb_seeds,
    "tis_i2c": _tis_i2c_seeds,
    "spapr": _spapr_seeds,
    "builtin": _builtin_seeds,
}


def corpus(targets: list[str] | None = None) -> dict[str, dict[str, bytes]]:
    """``{target: {seed name: input bytes}}`` for *targets* (all by default)."""
    return {name: TARGET_SEEDS[name]() for name in (targets or list(TARGET_SEEDS))}


def write_corpus(directory: str, targets: list[str] | None = None) -> dict[str, int]:
    """Write the seeds as ``directory/<target>/<name>``; returns how many per target."""
    counts = {}
    for target, seeds in corpus(targets).items():
        os.makedirs(os.path.join(directory, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(directory, target, name), "wb") as f:
                f.write(data)
        counts[target] = len(seeds)
    return counts
