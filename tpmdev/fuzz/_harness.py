"""What every fuzz harness shares: the input reader, lockstep comparison, findings, stats, ``main``.

Input format
------------
Every harness reads its input with :class:`Reader`, a cursor over the
fuzzer's bytes that never fails: past the end it yields zeros and
:attr:`Reader.done` turns true, so any byte string is a valid input (an
empty one included). Each target documents its own operation encoding in its
module docstring; the seed corpus is written in it by :mod:`tpmdev.fuzz.seeds`.

Lockstep
--------
A harness builds the device twice, once on the pure-Python register model
(the one the fuzzer's coverage instrumentation sees) and once on the compiled
model when it is loaded, and applies each decoded operation to both with
:func:`same`: every result (a value read, an ACK, bytes received) must be
equal, and at the end the MMIO image too. A difference raises
:class:`Disagreement`; any exception out of a device is a finding as it
stands (guest input never raises), and so is a backend or host-callback
error the device contained (:func:`check_contained`).

Running under libFuzzer
-----------------------
:func:`fuzz_main` instruments the tpmdev modules already imported (the pure
register models are loaded from source under private names, beyond the reach
of an import hook, so the functions are instrumented in place) and hands
``TestOneInput`` to atheris. Each target module's ``main()`` calls it, so
``python -m tpmdev.fuzz.tis CORPUS -max_total_time=60`` is a libFuzzer
binary in all but name, and OSS-Fuzz's ``fuzz_*.py`` wrappers only import
and call ``main()``.
"""

from __future__ import annotations

import collections
import gc
import logging
import shlex
import sys
import time
import types
from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np

import tpmdev
import tpmdev.hw
from tpmdev.backends import Builtin
from tpmdev.backends.base import Backend

__all__ = [
    "Reader",
    "Disagreement",
    "Finding",
    "Stats",
    "STATS",
    "same",
    "check_contained",
    "check_images",
    "pure_class",
    "variants",
    "backends",
    "fuzz_main",
    "COMMON_MODULES",
    "quiet_logging",
    "pure_module",
]


class Finding(AssertionError):
    """Something a fuzz input made the library do that it must never do."""


class Disagreement(Finding):
    """The compiled and the pure register models answered an operation differently."""


class Stats:
    """Counters of the current process (inputs run, operations applied per variant)."""

    def __init__(self) -> None:
        self.inputs = 0
        self.ops = 0
        self.start = time.monotonic()

    def reset(self) -> None:
        self.inputs = 0
        self.ops = 0
        self.start = time.monotonic()

    def line(self) -> str:
        """One line for the end of a run: inputs, operations and their rates."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return (
            f"tpmdev-fuzz-stats: inputs={self.inputs} ops={self.ops} seconds={elapsed:.1f} "
            f"inputs_per_sec={self.inputs / elapsed:.0f} ops_per_sec={self.ops / elapsed:.0f}"
        )


#: The counters of this process; ``ops`` counts operations on the pure variant.
STATS = Stats()


class Reader:
    """A cursor over fuzz input bytes that never runs out: zeros past the end."""

    __slots__ = ("_data", "_len", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._len = len(self._data)

    @property
    def done(self) -> bool:
        return self._pos >= self._len

    def u8(self) -> int:
        pos = self._pos
        self._pos = pos + 1
        return self._data[pos] if pos < self._len else 0

    def u16(self) -> int:
        """Two bytes, little-endian."""
        return self.u8() | (self.u8() << 8)

    def uint(self, size: int) -> int:
        """*size* bytes, little-endian."""
        value = int.from_bytes(self.take(size), "little")
        return value

    def take(self, n: int) -> bytes:
        """*n* bytes (fewer at the end of the input)."""
        pos = self._pos
        self._pos = pos + n
        return self._data[pos : pos + n]


def same(what: str, results: Sequence[object]) -> object:
    """The common result of one operation on every variant; :class:`Disagreement` if they differ."""
    first = results[0]
    for other in results[1:]:
        if other != first:
            raise Disagreement(f"{what}: the pure model gave {first!r}, the compiled one {other!r}")
    return first


def check_images(what: str, images: Sequence[Any]) -> None:
    """The MMIO images (numpy arrays or bytes-likes) of every variant are identical."""
    first = np.asarray(images[0])
    for other in images[1:]:
        other = np.asarray(other)
        if first.shape != other.shape or not np.array_equal(first, other):
            diff: Any = np.flatnonzero(first != other) if first.shape == other.shape else []
            where = ", ".join(f"{int(i):#x}" for i in diff[:8])
            raise Disagreement(f"{what}: the MMIO images differ (first offsets: {where or 'shape'})")


def check_contained(devices: Sequence[Any]) -> None:
    """A device turned an exception of its backend or of a host callback into guest
    behaviour: still a finding (the backend here is the builtin TPM, which never fails)."""
    for dev in devices:
        if dev.backend_error is not None:
            raise Finding(f"{type(dev).__name__}: the backend failed: {dev.backend_error!r}")
        if dev.callback_error is not None:
            raise Finding(f"{type(dev).__name__}: a host callback failed: {dev.callback_error!r}")
        backend = dev.backend
        if isinstance(backend, _Follower) and backend.exchanges:
            raise Disagreement(f"only the pure model sent {backend.exchanges[0][0][:16].hex()}...")


class _Leader(Builtin):
    """The builtin TPM of the first variant, noting each exchange for the others."""

    def __init__(self, tpm_version: int) -> None:
        super().__init__(tpm_version, seed=0)
        self.followers: list[_Follower] = []

    def _execute(self, command: bytes, locality: int) -> bytes:
        response = super()._execute(command, locality)
        for follower in self.followers:
            follower.exchanges.append((command, locality, response))
        return response


class _Follower(Backend):
    """The TPM of a variant after the first: answers with the response the leader
    gave to the same command, which this variant must send the same way."""

    def __init__(self, leader: _Leader) -> None:
        self._version = leader.tpm_version
        self.exchanges: collections.deque[tuple[bytes, int, bytes]] = collections.deque()
        leader.followers.append(self)

    @property
    def tpm_version(self) -> int:
        return self._version

    def _execute(self, command: bytes, locality: int) -> bytes:
        if not self.exchanges:
            raise Disagreement(
                f"only the compiled model sent command {command[:16].hex()} (locality {locality})"
            )
        sent, sent_locality, response = self.exchanges.popleft()
        if (sent, sent_locality) != (command, locality):
            raise Disagreement(
                f"the models sent different commands: {sent[:16].hex()}... at locality {sent_locality}, "
                f"{command[:16].hex()}... at locality {locality}"
            )
        return response


def backends(tpm_version: int, count: int) -> list[Backend]:
    """One seeded builtin TPM for the first of *count* variants, and followers that
    replay its responses for the others (the TPM runs each command once, and a
    variant that sends a different command is caught)."""
    leader = _Leader(tpm_version)
    return [leader, *(_Follower(leader) for _ in range(count - 1))]


_PURE_CLASSES: dict[tuple[type, str, str], type] = {}


def pure_class(cls: type, module: str, core: str) -> type:
    """*cls* with its ``_Core`` taken from the pure-Python variant of hot module *module*."""
    key = (cls, module, core)
    made = _PURE_CLASSES.get(key)
    if made is None:
        pure_core = getattr(tpmdev.hw.pure(module), core)
        if pure_core is getattr(cls, "_Core", None):
            made = cls
        else:
            made = type(cls.__name__, (cls,), {"_Core": pure_core, "__module__": __name__})
        _PURE_CLASSES[key] = made
    return made


def variants(cls: type, module: str, core: str) -> list[type]:
    """The classes a harness runs in lockstep: the pure variant first, then the
    compiled one when the compiled register models are loaded."""
    pure = pure_class(cls, module, core)
    return [pure, cls] if tpmdev.USE_EXTENSIONS and pure is not cls else [pure]


def pure_module(name: str) -> str:
    """The module name of the pure-Python variant of hot module *name* (what to instrument)."""
    return tpmdev.hw.pure(name).__name__


def quiet_logging() -> None:
    """Silence tpmdev's diagnostics (a fuzzer makes the device log on every odd input)."""
    logger = logging.getLogger("tpmdev")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)


#: Modules whose functions every target instruments besides its own: the device layer and
#: the wire helpers run once per command, cheap to trace. Not instrumented: the pure
#: register models' shared door (``tpmdev.hw._pure_core``: argument checks every access
#: passes here, traced on every operation for nothing) and the builtin TPM behind the
#: register targets (it has a target of its own).
COMMON_MODULES = ("tpmdev._device", "tpmdev.wire")


def _instrument(atheris: Any, modules: tuple[str, ...]) -> int:
    """Add atheris' coverage instrumentation to every function loaded from *modules*
    (module names or packages); returns how many functions."""
    count = 0
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        module = getattr(obj, "__module__", None) or ""
        if not any(module == m or module.startswith(m + ".") for m in modules):
            continue
        if module not in sys.modules:
            continue
        try:
            atheris.instrument_func(obj)
        except Exception:  # noqa: BLE001 - a function atheris cannot patch stays uninstrumented
            continue
        count += 1
    return count


def import_atheris() -> Any:
    """The atheris module, or SystemExit with what to install."""
    try:
        import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise SystemExit(
            "tpmdev fuzz needs atheris (libFuzzer for Python): pip install 'tpmdev[fuzz]' "
            "(or pip install atheris)"
        ) from None
    return atheris


#: Seconds between two statistics lines of :func:`fuzz_main`.
STATS_INTERVAL = 2.0


def fuzz_main(
    test_one_input: Callable[[bytes], None],
    modules: tuple[str, ...],
    argv: Optional[list[str]] = None,
    module: Optional[str] = None,
) -> None:
    """Run *test_one_input* under libFuzzer (arguments: libFuzzer's, from *argv*),
    with coverage from the functions of *modules* and :data:`COMMON_MODULES`.
    *module* names the harness module, so that the processes libFuzzer's
    ``-fork`` / ``-jobs`` start run it as ``python -m module``; None keeps
    ``argv[0]`` (an executable wrapper, as OSS-Fuzz builds).

    Every :data:`STATS_INTERVAL` seconds a ``tpmdev-fuzz-stats:`` line on stderr
    tells the inputs and register operations run so far, and their rates
    (libFuzzer ends the process without running Python's exit handlers).
    """
    atheris = import_atheris()
    quiet_logging()
    _instrument(atheris, modules + COMMON_MODULES)
    STATS.reset()
    next_report = [STATS.start + STATS_INTERVAL]

    def one_input(data: bytes) -> None:
        test_one_input(data)
        now = time.monotonic()
        if now >= next_report[0]:
            next_report[0] = now + STATS_INTERVAL
            sys.stderr.write(STATS.line() + "\n")

    args = list(sys.argv if argv is None else argv)
    if module is not None:
        # libFuzzer's -fork and -jobs start more processes with the command line
        # args[0] + flags, through the shell: make args[0] a command that runs
        # this module on this interpreter.
        args[0] = f"{shlex.quote(sys.executable)} -m {module}"
    atheris.Setup(args, one_input)
    atheris.Fuzz()
