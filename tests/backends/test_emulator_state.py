"""Emulator: state blobs (QEMU's migration), the spawn options, other data channels.

Everything here runs the real swtpm: state fetched from one swtpm is loaded
into a fresh one on another state directory, which must then answer with the
same PCRs. Fake swtpm executables stand in only to show how options a binary
lacks are refused.
"""

from __future__ import annotations

import hashlib
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tpmdev.backends import swtpm as s
from tpmdev.backends.emulator import Emulator
from tpmdev.backends.swtpm import Control, ControlError, StateBlob, binary_features
from tpmdev.errors import BackendError, ConfigurationError, StateError

pytestmark = pytest.mark.usefixtures("no_leaked_swtpm")

Spawn = Callable[..., Emulator]

TPM2_STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
TPM2_SHUTDOWN_STATE = bytes.fromhex("80010000000c000001450001")
TPM2_GETRANDOM_8 = bytes.fromhex("80010000000c0000017b0008")
TPM12_STARTUP_CLEAR = bytes.fromhex("00c10000000c000000990001")
TPM12_GETRANDOM_8 = bytes.fromhex("00c10000000e0000004600000008")
TPM_RC_INITIALIZE = 0x100
TPM_INVALID_POSTINIT = 0x26
KEY1 = "00112233445566778899aabbccddeeff"
KEY2 = "ffeeddccbbaa99887766554433221100"


def rc(response: bytes) -> int:
    return int.from_bytes(response[6:10], "big")


def tpm2_pcr_extend(pcr: int, digest: bytes) -> bytes:
    body = struct.pack(">I", pcr) + struct.pack(">II", 9, 0x40000009) + bytes(5)
    body += struct.pack(">IH", 1, 0x000B) + digest
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x182) + body


def tpm2_pcr_read(*pcrs: int) -> bytes:
    mask = sum(1 << p for p in pcrs).to_bytes(3, "little")
    body = struct.pack(">IHB", 1, 0x000B, 3) + mask
    return struct.pack(">HII", 0x8001, 10 + len(body), 0x17E) + body


def tpm12_extend(pcr: int, digest: bytes) -> bytes:
    return struct.pack(">HIII", 0x00C1, 34, 0x14, pcr) + digest


def tpm12_pcr_read(pcr: int) -> bytes:
    return struct.pack(">HIII", 0x00C1, 14, 0x15, pcr)


def powered(emu: Emulator) -> Emulator:
    emu.startup(min(emu.get_buffer_size(), 4096))
    startup = TPM2_STARTUP_CLEAR if emu.tpm_version == 2 else TPM12_STARTUP_CLEAR
    assert rc(emu.execute(startup)) == 0
    return emu


def extend_and_read(emu: Emulator) -> bytes:
    """Extend PCRs 10 and 16 a few times; return a PCR_Read of both (TPM 1.2: of 10)."""
    if emu.tpm_version == 2:
        for i in range(3):
            assert rc(emu.execute(tpm2_pcr_extend(10, bytes([i]) * 32))) == 0
            assert rc(emu.execute(tpm2_pcr_extend(16, bytes([i + 7]) * 32))) == 0
        return emu.execute(tpm2_pcr_read(10, 16))
    for i in range(3):
        assert rc(emu.execute(tpm12_extend(10, bytes([i]) * 20))) == 0
    return emu.execute(tpm12_pcr_read(10))


def pcr_read(emu: Emulator) -> bytes:
    return emu.execute(tpm2_pcr_read(10, 16) if emu.tpm_version == 2 else tpm12_pcr_read(10))


def getrandom(emu: Emulator) -> bytes:
    return emu.execute(TPM2_GETRANDOM_8 if emu.tpm_version == 2 else TPM12_GETRANDOM_8)


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every control message any Control sends: (code, request body)."""
    calls: list[tuple[int, bytes]] = []
    original = Control.transact

    def spy(self: Control, code: int, body: bytes, read: Any, *, fds: tuple[int, ...] = ()) -> Any:
        calls.append((code, body))
        return original(self, code, body, read, fds=fds)

    monkeypatch.setattr(Control, "transact", spy)
    return calls


def names(calls: list[tuple[int, bytes]]) -> list[str]:
    return [s.COMMAND_NAMES[code] for code, _ in calls]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    k1, k2 = tmp_path / "key1", tmp_path / "key2"
    k1.write_text(KEY1)
    k2.write_text(KEY2)
    return k1, k2


# -- save and restore ----------------------------------------------------------------
@pytest.mark.swtpm
@pytest.mark.parametrize("version", [2, 1])
def test_state_moves_to_a_fresh_swtpm(spawn: Spawn, record: list[tuple[int, bytes]], version: int) -> None:
    src = powered(spawn(version))
    before = extend_and_read(src)
    assert rc(before) == 0
    record.clear()
    state = src.get_state()
    assert names(record) == ["GET_STATEBLOB"] * 3
    # flags DECRYPTED, type 1, 2, 3, offset 0
    assert [body for _, body in record] == [struct.pack(">III", 1, t, 0) for t in (1, 2, 3)]
    assert set(state) == {"permanent", "volatile", "savestate"}
    assert len(state["permanent"]) > 1000 and len(state["volatile"]) > 1000
    assert state["savestate"] == b""  # result 0x800: no TPM2_Shutdown(STATE) / SaveState
    assert pcr_read(src) == before  # the source keeps running

    dst = spawn(version)  # another state directory, never started
    record.clear()
    dst.set_state(state)
    assert record == [
        (s.CMD_STOP, b""),
        (s.CMD_SET_STATEBLOB, struct.pack(">III", 0, 1, len(state["permanent"])) + state["permanent"]),
        (s.CMD_SET_STATEBLOB, struct.pack(">III", 0, 2, len(state["volatile"])) + state["volatile"]),
        (s.CMD_INIT, struct.pack(">I", s.PTM_INIT_FLAG_DELETE_VOLATILE)),
    ]
    # No TPM(2)_Startup: the TPM resumes with the source's PCRs.
    assert pcr_read(dst) == before
    assert rc(getrandom(dst)) == 0
    assert "INIT" not in names(record[4:])  # no implicit startup either
    # A machine reset afterwards is a reboot: the volatile copy is gone.
    dst.startup(0)
    assert rc(getrandom(dst)) == (TPM_RC_INITIALIZE if version == 2 else TPM_INVALID_POSTINIT)


@pytest.mark.swtpm
def test_state_blobs_with_flags_and_savestate(spawn: Spawn) -> None:
    src = powered(spawn(2))
    before = extend_and_read(src)
    blobs = src.get_state_blobs()
    assert [b.type for b in blobs.values()] == [1, 2, 3]
    assert blobs["savestate"] == StateBlob(3, 0, b"", s.RESULT_NON_FATAL)
    assert all(b.state_flags == 0 and b.result == 0 for b in (blobs["permanent"], blobs["volatile"]))
    # TPM 2.0 keeps a TPM2_Shutdown(STATE) in the permanent blob (it grows);
    # the savestate blob stays absent (swtpm 0.7.1 / libtpms 0.9).
    size = len(blobs["permanent"].data)
    assert rc(src.execute(TPM2_SHUTDOWN_STATE)) == 0
    blobs = src.get_state_blobs()
    assert len(blobs["permanent"].data) > size
    assert blobs["savestate"].result == s.RESULT_NON_FATAL
    dst = spawn(2)
    dst.set_state(blobs)  # StateBlob values: flags are sent back
    assert pcr_read(dst) == before


@pytest.mark.swtpm
def test_tpm12_savestate_blob(spawn: Spawn) -> None:
    src = powered(spawn(1))
    before = extend_and_read(src)
    assert rc(src.execute(bytes.fromhex("00c10000000a00000098"))) == 0  # TPM_SaveState
    blobs = src.get_state_blobs()
    assert blobs["savestate"].result == 0 and len(blobs["savestate"].data) > 500
    # Suspend/resume: permanent + savestate, then TPM_Startup(ST_STATE).
    dst = spawn(1)
    dst.set_state({"permanent": blobs["permanent"], "savestate": blobs["savestate"]})
    assert rc(pcr_read(dst)) == TPM_INVALID_POSTINIT
    assert rc(dst.execute(bytes.fromhex("00c10000000c000000990002"))) == 0
    assert pcr_read(dst) == before
    # All three, as QEMU loads them: swtpm 0.7.1 then answers TPM_FAIL.
    both = spawn(1)
    both.set_state(blobs)
    assert rc(pcr_read(both)) == 0x09


@pytest.mark.swtpm
def test_state_with_migration_key(spawn: Spawn, keys: tuple[Path, Path]) -> None:
    k1, k2 = keys
    src = powered(spawn(2, migration_key=k1))
    assert src.get_config() == s.PTM_CONFIG_FLAG_MIGRATION_KEY
    before = extend_and_read(src)
    plain_size = len(powered(spawn(2)).get_state()["permanent"])
    state = src.get_state()
    assert len(state["permanent"]) > plain_size  # encrypted (and still flag 0)
    dst = spawn(2, migration_key=k1)
    dst.set_state(state)
    assert pcr_read(dst) == before
    # The wrong key: swtpm cannot decrypt; a clean error, the TPM stays stopped.
    wrong = spawn(2, migration_key=k2)
    t0 = time.monotonic()
    with pytest.raises(ControlError) as info:
        wrong.set_state(state)
    assert time.monotonic() - t0 < 2
    assert (info.value.command, info.value.result) == ("SET_STATEBLOB", s.TPM_DECRYPT_ERROR)
    assert "wrong or missing key" in str(info.value)
    assert wrong.failure is None
    with pytest.raises(ControlError):
        wrong.get_state()  # stopped: 0x0A
    # No key at all on the destination.
    nokey = spawn(2)
    with pytest.raises(ControlError) as info:
        nokey.set_state(state)
    assert info.value.result == 0x0D  # swtpm 0.7.1 (TPM_BAD_KEY_PROPERTY numbering)
    # Recovery: a plain startup gives a fresh TPM.
    powered(wrong)
    assert rc(pcr_read(wrong)) == 0 and pcr_read(wrong) != before


@pytest.mark.swtpm
def test_state_with_file_key(spawn: Spawn, keys: tuple[Path, Path]) -> None:
    k1, _ = keys
    src = powered(spawn(2, key=k1))
    assert src.get_config() == s.PTM_CONFIG_FLAG_FILE_KEY
    before = extend_and_read(src)
    blobs = src.get_state_blobs()  # asked for decrypted: plaintext, flags 0
    assert blobs["permanent"].state_flags == 0
    dst = spawn(2)  # no key needed for plaintext blobs
    dst.set_state(blobs)
    assert pcr_read(dst) == before
    # An encrypted blob (asked without DECRYPTED) needs the key on the destination.
    enc = src.control.get_stateblob(s.PTM_BLOB_TYPE_PERMANENT, 0)
    assert enc.encrypted
    keyed = spawn(2, key=k1)
    keyed.set_state({"permanent": enc, "volatile": blobs["volatile"]})
    assert pcr_read(keyed) == before
    nokey = spawn(2)
    with pytest.raises(ControlError):
        nokey.set_state({"permanent": enc})


@pytest.mark.swtpm
def test_get_state_needs_a_running_tpm(spawn: Spawn) -> None:
    emu = spawn(2)
    with pytest.raises(ControlError) as info:
        emu.get_state()
    assert info.value.result == s.TPM_BAD_ORDINAL
    assert emu.failure is None


def test_set_state_checks_its_argument(fake_swtpm: Callable[..., Any]) -> None:
    fake = fake_swtpm()
    with Emulator(fake.path, timeout=2) as emu:
        with pytest.raises(StateError, match="unknown state keys"):
            emu.set_state({"permanent": b"x", "nvram": b"y"})
        with pytest.raises(StateError):
            emu.set_state({"permanent": "text"})  # type: ignore[dict-item]
        with pytest.raises(StateError, match="volatile blob"):
            emu.set_state({"permanent": StateBlob(2, 0, b"x")})
        assert s.CMD_STOP not in fake.codes  # refused before anything was sent


# -- the other control commands through the backend -------------------------------------
@pytest.mark.swtpm
@pytest.mark.parametrize("version", [2, 1])
def test_drtm_hash_sequence(spawn: Spawn, version: int) -> None:
    emu = powered(spawn(version))
    assert emu.get_established_flag() is False
    data = bytes(range(256)) * 20
    emu.hash_sequence(data)  # locality 4
    assert emu.get_established_flag() is True
    emu.reset_established_flag(3)  # QEMU's quirk: sent for the last locality, 4
    assert emu.get_established_flag() is (version == 1)  # TPM 1.2: no reset
    if version == 2:
        rsp = emu.execute(tpm2_pcr_read(17))
        expected = hashlib.sha256(bytes(32) + hashlib.sha256(data).digest()).digest()
    else:
        rsp = emu.execute(tpm12_pcr_read(17))
        expected = hashlib.sha1(bytes(20) + hashlib.sha1(data).digest()).digest()
    assert rsp[-len(expected) :] == expected


@pytest.mark.swtpm
def test_store_volatile_info_config(spawn: Spawn, tmp_path: Path) -> None:
    emu = powered(spawn(2))
    emu.store_volatile()
    assert (tmp_path / "tpm0" / "tpm2-00.volatilestate").exists()
    assert emu.get_config() == 0
    assert emu.get_info()["TPMSpecification"]["family"] == "2.0"
    info = emu.get_info(s.SWTPM_INFO_TPMATTRIBUTES)
    assert info == {
        "TPMAttributes": {"manufacturer": "id:00001014", "version": "id:20191023", "model": "swtpm"}
    }
    with pytest.raises(s.UnsupportedError):
        emu.control.lock_storage()


# -- other data channels -------------------------------------------------------------------
@pytest.mark.swtpm
@pytest.mark.parametrize("channel", ["unix", "tcp"])
def test_spawn_server_data_channel(spawn: Spawn, record: list[tuple[int, bytes]], channel: str) -> None:
    emu = spawn(2, data_channel=channel)
    assert emu.process is not None
    args = [str(a) for a in emu.process.args]  # type: ignore[union-attr]
    server = args[args.index("--server") + 1]
    assert server.startswith("type=unixio,path=" if channel == "unix" else "type=tcp,port=")
    assert "SET_DATAFD" not in names(record)
    powered(emu)
    assert rc(extend_and_read(emu)) == 0
    assert rc(emu.execute(tpm2_pcr_extend(17, bytes(32)), 3)) == 0  # localities still work
    emu.hash_sequence(b"abc")
    assert emu.get_established_flag() is True
    state = emu.get_state()
    assert len(state["volatile"]) > 1000


def _connect_when_ready(make: Callable[[], Emulator]) -> Emulator:
    deadline = time.monotonic() + 10
    while True:
        try:
            return make()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.swtpm
def test_external_swtpm_with_unix_server(swtpm_proc: Callable[..., Any], short_dir: Path) -> None:
    data = str(short_dir / "data")
    sp = swtpm_proc(2, "--server", f"type=unixio,path={data}")
    with _connect_when_ready(lambda: Emulator(sp.ctrl_path, data_path=data, timeout=5)) as emu:
        powered(emu)
        assert rc(extend_and_read(emu)) == 0
    assert sp.process.wait(5) == 0  # closed with CMD_SHUTDOWN


@pytest.mark.swtpm
def test_external_swtpm_all_tcp(swtpm_proc: Callable[..., Any]) -> None:
    ctrl_port, data_port = _free_port(), _free_port()
    sp = swtpm_proc(2, "--server", f"type=tcp,port={data_port}", ctrl=f"type=tcp,port={ctrl_port}")

    def make() -> Emulator:
        return Emulator(
            ctrl_address=("127.0.0.1", ctrl_port), data_address=("localhost", data_port), timeout=5
        )

    with _connect_when_ready(make) as emu:
        powered(emu)
        before = extend_and_read(emu)
        assert rc(before) == 0
        state = emu.get_state()
        assert len(state["permanent"]) > 1000
        emu.set_state(state)  # over TCP too
        assert pcr_read(emu) == before
    assert sp.process.wait(5) == 0


@pytest.mark.swtpm
def test_set_datafd_over_tcp_is_refused(swtpm_proc: Callable[..., Any]) -> None:
    port = _free_port()
    swtpm_proc(2, ctrl=f"type=tcp,port={port}")
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    with sock:
        ctrl = Control(sock, timeout=5)
        a, b = socket.socketpair()
        with a, b, pytest.raises(ControlError) as info:
            ctrl.set_datafd(b.fileno())
        # No descriptor arrives over TCP: swtpm 0.7.1 says bad parameter
        # (0x1F when it also has a --server socket). Why TCP control needs --server.
        assert info.value.result == s.TPM_BAD_PARAMETER


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"ctrl_path": "x", "ctrl_address": ("127.0.0.1", 1)}, "exactly one"),
        ({"ctrl_path": "x", "data_path": "y", "data_address": ("127.0.0.1", 1)}, "at most one"),
        ({"ctrl_address": ("127.0.0.1", 1)}, "SET_DATAFD"),
        ({"ctrl_path": "x", "data_address": ("192.0.2.1", 2321)}, "not a loopback"),
        ({"ctrl_address": ("10.0.0.1", 2322), "data_path": "y"}, "not a loopback"),
        ({"ctrl_path": "x", "data_address": ("127.0.0.1", 0)}, "port"),
        ({"ctrl_path": "x", "data_address": ("my-host", 1)}, "loopback IP"),
    ],
)
def test_channel_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Emulator(**kwargs)


# -- spawn options and the executable's features ---------------------------------------------
@pytest.mark.swtpm
def test_spawn_startup_flags(spawn: Spawn, record: list[tuple[int, bytes]]) -> None:
    emu = spawn(2, startup="clear")
    args = [str(a) for a in emu.process.args]  # type: ignore[union-attr]
    assert args[args.index("--flags") + 1] == "not-need-init,startup-clear"
    record.clear()
    assert rc(emu.execute(TPM2_GETRANDOM_8)) == 0  # swtpm sent Startup itself
    assert names(record) == ["SET_LOCALITY"]  # no implicit INIT
    assert rc(emu.execute(TPM2_STARTUP_CLEAR)) == 0x100  # TPM_RC_INITIALIZE: already started
    none = spawn(2, startup="none")
    assert rc(none.execute(TPM2_GETRANDOM_8)) == TPM_RC_INITIALIZE  # running, no Startup
    assert rc(none.execute(TPM2_STARTUP_CLEAR)) == 0
    one = spawn(1, startup="clear")
    assert rc(one.execute(TPM12_GETRANDOM_8)) == 0


@pytest.mark.swtpm
def test_binary_features_of_the_installed_swtpm(swtpm_bin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    info = binary_features(swtpm_bin)
    assert info["type"] == "swtpm"
    assert {"tpm-1.2", "tpm-2.0", "flags-opt-startup"} <= set(info["features"])
    info["features"].append("mutated")  # a copy
    calls: list[object] = []
    original = s.subprocess.run

    def counting(*a: Any, **kw: Any) -> Any:
        calls.append(a)
        return original(*a, **kw)

    monkeypatch.setattr(s.subprocess, "run", counting)
    again = binary_features(swtpm_bin)
    assert calls == [] and "mutated" not in again["features"]  # cached per executable


def _fake_binary(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_spawn_refuses_what_the_binary_lacks(tmp_path: Path) -> None:
    old = _fake_binary(
        tmp_path, "old-swtpm", """echo '{ "type": "swtpm", "features": [ "tpm-1.2", "cmdarg-seccomp" ] }'"""
    )
    assert binary_features(old) == {"type": "swtpm", "features": ["tpm-1.2", "cmdarg-seccomp"]}
    with pytest.raises(BackendError, match=r"startup='clear'.*needs feature 'flags-opt-startup'"):
        Emulator.spawn(tmp_path / "s1", 1, swtpm=old, startup="clear")
    with pytest.raises(
        BackendError, match=r"TPM 2.0 needs feature 'tpm-2.0'.*It lists: cmdarg-seccomp, tpm-1.2"
    ):
        Emulator.spawn(tmp_path / "s2", 2, swtpm=old)
    garbage = _fake_binary(tmp_path, "not-swtpm", "echo hello; exit 1")
    with pytest.raises(BackendError, match="did not print the capabilities"):
        binary_features(garbage)
    with pytest.raises(BackendError, match="not found"):
        binary_features(tmp_path / "missing")


def test_spawn_option_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="startup"):
        Emulator.spawn(tmp_path, startup="warm")
    with pytest.raises(ConfigurationError, match="data_channel"):
        Emulator.spawn(tmp_path, data_channel="pipe")
    with pytest.raises(ConfigurationError, match="is not a file"):
        Emulator.spawn(tmp_path, migration_key=tmp_path / "nokey")
