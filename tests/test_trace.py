"""tpmdev.trace and the ``trace`` / ``replay`` commands: recording a session's
bus operations, reading it back, replaying it, and describing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import tpmdev
from tpmdev import trace
from tpmdev.backends import Builtin
from tpmdev.drivers import CrbDriver, TisDriver, TisI2CDriver
from tpmdev.drivers import commands as C
from tpmdev.hw import regs
from tpmdev.tpm_codes import command_name, response_name


def _class_of(kind: str, impl: str) -> type:
    """The device class for *kind* on the register-model variant *impl*."""
    public: dict[str, type] = {
        "tis": tpmdev.TIS,
        "tis-sysbus": tpmdev.TISSysbus,
        "crb": tpmdev.CRB,
        "tis-i2c": tpmdev.TISI2C,
    }
    cls = public[kind]
    if impl == "c":
        return cls
    core = tpmdev.hw.pure("crb").CrbCore if kind == "crb" else tpmdev.hw.pure("tis").TisCore
    return type(cls.__name__, (cls,), {"_Core": core})


@pytest.fixture(params=["tis", "tis-sysbus", "crb", "tis-i2c"])
def frontend(request: pytest.FixtureRequest, impl: str) -> tuple[str, type]:
    """(trace name, device class of the variant under test)."""
    return request.param, _class_of(request.param, impl)


def _session(kind: str, dev: Any) -> Callable[[bytes], bytes]:
    if kind == "crb":
        return CrbDriver(dev).transmit
    if kind == "tis-i2c":
        driver = TisI2CDriver(dev)
        driver.probe()
        return driver.transmit
    return TisDriver(dev).transmit


COMMANDS = [C.tpm2_startup(), C.tpm2_get_random(16), C.tpm2_pcr_extend(16, bytes(32)), C.tpm2_pcr_read([16])]


def _record(kind: str, cls: type, seed: int = 5) -> tuple[trace.Trace, list[bytes]]:
    with cls(Builtin(seed=seed)) as dev, trace.record(dev, backend="builtin", seed=seed) as recorder:
        transmit = _session(kind, dev)
        responses = [transmit(command) for command in COMMANDS]
    return recorder.trace, responses


def test_record_round_trip_and_replay(frontend: tuple[str, type]) -> None:
    kind, cls = frontend
    recorded, responses = _record(kind, cls)
    assert recorded.frontend == kind and recorded.tpm_version == 2 and recorded.seed == 5
    assert all(r[6:10] == bytes(4) for r in responses)
    text = recorded.dumps()
    assert text.startswith("#!tpmdev-trace 1\n@frontend " + kind)
    assert trace.loads(text) == recorded
    # the same device kind and the same seeded TPM answer every call alike
    with cls(Builtin(seed=5)) as dev:
        assert trace.replay(recorded, dev) == []
    # another seed: GetRandom's bytes differ, found where the guest reads them
    with cls(Builtin(seed=6)) as dev:
        [divergence] = trace.replay(recorded, dev)
    assert divergence.event.op in ("r", "R", "i2c_read", "i2c_read_reg")
    assert divergence.got != divergence.event.result and divergence.error is None
    described = list(trace.describe(recorded))
    starts = [i for i, line in enumerate(described) if ">> TPM2_GetRandom" in line]
    assert starts, described
    # the event that sent GetRandom: the last numbered line before it
    started_by = next(
        int(line[:6]) for line in reversed(described[: starts[0]]) if line[:6].strip().isdigit()
    )
    assert divergence.index > started_by


def test_replay_builds_the_recorded_device(frontend: tuple[str, type]) -> None:
    kind, cls = frontend
    recorded, _ = _record(kind, cls)
    assert trace.replay(recorded) == []  # a new device on Builtin(seed=5), compiled variant
    assert trace.replay(recorded, backend=Builtin(seed=1), stop_at_first=False)


def test_describe_names_registers_bits_and_commands(frontend: tuple[str, type]) -> None:
    kind, cls = frontend
    recorded, responses = _record(kind, cls)
    text = "\n".join(trace.describe(recorded))
    for name in ("Startup", "GetRandom", "PCR_Extend", "PCR_Read"):
        assert f">> TPM2_{name} (" in text
    assert text.count("<< TPM_RC_SUCCESS") >= 4
    assert responses[3].hex() in text  # the PCR_Read response, whole
    if kind == "crb":
        assert "TPM_LOC_CTRL" in text and "requestAccess" in text and "cmdReady" in text
        assert "TPM_CRB_CTRL_START" in text and "Start" in text
    elif kind == "tis-i2c":
        assert "TPM_I2C_STS" in text and "tpmGo" in text and "TPM_I2C_DATA_FIFO" in text
    else:
        assert "TPM_ACCESS" in text and "requestUse" in text and "activeLocality" in text
        assert "stsValid" in text and "burstCount=" in text and "Expect" in text
        assert "w L0 DATA_FIFO x" in text


def test_tpm12_commands_by_ordinal(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(tpm_version=1)) as dev, trace.record(dev) as recorder:
        TisDriver(dev).transmit(C.tpm12_startup())
        TisDriver(dev).transmit(C.tpm12_startup())  # a second Startup fails: TPM_INVALID_POSTINIT
    text = "\n".join(trace.describe(recorder.trace))
    assert ">> TPM_ORD_Startup (" in text and "<< TPM_SUCCESS" in text and "<< TPM_INVALID_POSTINIT" in text


def test_recorder_fills_defaults_keywords_and_many(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(seed=1)) as dev:
        own_read = vars(dev)["read"]
        with trace.record(dev) as recorder:
            dev.write(regs.TPM_ACCESS, regs.TPM_ACCESS_REQUEST_USE, size=1)
            sts = dev.read(regs.TPM_STS)
            dev.write(regs.TPM_STS, regs.TPM_STS_COMMAND_READY, 1)
            dev.write_many(regs.TPM_DATA_FIFO, C.tpm2_startup())
            dev.write(regs.TPM_STS, regs.TPM_STS_GO, 1)
            head = dev.read_many(regs.TPM_DATA_FIFO, 10)
            dev.reset()
        assert vars(dev)["read"] is own_read  # the device's own methods are back
        assert "reset" not in vars(dev)
    events = recorder.events
    assert events[0] == trace.Event("w", (0, 2, 1))
    assert events[1] == trace.Event("r", (0x18, 4), sts)
    assert events[3] == trace.Event("W", (0x24, C.tpm2_startup(), 1))
    assert events[5] == trace.Event("R", (0x24, 10, 1), head)
    assert events[6] == trace.Event("reset")
    assert head == bytes.fromhex("80010000000a00000000")
    with tis_class(Builtin(seed=1)) as dev:
        assert trace.replay(recorder.trace, dev) == []


def test_recorder_with_numpy_ints(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin()) as dev, trace.record(dev) as recorder:
        dev.write(np.uint32(0), np.uint8(2), np.int64(1))
    assert recorder.events == [trace.Event("w", (0, 2, 1))]
    assert "w 0x0 0x2 0x1" in recorder.trace.dumps()


def test_failed_calls_are_not_recorded(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin()) as dev, trace.record(dev) as recorder, pytest.raises(tpmdev.AccessError):
        dev.read(0x5000)
    assert recorder.events == []


def test_recorder_writes_its_file(tmp_path: Path, crb_class: type[tpmdev.CRB]) -> None:
    path = tmp_path / "s.trace"
    with crb_class(Builtin(), localities=5) as dev, trace.record(dev, path, backend="builtin") as recorder:
        dev.write(0x1008, 1)
    loaded = trace.load(path)
    assert loaded == recorder.trace and loaded.options == {"localities": 5, "address": 0xFED40000}
    assert trace.replay(loaded) == []  # rebuilt with five localities: offset 0x1008 exists


def test_spapr_and_closed_devices_are_refused() -> None:
    spapr = tpmdev.SPAPR(
        Builtin(), dma_read=lambda a, n: b"", dma_write=lambda a, d: True, send_crq=lambda e: None
    )
    with spapr, pytest.raises(tpmdev.ConfigurationError, match="no registers"):
        trace.record(spapr)
    dev = tpmdev.TIS(Builtin())
    dev.close()
    with pytest.raises(tpmdev.StateError):
        trace.record(dev)
    with tpmdev.TIS(Builtin()) as dev, pytest.raises(tpmdev.ConfigurationError, match="seed"):
        trace.record(dev, seed=-1)


def test_replay_reports_an_error_as_a_divergence() -> None:
    edited = trace.loads("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr 0x18 4 = 0x81\nr 0x9000 4 = 0\n")
    [divergence] = trace.replay(edited, stop_at_first=False)[-1:]
    assert divergence.index == 1 and isinstance(divergence.error, tpmdev.AccessError)
    assert "AccessError" in str(divergence)
    with tpmdev.CRB(Builtin()) as crb, pytest.raises(tpmdev.ConfigurationError, match="tis"):
        trace.replay(edited, crb)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a tpmdev trace"),
        ("hello\n", "not a tpmdev trace"),
        ("#!tpmdev-trace x\n", "line 1: bad format version"),
        ("#!tpmdev-trace 9\n", "format 9 is not supported"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nq 1\n", "line 4: unknown operation 'q'"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr 0x18 = 1\n", "line 4: r takes 2 argument"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr 0x18 4\n", "line 4: r needs '= RESULT'"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nw 0 1 1 = 0\n", "line 4: w returns nothing"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nW 0x24 zz 1\n", "line 4: 'zz' is not hex bytes"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr -1 4 = 0\n", "line 4: '-1' is negative"),
        ("#!tpmdev-trace 1\n@frontend tis\nreset\n@tpm-version 2\n", "line 4: header line after"),
        ("#!tpmdev-trace 1\n@frontend usb\n@tpm-version 2\n", "no known frontend"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 3\n", "tpm-version 1"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\n@colour red\n", "line 4: unknown header"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\n@option x\n", "line 4: an option is written"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\n@option x=y\n", "neither an int nor"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\n@seed q\n", "@seed 'q' is not an int"),
        ("#!tpmdev-trace 1\n@frontend crb\n@tpm-version 2\ni2c_recv = 1\n", "event 0: 'i2c_recv' is not"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\n= 0x1\n", "line 4: an event starts with"),
        (
            "#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr 0x24 9 = 0\n",
            "line 4: an access size is 1 to 8",
        ),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr 0x24 1 = 0x100\n", "0x100 does not fit in 1"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nw 0x0 0x1ff 1\n", "0x1ff does not fit in 1"),
        ("#!tpmdev-trace 1\n@frontend tis-i2c\n@tpm-version 2\ni2c_send 0x100 = 1\n", "is not a byte"),
        ("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\n@option foo=1\n", "has no option 'foo'"),
    ],
)
def test_bad_traces(text: str, message: str) -> None:
    with pytest.raises(trace.TraceError, match=message.replace("(", r"\(")) as info:
        trace.loads(text)
    assert isinstance(info.value, tpmdev.TpmDevError)


def test_comments_blank_lines_and_empty_bytes() -> None:
    text = "#!tpmdev-trace 1\n# a session\n@frontend tis-i2c\n@tpm-version 2\n\ni2c_write - = 0  # nothing\n"
    loaded = trace.loads(text)
    assert loaded.events == [trace.Event("i2c_write", (b"",), 0)]
    assert "i2c_write - = 0x0" in loaded.dumps()


def test_code_names() -> None:
    assert command_name(0x17B) == "TPM2_GetRandom"
    assert command_name(0x99, 1) == "TPM_ORD_Startup"
    assert command_name(0x1234) == "command code 0x1234"
    assert response_name(0) == "TPM_RC_SUCCESS" and response_name(0, 1) == "TPM_SUCCESS"
    assert response_name(0x100) == "TPM_RC_INITIALIZE"
    assert response_name(0x1C4) == "TPM_RC_VALUE (parameter 1)"
    assert response_name(0x184) == "TPM_RC_VALUE (handle 1)"
    assert response_name(0x98E) == "TPM_RC_AUTH_FAIL (session 1)"
    assert response_name(0x922) == "TPM_RC_RETRY"
    assert response_name(0x909) == "TPM_RC_CANCELED"
    assert response_name(0x09) == "TPM_FAIL"  # QEMU's fatal response, a TPM 1.2 code
    assert response_name(0x26, 1) == "TPM_INVALID_POSTINIT"
    assert response_name(0x7FF) == "0x7ff"


# --- the commands, run as a user runs them -------------------------------------------


def tpmdev_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("kind", ["tis", "crb", "tis-i2c"])
def test_cli_record_show_replay(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path / "s.trace")
    result = tpmdev_cli("trace", "record", "-o", path, "--frontend", kind, "--seed", "11")
    assert result.returncode == 0, result.stderr
    assert "recorded" in result.stdout and "4 commands" in result.stdout
    shown = tpmdev_cli("trace", "show", path)
    assert (
        shown.returncode == 0 and ">> TPM2_PCR_Read (" in shown.stdout and "<< TPM_RC_SUCCESS" in shown.stdout
    )
    raw = tpmdev_cli("trace", "show", "--raw", path)
    assert raw.stdout == Path(path).read_text()
    same = tpmdev_cli("replay", path)
    assert same.returncode == 0 and "no divergence" in same.stdout, same.stderr
    other = tpmdev_cli("replay", path, "--backend", "libtpms")  # another TPM: its random bytes differ
    assert other.returncode == 1 and "divergence at event" in other.stdout


def test_cli_record_commands_and_tpm12(tmp_path: Path) -> None:
    path = str(tmp_path / "s.trace")
    startup = C.tpm12_startup().hex()
    result = tpmdev_cli(
        "trace", "record", "-o", path, "--tpm", "1.2", "--command", startup, "--command", startup
    )
    assert result.returncode == 0, result.stderr
    shown = tpmdev_cli("trace", "show", path).stdout
    assert shown.count(">> TPM_ORD_Startup") == 2 and "<< TPM_INVALID_POSTINIT" in shown
    assert tpmdev_cli("replay", path, "--all").returncode == 0


def test_cli_replay_all_counts(tmp_path: Path) -> None:
    path = str(tmp_path / "s.trace")
    assert tpmdev_cli("trace", "record", "-o", path, "--seed", "1").returncode == 0
    text = Path(path).read_text().replace("@seed 1", "@seed 2")
    Path(path).write_text(text)
    result = tpmdev_cli("replay", path, "--all")
    assert result.returncode == 1 and " events diverged" in result.stdout
    assert result.stdout.count("divergence at event") > 1


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("trace",), 2, "usage: tpmdev trace"),
        (("trace", "show", "/nonexistent/t.trace"), 2, "cannot read /nonexistent/t.trace"),
        (("replay", "/nonexistent/t.trace"), 2, "cannot read"),
        (("trace", "record", "-o", "/nonexistent/dir/t.trace"), 2, "cannot write"),
        (("trace", "record", "-o", "{tmp}/x", "--backend", "nope"), 1, "unknown backend spec"),
        (
            ("trace", "record", "-o", "{tmp}/x", "--backend", "libtpms", "--seed", "1"),
            2,
            "--seed is the builtin",
        ),
        (("trace", "record", "-o", "{tmp}/x", "--command", "zz"), 2, "is not hex"),
        (
            ("trace", "record", "-o", "{tmp}/x", "--frontend", "tis-i2c", "--tpm", "1.2"),
            2,
            "TPM 2.0 interface",
        ),
        (("trace", "record"), 2, "required: -o/--output"),
    ],
)
def test_cli_errors(tmp_path: Path, args: tuple[str, ...], status: int, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tpmdev", *(a.format(tmp=tmp_path) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == status, (result.stdout, result.stderr)
    assert message in result.stderr


def test_cli_bad_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.trace"
    path.write_text("#!tpmdev-trace 1\n@frontend tis\n@tpm-version 2\nr 0x18\n")
    for args in (("trace", "show", str(path)), ("replay", str(path))):
        result = tpmdev_cli(*args)
        assert result.returncode == 2 and "line 4: r takes 2 argument" in result.stderr
    path.write_bytes(b"\xff\xfe")
    assert "not ASCII" in tpmdev_cli("replay", str(path)).stderr


@pytest.mark.parametrize("command", [("trace",), ("trace", "record"), ("trace", "show"), ("replay",)])
def test_cli_help(command: tuple[str, ...]) -> None:
    result = tpmdev_cli(*command, "--help")
    assert result.returncode == 0 and "usage: tpmdev " + " ".join(command) in result.stdout


def test_batches_are_recorded_as_their_accesses(tis_class: type[tpmdev.TIS]) -> None:
    ops = tpmdev.make_ops(
        [(tpmdev.OP_WRITE, 0x000, 1, 0x02), (tpmdev.OP_READ, 0x000, 1, 0), (tpmdev.OP_READ, 0x018, 4, 0)]
    )
    with tis_class(Builtin(seed=1)) as dev, trace.record(dev) as recorder:
        result = dev.execute(ops)
    assert recorder.events == [
        trace.Event("w", (0, 2, 1)),
        trace.Event("r", (0, 1), int(result[1])),
        trace.Event("r", (0x18, 4), int(result[2])),
    ]
    with tis_class(Builtin(seed=1)) as dev:
        assert trace.replay(recorder.trace, dev) == []


def test_asynchronous_devices_are_refused(tis_class: type[tpmdev.TIS]) -> None:
    with (
        tis_class(Builtin(), asynchronous=True) as dev,
        pytest.raises(tpmdev.ConfigurationError, match="asynchronous"),
    ):
        trace.record(dev)


def test_a_crb_elsewhere_replays_at_its_address(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(Builtin(), address=0x10000000) as dev, trace.record(dev) as recorder:
        dev.read(0x5C)  # CTRL_CMD_LADDR: the buffer's address
    assert recorder.trace.options["address"] == 0x10000000
    assert trace.replay(trace.loads(recorder.trace.dumps())) == []
