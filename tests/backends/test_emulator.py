"""tpmdev.backends.Emulator: swtpm driven as QEMU's ``-tpmdev emulator`` does.

Most tests run the real swtpm. :class:`FakeSwtpm` (conftest) stands in only
to inject faults a real swtpm does not produce: garbled, truncated or
oversized replies, missing capabilities, a data side that never answers.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tpmdev.backends import swtpm as s
from tpmdev.backends.emulator import MAX_RESPONSE_SIZE, Emulator
from tpmdev.backends.swtpm import Control
from tpmdev.errors import AccessError, BackendError, StateError
from tpmdev.wire import TPM2_READCLOCK_PROBE, is_selftest_done

pytestmark = pytest.mark.usefixtures("no_leaked_swtpm")

Spawn = Callable[..., Emulator]
Fake = Callable[..., Any]

REPO = Path(__file__).resolve().parents[2]

TPM2_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
TPM2_GETRANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
TPM2_PCR_READ_10 = bytes.fromhex("8001 00000014 0000017e 00000001 000b 03 000400")
TPM12_STARTUP_CLEAR = bytes.fromhex("00c10000000c000000990001")
TPM12_CONTINUE_SELF_TEST = bytes.fromhex("00c10000000a00000053")
TPM12_GETRANDOM_8 = bytes.fromhex("00c10000000e0000004600000008")
TPM12_TSC_RESET_ESTABLISHMENT_BIT = bytes.fromhex("00c10000000a4000000b")
TPM2_RC_SUCCESS = bytes(4)
TPM_RC_LOCALITY = 0x907
TPM_RC_CANCELED = 0x909


def tpm2_pcr_extend(pcr: int, digest: bytes = b"test".ljust(32, b"\0")) -> bytes:
    """TPM2_PCR_Extend(pcr, SHA-256 digest) with an empty password session."""
    body = struct.pack(">I", pcr) + struct.pack(">II", 9, 0x40000009) + bytes(5)
    body += struct.pack(">IH", 1, 0x000B) + digest
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x182) + body


def tpm2_create_primary_rsa2048() -> bytes:
    """TPM2_CreatePrimary of an RSA-2048 storage key under the owner hierarchy."""
    public = struct.pack(">HHIH", 0x0001, 0x000B, 0x00030072, 0)
    public += struct.pack(">HHHHHI", 0x0006, 128, 0x0043, 0x0010, 2048, 0) + struct.pack(">H", 0)
    body = struct.pack(">II", 0x40000001, 9) + struct.pack(">I", 0x40000009) + bytes(5)
    body += struct.pack(">H", 4) + bytes(4) + struct.pack(">H", len(public)) + public
    body += struct.pack(">HI", 0, 0)
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x131) + body


def tpm2_flush_context(handle: bytes) -> bytes:
    return bytes.fromhex("80010000000e00000165") + handle


def tpm12_extend(pcr: int, digest: bytes = bytes(range(20))) -> bytes:
    return struct.pack(">HIII", 0x00C1, 34, 0x14, pcr) + digest


def tpm12_pcr_read(pcr: int) -> bytes:
    return struct.pack(">HIII", 0x00C1, 14, 0x15, pcr)


def rc(response: bytes) -> int:
    return int.from_bytes(response[6:10], "big")


def pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


OK2 = bytes.fromhex("80010000000a00000000")
OK12 = bytes.fromhex("00c40000000a00000000")
PCR10_AFTER_TEST = bytes.fromhex("f68598e5868de68b97299960f2717d176789a42f9aaea8c7b7aa79a86256c1de")


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every control message any Control sends: (code, request body)."""
    calls: list[tuple[int, bytes]] = []
    original = Control.exchange

    def spy(self: Control, code: int, body: bytes, response_size: int, *, fds: tuple[int, ...] = ()) -> bytes:
        calls.append((code, body))
        return original(self, code, body, response_size, fds=fds)

    monkeypatch.setattr(Control, "exchange", spy)
    return calls


def codes(calls: list[tuple[int, bytes]]) -> list[str]:
    return [s.COMMAND_NAMES.get(code, hex(code)) for code, _ in calls]


def powered(emu: Emulator) -> Emulator:
    """QEMU's reset sequence followed by the guest's TPM(2)_Startup."""
    emu.startup(min(emu.get_buffer_size(), 4096))
    startup = TPM2_STARTUP_CLEAR if emu.tpm_version == 2 else TPM12_STARTUP_CLEAR
    assert emu.execute(startup) == (OK2 if emu.tpm_version == 2 else OK12)
    return emu


def flush_if_created(emu: Emulator, response: bytes) -> None:
    if rc(response) == 0:
        assert rc(emu.execute(tpm2_flush_context(response[10:14]))) == 0


# -- end to end ---------------------------------------------------------------
@pytest.mark.swtpm
def test_tpm2_qemu_sequence_and_commands(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = spawn(2)
    assert (emu.tpm_version, emu.capabilities) == (2, 0xFFFF)
    assert emu.pid is not None and emu.process is not None and emu.process.poll() is None
    assert codes(record) == ["SET_DATAFD", "GET_CAPABILITY"]
    record.clear()
    # What QEMU does at every machine reset.
    assert emu.get_buffer_size() == 4096
    emu.reset()
    emu.startup(4096)
    assert record == [
        (s.CMD_STOP, b""),
        (s.CMD_SET_BUFFERSIZE, bytes(4)),
        (s.CMD_STOP, b""),
        (s.CMD_SET_BUFFERSIZE, bytes.fromhex("00001000")),
        (s.CMD_INIT, bytes(4)),
    ]
    record.clear()
    # QEMU's swtpm qtest sequence.
    assert emu.execute(TPM2_STARTUP_CLEAR) == OK2
    assert emu.execute(tpm2_pcr_extend(10)) == bytes.fromhex("80020000001300000000000000000000010000")
    rsp = emu.execute(TPM2_PCR_READ_10)
    expected = bytes.fromhex(
        "80010000003e00000000000000 16 0000000100 0b03000400 000000010020".replace(" ", "")
    )
    assert len(rsp) == 62
    assert rsp[:13] == expected[:13] and rsp[14:30] == expected[14:]
    assert rsp[30:] == PCR10_AFTER_TEST
    rsp = emu.execute(TPM2_GETRANDOM_8)
    assert rsp[:12] == bytes.fromhex("800100000014000000000008") and len(rsp) == 20
    assert record == [(s.CMD_SET_LOCALITY, bytes(4))]  # first command only
    assert not is_selftest_done(TPM2_GETRANDOM_8, rsp)


@pytest.mark.swtpm
def test_tpm12_commands(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = powered(spawn(1))
    assert (emu.tpm_version, emu.capabilities) == (1, 0x7FFF)
    rsp = emu.execute(TPM12_CONTINUE_SELF_TEST)
    assert rsp == OK12 and is_selftest_done(TPM12_CONTINUE_SELF_TEST, rsp)
    rsp = emu.execute(TPM12_GETRANDOM_8)
    assert rsp[:14] == bytes.fromhex("00c400000016000000000000 0008".replace(" ", "")) and len(rsp) == 22
    extended = emu.execute(tpm12_extend(10))
    assert extended[:10] == bytes.fromhex("00c40000001e00000000")
    assert emu.execute(tpm12_pcr_read(10)) == extended
    # TPM 1.2 has no RESET_TPMESTABLISHED: nothing is sent.
    record.clear()
    emu.reset_established_flag(3)
    assert record == []
    assert emu.get_established_flag() is False


@pytest.mark.swtpm
def test_external_swtpm_not_owned(swtpm_proc: Callable[[int], Any], record: list[tuple[int, bytes]]) -> None:
    sp = swtpm_proc(2)
    with Emulator(sp.ctrl_path, timeout=5) as emu:
        assert emu.pid is None and emu.process is None
        powered(emu)
    # Closing an initialised TPM sends CMD_SHUTDOWN, as QEMU at quit.
    assert codes(record)[-1] == "SHUTDOWN"
    assert sp.process.wait(5) == 0


@pytest.mark.swtpm
def test_no_shutdown_when_never_initialised(
    swtpm_proc: Callable[[int], Any], record: list[tuple[int, bytes]]
) -> None:
    sp = swtpm_proc(1)
    emu = Emulator(sp.ctrl_path, timeout=5)
    emu.close()
    assert "SHUTDOWN" not in codes(record) and "INIT" not in codes(record)
    assert sp.process.poll() is None
    emu.close()  # idempotent


@pytest.mark.swtpm
def test_implicit_startup(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = spawn(2)
    record.clear()
    assert emu.execute(TPM2_STARTUP_CLEAR) == OK2
    assert codes(record) == ["STOP", "SET_BUFFERSIZE", "INIT", "SET_LOCALITY"]
    assert record[1] == (s.CMD_SET_BUFFERSIZE, bytes(4))  # a query: size left as it is
    record.clear()
    assert rc(emu.execute(TPM2_GETRANDOM_8)) == 0
    assert record == []


@pytest.mark.swtpm
def test_implicit_startup_before_established_flag(spawn: Spawn) -> None:
    emu = spawn(2)
    assert emu.get_established_flag() is False
    assert emu.execute(TPM2_STARTUP_CLEAR) == OK2


# -- locality -----------------------------------------------------------------
@pytest.mark.swtpm
def test_set_locality_only_on_change(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = powered(spawn(2))  # ran at locality 0
    record.clear()
    sequence = [0, 0, 3, 3, 3, 1, 1, 0, 4, 4, 2]
    for loc in sequence:
        assert rc(emu.execute(TPM2_GETRANDOM_8, loc)) == 0
    sent = [body[0] for code, body in record if code == s.CMD_SET_LOCALITY]
    assert sent == [3, 1, 0, 4, 2]
    assert all(body[1:] == bytes(3) for _, body in record)
    assert codes(record) == ["SET_LOCALITY"] * 5


@pytest.mark.swtpm
def test_locality_reaches_the_tpm(spawn: Spawn) -> None:
    emu = powered(spawn(2))
    # PCR 17 may be extended only from localities 2..4 (PC Client profile).
    assert rc(emu.execute(tpm2_pcr_extend(17), 0)) == TPM_RC_LOCALITY
    assert rc(emu.execute(tpm2_pcr_extend(17), 3)) == 0
    assert rc(emu.execute(tpm2_pcr_extend(17), 1)) == TPM_RC_LOCALITY


@pytest.mark.swtpm
def test_bad_locality(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = powered(spawn(2))
    record.clear()
    for bad in (5, 255, -1, True, "0"):
        with pytest.raises(AccessError, match="locality"):
            emu.execute(TPM2_GETRANDOM_8, bad)  # type: ignore[arg-type]
    assert record == []  # refused before anything was sent
    assert emu.failure is None
    assert rc(emu.execute(TPM2_GETRANDOM_8, 0)) == 0  # still in step


# -- established flag -----------------------------------------------------------
@pytest.mark.swtpm
def test_established_flag_cache_and_reset(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = powered(spawn(2))
    assert rc(emu.execute(TPM2_GETRANDOM_8, 4)) == 0  # swtpm now at locality 4
    for code, body in ((s.CMD_HASH_START, b""), (s.CMD_HASH_DATA, struct.pack(">I", 3) + b"abc"),
                       (s.CMD_HASH_END, b"")):  # fmt: skip
        emu.control.exchange(code, body, 4)
    record.clear()
    assert emu.get_established_flag() is True
    assert emu.get_established_flag() is True
    assert codes(record) == ["GET_TPMESTABLISHED"]  # then cached
    record.clear()
    emu.reset_established_flag(3)
    # QUIRK: the locality of the last command (4), not the requester's (3).
    assert record == [(s.CMD_RESET_TPMESTABLISHED, bytes.fromhex("04000000"))]
    assert emu.get_established_flag() is False  # asked again after a reset
    assert codes(record)[-1] == "GET_TPMESTABLISHED"


def control_hash(emu: Emulator, data: bytes) -> None:
    """A DRTM sequence sent through the control channel directly, past the backend."""
    assert rc(emu.execute(TPM2_GETRANDOM_8 if emu.tpm_version == 2 else TPM12_GETRANDOM_8, 4)) == 0
    emu.control.hash_start()
    emu.control.hash_data(data)
    emu.control.hash_end()


@pytest.mark.swtpm
def test_established_cache_dropped_by_a_control_hash_sequence(
    spawn: Spawn, record: list[tuple[int, bytes]]
) -> None:
    emu = powered(spawn(2))
    assert emu.get_established_flag() is False  # cached from here
    record.clear()
    assert emu.get_established_flag() is False
    assert record == []  # the cache answers
    control_hash(emu, b"measured")  # not through the backend: the cache must not be stale
    assert emu.get_established_flag() is True
    assert codes(record)[-1] == "GET_TPMESTABLISHED"


@pytest.mark.swtpm
def test_established_cache_dropped_by_a_machine_reset(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    # swtpm's CMD_INIT powers on from a stored volatile state, which carries
    # the flag: after a reset the flag may be another, and is asked again.
    emu = powered(spawn(2))
    emu.hash_sequence(b"launch")
    assert emu.get_established_flag() is True
    emu.store_volatile()  # the stored volatile state says "established"
    emu.reset_established_flag(4)  # last locality 4 (the hash sequence)
    assert emu.get_established_flag() is False
    assert emu.get_established_flag() is False  # cached
    emu.startup(min(emu.get_buffer_size(), 4096))  # the device's reset sequence
    record.clear()
    assert emu.get_established_flag() is True
    assert codes(record) == ["GET_TPMESTABLISHED"]


@pytest.mark.swtpm
def test_established_cache_dropped_by_a_state_load(spawn: Spawn) -> None:
    emu = powered(spawn(2))
    clear = emu.get_state()
    emu.hash_sequence(b"launch")
    established = emu.get_state()
    assert emu.get_established_flag() is True
    emu.set_state(clear)
    assert emu.get_established_flag() is False
    emu.set_state(established)
    assert emu.get_established_flag() is True


@pytest.mark.swtpm
def test_established_cache_dropped_by_tpm12_tsc_reset_establishment_bit(spawn: Spawn) -> None:
    emu = powered(spawn(1))
    emu.hash_sequence(b"launch")
    assert emu.get_established_flag() is True  # cached
    assert rc(emu.execute(TPM12_TSC_RESET_ESTABLISHMENT_BIT, 3)) == 0  # a command resets it
    assert emu.get_established_flag() is False


@pytest.mark.swtpm
def test_established_reset_refused_at_last_locality_0(
    spawn: Spawn, record: list[tuple[int, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    emu = spawn(2)
    emu.reset_established_flag(4)  # no command yet: QEMU's initial 0xFF
    assert record[-1] == (s.CMD_RESET_TPMESTABLISHED, bytes.fromhex("ff000000"))
    powered(emu)
    assert emu.get_established_flag() is False
    record.clear()
    with caplog.at_level(logging.WARNING, logger="tpmdev.backends.emulator"):
        emu.reset_established_flag(3)  # last locality 0: swtpm says 0x3D, logged
    assert record == [(s.CMD_RESET_TPMESTABLISHED, bytes(4))]
    assert "0x3D" in caplog.text
    record.clear()
    assert emu.get_established_flag() is False
    assert record == []  # a failed reset keeps the cache


# -- cancel -------------------------------------------------------------------
@pytest.mark.swtpm
def test_cancel_during_create_primary(spawn: Spawn) -> None:
    emu = powered(spawn(2))
    for delay in (0.0, 0.002, 0.01):
        results: list[bytes | BaseException] = []

        def work(results: list[bytes | BaseException] = results) -> None:
            try:
                results.append(emu.execute(tpm2_create_primary_rsa2048()))
            except BackendError as exc:  # reported below
                results.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        time.sleep(delay)
        emu.cancel()
        worker.join(10)
        assert not worker.is_alive()
        (rsp,) = results
        assert isinstance(rsp, bytes)
        assert rc(rsp) in (0, TPM_RC_CANCELED)  # swtpm 0.7.1 finishes primary keys
        flush_if_created(emu, rsp)
    assert rc(emu.execute(TPM2_GETRANDOM_8)) == 0  # the data channel is in step


@pytest.mark.swtpm
def test_cancel_idle_never_raises(spawn: Spawn) -> None:
    emu = powered(spawn(1))
    emu.cancel()  # TPM 1.2 answers TPM_FAIL when idle; logged only
    assert emu.failure is None
    assert rc(emu.execute(TPM12_GETRANDOM_8)) == 0


def test_cancel_not_blocked_by_pending_read(fake_swtpm: Fake) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=3) as emu:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                emu.execute(TPM2_GETRANDOM_8)  # the fake never answers
            except BackendError as exc:
                errors.append(exc)

        worker = threading.Thread(target=work)
        worker.start()
        while s.CMD_SET_LOCALITY not in fake.codes:
            time.sleep(0.002)
        time.sleep(0.02)
        t0 = time.monotonic()
        emu.cancel()
        assert time.monotonic() - t0 < 0.5
        assert fake.codes[-1] == s.CMD_CANCEL_TPM_CMD
        # close() from another thread wakes the blocked reader.
        t0 = time.monotonic()
        emu.close()
        worker.join(5)
        assert time.monotonic() - t0 < 1.0
        assert len(errors) == 1 and isinstance(errors[0], BackendError)
        assert "closed" in str(errors[0])


# -- faults with the real swtpm -----------------------------------------------
@pytest.mark.swtpm
def test_sigkill_mid_command(spawn: Spawn) -> None:
    emu = powered(spawn(2, timeout=5.0))
    pid = emu.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # make sure the command is in flight
    errors: list[BaseException] = []

    def work() -> None:
        try:
            emu.execute(tpm2_create_primary_rsa2048())
        except BackendError as exc:
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    worker.join(10)
    elapsed = time.monotonic() - t0
    assert len(errors) == 1 and isinstance(errors[0], BackendError), errors
    assert elapsed < 1.0  # end of stream, well before the 5 s timeout
    # End of stream or ECONNRESET (our unread command died with swtpm).
    assert "closed the connection" in str(errors[0]) or "reset by peer" in str(errors[0])
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="failed earlier"):
        emu.execute(TPM2_GETRANDOM_8)
    assert time.monotonic() - t0 < 0.05
    t0 = time.monotonic()
    emu.close()
    assert time.monotonic() - t0 < 1.0
    assert emu.process is None and not pid_alive(pid)


@pytest.mark.swtpm
def test_sigstop_times_out(spawn: Spawn) -> None:
    emu = powered(spawn(2, timeout=0.5))
    pid = emu.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"within 0.5 s"):
            emu.execute(TPM2_GETRANDOM_8)
        elapsed = time.monotonic() - t0
        assert 0.45 <= elapsed < 0.8
        assert emu.failure is not None
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="failed earlier"):
            emu.execute(TPM2_GETRANDOM_8)
        assert time.monotonic() - t0 < 0.05
        emu.cancel()  # control times out too: logged, bounded
    finally:
        os.kill(pid, signal.SIGCONT)
    t0 = time.monotonic()
    emu.close()
    assert time.monotonic() - t0 < 3.0
    assert emu.process is None and not pid_alive(pid)


@pytest.mark.swtpm
def test_close_while_stopped_is_bounded(spawn: Spawn) -> None:
    emu = powered(spawn(2, timeout=0.5))
    pid = emu.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    emu.close()  # SHUTDOWN times out, then SIGTERM + SIGCONT
    assert time.monotonic() - t0 < 0.5 + 2.5
    assert not pid_alive(pid)


@pytest.mark.swtpm
def test_spawn_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="apt-get install swtpm"):
        Emulator.spawn(tmp_path, swtpm="swtpm-that-does-not-exist")
    with pytest.raises(BackendError, match="apt-get install swtpm"):
        Emulator.spawn(tmp_path, swtpm=str(tmp_path / "swtpm"))


@pytest.mark.swtpm
def test_spawn_swtpm_exits_early(swtpm_bin: str, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"exited with status \d+.*no-such-option"):
        Emulator.spawn(tmp_path, extra_args=["--no-such-option"])


@pytest.mark.swtpm
def test_spawn_long_state_dir(swtpm_bin: str, tmp_path: Path) -> None:
    long_dir = tmp_path / ("d" * 60) / ("e" * 60)
    with Emulator.spawn(long_dir, 2, timeout=5) as emu:
        assert emu.process is not None
        args = emu.process.args
        assert isinstance(args, list)
        ctrl_arg = next(a for a in args if str(a).startswith("type=unixio"))
        ctrl_path = str(ctrl_arg).split("path=", 1)[1]
        assert len(ctrl_path.encode()) <= 107 and not ctrl_path.startswith(str(long_dir))
        assert os.path.exists(ctrl_path)
        powered(emu)
    assert not os.path.exists(os.path.dirname(ctrl_path))
    assert any(long_dir.iterdir())  # the TPM state went to the long dir


@pytest.mark.swtpm
def test_spawn_log_file(spawn: Spawn, tmp_path: Path) -> None:
    log_file = tmp_path / "swtpm.log"
    emu = powered(spawn(2, log_file=log_file, log_level=20))
    emu.close()
    assert log_file.stat().st_size > 0


@pytest.mark.swtpm
def test_spawn_refuses_comma_in_path(swtpm_bin: str, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="containing ','"):
        Emulator.spawn(tmp_path / "a,b")


def test_spawn_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Emulator.spawn(tmp_path, 3)
    with pytest.raises(ValueError):
        Emulator.spawn(tmp_path, timeout=0)


def test_connect_failure(short_dir: Path) -> None:
    with pytest.raises(BackendError, match="cannot connect"):
        Emulator(short_dir / "nothing-here")


# -- lifetime -------------------------------------------------------------------
@pytest.mark.swtpm
def test_closed_backend(spawn: Spawn) -> None:
    emu = powered(spawn(2))
    pid = emu.pid
    assert pid is not None
    with emu as entered:
        assert entered is emu
    assert emu.closed and emu.process is None and emu.pid is None
    assert not pid_alive(pid)
    with pytest.raises(StateError):
        emu.execute(TPM2_GETRANDOM_8)
    with pytest.raises(StateError):
        emu.get_buffer_size()
    with pytest.raises(StateError):
        emu.startup(4096)
    emu.cancel()  # nothing to cancel
    emu.close()


@pytest.mark.swtpm
def test_unreferenced_emulator_is_reaped(swtpm_bin: str, tmp_path: Path) -> None:
    emu = Emulator.spawn(tmp_path, 2, timeout=5)
    pid = emu.pid
    assert pid is not None and pid_alive(pid)
    del emu
    gc.collect()
    assert not pid_alive(pid)


@pytest.mark.swtpm
def test_no_swtpm_survives_the_interpreter(swtpm_bin: str, tmp_path: Path) -> None:
    code = (
        "import sys; from tpmdev.backends.emulator import Emulator\n"
        "emu = Emulator.spawn(sys.argv[1], 2, timeout=5)\n"
        "emu.startup(4096); emu.execute(bytes.fromhex('80010000000c000001440000'))\n"
        "print(emu.pid, flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    assert out.stderr == ""
    pid = int(out.stdout)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(pid)


_HOST = """
import sys, time
from tpmdev.backends.emulator import Emulator
emu = Emulator.spawn(None if sys.argv[1] == "private" else sys.argv[1], 2, timeout=10)
emu.startup(4096)
emu.execute(bytes.fromhex("80010000000c000001440000"))
print(emu.pid, emu._res.guard.pid, emu.state_dir, emu._res.ctrl_path, flush=True)
time.sleep(600)
"""


@pytest.mark.swtpm
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("where", ["private", "given"])
def test_spawned_swtpm_ends_with_its_host(tmp_path: Path, how: signal.Signals, where: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    state_arg = "private" if where == "private" else str(tmp_path / "state")
    host = subprocess.Popen(
        [sys.executable, "-c", _HOST, state_arg], stdout=subprocess.PIPE, text=True, env=env
    )  # fmt: skip
    try:
        assert host.stdout is not None
        pid_text, guard_text, state_dir, ctrl_path = host.stdout.readline().split()
        pid, guard = int(pid_text), int(guard_text)
        assert pid_alive(pid) and pid_alive(guard) and os.path.exists(ctrl_path)
        host.send_signal(how)  # the host never gets to close its Emulator
        assert host.wait(10) == -how
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
            pid_alive(pid) or pid_alive(guard) or os.path.exists(ctrl_path)
            or (where == "private" and os.path.exists(state_dir))
        ):  # fmt: skip
            time.sleep(0.05)
        assert not pid_alive(pid), "swtpm outlived its host"
        assert not pid_alive(guard)
        assert not os.path.exists(ctrl_path)
        if where == "private":
            assert not os.path.exists(state_dir), "the private state directory outlived the host"
        else:
            assert os.path.isfile(os.path.join(state_dir, "tpm2-00.permall"))  # the TPM's state stays
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
        if host.stdout is not None:
            host.stdout.close()


@pytest.mark.swtpm
def test_guard_leaves_when_the_emulator_closes(spawn: Spawn) -> None:
    emu = spawn(2)
    guard = emu._res.guard
    assert guard is not None and guard.poll() is None
    emu.close()
    assert guard.returncode == 0  # told "done" and waited for: no zombie, nothing left running


# -- faults with a fake data side ------------------------------------------------
def test_garbled_header_too_small(fake_swtpm: Fake) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=2) as emu:
        fake.data.sendall(bytes.fromhex("8001 00000006 00000000"))
        with pytest.raises(BackendError, match="announcing 6 bytes"):
            emu.execute(TPM2_GETRANDOM_8)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="failed earlier"):
            emu.execute(TPM2_GETRANDOM_8)
        assert time.monotonic() - t0 < 0.05


@pytest.mark.parametrize("size", [MAX_RESPONSE_SIZE + 1, 0xFFFFFFFF])
def test_oversized_header(fake_swtpm: Fake, size: int) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=2) as emu:
        fake.data.sendall(struct.pack(">HII", 0x8001, size, 0))
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=f"announcing {size} bytes"):
            emu.execute(TPM2_GETRANDOM_8)
        assert time.monotonic() - t0 < 0.5
        assert emu.failure is not None


def test_largest_accepted_response(fake_swtpm: Fake) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=2) as emu:
        big = struct.pack(">HII", 0x8001, MAX_RESPONSE_SIZE, 0) + bytes(MAX_RESPONSE_SIZE - 10)
        threading.Thread(target=fake.data.sendall, args=(big,)).start()
        assert emu.execute(TPM2_GETRANDOM_8) == big


def test_truncated_reply_then_close(fake_swtpm: Fake) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=2) as emu:

        def peer() -> None:  # take the command, answer half, hang up
            # The version probe was never read: skip it, then the command.
            want = len(TPM2_READCLOCK_PROBE) + len(TPM2_GETRANDOM_8)
            assert len(fake.data.recv(want, socket.MSG_WAITALL)) == want
            fake.data.sendall(struct.pack(">HII", 0x8001, 30, 0) + bytes(10))
            fake.data.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=peer).start()
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"closed the connection.*10 of 20"):
            emu.execute(TPM2_GETRANDOM_8)
        assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("partial", ["", "8001000000", "80010000001e00000000 0000"])
def test_truncated_reply_then_stall(fake_swtpm: Fake, partial: str) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=0.3) as emu:
        fake.data.sendall(bytes.fromhex(partial.replace(" ", "")))
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"within 0.3 s"):
            emu.execute(TPM2_GETRANDOM_8)
        assert 0.25 <= time.monotonic() - t0 < 0.8


def test_trickling_reply_is_bounded_by_one_timeout(fake_swtpm: Fake) -> None:
    """A response arriving a byte at a time, each within the timeout, still
    fails once the whole exchange has taken the timeout."""
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=0.6) as emu:
        stop = threading.Event()

        def trickle() -> None:
            for byte in struct.pack(">HII", 0x8001, 30, 0) + bytes(20):
                if stop.wait(0.15):
                    return
                fake.data.sendall(bytes([byte]))

        thread = threading.Thread(target=trickle)
        thread.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(BackendError, match=r"within 0.6 s"):
                emu.execute(TPM2_GETRANDOM_8)
            assert time.monotonic() - t0 < 0.6 + 0.3
        finally:
            stop.set()
            thread.join()


def test_commands_refused_before_sending(fake_swtpm: Fake) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=2) as emu:
        with pytest.raises(BackendError, match="shorter than a header"):
            emu.execute(TPM2_GETRANDOM_8[:9])
        emu.get_buffer_size()  # the fake says 4096
        with pytest.raises(BackendError, match="exceeds the buffer size 4096"):
            emu.execute(struct.pack(">HII", 0x8001, 4097, 0x17B) + bytes(4087))
        assert emu.failure is None  # nothing went out: still in step
        fake.data.sendall(OK2)
        assert emu.execute(TPM2_STARTUP_CLEAR) == OK2


def test_missing_capabilities(fake_swtpm: Fake) -> None:
    fake = fake_swtpm(caps=s.PTM_CAP_INIT | s.PTM_CAP_SHUTDOWN | s.PTM_CAP_GET_TPMESTABLISHED
                      | s.PTM_CAP_SET_LOCALITY | s.PTM_CAP_CANCEL_TPM_CMD)  # fmt: skip
    with pytest.raises(BackendError, match="RESET_TPMESTABLISHED, STOP, SET_DATAFD, SET_BUFFERSIZE"):
        Emulator(fake.path, timeout=2)


def test_version_probe_unanswered(fake_swtpm: Fake) -> None:
    fake = fake_swtpm(probe_answer=None)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="version probe"):
        Emulator(fake.path, timeout=0.3)
    assert time.monotonic() - t0 < 1.0
