"""A device behind the TPM simulator socket protocols every TSS speaks.

:class:`TpmServer` puts a device (any frontend, any backend) on two TCP
ports, in one of two protocols, and runs every command a client sends
through the device's guest driver (:func:`tpmdev.drivers.for_device`): the
registers see exactly what a guest kernel would do.

``mssim`` -- the Microsoft reference simulator's protocol (``TpmTcpProtocol.h``;
tpm2-tss ``-T mssim:host=H,port=N``). All integers are big-endian u32.

* command port N: ``TPM_SEND_COMMAND`` (8), a locality byte, the command
  size, the command; answered by the response size, the response and a u32
  0. ``REMOTE_HANDSHAKE`` (15) with the client's version, answered by the
  server version, the endpoint flags and 0. ``SESSION_END`` (20) closes the
  connection; ``STOP`` (21) stops the server. The locality-4 hash signals
  (5, 6, 7) are acknowledged and otherwise ignored (QEMU's devices have no
  hash interface either).
* platform port N+1: a u32 signal answered by a u32 0. ``POWER_ON`` (1) after
  a ``POWER_OFF`` (2) is a machine reset of the device (backend reset and
  power-on; the TPM then wants TPM2_Startup, as after a reboot); a
  ``POWER_ON`` while on does nothing, so every tool run can send it (tpm2-tss
  sends ``POWER_ON`` and ``NV_ON`` at each connection). ``RESET`` (17) is off
  and on. ``CANCEL_ON`` (9) cancels the command in flight in the backend
  (swtpm: CMD_CANCEL_TPM_CMD); ``CANCEL_OFF``, ``NV_ON`` / ``NV_OFF``,
  physical presence and key cache signals are acknowledged.
  While the power is off a command is answered with an empty response, as
  the simulator does. A signal the device could not carry out (a backend
  error in the reset of a power-on) is answered with a non-zero u32.

``swtpm`` -- swtpm's socket protocol (tpm2-tss ``-T swtpm:host=H,port=N``):
raw TPM commands and responses on the data port N; swtpm's control protocol
on port N+1 (u32 command code, big-endian fields, a u32 result first in
every answer): GET_CAPABILITY, INIT (a machine reset), SHUTDOWN (stops the
server), GET_TPMESTABLISHED, SET_LOCALITY (the locality of the next
commands), CANCEL_TPM_CMD, STORE_VOLATILE, RESET_TPMESTABLISHED, STOP,
GET_CONFIG, SET_BUFFERSIZE (query only), GET_INFO (the TPM specification).
State blobs, SET_DATAFD and hashing are refused with TPM_BAD_ORDINAL.
After STOP the data port answers every command with a TPM failure response
until INIT, as swtpm refuses commands of a stopped TPM. A control command
the device could not carry out (a backend error) is answered with TPM_FAIL.

Both ports listen on 127.0.0.1 unless told otherwise (an IPv6 address or a
host name is resolved with getaddrinfo and served in its own family). One client at a time:
while a connection to a port is open, another one to the same port is
accepted and closed at once, and the server logs why (the protocols have no
message for it; a TSS reports the closed connection as an I/O error). A
client's connection that has ended is noticed before a new one is refused,
so tool runs one after another are never turned away. Commands run one at a
time under a lock; a cancel goes to the backend directly (a backend's
cancel may be called from any thread). A backend error is answered with the
protocol's failure code and the connection is served on; anything else a
handler raises is logged and ends that connection only, never the port.

:meth:`TpmServer.shutdown` (SIGINT / SIGTERM in ``tpmdev serve``) shuts the
live connections down (a handler waiting for a client's bytes wakes at once)
and ends the threads; :meth:`TpmServer.serve_forever` and
:meth:`TpmServer.close` return only when no thread runs, so a command in
flight has completed and the device can be saved. The device stays open for
its owner to save or close.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Optional

from tpmdev.drivers import for_device
from tpmdev.errors import ConfigurationError, TpmDevError
from tpmdev.wire import FATAL_RESPONSE, HEADER_SIZE, header_size

__all__ = [
    "TpmServer",
    "PROTOCOLS",
    "DEFAULT_PORT",
    "TPM_SEND_COMMAND",
    "REMOTE_HANDSHAKE",
    "SIGNAL_POWER_ON",
    "SIGNAL_POWER_OFF",
    "SIGNAL_PHYS_PRES_ON",
    "SIGNAL_PHYS_PRES_OFF",
    "SIGNAL_CANCEL_ON",
    "SIGNAL_CANCEL_OFF",
    "SIGNAL_NV_ON",
    "SIGNAL_NV_OFF",
    "SIGNAL_KEY_CACHE_ON",
    "SIGNAL_KEY_CACHE_OFF",
    "SIGNAL_RESET",
    "SESSION_END",
    "STOP",
]

log = logging.getLogger(__name__)

_Handler = Callable[[socket.socket], None]

#: ``--protocol`` words
PROTOCOLS = ("mssim", "swtpm")
#: The simulator's customary command port (the platform port is the next one)
DEFAULT_PORT = 2321

# TpmTcpProtocol.h
SIGNAL_POWER_ON = 1
SIGNAL_POWER_OFF = 2
SIGNAL_PHYS_PRES_ON = 3
SIGNAL_PHYS_PRES_OFF = 4
SIGNAL_HASH_START = 5
SIGNAL_HASH_DATA = 6
SIGNAL_HASH_END = 7
TPM_SEND_COMMAND = 8
SIGNAL_CANCEL_ON = 9
SIGNAL_CANCEL_OFF = 10
SIGNAL_NV_ON = 11
SIGNAL_NV_OFF = 12
SIGNAL_KEY_CACHE_ON = 13
SIGNAL_KEY_CACHE_OFF = 14
REMOTE_HANDSHAKE = 15
SIGNAL_RESET = 17
SESSION_END = 20
STOP = 21
#: The simulator protocol version this server speaks, and its endpoint flags
#: (tpmPlatformAvailable | tpmInRawMode)
_SERVER_VERSION = 1
_ENDPOINT_FLAGS = 0x01 | 0x04
_ACK_ONLY = {
    SIGNAL_CANCEL_OFF,
    SIGNAL_NV_ON,
    SIGNAL_NV_OFF,
    SIGNAL_PHYS_PRES_ON,
    SIGNAL_PHYS_PRES_OFF,
    SIGNAL_KEY_CACHE_ON,
    SIGNAL_KEY_CACHE_OFF,
}

#: TPM 2.0 responses for what the device could not run (TPM 1.2: FATAL_RESPONSE)
_RC_FAILURE = bytes.fromhex("8001 0000000a 00000101")
_RC_LOCALITY = bytes.fromhex("8001 0000000a 00000907")
#: swtpm control results
_TPM_SUCCESS = 0
_TPM_FAIL = 9
_TPM_BAD_ORDINAL = 0x0A
_TPM_BAD_LOCALITY = 0x3D
#: An mssim platform signal the device could not carry out (any non-zero u32)
_MSSIM_FAILED = 1
#: The swtpm control commands served here after the u32 result (besides
#: GET_CAPABILITY and SHUTDOWN) -> the size of the answer's body after it
#: (zeroes when the command failed)
_SWTPM_ANSWER_SIZES = {
    0x02: 0,  # INIT
    0x04: 4,  # GET_TPMESTABLISHED
    0x05: 0,  # SET_LOCALITY
    0x09: 0,  # CANCEL_TPM_CMD
    0x0A: 0,  # STORE_VOLATILE
    0x0B: 0,  # RESET_TPMESTABLISHED
    0x0E: 0,  # STOP
    0x0F: 4,  # GET_CONFIG
    0x11: 12,  # SET_BUFFERSIZE
    0x12: 8,  # GET_INFO (total length and length: no text)
}

#: Seconds a client may take to finish a message it has started
_IO_TIMEOUT = 30.0
_MAX_COMMAND = 0x10000


def _swtpm_caps(sw: Any) -> int:
    """The PTM_CAP_* bits this server's control port serves."""
    return int(
        sw.PTM_CAP_INIT
        | sw.PTM_CAP_SHUTDOWN
        | sw.PTM_CAP_GET_TPMESTABLISHED
        | sw.PTM_CAP_SET_LOCALITY
        | sw.PTM_CAP_CANCEL_TPM_CMD
        | sw.PTM_CAP_STORE_VOLATILE
        | sw.PTM_CAP_RESET_TPMESTABLISHED
        | sw.PTM_CAP_STOP
        | sw.PTM_CAP_GET_CONFIG
        | sw.PTM_CAP_SET_BUFFERSIZE
        | sw.PTM_CAP_GET_INFO
    )


class _Closed(Exception):
    """The peer closed the connection (or asked to)."""


def _u32(value: int) -> bytes:
    return struct.pack(">I", value & 0xFFFFFFFF)


#: Linux's TCP_QUICKACK (None elsewhere)
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        if _QUICKACK is not None:
            # tpm2-tss writes a message in pieces (the mssim prefix, then the
            # command): acknowledge at once, or its Nagle waits for our
            # delayed ACK (about 40 ms) before it sends the rest
            conn.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise _Closed(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def _recv_u32(conn: socket.socket) -> int:
    return int(struct.unpack(">I", _recv(conn, 4))[0])


def _gone(conn: socket.socket) -> bool:
    """Whether the peer has closed *conn* (end of stream waiting, or an error)."""
    try:
        ready, _, _ = select.select([conn], [], [], 0)
        if not ready:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class TpmServer:
    """A device served on TCP in the ``mssim`` or ``swtpm`` protocol.

    :param dev: the device (any frontend); the server does not close it.
    :param driver: its guest driver (default: ``for_device(dev)``).
    :param protocol: ``"mssim"`` or ``"swtpm"``.
    :param host: the address to listen on (loopback by default).
    :param port: the command / data port; the platform / control port is
        ``port + 1``. 0 picks two free adjacent ports (:attr:`port` tells).

    :meth:`start` binds and runs the threads; :meth:`serve_forever` blocks
    until :meth:`shutdown` (or a client's STOP / SHUTDOWN).
    :attr:`commands` counts the TPM commands run, :attr:`refused` the
    connections turned away.
    """

    def __init__(
        self,
        dev: Any,
        driver: Any = None,
        *,
        protocol: str = "mssim",
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigurationError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65534:
            raise ConfigurationError(f"port must be an int 0..65534 (the next one is used too), got {port!r}")
        self.dev = dev
        self.driver = driver if driver is not None else for_device(dev)
        self.protocol = protocol
        self.host = host
        self.port = port
        self.commands = 0
        self.refused = 0
        self.locality = 0
        self.powered = True
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        #: the open client connections (appended / removed by the port threads)
        self._conns: list[socket.socket] = []

    # -- life ---------------------------------------------------------------
    def start(self) -> None:
        """Bind both ports and start serving (in threads)."""
        if self._listeners:
            raise TpmDevError("the server is already started")
        try:
            self._listeners = self._bind()
        except BaseException:
            self._close_wake()
            raise
        self.port = self._listeners[0].getsockname()[1]
        if self.protocol == "mssim":
            handlers: tuple[_Handler, ...] = (
                self._mssim_command,
                self._mssim_platform,
            )
            names = ("command", "platform")
        else:
            handlers = (self._swtpm_data, self._swtpm_control)
            names = ("data", "control")
        for listener, handler, name in zip(self._listeners, handlers, names):
            thread = threading.Thread(
                target=self._port_loop,
                args=(listener, handler, name),
                name=f"tpmdev-serve-{name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        log.info("serving %s on %s ports %d and %d", self.protocol, self.host, self.port, self.port + 1)

    def _bind(self) -> list[socket.socket]:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            raise ConfigurationError(
                f"cannot listen on {self.host!r}: not an address or a known host name ({exc}); "
                "give an IPv4 or IPv6 address of this machine"
            ) from None
        family, _, _, _, address = infos[0]
        attempts = 20 if self.port == 0 else 1
        last: Optional[OSError] = None
        for _ in range(attempts):
            first = second = None
            try:
                first = socket.socket(family, socket.SOCK_STREAM)
                first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                second = socket.socket(family, socket.SOCK_STREAM)
                second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                first.bind(address)
                second.bind((address[0], first.getsockname()[1] + 1, *address[2:]))
                first.listen(4)
                second.listen(4)
                return [first, second]
            except OSError as exc:
                for sock in (first, second):
                    if sock is not None:
                        sock.close()
                last = exc
                if exc.errno != errno.EADDRINUSE:
                    break  # not a matter of ports: trying others does not help
        assert last is not None
        why = last.strerror or str(last)
        if last.errno != errno.EADDRINUSE:
            raise ConfigurationError(f"cannot listen on {self.host} ({family.name}): {why}")
        if self.port == 0:
            raise ConfigurationError(
                f"cannot listen on {self.host}: found no two free adjacent ports in {attempts} tries ({why})"
            )
        raise ConfigurationError(
            f"cannot listen on {self.host} ports {self.port} and {self.port + 1}: {why}; choose another port"
        )

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`."""
        if not self._listeners:
            self.start()
        while not self._stopped.wait(0.2):
            pass
        self._join()

    def shutdown(self) -> None:
        """Stop serving: callable from any thread and from a signal handler.

        Live connections are shut down, so a handler waiting for a client's
        bytes ends at once; a command in flight completes first (its thread
        is joined by :meth:`serve_forever` / :meth:`close`)."""
        self._stopped.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        for conn in list(self._conns):  # (a list copy: atomic, no lock a signal handler could wait on)
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _join(self) -> None:
        # no time limit: the device may be saved only when no command runs,
        # and every handler ends once its connection is shut down
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def close(self) -> None:
        """Shut down, wait for the threads, release the sockets. Idempotent."""
        self.shutdown()
        self._join()
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        self._close_wake()

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __enter__(self) -> TpmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one port: one client at a time -----------------------------------------
    def _port_loop(
        self, listener: socket.socket, handler: Callable[[socket.socket], None], name: str
    ) -> None:
        conn: Optional[socket.socket] = None

        def drop() -> None:
            nonlocal conn
            if conn is not None:
                try:
                    self._conns.remove(conn)
                except ValueError:
                    pass
                conn.close()
                conn = None

        try:
            while not self._stopped.is_set():
                watched: list[Any] = [listener, self._wake_r] + ([conn] if conn is not None else [])
                ready, _, _ = select.select(watched, [], [])
                if self._wake_r in ready or self._stopped.is_set():
                    return
                if listener in ready:
                    try:
                        new, peer = listener.accept()
                    except OSError as exc:  # (the client gave up first, or no fds left)
                        log.warning("%s port: accepting a connection failed: %s", name, exc)
                        continue
                    if conn is not None and not _gone(conn):
                        self.refused += 1
                        log.warning(
                            "refused a second client on the %s port (from %s:%d): one client at a time, "
                            "and one is connected",
                            name,
                            *peer[:2],
                        )
                        new.close()
                    else:
                        drop()
                        try:
                            new.settimeout(_IO_TIMEOUT)
                            new.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        except OSError as exc:
                            log.debug("%s port: client gone (%s)", name, exc)
                            new.close()
                            continue
                        conn = new
                        self._conns.append(conn)
                        if self._stopped.is_set():  # (a shutdown between the check and the append)
                            return
                    continue
                if conn is not None and conn in ready:
                    try:
                        handler(conn)
                    except (_Closed, OSError) as exc:
                        log.debug("%s port: client gone (%s)", name, exc)
                        drop()
                    except Exception:  # a bug must not end the port: this client goes, the next is served
                        log.exception("%s port: the connection failed; closed", name)
                        drop()
        finally:
            drop()

    # -- running commands -------------------------------------------------------
    def _failure(self) -> bytes:
        """The TPM's failure response in the device's TPM version."""
        return FATAL_RESPONSE if self.dev.tpm_version == 1 else _RC_FAILURE

    def _run(self, command: bytes, locality: int) -> bytes:
        with self._lock:
            if self._stopped.is_set():  # shutting down: the device's state is about to be saved
                return self._failure()
            try:
                response = bytes(self.driver.transmit(command, locality))
            except ConfigurationError as exc:  # a locality this frontend cannot use
                log.warning("command at locality %d refused: %s", locality, exc)
                return _RC_LOCALITY
            except TpmDevError as exc:
                log.error("the command failed in the device: %s", exc)
                return self._failure()
            self.commands += 1
            return response

    def _power_on(self) -> None:
        with self._lock:
            if not self.powered:
                self.dev.reset()
                self.powered = True

    def _power_off(self) -> None:
        with self._lock:
            self.powered = False

    # -- mssim ---------------------------------------------------------------------
    def _mssim_command(self, conn: socket.socket) -> None:
        code = _recv_u32(conn)
        if code == TPM_SEND_COMMAND:
            locality = _recv(conn, 1)[0]
            size = _recv_u32(conn)
            if size > _MAX_COMMAND:
                raise _Closed(f"a {size}-byte command: not the simulator protocol")
            command = _recv(conn, size)
            response = self._run(command, locality) if self.powered else b""
            conn.sendall(_u32(len(response)) + response + _u32(0))
        elif code == REMOTE_HANDSHAKE:
            client = _recv_u32(conn)
            log.debug("handshake from a version %d client", client)
            conn.sendall(_u32(_SERVER_VERSION) + _u32(_ENDPOINT_FLAGS) + _u32(0))
        elif code in (SIGNAL_HASH_START, SIGNAL_HASH_END):
            log.warning("the locality-4 hash signals are not modelled (as in QEMU); ignored")
            conn.sendall(_u32(0))
        elif code == SIGNAL_HASH_DATA:
            _recv(conn, _recv_u32(conn))
            conn.sendall(_u32(0))
        elif code == SESSION_END:
            raise _Closed("session end")
        elif code == STOP:
            conn.sendall(_u32(0))
            self.shutdown()
            raise _Closed("stop")
        else:
            raise _Closed(f"unknown command-port code {code}")

    def _mssim_platform(self, conn: socket.socket) -> None:
        signal = _recv_u32(conn)
        try:
            self._mssim_signal(conn, signal)
        except TpmDevError as exc:
            log.error("platform signal %d failed in the device: %s", signal, exc)
            conn.sendall(_u32(_MSSIM_FAILED))
            return
        conn.sendall(_u32(0))

    def _mssim_signal(self, conn: socket.socket, signal: int) -> None:
        if signal == SIGNAL_POWER_ON:
            self._power_on()
        elif signal == SIGNAL_POWER_OFF:
            self._power_off()
        elif signal == SIGNAL_RESET:
            self._power_off()
            self._power_on()
        elif signal == SIGNAL_CANCEL_ON:
            self.dev.backend.cancel()  # thread-safe; reaches the command in flight
        elif signal == SESSION_END:
            raise _Closed("session end")
        elif signal == STOP:
            conn.sendall(_u32(0))
            self.shutdown()
            raise _Closed("stop")
        elif signal not in _ACK_ONLY:
            raise _Closed(f"unknown platform signal {signal}")

    # -- swtpm -----------------------------------------------------------------------
    def _swtpm_data(self, conn: socket.socket) -> None:
        header = _recv(conn, HEADER_SIZE)
        size = header_size(header)
        if not HEADER_SIZE <= size <= _MAX_COMMAND:
            raise _Closed(f"a {size}-byte command: not a TPM command")
        command = header + _recv(conn, size - HEADER_SIZE)
        if not self.powered:  # after CMD_STOP: refused until CMD_INIT, as swtpm does
            conn.sendall(self._failure())
            return
        conn.sendall(self._run(command, self.locality))

    def _swtpm_control(self, conn: socket.socket) -> None:
        from tpmdev.backends import swtpm as sw  # (its message tables: loaded for this protocol only)

        code = _recv_u32(conn)
        if code == sw.CMD_GET_CAPABILITY:
            conn.sendall(_u32(0) + _u32(_swtpm_caps(sw)))  # u32 result, u32 caps (ptm_cap_n)
            return
        if code == sw.CMD_SHUTDOWN:
            conn.sendall(_u32(_TPM_SUCCESS))
            self.shutdown()
            raise _Closed("shutdown")
        if code not in _SWTPM_ANSWER_SIZES:
            # state blobs, SET_DATAFD, hashing: not on this server
            log.warning("control command %#x is not served; answered TPM_BAD_ORDINAL", code)
            conn.sendall(_u32(_TPM_BAD_ORDINAL))
            raise _Closed("unserved control command")  # its body (if any) is unknown
        try:
            result, body = self._swtpm_control_command(conn, sw, code)
        except TpmDevError as exc:
            log.error("control command %#x failed in the device: %s", code, exc)
            # the answer keeps its size (zeroes after the result), as a client reads it whole
            result, body = _TPM_FAIL, bytes(_SWTPM_ANSWER_SIZES[code])
        conn.sendall(_u32(result) + body)

    def _swtpm_control_command(self, conn: socket.socket, sw: Any, code: int) -> tuple[int, bytes]:
        """Run control command *code* (its request body still to read): ``(result, body)``."""
        result = _TPM_SUCCESS
        body = b""
        if code == sw.CMD_INIT:
            _recv_u32(conn)  # init flags
            with self._lock:
                self.powered = False  # (stays off if the reset fails: commands are refused)
                self.dev.reset()
                self.powered = True
        elif code == sw.CMD_GET_TPMESTABLISHED:
            flag = bool(self.dev.backend.get_established_flag())
            body = bytes([int(flag), 0, 0, 0])
        elif code == sw.CMD_SET_LOCALITY:
            locality = _recv(conn, 1)[0]
            if locality > 4:
                result = _TPM_BAD_LOCALITY
            else:
                self.locality = locality
        elif code == sw.CMD_CANCEL_TPM_CMD:
            self.dev.backend.cancel()
        elif code == sw.CMD_RESET_TPMESTABLISHED:
            locality = _recv(conn, 1)[0]
            with self._lock:
                self.dev.backend.reset_established_flag(locality)
        elif code == sw.CMD_STOP:
            with self._lock:
                self.powered = False
        elif code == sw.CMD_STORE_VOLATILE:
            pass
        elif code == sw.CMD_GET_CONFIG:
            body = _u32(0)
        elif code == sw.CMD_SET_BUFFERSIZE:
            wanted = _recv_u32(conn)
            # what the device takes: the backend's size capped at the frontend's
            # buffer, as the device computes it at reset
            size = min(int(self.dev.backend.get_buffer_size()), int(self.dev.buffer_max))
            if wanted not in (0, size):
                result = _TPM_FAIL  # a running device keeps its buffer size
            body = _u32(size) + _u32(size) + _u32(size)
        else:  # CMD_GET_INFO
            _recv(conn, 16)  # u64 flags, u32 offset, u32 pad
            version = self.dev.tpm_version
            spec = b'{"TPMSpecification":{"family":"%s"}}' % (b"2.0" if version == 2 else b"1.2")
            text = spec + b"\x00"
            body = _u32(len(text)) + _u32(len(text)) + text
        return result, body
