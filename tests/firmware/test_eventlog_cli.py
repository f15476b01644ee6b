"""``tpmdev eventlog``, run as a user runs it (a subprocess), error paths included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_eventlog_devices import boot, start
from test_eventlog_format import LEGACY_EVENTS, LINUX_EVENTS, expected_pcrs, legacy_log, linux_log

import tpmdev
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.firmware import eventlog as E


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", "eventlog", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(tmp_path: Path, data: bytes, name: str = "binary_bios_measurements") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_linux_log_decoded(tmp_path: Path) -> None:
    result = run(write(tmp_path, linux_log()))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    records = 1 + len(LINUX_EVENTS)
    assert lines[0] == f"TCG event log: crypto agile (TCG_PCR_EVENT2), banks sha1, sha256, {records} records"
    assert lines[1] == "[0] PCR 0  EV_NO_ACTION"
    assert lines[2] == "    sha1  " + "00" * 20
    assert lines[3] == (
        "    data  Spec ID Event03: platformClass 0 (client), spec 2.0 errata 0, uintnSize 2 (UINT64), "
        "digest sizes sha1 20, sha256 32, vendorInfo (none)"
    )
    log = E.parse(linux_log())
    separator = log.events[8]
    assert lines[lines.index("[8] PCR 7  EV_SEPARATOR") + 1 :][:3] == [
        f"    sha1    {separator.digests['sha1'].hex()}",
        f"    sha256  {separator.digests['sha256'].hex()}",
        "    data  00000000 (4 bytes)",
    ]
    out = result.stdout
    assert "[1] PCR 0  EV_S_CRTM_VERSION\n" in out
    assert "data  UEFI variable 8be4df61-93ca-11d2-aa0d-00e098032b8c:'SecureBoot', 1 bytes: 00\n" in out
    assert "data  UEFI variable d719b2cb-3d3a-4596-a3bc-dad00e67656f:'dbx', 0 bytes\n" in out
    assert "data  'Calling EFI Application from Boot Option'\n" in out
    assert "EV_EFI_BOOT_SERVICES_APPLICATION\n" in out and "EV_EFI_PLATFORM_FIRMWARE_BLOB\n" in out
    assert "PCR values" not in out


def test_replay_shows_pcr_values(tmp_path: Path) -> None:
    result = run("--replay", write(tmp_path, linux_log()))
    assert result.returncode == 0, result.stderr
    tail = result.stdout.split("\nPCR values the log implies:\n")[1].splitlines()
    expected = expected_pcrs(LINUX_EVENTS, {"sha1": "sha1", "sha256": "sha256"})
    want = []
    for bank, pcrs in expected.items():
        want.append(f"  {bank}:")
        want += [f"    PCR {pcr:2d}  {value.hex()}" for pcr, value in pcrs.items()]
    assert tail == want


def test_legacy_log(tmp_path: Path) -> None:
    result = run(write(tmp_path, legacy_log()), "--replay")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(
        f"TCG event log: legacy SHA-1 (TCG_PCClientPCREvent), {len(LEGACY_EVENTS)} records\n"
    )
    assert "[0] PCR 0  EV_S_CRTM_CONTENTS\n    sha1  " in out
    assert "data  'SeaBIOS'\n" in out and "[11] PCR 4  EV_IPL\n" in out
    expected = expected_pcrs([(p, t, d, d) for p, t, d in LEGACY_EVENTS], {"sha1": "sha1"})["sha1"]
    for pcr, value in expected.items():
        assert f"    PCR {pcr:2d}  {value.hex()}\n" in out


def test_replay_of_a_device_log_equals_pcr_read(tmp_path: Path) -> None:
    with tpmdev.TIS(tpmdev.backends.Builtin()) as dev:
        start(dev)
        builder = E.EventLogBuilder(dev, startup_locality=0)
        boot(builder)
        path = write(tmp_path, builder.to_bytes(pad_to=0x10000), "log-area")
        driver = TisDriver(dev)
        read = {
            bank: {pcr: C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([pcr], E.bank_alg(bank))))[1][0]}
            for bank in ("sha1", "sha256")
            for pcr in (0, 7)
        }
    result = run("--padded", "--replay", path)
    assert result.returncode == 0, result.stderr
    assert "data  StartupLocality 0\n" in result.stdout
    assert "PCR values the log implies (StartupLocality 0):\n" in result.stdout
    for bank, pcrs in read.items():
        section = result.stdout.split(f"  {bank}:\n")[1]
        for pcr, value in pcrs.items():
            assert f"    PCR {pcr:2d}  {value.hex()}\n" in section
    # without --padded the zeros are records, and not whole ones
    result = run(path)
    assert result.returncode == 1 and "is not a valid event log" in result.stderr


def test_errors(tmp_path: Path) -> None:
    missing = run(str(tmp_path / "nothing"))
    assert missing.returncode == 1 and missing.stdout == ""
    nothing = tmp_path / "nothing"
    assert missing.stderr == f"tpmdev eventlog: cannot read {nothing}: No such file or directory\n"
    directory = run(str(tmp_path))
    assert directory.returncode == 1 and "Is a directory" in directory.stderr
    data = linux_log()
    truncated = run(write(tmp_path, data[:-5]))
    assert truncated.returncode == 1 and truncated.stdout == ""
    assert (
        f"is not a valid event log: event log record {len(LINUX_EVENTS)} (at byte offset" in truncated.stderr
    )
    assert "event at byte offset" in truncated.stderr and "truncated" in truncated.stderr
    inconsistent = bytearray(data)
    inconsistent[60:62] = b"\x99\x00"  # the Spec ID table's sha1 entry becomes algorithm 0x0099
    result = run(write(tmp_path, bytes(inconsistent), "bad"))
    assert result.returncode == 1
    assert "digests[0].hashAlg" in result.stderr and "not in the Spec ID event's table" in result.stderr
    for bad in (missing, directory, truncated, result):
        assert "Traceback" not in bad.stderr
    usage = run()
    assert usage.returncode == 2 and "usage:" in usage.stderr
