"""The one backend contract (tpmdev.backends.base), held by every backend.

Table-driven: every bad argument of every public method, on every backend
(Builtin TPM 2.0 and 1.2, Libtpms, Emulator over a real swtpm, Passthrough
over the stand-in device bridged to a real swtpm), raises the same tpmdev
error with the same message, and leaves the backend usable. Then the
closed latch on every backend, the failed latch of the base class, and the
constructors' bad options.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tpmdev
from tpmdev.backends import Backend, detect_buffer_size
from tpmdev.backends.base import LOCALITIES, MAX_COMMAND_SIZE
from tpmdev.backends.builtin import Builtin
from tpmdev.backends.emulator import Emulator
from tpmdev.backends.libtpms import Libtpms
from tpmdev.backends.passthrough import Passthrough
from tpmdev.drivers import commands as C
from tpmdev.errors import AccessError, BackendError, ConfigurationError, StateError, TpmDevError
from tpmdev.wire import response_code

from standin import StandIn
from test_passthrough import STANDIN_PATH, passthrough, standin  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("no_leaked_swtpm")

KINDS = ["builtin-2.0", "builtin-1.2", "libtpms", "emulator", "passthrough"]


@pytest.fixture(params=KINDS)
def backend(
    request: pytest.FixtureRequest,
    spawn: Callable[..., Emulator],
    passthrough: Callable[..., tuple[Passthrough, StandIn]],
) -> Iterator[Backend]:
    kind = request.param
    made: Backend
    if kind == "builtin-2.0":
        made = Builtin(2)
    elif kind == "builtin-1.2":
        made = Builtin(1)
    elif kind == "libtpms":
        made = Libtpms(2)
    elif kind == "emulator":
        made = spawn(2)
    else:
        made, _device = passthrough(2)
    made.startup(0)
    if kind != "passthrough":  # the stand-in's host TPM is started already
        startup = C.tpm2_startup() if made.tpm_version == 2 else C.tpm12_startup()
        assert response_code(made.execute(startup)) == 0
    yield made
    made.close()


def probe(backend: Backend) -> bytes:
    return C.tpm2_get_random(8) if backend.tpm_version == 2 else C.tpm12_get_random(8)


def still_usable(backend: Backend) -> None:
    assert backend.failure is None
    assert response_code(backend.execute(probe(backend))) == 0


class Loc(enum.IntEnum):
    THREE = 3


# -- every bad argument, on every backend ----------------------------------------------------
# (id, call, error, message)
BAD_CALLS: list[tuple[str, Callable[[Backend], object], type[TpmDevError], str]] = [
    ("execute(int)", lambda b: b.execute(12), AccessError, "command must be bytes-like.*int"),  # type: ignore[arg-type]
    ("execute(str)", lambda b: b.execute("80010000000a"), AccessError, "command must be bytes-like.*str"),  # type: ignore[arg-type]
    ("execute(None)", lambda b: b.execute(None), AccessError, "command must be bytes-like"),  # type: ignore[arg-type]
    ("execute(list)", lambda b: b.execute([0x80, 1]), AccessError, "command must be bytes-like"),  # type: ignore[arg-type]
    (
        "execute(too long)",
        lambda b: b.execute(bytes(MAX_COMMAND_SIZE + 1)),
        AccessError,
        "at most 65536 bytes",
    ),
    ("locality -1", lambda b: b.execute(probe(b), -1), AccessError, "locality must be an int 0..4"),
    ("locality 5", lambda b: b.execute(probe(b), 5), AccessError, "locality must be an int 0..4.*5"),
    ("locality 255", lambda b: b.execute(probe(b), 255), AccessError, "locality must be an int 0..4"),
    ("locality '4'", lambda b: b.execute(probe(b), "4"), AccessError, "locality.*'4'"),  # type: ignore[arg-type]
    ("locality 1.9", lambda b: b.execute(probe(b), 1.9), AccessError, "locality.*1.9"),  # type: ignore[arg-type]
    ("locality True", lambda b: b.execute(probe(b), True), AccessError, "locality.*True"),
    ("locality None", lambda b: b.execute(probe(b), None), AccessError, "locality.*None"),  # type: ignore[arg-type]
    ("startup(-1)", lambda b: b.startup(-1), AccessError, "buffer_size must be an int"),
    ("startup(2**32)", lambda b: b.startup(2**32), AccessError, "buffer_size must be an int"),
    ("startup(True)", lambda b: b.startup(True), AccessError, "buffer_size.*True"),
    ("startup('4096')", lambda b: b.startup("4096"), AccessError, "buffer_size"),  # type: ignore[arg-type]
    ("startup(1.5)", lambda b: b.startup(1.5), AccessError, "buffer_size"),  # type: ignore[arg-type]
    ("reset_established_flag(-1)", lambda b: b.reset_established_flag(-1), AccessError, "locality"),
    ("reset_established_flag(5)", lambda b: b.reset_established_flag(5), AccessError, "locality"),
    ("reset_established_flag(True)", lambda b: b.reset_established_flag(True), AccessError, "locality"),
    ("reset_established_flag('3')", lambda b: b.reset_established_flag("3"), AccessError, "locality"),  # type: ignore[arg-type]
    ("set_state(None)", lambda b: b.set_state(None), StateError, "mapping.*NoneType"),  # type: ignore[arg-type]
    ("set_state([])", lambda b: b.set_state([]), StateError, "mapping.*list"),  # type: ignore[arg-type]
    ("set_state(b'')", lambda b: b.set_state(b""), StateError, "mapping.*bytes"),  # type: ignore[arg-type]
    (
        "set_state str value",
        lambda b: b.set_state({"permanent": "s"}),
        StateError,
        r"state\['permanent'\].*str",
    ),
    ("set_state int value", lambda b: b.set_state({"volatile": 12}), StateError, r"state\['volatile'\].*int"),
    ("set_state None value", lambda b: b.set_state({"permanent": None}), StateError, r"state\['permanent'\]"),
    ("set_state unknown key", lambda b: b.set_state({"nvram": b""}), StateError, "unknown state keys"),
    ("set_state int key", lambda b: b.set_state({1: b""}), StateError, "unknown state keys"),  # type: ignore[dict-item]
]


@pytest.mark.parametrize(
    ("call", "error", "message"), [row[1:] for row in BAD_CALLS], ids=[r[0] for r in BAD_CALLS]
)
def test_bad_argument_is_a_tpmdev_error(
    backend: Backend, call: Callable[[Backend], object], error: type[TpmDevError], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        call(backend)
    assert type(info.value) is error  # not a subclass, not a bare ValueError / TypeError
    still_usable(backend)


# -- what the rule accepts ----------------------------------------------------------------------
def test_bytes_like_commands_and_int_localities_are_taken(backend: Backend) -> None:
    command = probe(backend)
    for form in (bytearray(command), memoryview(command), memoryview(b"xx" + command)[2:]):
        assert response_code(backend.execute(form)) == 0
    for locality in (*LOCALITIES, Loc.THREE):
        assert len(backend.execute(command, locality)) >= 10
    backend.reset_established_flag(Loc.THREE)


def test_every_backend_takes_any_locality_in_the_range(backend: Backend) -> None:
    # The same five localities everywhere: 0..4 are accepted (the TPM says
    # what it allows at each), nothing else reaches a TPM.
    assert list(LOCALITIES) == [0, 1, 2, 3, 4]
    for locality in LOCALITIES:
        backend.reset_established_flag(locality)  # a TPM may refuse (logged), never a host error
    still_usable(backend)


# -- the closed latch ----------------------------------------------------------------------------
CLOSED_CALLS: list[tuple[str, Callable[[Backend], object]]] = [
    ("execute", lambda b: b.execute(probe(b))),
    ("startup", lambda b: b.startup(0)),
    ("reset", lambda b: b.reset()),
    ("get_buffer_size", lambda b: b.get_buffer_size()),
    ("get_established_flag", lambda b: b.get_established_flag()),
    ("reset_established_flag", lambda b: b.reset_established_flag(3)),
    ("get_state", lambda b: b.get_state()),
    ("set_state", lambda b: b.set_state({})),
]


def test_closed_backend_refuses_everything_but_close_and_cancel(backend: Backend) -> None:
    backend.close()
    assert backend.closed
    for name, call in CLOSED_CALLS:
        with pytest.raises(StateError, match="is closed; create a new backend"):
            call(backend)
        assert name
    backend.cancel()  # never raises
    backend.close()  # idempotent


def test_bad_argument_is_reported_before_the_closed_latch(backend: Backend) -> None:
    # Host misuse is the same error whatever the backend's state.
    backend.close()
    with pytest.raises(AccessError):
        backend.execute(12)  # type: ignore[arg-type]
    with pytest.raises(AccessError):
        backend.execute(b"\x80\x01" + bytes(8), 7)


# -- the failed latch, written once in the base class --------------------------------------------
class Faulty(Backend):
    """Fault injection: a backend whose TPM is lost after *good* commands."""

    tpm_version = 2

    def __init__(self, good: int) -> None:
        self.good = good
        self.ran: list[tuple[bytes, int]] = []

    def _execute(self, command: bytes, locality: int) -> bytes:
        if len(self.ran) >= self.good:
            self._fail("the TPM went away")
            raise BackendError("the TPM went away")
        self.ran.append((command, locality))
        return bytes.fromhex("80010000000a00000000")


def test_failed_latch() -> None:
    b = Faulty(good=1)
    b.execute(bytearray(b"\x80\x01" + bytes(8)), 4)
    assert b.ran == [(b"\x80\x01" + bytes(8), 4)]  # the inner step gets bytes and an int
    with pytest.raises(BackendError, match="went away"):
        b.execute(bytes(10))
    assert b.failure == "the TPM went away"
    for call in (lambda: b.execute(bytes(10)), lambda: b.startup(0), b.get_state, lambda: b.set_state({})):
        with pytest.raises(BackendError, match=r"Faulty failed earlier \(the TPM went away\); create a new"):
            call()
    assert len(b.ran) == 1  # nothing reached the inner step after the failure
    b._fail("a second reason")
    assert b.failure == "the TPM went away"  # the first one is kept
    assert b.get_buffer_size() == 4096 and b.get_established_flag() is False  # answers, not commands
    b.close()
    with pytest.raises(StateError, match="closed"):
        b.execute(bytes(10))


def test_base_class_defaults() -> None:
    b = Faulty(good=10)
    b.startup(4096)
    b.reset()
    b.cancel()
    b.reset_established_flag(4)
    assert b.get_established_flag() is False
    with pytest.raises(StateError, match="Faulty cannot save its state"):
        b.get_state()
    with pytest.raises(StateError, match="Faulty cannot load a saved state"):
        b.set_state({"permanent": b"x"})


# -- constructors and other host arguments -------------------------------------------------------
def _file(tmp_path: Path) -> str:
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return str(path)


CONSTRUCTORS: list[tuple[str, Callable[[Path], object], str]] = [
    ("Builtin(tpm_version=True)", lambda t: Builtin(True), "tpm_version"),
    ("Builtin(tpm_version=0)", lambda t: Builtin(0), "tpm_version"),
    ("Builtin(tpm_version='2')", lambda t: Builtin("2"), "tpm_version"),  # type: ignore[arg-type]
    ("Builtin(tpm_version=2.0)", lambda t: Builtin(2.0), "tpm_version"),  # type: ignore[arg-type]
    ("Builtin(seed='x')", lambda t: Builtin(seed="x"), "seed must be"),  # type: ignore[arg-type]
    ("Builtin(seed=-1)", lambda t: Builtin(seed=-1), "seed must be"),
    ("Builtin(seed=True)", lambda t: Builtin(seed=True), "seed must be"),
    ("Builtin(seed=1.5)", lambda t: Builtin(seed=1.5), "seed must be"),  # type: ignore[arg-type]
    ("Builtin(pcr_banks='sha256')", lambda t: Builtin(pcr_banks="sha256"), "pcr_banks"),
    ("Builtin(pcr_banks=[11])", lambda t: Builtin(pcr_banks=[11]), "pcr_banks"),  # type: ignore[list-item]
    ("Builtin(pcr_banks=None)", lambda t: Builtin(pcr_banks=None), "pcr_banks"),  # type: ignore[arg-type]
    ("Libtpms(tpm_version=True)", lambda t: Libtpms(True), "tpm_version"),
    ("Libtpms(tpm_version=3)", lambda t: Libtpms(3), "tpm_version"),
    ("Libtpms(state_dir=12)", lambda t: Libtpms(2, 12), "state_dir must be a path"),  # type: ignore[arg-type]
    ("Libtpms(state_dir=file)", lambda t: Libtpms(2, _file(t)), "cannot use"),
    ("Libtpms(library=12)", lambda t: Libtpms(2, library=12), "library must be a path"),  # type: ignore[arg-type]
    ("Emulator(12)", lambda t: Emulator(12), "ctrl_path must be a path"),  # type: ignore[arg-type]
    ("Emulator.spawn(file)", lambda t: Emulator.spawn(_file(t)), "cannot use .* as the TPM state directory"),
    ("Emulator.spawn(12)", lambda t: Emulator.spawn(12), "state_dir must be a path"),  # type: ignore[arg-type]
    ("Emulator.spawn(tpm_version=True)", lambda t: Emulator.spawn(t, True), "tpm_version"),
    ("Emulator.spawn(log_level='x')", lambda t: Emulator.spawn(t, log_level="x"), "log_level"),  # type: ignore[arg-type]
    ("Emulator.spawn(extra_args=str)", lambda t: Emulator.spawn(t, extra_args="--x"), "extra_args"),
    ("Emulator.spawn(swtpm=12)", lambda t: Emulator.spawn(t, swtpm=12), "swtpm must be"),  # type: ignore[arg-type]
    ("Emulator.spawn(key=12)", lambda t: Emulator.spawn(t, key=12), "key must be a path"),  # type: ignore[arg-type]
    ("Emulator.spawn(timeout=True)", lambda t: Emulator.spawn(t, timeout=True), "timeout"),
    ("Emulator.spawn(timeout=inf)", lambda t: Emulator.spawn(t, timeout=float("inf")), "timeout"),
    ("Passthrough(None)", lambda t: Passthrough(None), "path must be a path"),  # type: ignore[arg-type]
    ("Passthrough(3)", lambda t: Passthrough(3), "pass a descriptor as fd="),  # type: ignore[arg-type]
    ("Passthrough(fd='3')", lambda t: Passthrough(fd="3"), "fd must be an open file descriptor"),  # type: ignore[arg-type]
    ("Passthrough(fd=True)", lambda t: Passthrough(fd=True), "fd must be"),
    ("Passthrough(cancel_path=5)", lambda t: Passthrough(STANDIN_PATH, 5, fd=os.dup(0)), "cancel_path"),  # type: ignore[arg-type]
    ("open(12)", lambda t: tpmdev.backends.open(12), "backend spec is a string"),  # type: ignore[arg-type]
    ("detect_buffer_size(True)", lambda t: detect_buffer_size(Builtin(), True), "tpm_version"),
]


@pytest.mark.parametrize(
    ("make", "message"), [row[1:] for row in CONSTRUCTORS], ids=[r[0] for r in CONSTRUCTORS]
)
def test_bad_option_is_a_configuration_error(
    tmp_path: Path, make: Callable[[Path], Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make(tmp_path)


def test_other_host_arguments(spawn: Callable[..., Emulator]) -> None:
    emu = spawn(2)
    for call in (
        lambda: emu.hash_data(12),
        lambda: emu.hash_sequence("abc"),
        lambda: emu.hash_sequence(b"", 5),
    ):
        with pytest.raises(AccessError):
            call()  # type: ignore[no-untyped-call]
    with Libtpms(2) as tpm:
        with pytest.raises(AccessError, match="data must be bytes-like"):
            tpm.hash_data(3)  # type: ignore[arg-type]
        with pytest.raises(AccessError, match="flags"):
            tpm.get_info("3")  # type: ignore[arg-type]
