"""``tpmdev.server.TpmServer`` spoken to byte by byte, and ``tpmdev serve`` run as a user runs it.

The protocol tests talk to a server in this process over loopback with
plain sockets: the mssim command and platform ports (handshake, commands
with their locality, power off / on, cancel, one client at a time, STOP)
and swtpm's data and control ports. The command-line tests start ``python
-m tpmdev serve`` and check its exit status and output, error paths
included.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guests import TPM_RC_CANCELED, Gate, make_device
from tools_workflow import tpmdev_env

import tpmdev
from tpmdev.backends.base import Backend
from tpmdev.errors import BackendError, ConfigurationError
from tpmdev.drivers import commands as C
from tpmdev.server import (
    REMOTE_HANDSHAKE,
    SESSION_END,
    SIGNAL_CANCEL_ON,
    SIGNAL_NV_ON,
    SIGNAL_POWER_OFF,
    SIGNAL_POWER_ON,
    STOP,
    TPM_SEND_COMMAND,
    TpmServer,
)
from tpmdev.wire import FATAL_RESPONSE, response_code

TPM_RC_INITIALIZE = 0x100
TPM_RC_LOCALITY = 0x907
TPM_RC_FAILURE = 0x101


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _u32_from(conn: socket.socket) -> int:
    return int(struct.unpack(">I", _recv(conn, 4))[0])


class Client:
    """A bare mssim client."""

    def __init__(self, port: int) -> None:
        self.cmd = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.platform = socket.create_connection(("127.0.0.1", port + 1), timeout=30)

    def signal(self, code: int) -> int:
        self.platform.sendall(_u32(code))
        return _u32_from(self.platform)

    def send(self, command: bytes, locality: int = 0) -> bytes:
        self.cmd.sendall(_u32(TPM_SEND_COMMAND) + bytes([locality]) + _u32(len(command)) + command)
        size = _u32_from(self.cmd)
        response = _recv(self.cmd, size)
        assert _u32_from(self.cmd) == 0
        return response

    def close(self) -> None:
        self.cmd.close()
        self.platform.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Factory: a TpmServer on a fresh device (closed, with the device, afterwards)."""
    made: list[tuple[TpmServer, Any]] = []

    def make(backend: Backend, frontend: str = "tis", protocol: str = "mssim", **options: Any) -> TpmServer:
        dev = make_device(frontend, backend, **options)
        server = TpmServer(dev, protocol=protocol, port=0)
        server.start()
        made.append((server, dev))
        return server

    yield make
    for server, dev in made:
        server.close()
        dev.close()


def test_mssim_handshake_commands_and_locality(serve: Any) -> None:
    server = serve(tpmdev.backends.Libtpms())
    client = Client(server.port)
    try:
        assert client.signal(SIGNAL_POWER_ON) == 0 and client.signal(SIGNAL_NV_ON) == 0
        client.cmd.sendall(_u32(REMOTE_HANDSHAKE) + _u32(1))
        assert (_u32_from(client.cmd), _u32_from(client.cmd) & 1, _u32_from(client.cmd)) == (1, 1, 0)
        assert response_code(client.send(C.tpm2_startup(), locality=1)) == TPM_RC_LOCALITY
        assert response_code(client.send(C.tpm2_startup())) == 0
        digest = hashlib.sha256(b"serve").digest()
        assert response_code(client.send(C.tpm2_pcr_extend(16, digest), locality=2)) == 0
        _, values = C.decode_pcr_read(client.send(C.tpm2_pcr_read([16])))
        assert values == [hashlib.sha256(bytes(32) + digest).digest()]
        assert server.commands == 4
    finally:
        client.close()


def test_mssim_power_off_and_on_is_a_reboot(serve: Any) -> None:
    server = serve(tpmdev.backends.Builtin())
    client = Client(server.port)
    try:
        assert response_code(client.send(C.tpm2_startup())) == 0
        assert client.signal(SIGNAL_POWER_ON) == 0  # already on: nothing happens
        assert response_code(client.send(C.tpm2_get_random(4))) == 0
        assert client.signal(SIGNAL_POWER_OFF) == 0
        assert client.send(C.tpm2_get_random(4)) == b""  # off: an empty response, as the simulator
        assert client.signal(SIGNAL_POWER_ON) == 0
        assert response_code(client.send(C.tpm2_get_random(4))) == TPM_RC_INITIALIZE
        assert response_code(client.send(C.tpm2_startup())) == 0
    finally:
        client.close()


def test_mssim_one_client_at_a_time(serve: Any) -> None:
    server = serve(tpmdev.backends.Builtin())
    first = Client(server.port)
    try:
        assert response_code(first.send(C.tpm2_startup())) == 0
        second = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        assert second.recv(1) == b""  # refused: closed at once
        second.close()
        assert server.refused == 1
        assert response_code(first.send(C.tpm2_get_random(4))) == 0  # the first is served on
    finally:
        first.close()
    # the first client has gone: the next one is served (no refusal)
    third = Client(server.port)
    try:
        assert response_code(third.send(C.tpm2_get_random(4))) == 0
        third.cmd.sendall(_u32(SESSION_END))
        assert third.cmd.recv(1) == b""
    finally:
        third.close()
    assert server.refused == 1


def test_mssim_cancel_reaches_the_backend(serve: Any) -> None:
    backend = tpmdev.backends.Builtin()
    gate = Gate(backend)
    server = serve(backend)
    client = Client(server.port)
    try:
        assert response_code(client.send(C.tpm2_startup())) == 0
        gate.arm()
        answer: list[bytes] = []
        sender = threading.Thread(target=lambda: answer.append(client.send(C.tpm2_get_random(8))))
        sender.start()
        assert gate.held.wait(30)
        assert client.signal(SIGNAL_CANCEL_ON) == 0
        sender.join(30)
        assert response_code(answer[0]) == TPM_RC_CANCELED and gate.cancels == 1
    finally:
        client.close()


def test_mssim_stop_ends_the_server(serve: Any) -> None:
    server = serve(tpmdev.backends.Builtin(), frontend="crb")
    done = threading.Event()
    threading.Thread(target=lambda: (server.serve_forever(), done.set()), daemon=True).start()
    client = Client(server.port)
    try:
        client.cmd.sendall(_u32(STOP))
        assert _u32_from(client.cmd) == 0
        assert done.wait(30) and server.stopped
    finally:
        client.close()


def test_swtpm_protocol_data_and_control(serve: Any) -> None:
    server = serve(tpmdev.backends.Libtpms(), frontend="crb", protocol="swtpm")
    data = socket.create_connection(("127.0.0.1", server.port), timeout=30)

    def control(code: int, body: bytes = b"", answer: int = 4) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port + 1), timeout=30) as ctrl:
            ctrl.sendall(_u32(code) + body)
            return _recv(ctrl, answer)

    def command(cmd: bytes) -> bytes:
        data.sendall(cmd)
        head = _recv(data, 10)
        return head + _recv(data, int.from_bytes(head[2:6], "big") - 10)

    try:
        result, caps = struct.unpack(">II", control(0x01, answer=8))  # GET_CAPABILITY
        assert result == 0 and caps & (1 << 5) and caps & (1 << 3)  # CANCEL_TPM_CMD, SET_LOCALITY
        assert control(0x05, b"\x05") == _u32(0x3D)  # SET_LOCALITY 5: TPM_BAD_LOCALITY
        assert control(0x05, b"\x01") == _u32(0)
        assert response_code(command(C.tpm2_startup())) == TPM_RC_LOCALITY
        assert control(0x05, b"\x00") == _u32(0)
        assert response_code(command(C.tpm2_startup())) == 0
        assert control(0x04, answer=8) == _u32(0) + bytes(4)  # GET_TPMESTABLISHED: not established
        assert control(0x09) == _u32(0)  # CANCEL_TPM_CMD: nothing in flight
        assert control(0x02, _u32(0)) == _u32(0)  # INIT: a machine reset
        assert response_code(command(C.tpm2_get_random(4))) == TPM_RC_INITIALIZE
        assert control(0x0C, bytes(12)) == _u32(0x0A)  # GET_STATEBLOB: not served
        assert server.commands == 2  # (the command at a locality this CRB lacks did not run)
    finally:
        data.close()


class FailingBuiltin(tpmdev.backends.Builtin):
    """Fault injection: the calls named in :attr:`fail` raise once each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail: set[str] = set()

    def _once(self, name: str) -> None:
        if name in self.fail:
            self.fail.discard(name)
            raise BackendError(f"injected: {name} failed")

    def reset(self) -> None:
        self._once("reset")
        super().reset()

    def get_established_flag(self) -> bool:
        self._once("get_established_flag")
        return bool(super().get_established_flag())

    def get_buffer_size(self) -> int:
        self._once("get_buffer_size")
        return int(super().get_buffer_size())

    def cancel(self) -> None:
        if "cancel" in self.fail:
            self.fail.discard("cancel")
            raise RuntimeError("injected: a bug in cancel")
        super().cancel()


def _control(port: int, code: int, body: bytes = b"", answer: int = 4) -> bytes:
    with socket.create_connection(("127.0.0.1", port + 1), timeout=30) as ctrl:
        ctrl.sendall(_u32(code) + body)
        return _recv(ctrl, answer)


def _swtpm_command(data: socket.socket, cmd: bytes) -> bytes:
    data.sendall(cmd)
    head = _recv(data, 10)
    return head + _recv(data, int.from_bytes(head[2:6], "big") - 10)


def test_mssim_backend_errors_are_answered_and_the_ports_serve_on(serve: Any) -> None:
    backend = FailingBuiltin()
    server = serve(backend)
    client = Client(server.port)
    try:
        assert response_code(client.send(C.tpm2_startup())) == 0
        assert client.signal(SIGNAL_POWER_OFF) == 0
        backend.fail.add("reset")
        assert client.signal(SIGNAL_POWER_ON) != 0  # the reset failed: a failure answer, still off
        assert client.send(C.tpm2_get_random(4)) == b""
        assert client.signal(SIGNAL_POWER_ON) == 0  # the same connection is served on
        assert response_code(client.send(C.tpm2_get_random(4))) == TPM_RC_INITIALIZE
        backend.fail.add("cancel")  # not a TpmDevError: this connection goes, the port stays
        client.platform.sendall(_u32(SIGNAL_CANCEL_ON))
        assert client.platform.recv(4) == b""
    finally:
        client.close()
    client = Client(server.port)
    try:
        assert client.signal(SIGNAL_NV_ON) == 0
        assert response_code(client.send(C.tpm2_startup())) == 0
    finally:
        client.close()


def test_swtpm_backend_errors_are_answered_tpm_fail(serve: Any) -> None:
    backend = FailingBuiltin()
    server = serve(backend, frontend="crb", protocol="swtpm")
    data = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        backend.fail.add("reset")
        assert _control(server.port, 0x02, _u32(0)) == _u32(9)  # INIT: TPM_FAIL
        assert response_code(_swtpm_command(data, C.tpm2_startup())) == TPM_RC_FAILURE  # not running
        backend.fail.add("get_established_flag")
        assert _control(server.port, 0x04, answer=8) == _u32(9) + bytes(4)
        backend.fail.add("get_buffer_size")
        assert _control(server.port, 0x11, _u32(0), answer=16) == _u32(9) + bytes(12)
        assert _control(server.port, 0x02, _u32(0)) == _u32(0)  # the control port serves on
        assert response_code(_swtpm_command(data, C.tpm2_startup())) == 0
    finally:
        data.close()


def test_swtpm_stop_refuses_commands_until_init(serve: Any) -> None:
    server = serve(tpmdev.backends.Builtin(), frontend="crb", protocol="swtpm")
    data = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        assert response_code(_swtpm_command(data, C.tpm2_startup())) == 0
        assert _control(server.port, 0x0E) == _u32(0)  # STOP
        assert response_code(_swtpm_command(data, C.tpm2_get_random(4))) == TPM_RC_FAILURE
        assert server.commands == 1
        assert _control(server.port, 0x02, _u32(0)) == _u32(0)  # INIT
        assert response_code(_swtpm_command(data, C.tpm2_get_random(4))) == TPM_RC_INITIALIZE
    finally:
        data.close()


def test_swtpm_stopped_tpm12_answers_tpm_fail(serve: Any) -> None:
    server = serve(tpmdev.backends.Builtin(1), protocol="swtpm")
    data = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        assert _control(server.port, 0x0E) == _u32(0)  # STOP
        assert _swtpm_command(data, C.tpm12_startup()) == FATAL_RESPONSE
    finally:
        data.close()


def test_swtpm_buffer_size_is_what_the_device_takes(serve: Any) -> None:
    backend = tpmdev.backends.Builtin()
    server = serve(backend, frontend="crb", protocol="swtpm")
    size = min(backend.get_buffer_size(), server.dev.buffer_max)
    assert size < backend.get_buffer_size()  # (the CRB's buffer is the smaller)
    assert _control(server.port, 0x11, _u32(0), answer=16) == _u32(0) + _u32(size) * 3
    assert _control(server.port, 0x11, _u32(size), answer=16) == _u32(0) + _u32(size) * 3
    assert _control(server.port, 0x11, _u32(4096), answer=16)[:4] == _u32(9)


def test_serves_ipv6_loopback() -> None:
    with make_device("crb", tpmdev.backends.Builtin()) as dev, TpmServer(dev, host="::1", port=0) as server:
        for port in (server.port, server.port + 1):
            with socket.create_connection(("::1", port), timeout=30) as conn:
                assert conn.family == socket.AF_INET6
        with socket.create_connection(("::1", server.port), timeout=30) as cmd:
            cmd.sendall(_u32(TPM_SEND_COMMAND) + b"\0" + _u32(12) + C.tpm2_startup())
            assert response_code(_recv(cmd, 4 + 10)[4:]) == 0


def _fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("nosuch.invalid", "not an address or a known host name"),
        ("192.0.2.1", "cannot listen on 192.0.2.1 (AF_INET): "),  # TEST-NET: not this machine's
    ],
    ids=["unknown-host", "not-local"],
)
def test_a_failed_start_names_the_cause_and_leaks_nothing(host: str, message: str) -> None:
    with make_device("crb", tpmdev.backends.Builtin()) as dev:
        before = _fds()
        server = TpmServer(dev, host=host, port=0)
        with pytest.raises(ConfigurationError) as info:
            server.start()
        assert message in str(info.value) and "port" not in str(info.value)
        assert _fds() == before  # the wake pipe closed too


def test_shutdown_wakes_a_handler_waiting_for_bytes() -> None:
    dev = make_device("crb", tpmdev.backends.Builtin())
    server = TpmServer(dev, port=0)
    entered = threading.Event()
    handle = server._mssim_command

    def watched(conn: socket.socket) -> None:
        entered.set()
        handle(conn)

    server._mssim_command = watched  # type: ignore[method-assign]
    client = None
    try:
        server.start()
        client = Client(server.port)
        client.cmd.sendall(_u32(TPM_SEND_COMMAND))  # and nothing more: the handler waits in recv
        assert entered.wait(30)
        server.shutdown()
        server.serve_forever()
        # every thread has ended: no command can run while the owner saves the device
        assert not any(thread.is_alive() for thread in server._threads)
    finally:
        if client is not None:
            client.close()
        server.close()
        dev.close()


# -- the command line ------------------------------------------------------------


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tpmdev", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tpmdev_env(),
    )


def _port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"mssim on 127\.0\.0\.1 port (\d+) \(command\) and \d+ \(platform\)", line)
    assert match, line
    return int(match.group(1))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_and_keeps_its_state(sig: signal.Signals, tmp_path: Path) -> None:
    state = tmp_path / "tpm.state"
    digest = hashlib.sha256(b"kept").digest()
    proc = _serve("--frontend", "tis-i2c", "--backend", "builtin", "--port", "0", "--state", str(state))
    client = Client(_port(proc))
    assert response_code(client.send(C.tpm2_startup())) == 0
    assert response_code(client.send(C.tpm2_pcr_extend(16, digest))) == 0
    client.close()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped after 2 commands" in out and state.stat().st_size > 0
    # a new server continues from the state
    proc = _serve("--frontend", "tis-i2c", "--backend", "builtin", "--port", "0", "--state", str(state))
    client = Client(_port(proc))
    _, values = C.decode_pcr_read(client.send(C.tpm2_pcr_read([16])))
    assert values == [hashlib.sha256(bytes(32) + digest).digest()]
    client.close()
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tpmdev", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=tpmdev_env(),
        check=False,
    )


def test_serve_help() -> None:
    result = _run("serve", "--help")
    assert result.returncode == 0
    assert "--protocol {mssim,swtpm}" in result.stdout and "loopback" in result.stdout


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--port", "70000"], 2, "--port must be 0..65534"),
        (["--backend", "nosuch"], 1, "unknown backend spec 'nosuch'"),
        (["--frontend", "tis-i2c", "--tpm", "1.2", "--backend", "builtin"], 1, "TPM 2.0 interface"),
        (["--protocol", "tcp"], 2, "invalid choice: 'tcp'"),
    ],
    ids=["bad-port", "bad-backend", "i2c-tpm12", "bad-protocol"],
)
def test_serve_refuses_bad_arguments(args: list[str], status: int, message: str) -> None:
    result = _run("serve", *args)
    assert result.returncode == status and message in result.stderr, result.stderr


def test_serve_refuses_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _run("serve", "--backend", "builtin", "--port", str(port))
    assert result.returncode == 1 and "cannot listen on 127.0.0.1" in result.stderr, result.stderr
