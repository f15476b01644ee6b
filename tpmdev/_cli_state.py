"""``tpmdev state``: save a device to a file, resume it in another process, show a state file.

* ``tpmdev state save FILE [--frontend F] [--backend B] [--tpm V] [-c CMD ...]``
  builds a device, runs the commands as its guest driver would, and writes
  the device's state (registers and TPM, :meth:`tpmdev._device.Device.save`)
  to FILE;
* ``tpmdev state load FILE [--backend B] [-c CMD ...] [--save OUT]`` builds a
  device of the kind and configuration FILE holds on a fresh backend (by
  default of the kind that saved it; Libtpms and swtpm take each other's),
  loads FILE, runs the commands, and with ``--save`` writes the new state;
* ``tpmdev state show FILE`` prints what FILE holds.

Commands (``-c``): ``startup``, ``extend=TEXT`` (SHA-256 of TEXT into PCR
16), ``pcr-read`` (PCR 16, SHA-256), ``random=N``, or a whole command in hex.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any, Callable

import tpmdev
from tpmdev import _state
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.errors import ConfigurationError, TpmDevError
from tpmdev.wire import parse_header

__all__ = ["register"]

#: CLI frontend names -> the state format's frontend kinds.
_FRONTENDS = {"tis": "TIS", "tis-sysbus": "TIS-sysbus", "tis-i2c": "TIS-I2C", "crb": "CRB", "spapr": "SPAPR"}
_BACKEND_SPECS = {"builtin": "builtin", "libtpms": "libtpms", "swtpm": "swtpm"}


def register(subparsers: Any) -> None:
    """Add ``tpmdev state`` to the ``tpmdev`` command."""
    parser = subparsers.add_parser(
        "state", help="save a device's state to a file, resume it, show a state file"
    )
    sub = parser.add_subparsers(dest="state_command", required=True)
    commands_help = "a command for the TPM: startup, extend=TEXT, pcr-read, random=N, or hex (repeatable)"

    p_save = sub.add_parser("save", help="build a device, run commands, save its state to FILE")
    p_save.add_argument("file", type=Path)
    p_save.add_argument(
        "--frontend", choices=list(_FRONTENDS), default="tis", help="the device (default tis)"
    )
    p_save.add_argument("--backend", default="builtin", help="builtin (default), libtpms, swtpm")
    p_save.add_argument("--tpm", choices=["2.0", "2", "1.2"], default="2.0", help="TPM version (default 2.0)")
    p_save.add_argument("-c", "--command", action="append", default=[], help=commands_help)
    p_save.set_defaults(func=_save)

    p_load = sub.add_parser("load", help="resume a device from FILE, run commands, optionally save again")
    p_load.add_argument("file", type=Path)
    p_load.add_argument(
        "--backend", help="a backend of a kind that can load FILE (default: the kind that saved it)"
    )
    p_load.add_argument("-c", "--command", action="append", default=[], help=commands_help)
    p_load.add_argument("--save", type=Path, help="write the state after the commands to this file")
    p_load.set_defaults(func=_load)

    p_show = sub.add_parser("show", help="print what a state file holds")
    p_show.add_argument("file", type=Path)
    p_show.set_defaults(func=_show)
    parser.set_defaults(func=lambda args: _fail(parser.format_usage()))


def _fail(message: str) -> int:
    print(f"tpmdev state: {message.strip()}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    try:
        return body(args)
    except (OSError, TpmDevError) as exc:
        print(f"tpmdev state: {exc}", file=sys.stderr)
        return 1


def _command(spec: str, version: int) -> bytes:
    name, _, arg = spec.partition("=")
    if version == 2:
        if spec == "startup":
            return C.tpm2_startup()
        if name == "extend" and arg:
            return C.tpm2_pcr_extend(16, hashlib.sha256(arg.encode()).digest())
        if spec == "pcr-read":
            return C.tpm2_pcr_read([16])
        if name == "random" and arg.isdigit():
            return C.tpm2_get_random(int(arg))
    else:
        if spec == "startup":
            return C.tpm12_startup()
        if name == "extend" and arg:
            return C.tpm12_extend(16, hashlib.sha1(arg.encode()).digest())
        if spec == "pcr-read":
            return C.tpm12_pcr_read(16)
        if name == "random" and arg.isdigit():
            return C.tpm12_get_random(int(arg))
    try:
        raw = bytes.fromhex(spec.removeprefix("hex:"))
    except ValueError:
        raise ConfigurationError(
            f"command {spec!r}: use startup, extend=TEXT, pcr-read, random=N or a command in hex"
        ) from None
    if len(raw) < 10:
        raise ConfigurationError(f"command {spec!r}: a TPM command is at least 10 bytes (a header)")
    return raw


def _backend(spec: str, version: int) -> Backend:
    if ":" not in spec and spec != "passthrough":
        spec = f"{spec}:{'2.0' if version == 2 else '1.2'}"
    return tpmdev.backends.open(spec)


class _Guest:
    """A device of one frontend kind with the guest driver that runs commands on it."""

    def __init__(self, frontend: str, backend: Backend, config: dict[str, Any]) -> None:
        from tpmdev.drivers.crb import CrbDriver
        from tpmdev.drivers.spapr import IbmvtpmDriver, SpaprPlatform
        from tpmdev.drivers.tis import TisDriver
        from tpmdev.drivers.tis_i2c import TisI2CDriver

        self.dev: Any
        self.transmit: Callable[[bytes], bytes]
        if frontend == "TIS":
            self.dev = tpmdev.TIS(backend, irq_num=config.get("irq_num", 5), ppi=config.get("ppi", True))
            self.transmit = TisDriver(self.dev).transmit
        elif frontend == "TIS-sysbus":
            self.dev = tpmdev.TISSysbus(backend, irq_num=config.get("irq_num", 5))
            self.transmit = TisDriver(self.dev).transmit
        elif frontend == "CRB":
            self.dev = tpmdev.CRB(backend, **config)
            self.transmit = CrbDriver(self.dev).transmit
        elif frontend == "TIS-I2C":
            self.dev = tpmdev.TISI2C(backend)
            self.transmit = TisI2CDriver(self.dev).transmit
        else:
            platform = SpaprPlatform()
            self.dev = tpmdev.SPAPR(
                backend,
                dma_read=platform.dma_read,
                dma_write=platform.dma_write,
                send_crq=platform.send_crq,
            )
            driver = IbmvtpmDriver(self.dev, platform)
            self.probe = driver.probe
            self.transmit = driver.transmit

    def run(self, specs: list[str], version: int) -> None:
        for spec in specs:
            command = _command(spec, version)
            response = self.transmit(command)
            rc = parse_header(response)[2]
            print(f"> {spec}")
            print(f"  response {response.hex()} (rc={rc:#x}{', success' if rc == 0 else ''})")


def _save(args: argparse.Namespace) -> int:
    return _run(args, _do_save)


def _do_save(args: argparse.Namespace) -> int:
    version = 1 if args.tpm == "1.2" else 2
    frontend = _FRONTENDS[args.frontend]
    if frontend == "TIS-I2C" and version == 1:
        return _fail("the TIS over I2C is a TPM 2.0 interface; use --tpm 2.0")
    guest = _Guest(frontend, _backend(args.backend, version), {})
    with guest.dev as dev:
        if frontend == "SPAPR":
            guest.probe()
        guest.run(args.command, version)
        blob = dev.save()
    args.file.write_bytes(blob)
    print(f"saved {len(blob)} bytes to {args.file} ({frontend} on {type(dev.backend).__name__})")
    return 0


def _load(args: argparse.Namespace) -> int:
    return _run(args, _do_load)


def _do_load(args: argparse.Namespace) -> int:
    blob = args.file.read_bytes()
    parsed = _state.parse(blob)
    spec = args.backend or _BACKEND_SPECS.get(parsed.backend)
    if spec is None:
        return _fail(
            f"{args.file} holds the state of a {parsed.info.get('backend_class')} backend: pass --backend"
        )
    guest = _Guest(parsed.frontend, _backend(spec, parsed.tpm_version), parsed.info["config"])
    with guest.dev as dev:
        dev.load(blob)
        if parsed.frontend == "SPAPR":
            guest.probe()  # (the driver's side: queue, buffer; the device state is loaded)
        print(f"loaded {args.file}: {parsed.frontend} on {type(dev.backend).__name__}")
        guest.run(args.command, parsed.tpm_version)
        if args.save is not None:
            out = dev.save()
            args.save.write_bytes(out)
            print(f"saved {len(out)} bytes to {args.save}")
    return 0


def _show(args: argparse.Namespace) -> int:
    def body(args: argparse.Namespace) -> int:
        print(_state.describe(args.file.read_bytes()))
        return 0

    return _run(args, body)
