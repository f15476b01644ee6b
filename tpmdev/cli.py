"""The ``tpmdev`` command.

``tpmdev demo`` builds a device (``--frontend``: the ISA TIS by default, the
sysbus TIS, the TIS over I2C, the CRB or the sPAPR vTPM) and drives it as a
guest driver would: the TIS byte by byte through DATA_FIFO, polling STS and
honouring burstCount; the CRB, TIS over I2C and sPAPR as Linux's
``tpm_crb``, ``tpm_tis_i2c`` and ``tpm_ibmvtpm`` do (:mod:`tpmdev.drivers`).
It sends TPM2_Startup, GetRandom, PCR_Extend and PCR_Read (or their TPM 1.2
counterparts) and prints what happened and the bus operations it took.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
import time
from typing import Any, Callable, Optional, TypeVar
from collections.abc import Sequence

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev._device import Device
from tpmdev._frontends import FRONTENDS
from tpmdev._cli_acpi import register as register_acpi
from tpmdev._cli_bench import register as register_bench
from tpmdev._cli_eventlog import register as register_eventlog
from tpmdev._cli_fuzz import register as register_fuzz
from tpmdev._cli_serve import register as register_serve
from tpmdev._cli_state import register as register_state
from tpmdev._cli_tcti import register as register_tcti
from tpmdev._cli_trace import register as register_trace
from tpmdev.drivers.crb import CrbDriver
from tpmdev.drivers.spapr import IbmvtpmDriver, SpaprPlatform
from tpmdev.drivers.tis import TisDriver
from tpmdev.drivers.tis_i2c import TisI2CDriver
from tpmdev.hw.regs import (
    CRB_BASE_ADDRESS,
    CRB_REGISTERS,
    TIS_REGISTERS,
    TPM_CRB_DATA_BUFFER,
    TPM_I2C_DID_VID,
    TPM_I2C_INTERFACE_CAPABILITY,
    TPM_I2C_REGISTERS,
)
from tpmdev.wire import parse_header

__all__ = ["main"]

_REG_NAMES = {offset: name for name, offset in TIS_REGISTERS.items()}


def _reg_name(offset: int) -> str:
    slot = offset & 0xFFC
    if 0x80 <= slot <= 0xBC:
        slot = 0x80
    return _REG_NAMES.get(slot, f"reg {slot:#05x}")


def _demo_commands(version: int) -> list[tuple[str, bytes]]:
    measurement = hashlib.sha256(b"tpmdev demo").digest()
    if version == 2:
        return [
            ("TPM2_Startup(SU_CLEAR)", C.tpm2_startup()),
            ("TPM2_GetRandom(16)", C.tpm2_get_random(16)),
            ("TPM2_PCR_Extend(PCR 16, sha256)", C.tpm2_pcr_extend(16, measurement)),
            ("TPM2_PCR_Read(PCR 16, sha256)", C.tpm2_pcr_read([16])),
        ]
    measurement = hashlib.sha1(b"tpmdev demo").digest()
    return [
        ("TPM_Startup(ST_CLEAR)", C.tpm12_startup()),
        ("TPM_GetRandom(16)", C.tpm12_get_random(16)),
        ("TPM_Extend(PCR 16)", C.tpm12_extend(16, measurement)),
        ("TPM_PcrRead(PCR 16)", C.tpm12_pcr_read(16)),
    ]


def _describe(label: str, response: bytes, version: int) -> str:
    rc = parse_header(response)[2]
    text = f"rc={rc:#x}" + (" (success)" if rc == 0 else "")
    if rc != 0:
        return text
    if "GetRandom" in label:
        return text + f", random bytes {C.decode_get_random(response, version).hex()}"
    if "PCR_Read" in label:
        counter, digests = C.decode_pcr_read(response)
        return text + f", pcrUpdateCounter={counter}, PCR 16 = {digests[0].hex() if digests else '?'}"
    if "Extend" in label or "PcrRead" in label:
        if version == 1:
            return text + f", PCR 16 = {C.decode_tpm12_digest(response).hex()}"
    return text


_I2C_REG_NAMES = {addr: name for name, addr in TPM_I2C_REGISTERS.items()}
_CRB_REG_NAMES = {addr: name for name, addr in CRB_REGISTERS.items()}


def _crb_reg_name(offset: int) -> str:
    if offset >= TPM_CRB_DATA_BUFFER:
        return "TPM_CRB_DATA_BUFFER"
    return _CRB_REG_NAMES.get(offset & 0xFFC, f"reg {offset & 0xFFC:#05x}")


class _Session:
    """One frontend joined to a backend, with the driver a guest would use.

    ``lines`` describe the device after reset; ``transmit`` runs one command;
    ``count`` files every bus operation under a name (register, I2C register
    or CRQ message) for the closing summary.
    """

    def __init__(self, frontend: str, backend: Backend, counts: collections.Counter[tuple[str, str]]) -> None:
        self.counts = counts
        self.dev: Device
        self.lines: list[str] = []
        self.where = ""
        if frontend in ("tis", "tis-sysbus"):
            cls = tpmdev.TIS if frontend == "tis" else tpmdev.TISSysbus
            tis = cls(backend)
            self.dev, self.where = tis, f" at {cls.base_address:#x}"
            self.lines.append(
                f"ACCESS={tis.read(0x000, 1):#04x} STS={tis.read(0x018):#010x} "
                f"INTF_CAPABILITY={tis.read(0x014):#010x} INTERFACE_ID={tis.read(0x030):#010x} "
                f"DID_VID={tis.read(0xF00):#010x}"
            )
            self.transmit = TisDriver(tis, locality=0, trace=self._mmio(_reg_name)).transmit
        elif frontend == "crb":
            crb = tpmdev.CRB(backend)
            self.dev, self.where = crb, f" at {CRB_BASE_ADDRESS:#x}"
            self.lines.append(
                f"LOC_STATE={crb.read(0x00):#010x} CTRL_STS={crb.read(0x44):#010x} "
                f"INTF_ID={crb.read(0x30, 8):#018x} CMD_SIZE={crb.read(0x58):#x}"
            )
            self.transmit = CrbDriver(crb, trace=self._mmio(_crb_reg_name)).transmit
        elif frontend == "tis-i2c":
            i2c = tpmdev.TISI2C(backend)
            self.dev = i2c
            driver = TisI2CDriver(i2c, trace=self._i2c)
            driver.probe()
            self.lines.append(
                f"INTERFACE_CAPABILITY={driver.read_int(TPM_I2C_INTERFACE_CAPABILITY, 4):#010x} "
                f"DID_VID={driver.read_int(TPM_I2C_DID_VID, 4):#010x} (Linux's tpm_tis_i2c probe done)"
            )
            self.transmit = driver.transmit
        else:
            platform = SpaprPlatform()
            spapr = tpmdev.SPAPR(
                backend,
                dma_read=self._crq_counted("dma_read", platform.dma_read),
                dma_write=self._crq_counted("dma_write", platform.dma_write),
                send_crq=self._crq_counted("send_crq", platform.send_crq),
            )
            self.dev = spapr
            guest = IbmvtpmDriver(_CountedCrq(spapr, counts), platform)
            guest.probe()
            self.lines.append(
                f"vTPM version {guest.vtpm_version}, RTCE buffer {guest.rtce_size} bytes "
                f"(Linux's tpm_ibmvtpm probe done)"
            )
            self.transmit = guest.transmit

    def _mmio(self, name: Callable[[int], str]) -> Callable[[str, int, int, int], None]:
        def trace(op: str, offset: int, size: int, value: int) -> None:
            self.counts[(op, name(offset))] += 1

        return trace

    def _i2c(self, op: str, data: bytes) -> None:
        # A register read is an address write, then a read transfer (counted once,
        # with the address); a register write is one transfer with the data.
        if op == "w" and data:
            name = _I2C_REG_NAMES.get(data[0], f"reg {data[0]:#04x}")
            self.counts[("r" if len(data) == 1 else "w", name)] += 1

    def _crq_counted(self, name: str, fn: Callable[..., _T]) -> Callable[..., _T]:
        def call(*args: Any) -> _T:
            self.counts[("w" if name != "dma_read" else "r", name)] += 1
            return fn(*args)

        return call


_T = TypeVar("_T")


class _CountedCrq:
    """The SPAPR device seen by the guest driver, H_SEND_CRQ counted."""

    def __init__(self, dev: Any, counts: collections.Counter[tuple[str, str]]) -> None:
        self._dev = dev
        self._counts = counts

    def receive_crq(self, entry: bytes) -> int:
        self._counts[("w", "H_SEND_CRQ")] += 1
        return int(self._dev.receive_crq(entry))


def demo(backend_kind: str, version: int, out: object, frontend: str = "tis") -> int:
    write = out.write  # type: ignore[attr-defined]
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    start = time.perf_counter()
    backend = tpmdev.backends.open(backend_kind, tpm_version=version)
    try:
        session = _Session(frontend, backend, counts)
    except BaseException:
        backend.close()
        raise
    with session.dev as dev:
        write(
            f"tpmdev {tpmdev.__version__}: {FRONTENDS[frontend]}{session.where} "
            f"on {type(backend).__name__} ({backend_kind}), TPM {'2.0' if dev.tpm_version == 2 else '1.2'}, "
            f"{'compiled' if tpmdev.USE_EXTENSIONS else 'pure-Python'} register model\n"
        )
        for line in session.lines:
            write(f"  reset: {line}\n")
        for label, command in _demo_commands(version):
            before = sum(counts.values())
            t0 = time.perf_counter()
            response = session.transmit(command)
            elapsed = (time.perf_counter() - t0) * 1e6
            accesses = sum(counts.values()) - before
            write(f"\n> {label}\n")
            write(f"    command  {len(command):4d} bytes  {command.hex()}\n")
            write(f"    response {len(response):4d} bytes  {response.hex()}\n")
            write(f"    {_describe(label, response, version)}\n")
            write(f"    {accesses} bus operations, {elapsed:.0f} us\n")
    total = (time.perf_counter() - start) * 1e3
    write("\nbus operations:\n")
    for (op, name), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        write(f"  {'read ' if op == 'r' else 'write'} {name:<28} x{n}\n")
    write(f"\ndone in {total:.1f} ms\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tpmdev", description="Register-level TPM device models")
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="drive a TPM device as a guest driver would and show what happens")
    p_demo.add_argument(
        "--backend",
        default="builtin",
        help="who runs the TPM commands: builtin (default), libtpms, swtpm, swtpm:CTRL_SOCKET, "
        "passthrough[:/dev/tpmN] (as tpmdev.backends.open takes them)",
    )
    p_demo.add_argument("--tpm", choices=["2.0", "2", "1.2"], default="2.0", help="TPM version (default 2.0)")
    p_demo.add_argument(
        "--frontend",
        choices=list(FRONTENDS),
        default="tis",
        help="the device the guest sees: " + ", ".join(f"{k} = {v}" for k, v in FRONTENDS.items()),
    )
    register_acpi(sub)
    register_eventlog(sub)
    register_tcti(sub)
    register_serve(sub)
    register_trace(sub)
    register_state(sub)
    register_fuzz(sub)
    register_bench(sub)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is not None:  # subcommands in their own modules (tpmdev/_cli_*.py)
        try:
            return int(func(args))
        except tpmdev.TpmDevError as exc:
            print(f"tpmdev: {exc}", file=sys.stderr)
            return 1
    if args.command != "demo":
        parser.print_help()
        return 2
    version = 1 if args.tpm == "1.2" else 2
    if args.frontend == "tis-i2c" and version == 1:
        print(
            "tpmdev: the TIS over I2C is a TPM 2.0 interface (as QEMU's tpm-tis-i2c); use --tpm 2.0",
            file=sys.stderr,
        )
        return 2
    try:
        return demo(args.backend, version, sys.stdout, args.frontend)
    except tpmdev.TpmDevError as exc:
        print(f"tpmdev: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
