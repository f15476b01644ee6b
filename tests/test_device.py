"""The device layer's subclass contract, with a message-level toy frontend.

``Mailbox`` is the smallest frontend there is: a core that takes a whole
command and hands back a whole response (the shape of the SPAPR vTPM), and
thirty lines of glue. It checks what every frontend relies on: the hooks are
called in QEMU's reset order, the buffer cap applies, backend failures reach
the core as ``failed=True``, asynchronous completions are applied on the
driving thread, and the host's callbacks are contained.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import pytest

import tpmdev
from tpmdev._device import REQUEST_CANCEL, REQUEST_COMMAND, REQUEST_ESTABLISHED, Device, check_callback
from tpmdev.backends.base import Backend
from tpmdev.drivers import commands as C
from tpmdev.wire import FATAL_RESPONSE, response_code


class MailboxCore:
    """A sans-IO core that speaks the shared request/complete vocabulary."""

    def __init__(self, request: Callable[[int], object], deliver: Callable[[bytes], object]) -> None:
        self._request = request
        self._deliver = deliver
        self._command: Optional[bytes] = None
        self._posted: Optional[tuple[bytes, bool, bool]] = None
        self.resets: list[tuple[int, int]] = []
        self.completions: list[tuple[bytes, bool, bool]] = []
        self.established: Optional[bool] = None

    # -- the bus side (what the guest does) --
    def send(self, command: bytes) -> None:
        self.poll()
        if self._command is None:
            self._command = command
            self._request(REQUEST_COMMAND)

    def cancel(self) -> None:
        self._request(REQUEST_CANCEL)

    def read_established(self) -> Optional[bool]:
        self._request(REQUEST_ESTABLISHED)
        return self.established

    # -- the contract --
    def reset(self, tpm_version: int, bufsize: int) -> None:
        self.resets.append((tpm_version, bufsize))
        self._command = None
        self._posted = None

    @property
    def pending_command(self) -> Optional[tuple[int, bytes]]:
        return None if self._command is None else (0, self._command)

    def complete(self, response: bytes, selftest_done: bool = False, failed: bool = False) -> None:
        if self._command is None:
            return
        self._command = None
        self.completions.append((response, selftest_done, failed))
        self._deliver(response)

    def post(self, response: bytes, selftest_done: bool = False, failed: bool = False) -> None:
        self._posted = (bytes(response), selftest_done, failed)

    def poll(self) -> bool:
        posted, self._posted = self._posted, None
        if posted is None:
            return False
        self.complete(*posted)
        return True

    def set_established(self, established: bool) -> None:
        self.established = established


class Mailbox(Device):
    """The glue: options, the core, the bus methods."""

    _Core = MailboxCore
    _name = "Mailbox"
    buffer_max = 2048

    def __init__(self, backend: Backend, *, deliver: Callable[[bytes], object], **options: Any) -> None:
        if check_callback("deliver", deliver, " taking the response") is None:
            raise tpmdev.ConfigurationError("deliver must be a callable taking the response")
        self._on_response = deliver
        super().__init__(backend, **options)

    def _make_core(self, request: Callable[[int], object]) -> Any:
        return self._Core(request, self._contain("deliver", self._on_response))

    def send(self, command: bytes) -> None:
        self.core.send(command)


class Recorder(tpmdev.backends.Builtin):
    def __init__(self, buffer_size: int = 4096) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.buffer_size = buffer_size

    def get_buffer_size(self) -> int:
        self.calls.append("get_buffer_size")
        return self.buffer_size

    def reset(self) -> None:
        self.calls.append("reset")
        super().reset()

    def startup(self, buffer_size: int = 0) -> None:
        self.calls.append(f"startup({buffer_size})")
        super().startup(buffer_size)


def test_reset_order_and_buffer_cap() -> None:
    backend = Recorder(buffer_size=4096)
    with Mailbox(backend, deliver=lambda r: None) as dev:
        assert backend.calls == ["get_buffer_size", "reset", "startup(2048)"]
        assert dev.core.resets == [(2, 2048)] and dev.tpm_version == 2
        backend.buffer_size = 1024
        dev.reset()
        assert backend.calls[3:] == ["get_buffer_size", "reset", "startup(1024)"]
        assert dev.core.resets[-1] == (2, 1024)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_commands_and_failures_through_the_contract(asynchronous: bool) -> None:
    responses: list[bytes] = []
    errors: list[tpmdev.BackendError] = []
    backend = tpmdev.backends.Builtin()
    with Mailbox(
        backend, deliver=responses.append, asynchronous=asynchronous, on_backend_error=errors.append
    ) as dev:
        dev.send(C.tpm2_startup())
        assert dev.wait(10)
        assert response_code(responses[-1]) == 0
        assert dev.core.completions[-1][1:] == (False, False)
        backend.close()  # the TPM goes away: the next command fails
        dev.send(C.tpm2_get_random(8))
        assert dev.wait(10)
        assert responses[-1] == FATAL_RESPONSE and dev.core.completions[-1][1:] == (False, True)
        assert errors and dev.backend_error is errors[-1]
        fresh = tpmdev.backends.Builtin()
        assert dev.attach(fresh) is backend and dev.backend_error is None
        dev.send(C.tpm2_startup())
        assert dev.wait(10) and response_code(responses[-1]) == 0


def test_async_completion_is_applied_on_the_driving_thread() -> None:
    threads: list[threading.Thread] = []
    ready = threading.Event()
    with Mailbox(
        tpmdev.backends.Builtin(),
        deliver=lambda r: threads.append(threading.current_thread()),
        asynchronous=True,
        on_complete=ready.set,
    ) as dev:
        dev.send(C.tpm2_startup())
        assert ready.wait(10) and threads == []  # posted, not applied
        assert dev.poll() is True and threads == [threading.current_thread()]


def test_established_flag_and_contained_bus_callback() -> None:
    class Established(tpmdev.backends.Builtin):
        def get_established_flag(self) -> bool:
            return True

    def broken(response: bytes) -> None:
        raise RuntimeError("host bug")

    with Mailbox(Established(), deliver=broken) as dev:
        assert dev.core.read_established() is True
        dev.send(C.tpm2_startup())  # the callback fails; the device goes on
        assert isinstance(dev.callback_error, RuntimeError)
        assert response_code(dev.core.completions[-1][0]) == 0


def test_frontend_options_are_checked() -> None:
    backend = tpmdev.backends.Builtin()
    with pytest.raises(tpmdev.ConfigurationError, match="deliver"):
        Mailbox(backend, deliver=None)  # type: ignore[arg-type]
    with pytest.raises(tpmdev.ConfigurationError, match="tpm_version"):
        Mailbox(backend, deliver=print, tpm_version=True)
    backend.close()


def test_a_frontend_must_build_its_core() -> None:
    class NoCore(Device):
        pass

    backend = tpmdev.backends.Builtin()
    with pytest.raises(NotImplementedError, match="_make_core"):
        NoCore(backend)
    assert backend.closed  # owned, and the construction failed
