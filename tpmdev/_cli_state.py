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

Commands (``-c``): ``startup``, ``extend=TEXT`` (the digest of TEXT into
PCR 16: SHA-256 on a TPM 2.0, SHA-1 on a TPM 1.2), ``pcr-read`` (PCR 16; its
SHA-256 bank on a TPM 2.0), ``random=N`` (N bytes, 0..65535, ASCII digits), or
a whole command in hex.
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
from tpmdev.errors import ConfigurationError, StateError, TpmDevError
from tpmdev.hw.regs import CRB_BASE_ADDRESS
from tpmdev.wire import parse_header

__all__ = ["register"]

#: CLI frontend names -> the state format's frontend kinds.
_FRONTENDS = {"tis": "TIS", "tis-sysbus": "TIS-sysbus", "tis-i2c": "TIS-I2C", "crb": "CRB", "spapr": "SPAPR"}
_BACKEND_SPECS = {"builtin": "builtin", "libtpms": "libtpms", "swtpm": "swtpm"}
#: The configuration options a state file may carry, per frontend (the
#: devices' ``_state_config``), and those of them the device's constructor takes.
_CONFIG_KEYS = {
    "TIS": ("irq_num", "ppi"),
    "TIS-sysbus": ("irq_num", "ppi"),
    "TIS-I2C": (),
    "CRB": ("localities", "address", "ppi"),
    "SPAPR": (),
}
#: The largest ``random=N`` (the commands' 16-bit count).
_RANDOM_MAX = 0xFFFF


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


def _fail(message: str) -> int:
    print(f"tpmdev state: {message.strip()}", file=sys.stderr)
    return 2


class _UsageError(Exception):
    """A command-line argument that makes no sense (exit status 2)."""


def _run(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    try:
        return body(args)
    except _UsageError as exc:
        return _fail(str(exc))
    except (OSError, TpmDevError) as exc:
        print(f"tpmdev state: {exc}", file=sys.stderr)
        return 1


def _count(spec: str, arg: str) -> int:
    """The N of ``random=N``: ASCII digits, 0..65535."""
    if not (arg.isascii() and arg.isdigit()):
        raise _UsageError(
            f"command {spec!r}: random=N takes a byte count in decimal digits (0..{_RANDOM_MAX})"
        )
    n = int(arg)
    if n > _RANDOM_MAX:
        raise _UsageError(f"command {spec!r}: random=N asks for at most {_RANDOM_MAX} bytes, got {n}")
    return n


def _command(spec: str, version: int) -> bytes:
    name, _, arg = spec.partition("=")
    if version == 2:
        if spec == "startup":
            return C.tpm2_startup()
        if name == "extend" and arg:
            return C.tpm2_pcr_extend(16, hashlib.sha256(arg.encode()).digest())
        if spec == "pcr-read":
            return C.tpm2_pcr_read([16])
        if name == "random":
            return C.tpm2_get_random(_count(spec, arg))
    else:
        if spec == "startup":
            return C.tpm12_startup()
        if name == "extend" and arg:
            return C.tpm12_extend(16, hashlib.sha1(arg.encode()).digest())
        if spec == "pcr-read":
            return C.tpm12_pcr_read(16)
        if name == "random":
            return C.tpm12_get_random(_count(spec, arg))
    try:
        raw = bytes.fromhex(spec.removeprefix("hex:"))
    except ValueError:
        raise ConfigurationError(
            f"command {spec!r}: use startup, extend=TEXT, pcr-read, random=N or a command in hex"
        ) from None
    if len(raw) < 10:
        raise ConfigurationError(f"command {spec!r}: a TPM command is at least 10 bytes (a header)")
    return raw


class _Guest:
    """A device of one frontend kind and the guest driver that runs commands on it."""

    def __init__(self, frontend: str, backend: Backend, config: dict[str, Any]) -> None:
        from tpmdev.drivers.spapr import SpaprPlatform

        known = _CONFIG_KEYS[frontend]
        unknown = sorted(set(config) - set(known))
        if unknown:
            backend.close()
            raise StateError(
                f"the state's {frontend} configuration has options this tpmdev does not know: "
                f"{', '.join(map(repr, unknown))} (known: {', '.join(known) or 'none'})"
            )
        self.dev: Any
        self._driver: Any = None
        if frontend == "TIS":
            self.dev = tpmdev.TIS(backend, irq_num=config.get("irq_num", 5), ppi=config.get("ppi", True))
        elif frontend == "TIS-sysbus":
            self.dev = tpmdev.TISSysbus(backend, irq_num=config.get("irq_num", 5))
        elif frontend == "CRB":
            self.dev = tpmdev.CRB(
                backend,
                localities=config.get("localities", 1),
                address=config.get("address", CRB_BASE_ADDRESS),
                ppi=config.get("ppi", True),
            )
        elif frontend == "TIS-I2C":
            self.dev = tpmdev.TISI2C(backend)
        else:
            platform = SpaprPlatform()
            self.dev = tpmdev.SPAPR(
                backend,
                dma_read=platform.dma_read,
                dma_write=platform.dma_write,
                send_crq=platform.send_crq,
            )

    def attach(self) -> None:
        """Bind (and probe) the guest driver, as the guest's kernel would."""
        from tpmdev.drivers import for_device

        self._driver = for_device(self.dev)

    def run(self, specs: list[str], version: int) -> None:
        for spec in specs:
            command = _command(spec, version)
            response = self._driver.transmit(command)
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
    guest = _Guest(frontend, tpmdev.backends.open(args.backend, tpm_version=version), {})
    with guest.dev as dev:
        guest.attach()
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
    guest = _Guest(
        parsed.frontend, tpmdev.backends.open(spec, tpm_version=parsed.tpm_version), parsed.info["config"]
    )
    with guest.dev as dev:
        dev.load(blob)
        guest.attach()  # (the driver's side: probe, SPAPR queue and buffer; the device state is loaded)
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
