"""A unix socket relay that can misbehave, for fault injection between us and swtpm.

``Proxy(listen_path, target_path)`` accepts one client on *listen_path*,
connects it to *target_path* and relays both ways on one thread. Requests
(client -> target) pass unchanged; what comes back (target -> client) goes
through :attr:`Proxy.fault`, set with :meth:`Proxy.inject`:

``"stall"``      swallow every reply from now on (the client waits)
``"truncate"``   pass the first *n* bytes of the next reply, swallow the rest
``"cut"``        pass the first *n* bytes of the next reply, then hang up
``"oversize"``   rewrite the next reply's header size to *n* (a TPM response)
``"replace"``    send bytes *data* instead of the next reply
``"extra"``      send *data* after the next reply (a reply that is too long)
``"drop"``       hang up on the next request, before it reaches the target

When the target hangs up (swtpm killed) the client is hung up on too, as a
dead swtpm's end of stream would be seen without the relay.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading

from typing import Optional

from standin import connect_when_listening

__all__ = ["Proxy"]


class Proxy:
    def __init__(self, listen_path: str, target_path: str) -> None:
        self.listen_path = listen_path
        self.target_path = target_path
        self.fault: Optional[str] = None
        self.n = 0
        self.data = b""
        self.replies = 0  # replies relayed or tampered with
        self.requests: list[bytes] = []
        self.got_request = threading.Event()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(listen_path)
        self._listener.listen(1)
        self._stop = False
        self.thread = threading.Thread(target=self._run, name=f"proxy-{os.path.basename(listen_path)}")
        self.thread.daemon = True
        self.thread.start()

    def inject(self, fault: Optional[str], n: int = 0, data: bytes = b"") -> None:
        with self._lock:
            self.fault, self.n, self.data = fault, n, data
            self.got_request.clear()

    # -- the relay ------------------------------------------------------------
    def _run(self) -> None:
        client: Optional[socket.socket] = None
        upstream: Optional[socket.socket] = None
        try:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [], 30)
            if self._listener not in ready:
                return
            client, _ = self._listener.accept()
            upstream = connect_when_listening(self.target_path)
            while not self._stop:
                ready, _, _ = select.select([client, upstream, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                if client in ready:
                    data = client.recv(1 << 16)
                    if not data:
                        return
                    with self._lock:
                        fault = self.fault
                    self.requests.append(data)
                    self.got_request.set()
                    if fault == "drop":
                        return
                    upstream.sendall(data)
                if upstream in ready:
                    data = upstream.recv(1 << 16)
                    if not data:
                        return  # the target died: hang up on the client too
                    out, hang_up = self._tamper(data)
                    if out:
                        client.sendall(out)
                    if hang_up:
                        return
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()

    def _tamper(self, data: bytes) -> tuple[bytes, bool]:
        with self._lock:
            fault, n, extra = self.fault, self.n, self.data
            if fault not in (None, "stall"):
                self.fault = "stall" if fault == "truncate" else None
            self.replies += 1
        if fault is None:
            return data, False
        if fault == "stall":
            return b"", False
        if fault == "truncate":
            return data[:n], False
        if fault == "cut":
            return data[:n], True
        if fault == "oversize":
            return data[:2] + struct.pack(">I", n) + data[6:], False
        if fault == "replace":
            return extra, False
        if fault == "extra":
            return data + extra, False
        raise AssertionError(f"unknown fault {fault!r}")

    def close(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self.thread.join(10)
        assert not self.thread.is_alive(), "proxy thread did not stop"
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        try:
            os.unlink(self.listen_path)
        except OSError:
            pass
