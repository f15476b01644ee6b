"""State exchange between the libtpms backend and a real swtpm (same libtpms).

swtpm runs as ``swtpm socket --server ... --ctrl ... --flags not-need-init``;
the test speaks its control protocol itself (GET/SET_STATEBLOB, STOP, INIT)
and sends TPM commands on its data socket.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from standin import connect_when_listening

from tpmdev.backends.libtpms import Libtpms, unwrap_state_blob
from tpmdev.drivers import commands as C
from tpmdev.errors import StateError
from tpmdev.wire import header_size, response_code

pytestmark = [pytest.mark.swtpm, pytest.mark.usefixtures("no_leaked_swtpm")]

CMD_INIT = 0x02
CMD_GET_STATEBLOB = 0x0C
CMD_SET_STATEBLOB = 0x0D
CMD_STOP = 0x0E
PTM_INIT_FLAG_DELETE_VOLATILE = 1
PTM_STATE_FLAG_DECRYPTED = 1
BLOB_TYPES = {"permanent": 1, "volatile": 2, "savestate": 3}
TPM_RETRY = 0x800  # swtpm's "no such blob"


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "swtpm closed the connection"
        data += chunk
    return data


@dataclass
class Swtpm:
    process: subprocess.Popen[bytes]
    ctrl: socket.socket
    data: socket.socket
    state_dir: Path

    def control(self, code: int, body: bytes = b"") -> int:
        self.ctrl.sendall(struct.pack(">I", code) + body)
        (result,) = struct.unpack(">I", recv_exactly(self.ctrl, 4))
        return int(result)

    def execute(self, command: bytes) -> bytes:
        self.data.sendall(command)
        header = recv_exactly(self.data, 10)
        return header + recv_exactly(self.data, header_size(header) - 10)

    def get_state(self) -> dict[str, bytes]:
        state = {}
        for key, blob_type in BLOB_TYPES.items():
            self.ctrl.sendall(struct.pack(">IIII", CMD_GET_STATEBLOB, PTM_STATE_FLAG_DECRYPTED, blob_type, 0))
            result, flags, total, length = struct.unpack(">IIII", recv_exactly(self.ctrl, 16))
            assert result in (0, TPM_RETRY), hex(result)
            assert flags == 0 and total == length  # not encrypted, one piece
            state[key] = recv_exactly(self.ctrl, length) if result == 0 else b""
        return state

    def set_state(self, state: dict[str, bytes]) -> None:
        """QEMU's incoming migration: STOP, SET_STATEBLOB..., INIT(delete volatile)."""
        assert self.control(CMD_STOP) == 0
        for key, blob in state.items():
            if blob:
                request = struct.pack(">IIII", CMD_SET_STATEBLOB, 0, BLOB_TYPES[key], len(blob)) + blob
                self.ctrl.sendall(request)
                (result,) = struct.unpack(">I", recv_exactly(self.ctrl, 4))
                assert result == 0, f"SET_STATEBLOB {key}: 0x{result:X}"
        assert self.control(CMD_INIT, struct.pack(">I", PTM_INIT_FLAG_DELETE_VOLATILE)) == 0

    def close(self) -> None:
        self.ctrl.close()
        self.data.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(10)


@pytest.fixture
def swtpm(swtpm_bin: str, short_dir: Path) -> Iterator[Callable[..., Swtpm]]:
    started: list[Swtpm] = []

    def start(tpm_version: int = 2, state_dir: Path | None = None) -> Swtpm:
        n = len(started)
        state = state_dir or short_dir / f"state{n}"
        state.mkdir(exist_ok=True)
        ctrl_path, data_path = str(short_dir / f"c{n}"), str(short_dir / f"s{n}")
        args = [swtpm_bin, "socket", "--tpmstate", f"dir={state}", "--ctrl", f"type=unixio,path={ctrl_path}"]
        args += ["--server", f"type=unixio,path={data_path}", "--flags", "not-need-init"]
        if tpm_version == 2:
            args.append("--tpm2")
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        socks = []
        for path in (ctrl_path, data_path):
            sock = connect_when_listening(path, proc)
            sock.settimeout(10)
            socks.append(sock)
        sw = Swtpm(proc, socks[0], socks[1], state)
        started.append(sw)
        return sw

    yield start
    for sw in started:
        sw.close()


@pytest.fixture
def libtpms() -> Iterator[Callable[..., Libtpms]]:
    opened: list[Libtpms] = []

    def make(tpm_version: int = 2, state_dir: Path | None = None) -> Libtpms:
        tpm = Libtpms(tpm_version, state_dir)
        opened.append(tpm)
        return tpm

    yield make
    for tpm in opened:
        tpm.close()


class Family:
    """The commands a test needs, for one TPM family."""

    def __init__(self, version: int) -> None:
        self.version = version

    def startup(self) -> bytes:
        return C.tpm2_startup() if self.version == 2 else C.tpm12_startup()

    def extend(self, pcr: int, data: bytes) -> bytes:
        if self.version == 2:
            return C.tpm2_pcr_extend(pcr, hashlib.sha256(data).digest())
        return C.tpm12_extend(pcr, hashlib.sha1(data).digest())

    def read(self, pcr: int) -> bytes:
        return C.tpm2_pcr_read([pcr]) if self.version == 2 else C.tpm12_pcr_read(pcr)

    def value(self, response: bytes) -> bytes:
        assert response_code(response) == 0, response.hex()
        if self.version == 2:
            return C.decode_pcr_read(response)[1][0]
        return C.decode_tpm12_digest(response)

    def random(self) -> bytes:
        return C.tpm2_get_random(8) if self.version == 2 else C.tpm12_get_random(8)


def ok(response: bytes) -> bytes:
    assert response_code(response) == 0, response.hex()
    return response


@pytest.mark.parametrize("version", [2, 1], ids=["tpm2", "tpm12"])
def test_swtpm_state_loads_into_libtpms(
    swtpm: Callable[..., Swtpm], libtpms: Callable[..., Libtpms], version: int
) -> None:
    f = Family(version)
    sw = swtpm(version)
    ok(sw.execute(f.startup()))
    ok(sw.execute(f.extend(16, b"measured by swtpm")))
    expected = f.value(sw.execute(f.read(16)))
    state = sw.get_state()
    assert state["permanent"] and state["volatile"] and state["savestate"] == b""

    tpm = libtpms(version)
    tpm.set_state(state)
    assert f.value(tpm.execute(f.read(16))) == expected
    ok(tpm.execute(f.random()))  # running, no Startup needed
    # Same libtpms, same envelope: the permanent blob comes back byte for byte.
    assert tpm.get_state()["permanent"] == state["permanent"]


@pytest.mark.parametrize("version", [2, 1], ids=["tpm2", "tpm12"])
def test_libtpms_state_loads_into_swtpm(
    swtpm: Callable[..., Swtpm], libtpms: Callable[..., Libtpms], version: int
) -> None:
    f = Family(version)
    tpm = libtpms(version)
    ok(tpm.execute(f.startup()))
    ok(tpm.execute(f.extend(16, b"measured by tpmdev")))
    expected = f.value(tpm.execute(f.read(16)))
    state = tpm.get_state()

    sw = swtpm(version)
    sw.set_state(state)
    assert f.value(sw.execute(f.read(16))) == expected
    ok(sw.execute(f.random()))
    assert unwrap_state_blob(sw.get_state()["permanent"]) == unwrap_state_blob(state["permanent"])


def test_swtpm_runs_on_a_libtpms_state_dir_and_back(
    swtpm: Callable[..., Swtpm], libtpms: Callable[..., Libtpms], short_dir: Path
) -> None:
    f = Family(2)
    state_dir = short_dir / "shared"
    tpm = libtpms(2, state_dir)
    ok(tpm.execute(f.startup()))
    ok(tpm.execute(C.tpm2_nv_define_space(0x01500020, 8)))
    ok(tpm.execute(f.extend(10, b"saved across")))
    expected = f.value(tpm.execute(f.read(10)))
    ok(tpm.execute(C.tpm2_shutdown(0x0001)))  # TPM_SU_STATE
    tpm.close()

    sw = swtpm(2, state_dir)  # swtpm reads our tpm2-00.permall
    ok(sw.execute(C.tpm2_startup(0x0001)))
    assert f.value(sw.execute(f.read(10))) == expected
    ok(sw.execute(C.tpm2_nv_read_public(0x01500020)))
    # While swtpm holds the directory, the backend refuses it.
    with pytest.raises(StateError, match="in use"):
        Libtpms(2, state_dir)
    ok(sw.execute(C.tpm2_nv_define_space(0x01500021, 8)))
    ok(sw.execute(C.tpm2_shutdown(0x0001)))
    sw.close()

    again = libtpms(2, state_dir)  # and we read swtpm's file
    ok(again.execute(C.tpm2_startup(0x0001)))
    ok(again.execute(C.tpm2_nv_read_public(0x01500021)))
