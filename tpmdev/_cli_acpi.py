"""``tpmdev acpi DIRECTORY``: write what QEMU hands firmware about a TPM.

Builds the chosen frontend (``--frontend tis|tis-sysbus|crb``) with the
chosen settings on the built-in TPM (no TPM process is needed: the tables
depend only on the device's configuration and TPM version) and writes to
*DIRECTORY*:

* the ACPI tables, one binary file per signature: ``TPM2.dat`` or
  ``TCPA.dat`` (when QEMU builds one) and ``SSDT.dat`` (the device AML in
  the scope QEMU puts it in);
* ``tpm-device.aml``: the device object alone (``dev.aml()``, the bytes
  QEMU places in its DSDT);
* the fw_cfg files under their fw_cfg names: ``fw_cfg/etc/tpm/config``
  (PC platforms with PPI) and ``fw_cfg/etc/tpm/log``.

``--disassemble`` runs ACPICA's ``iasl -d`` on every table (``*.dsl`` next
to the binaries) and fails if iasl is missing or reports an error or a
warning. Exit status: 0 done, 1 iasl missing or unhappy or the directory
not writable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

import tpmdev
from tpmdev.errors import ConfigurationError, TpmDevError
from tpmdev.firmware import acpi, tpm_aml

__all__ = ["register", "run", "write_firmware_files", "FRONTENDS"]

#: ``--frontend`` choices -> what the summary calls them
FRONTENDS = {
    "tis": "TIS (tpm-tis, ISA, q35)",
    "tis-sysbus": "TIS on sysbus (tpm-tis-device, Arm virt)",
    "crb": "CRB (tpm-crb, q35)",
}

DEVICE_AML_FILE = "tpm-device.aml"
FW_CFG_DIR = "fw_cfg"

_IASL_COMPLAINT = re.compile(r"error|warning", re.IGNORECASE)
#: seconds one ``iasl -d`` may take (it takes well under one on these tables)
_IASL_TIMEOUT = 60.0


def _address(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer (decimal or 0x-hex): {text!r}") from None


def register(subparsers: Any) -> None:
    """Add the ``acpi`` subcommand to the ``tpmdev`` parser."""
    p = subparsers.add_parser(
        "acpi",
        help="write the ACPI tables, device AML and fw_cfg files of a TPM frontend to a directory",
        description="Write the ACPI tables (TPM2 or TCPA, an SSDT with the device AML), the device AML "
        "and the fw_cfg files (etc/tpm/config, etc/tpm/log) QEMU would give firmware for a TPM "
        "frontend with the given settings.",
    )
    p.add_argument("directory", type=Path, help="where to write the files (created if missing)")
    p.add_argument(
        "--frontend",
        choices=list(FRONTENDS),
        default="tis",
        help="the device: " + ", ".join(f"{k} = {v}" for k, v in FRONTENDS.items()) + " (default tis)",
    )
    p.add_argument(
        "--tpm-version", choices=["1", "2", "1.2", "2.0"], default="2", help="TPM version (default 2)"
    )
    p.add_argument(
        "--no-ppi",
        action="store_true",
        help="no Physical Presence Interface (QEMU's ppi=off; the sysbus TIS never has one)",
    )
    p.add_argument(
        "--log-address",
        type=_address,
        default=0,
        help="guest-physical address of the event-log area, written to the log table's LASA "
        "(default 0, as in QEMU's blob before the firmware's loader patches it)",
    )
    p.add_argument("--oem-id", default=acpi.DEFAULT_OEM_ID, help="6 characters (default 'BOCHS ')")
    p.add_argument(
        "--oem-table-id", default=acpi.DEFAULT_OEM_TABLE_ID, help="8 characters (default 'BXPC    ')"
    )
    p.add_argument(
        "--disassemble", action="store_true", help="also run iasl -d on every table (Debian: acpica-tools)"
    )
    p.set_defaults(func=run)


def _make_device(frontend: str, version: int, ppi: bool) -> Any:
    # The built-in TPM: nothing to start, and the device presents the forced version.
    # A device that fails to build closes the backend it was to own (tpmdev._device).
    backend = tpmdev.backends.open(f"builtin:{'2.0' if version == 2 else '1.2'}")
    if frontend == "tis":
        return tpmdev.TIS(backend, tpm_version=version, ppi=ppi)
    if frontend == "crb":
        return tpmdev.CRB(backend, tpm_version=version, ppi=ppi)
    return tpmdev.TISSysbus(backend, tpm_version=version)


def write_firmware_files(
    directory: Path,
    dev: Any,
    *,
    log_address: int = 0,
    oem_id: str = acpi.DEFAULT_OEM_ID,
    oem_table_id: str = acpi.DEFAULT_OEM_TABLE_ID,
) -> dict[str, Path]:
    """Write *dev*'s tables, device AML and fw_cfg files under *directory*;
    returns what each file holds (``TPM2``, ``SSDT``, ``aml``, ``etc/tpm/log``, ...)
    -> its path. Arguments are checked before anything is written."""
    tables = dev.acpi_tables(log_address=log_address, oem_id=oem_id, oem_table_id=oem_table_id)
    files = dev.fw_cfg_files()
    aml = dev.aml()
    out: dict[str, Path] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for sig, table in tables.items():
        out[sig] = directory / f"{sig}.dat"
        out[sig].write_bytes(table)
    out["aml"] = directory / DEVICE_AML_FILE
    out["aml"].write_bytes(aml)
    for name, data in files.items():
        path = directory.joinpath(FW_CFG_DIR, *name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[name] = path
    return out


def _is_table(what: str) -> bool:
    """Whether a key of :func:`write_firmware_files`'s result is an ACPI signature."""
    return len(what) == 4 and what.isalnum() and what.isupper()


def _disassemble(path: Path, err: TextIO) -> bool:
    """``iasl -d`` of one table; False (and the complaint on *err*) if iasl is unhappy."""
    iasl = shutil.which("iasl")
    assert iasl is not None
    try:
        proc = subprocess.run(
            [iasl, "-d", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=_IASL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        err.write(
            f"tpmdev acpi: iasl -d {path.name} did not finish within {_IASL_TIMEOUT:g} s "
            f"(stopped); check the iasl found on PATH ({iasl})\n"
        )
        return False
    output = proc.stdout + proc.stderr
    complaints = [line for line in output.splitlines() if _IASL_COMPLAINT.search(line)]
    if proc.returncode != 0 or complaints:
        err.write(f"tpmdev acpi: iasl -d {path.name} (exit status {proc.returncode}):\n")
        for line in complaints or output.splitlines()[-10:]:
            err.write(f"  {line}\n")
        return False
    return True


def run(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    # (the streams of the moment: a caller may have replaced sys.stdout / sys.stderr)
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    version = 1 if args.tpm_version in ("1", "1.2") else 2
    ppi = not args.no_ppi and args.frontend != "tis-sysbus"
    if args.disassemble and shutil.which("iasl") is None:
        err.write("tpmdev acpi: --disassemble needs ACPICA's iasl on PATH (Debian/Ubuntu: acpica-tools)\n")
        return 1
    try:
        dev = _make_device(args.frontend, version, ppi)
    except TpmDevError as exc:
        err.write(f"tpmdev acpi: {exc}\n")
        return 1
    with dev:
        try:
            written = write_firmware_files(
                args.directory,
                dev,
                log_address=args.log_address,
                oem_id=args.oem_id,
                oem_table_id=args.oem_table_id,
            )
        except ConfigurationError as exc:
            err.write(f"tpmdev acpi: {exc}\n")
            return 2
        except OSError as exc:
            err.write(f"tpmdev acpi: cannot write to {args.directory}: {exc}\n")
            return 1
        where = f"{tpm_aml.device_scope(dev)}.{tpm_aml.device_name(dev)}"
    out.write(
        f"tpmdev acpi: {FRONTENDS[args.frontend]}, TPM {'2.0' if version == 2 else '1.2'}, "
        f"PPI {'on' if ppi else 'off'}, device {where}\n"
    )
    for what, path in written.items():
        data = path.read_bytes()
        if _is_table(what):
            note = (
                f"  ACPI table, revision {data[8]}, checksum {'valid' if acpi.checksum(data) == 0 else 'BAD'}"
            )
        elif what == "aml":
            note = "  the device object (DSDT AML)"
        else:
            note = f"  fw_cfg {what}"
        out.write(f"  {path}  {len(data)} bytes{note}\n")
    if args.disassemble:
        tables = [path for what, path in written.items() if _is_table(what)]
        if not all([_disassemble(path, err) for path in tables]):
            return 1
        for path in tables:
            out.write(f"  {path.with_suffix('.dsl')}  (iasl -d)\n")
    return 0
