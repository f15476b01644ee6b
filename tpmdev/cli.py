"""The ``tpmdev`` command.

``tpmdev demo`` builds a TIS device and drives it as firmware would: byte by
byte through DATA_FIFO, polling STS and honouring burstCount. It sends
TPM2_Startup, GetRandom, PCR_Extend and PCR_Read (or their TPM 1.2
counterparts) and prints what happened.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
import time
from typing import Optional
from collections.abc import Sequence

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.hw.regs import TIS_BASE_ADDRESS, TIS_REGISTERS
from tpmdev.wire import parse_header

__all__ = ["main"]

_REG_NAMES = {offset: name for name, offset in TIS_REGISTERS.items()}


def _reg_name(offset: int) -> str:
    slot = offset & 0xFFC
    if 0x80 <= slot <= 0xBC:
        slot = 0x80
    return _REG_NAMES.get(slot, f"reg {slot:#05x}")


def _open_backend(spec: str, version: int) -> Backend:
    if ":" not in spec and spec != "passthrough":
        spec = f"{spec}:{'2.0' if version == 2 else '1.2'}"
    return tpmdev.backends.open(spec)


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


def demo(backend_kind: str, version: int, out: object) -> int:
    write = out.write  # type: ignore[attr-defined]
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def trace(op: str, offset: int, size: int, value: int) -> None:
        counts[(op, _reg_name(offset))] += 1

    start = time.perf_counter()
    backend = _open_backend(backend_kind, version)
    with tpmdev.TIS(backend) as dev:
        write(
            f"tpmdev {tpmdev.__version__}: TIS at {TIS_BASE_ADDRESS:#x} "
            f"on {type(backend).__name__} ({backend_kind}), TPM {'2.0' if dev.tpm_version == 2 else '1.2'}, "
            f"{'compiled' if tpmdev.USE_EXTENSIONS else 'pure-Python'} register model\n"
        )
        write(
            f"  reset: ACCESS={dev.read(0x000, 1):#04x} STS={dev.read(0x018):#010x} "
            f"INTF_CAPABILITY={dev.read(0x014):#010x} INTERFACE_ID={dev.read(0x030):#010x} "
            f"DID_VID={dev.read(0xF00):#010x}\n"
        )
        driver = TisDriver(dev, locality=0, trace=trace)
        for label, command in _demo_commands(version):
            before = sum(counts.values())
            t0 = time.perf_counter()
            response = driver.transmit(command)
            elapsed = (time.perf_counter() - t0) * 1e6
            accesses = sum(counts.values()) - before
            write(f"\n> {label}\n")
            write(f"    command  {len(command):4d} bytes  {command.hex()}\n")
            write(f"    response {len(response):4d} bytes  {response.hex()}\n")
            write(f"    {_describe(label, response, version)}\n")
            write(f"    {accesses} register accesses, {elapsed:.0f} us\n")
    total = (time.perf_counter() - start) * 1e3
    write("\nregisters touched:\n")
    for (op, name), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        write(f"  {'read ' if op == 'r' else 'write'} {name:<20} x{n}\n")
    write(f"\ndone in {total:.1f} ms\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tpmdev", description="Register-level TPM device models")
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="drive a TIS device as firmware would and show what happens")
    p_demo.add_argument(
        "--backend",
        default="builtin",
        help="who runs the TPM commands: builtin (default), libtpms, swtpm, swtpm:CTRL_SOCKET, "
        "passthrough[:/dev/tpmN] (as tpmdev.backends.open takes them)",
    )
    p_demo.add_argument("--tpm", choices=["2.0", "2", "1.2"], default="2.0", help="TPM version (default 2.0)")
    args = parser.parse_args(argv)
    if args.command != "demo":
        parser.print_help()
        return 2
    try:
        return demo(args.backend, 1 if args.tpm == "1.2" else 2, sys.stdout)
    except tpmdev.TpmDevError as exc:
        print(f"tpmdev: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
