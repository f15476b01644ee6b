"""What every memory-mapped TPM register core shares: the door and the vocabulary.

QEMU writes its memory core and its backend plumbing once and every TPM
frontend (TIS, CRB, ...) only supplies register semantics. This module is
that split for tpmdev's compiled cores: :class:`MmioCore` is a Cython
``cdef`` base class holding, once, everything that is not register
semantics; a frontend core derives from it and implements two C methods on
naturally aligned pieces of at most four bytes. Typed Python compiled in
place with the declarations of ``ext/tpmdev/hw/core.pxd``; the same source
runs uncompiled.

Theory of operation
-------------------

*The door.* :meth:`MmioCore.read`, :meth:`MmioCore.write`,
:meth:`MmioCore.read_many` and :meth:`MmioCore.write_many` are the entry
points. Each makes the one access check: the offset and size are ints
(numpy integers and other ``__index__`` types are taken, ``bool``, floats
and None are not), the size is one of the core's sizes, the whole access
lies in the region (``0 <= offset < region`` and ``size <= region - offset``:
no addition, so nothing can overflow), a written value is an int with
``0 <= value < 2**(8 * size)`` and a ``read_many`` count an int
``0 .. 0x1000000``. A host that gets this wrong gets an
:class:`~tpmdev.errors.AccessError` naming the device and saying what was
wrong, before anything reaches the model; any access that passes is guest
behaviour and never raises. Behind the door nothing is checked again (the
compiled build has bounds checks off).

*Splitting.* QEMU's TPM devices take accesses of 1 to 4 bytes, naturally
aligned. Every other access a guest makes through the address space (a
qtest ``readq``, an unaligned ``readl``) is cut by QEMU's memory core into
naturally aligned pieces of at most four bytes, lowest address first, before
the device sees it: 8 bytes at 0x68 are 4 at 0x68 then 4 at 0x6C; 4 bytes at
0x19 are 1 at 0x19, 2 at 0x1A, 1 at 0x1C. The pieces' values are assembled
little-endian. The core does the same, so a subclass only ever sees
aligned pieces in :meth:`_read` / :meth:`_write`.

*The request/complete vocabulary.* A core never runs a TPM (sans-IO). It
tells its owner what it needs through one callable, ``request(kind)``, with
``kind`` one of :data:`REQUEST_COMMAND` (a command is ready: the owner reads
the core's ``pending_command``), :data:`REQUEST_CANCEL`,
:data:`REQUEST_RESET_ESTABLISHED` and :data:`REQUEST_ESTABLISHED` (the owner
answers inside the call with :meth:`MmioCore.set_established`). The owner
answers a command with :meth:`MmioCore.complete`, synchronously inside the
request or later; ``failed=True`` says the backend failed (the response is
then QEMU's fatal response, and a CRB shows tpmSts). A completion produced
on another thread is handed over with :meth:`MmioCore.post` and applied on
the owner's thread at the next access or :meth:`MmioCore.poll`, the way QEMU
applies completions on its main loop.

*The established flag* is never cached in a core: each read that shows it
asks, as QEMU's frontends ask their backend (which keeps the one cache). An
owner that can answer at once gives the core a zero-argument callable with
:meth:`MmioCore.set_established_source`; a read then costs one call of it (a
true result means established) instead of a ``REQUEST_ESTABLISHED`` round
trip. No answer (no owner, or an owner that did not answer) reads as "not
established", as QEMU shows a failed query.

*Repeated accesses.* ``write_many`` / ``read_many`` are that many single
accesses to one register in one call (string I/O, a driver's byte loop into
a FIFO), with the posted completion applied before each, exactly as the
single calls would.

*Batches.* :meth:`MmioCore.execute` takes a numpy array of
:data:`~tpmdev.hw.ops.OP_DTYPE` rows (kind, size, offset, value) and runs
them in one call, in a typed loop over the rows that calls the same C paths
as :meth:`MmioCore.read` / :meth:`MmioCore.write` (no Python per row in the
compiled core). Every row is checked before the first runs; a bad one is
refused with its row number. After that each row is exactly the single
access: the posted completion applied first, the owner's requests made at
the row that triggers them (a command runs mid-batch in synchronous mode).

Invariants: ``0 < region``; the sizes mask holds only 1, 2, 4 and 8;
``_read`` returns at most ``8 * size`` bits.
"""

from __future__ import annotations

import operator
import sys
from typing import Any, Callable, Optional, Union

try:
    import cython
except ImportError:  # Cython builds the package; the pure variant runs without it
    from tpmdev.hw import _cython_shim as cython

import numpy as np

from tpmdev.errors import AccessError, ConfigurationError
from tpmdev.hw.ops import OP_DTYPE, OP_READ, OP_WRITE

__all__ = [
    "MmioCore",
    "RecordingCore",
    "REQUEST_COMMAND",
    "REQUEST_CANCEL",
    "REQUEST_RESET_ESTABLISHED",
    "REQUEST_ESTABLISHED",
    "ACCESS_SIZES",
]

#: A command is ready (read the core's ``pending_command``).
REQUEST_COMMAND = 1
#: The backend should cancel the command in flight.
REQUEST_CANCEL = 2
#: The backend should reset its established flag.
REQUEST_RESET_ESTABLISHED = 3
#: The established flag is needed: answer with :meth:`MmioCore.set_established`.
REQUEST_ESTABLISHED = 4

#: Every access size the door knows; a core allows a subset.
ACCESS_SIZES = (1, 2, 4, 8)

#: The widest piece a TPM device takes (QEMU: max_access_size 4).
_MAX_PIECE = 4
#: The established flag before the owner answered.
_UNKNOWN = -1
#: All 32 bits; a typed constant so that compiled masking stays in C.
_U32 = 0xFFFFFFFF
#: The most accesses one ``read_many`` makes (a bound on the bytes it allocates).
_MAX_COUNT = 0x1000000

#: What a response may be given as.
BytesLike = Union[bytes, bytearray, memoryview]

if sys.byteorder != "little":  # pragma: no cover - the register images are little-endian
    raise ImportError("tpmdev's register models need a little-endian host")


def _small(x: object) -> cython.Py_ssize_t:
    """The exact int *x* as a C Py_ssize_t, or -1 when it is negative or
    does not fit one (an offset or size never is negative, so -1 is refused
    with the rest): no exception to raise and catch on the hot path."""
    if cython.compiled:
        overflow: cython.int = 0
        value: cython.longlong = PyLong_AsLongLongAndOverflow(x, cython.address(overflow))  # type: ignore[name-defined]  # noqa: F821
        if overflow or value < 0 or value != cython.cast(cython.Py_ssize_t, value):
            return -1
        return cython.cast(cython.Py_ssize_t, value)
    big: int = x  # type: ignore[assignment]
    return big if 0 <= big <= sys.maxsize else -1


def _index(x: object) -> object:
    """*x* as a Python int if it is an integer of any type (``__index__``:
    numpy's integer scalars, IntEnum), else None. bool is refused: it is an
    int by inheritance only, never an offset, size, value or count."""
    if isinstance(x, bool):
        return None
    try:
        return operator.index(x)  # type: ignore[arg-type]  # (numpy's bool refuses this itself)
    except TypeError:
        return None


def _piece(addr: cython.Py_ssize_t, remaining: cython.int) -> cython.int:
    """Size of the next naturally aligned piece (at most four bytes) of an access."""
    piece: cython.int = 4 if remaining >= 4 else (2 if remaining >= 2 else 1)
    while addr & (piece - 1):
        piece >>= 1
    return piece


@cython.cclass
class MmioCore:
    """Base of the memory-mapped register cores: the checked entry points,
    the splitting of accesses, and the request/complete vocabulary.

    A subclass calls ``MmioCore.__init__`` with its name (used in error
    messages), the size of its region, the access sizes it takes and the
    owner's ``request`` callable, then implements ``_read`` / ``_write``
    (aligned pieces of 1, 2 or 4 bytes) and ``_complete``.
    """

    def __init__(
        self,
        name: str,
        region: int,
        sizes: tuple[int, ...],
        request: Optional[Callable[[int], object]] = None,
    ) -> None:
        mask: cython.uint = 0
        for s in sizes:
            if s not in ACCESS_SIZES:
                raise ValueError(f"access size {s!r} is not one of {ACCESS_SIZES}")
            mask |= 1 << s
        if region <= 0:
            raise ValueError(f"region size must be positive, got {region!r}")
        self._name = name
        self._region = region
        self._sizes = mask
        self._size_list = tuple(sorted(set(sizes)))
        self._request = request
        self._established_source: Optional[Callable[[], object]] = None
        self._posted = None
        self._established = _UNKNOWN
        self._size = 0
        self._last_int = None  # (see _int)
        self._last_value = 0

    # ------------------------------------------------------------------
    # The door
    # ------------------------------------------------------------------
    # (binding=False: the bound method is a plain C method object, the
    # cheapest call CPython has; see benchmarks/test_calls.py)
    @cython.binding(False)  # type: ignore[untyped-decorator]
    def read(self, offset: object, size: object = 4) -> object:
        """Read *size* bytes at *offset* (relative to the region's start)."""
        off: cython.Py_ssize_t = self._check("read", offset, size)
        sz: cython.int = self._size
        if self._posted is not None:
            self._apply_posted()
        if sz <= _MAX_PIECE and not (off & (sz - 1)):
            return self._int(self._read(off, sz))
        return self._int(self._read_split(off, sz))

    @cython.binding(False)  # type: ignore[untyped-decorator]
    def write(self, offset: object, value: object, size: object = 4) -> None:
        """Write the *size*-byte *value* at *offset* (little-endian on the bus)."""
        off: cython.Py_ssize_t = self._check("write", offset, size)
        sz: cython.int = self._size
        val: cython.ulonglong = self._value(value, size, sz)
        if self._posted is not None:
            self._apply_posted()
        if sz <= _MAX_PIECE and not (off & (sz - 1)):
            self._write(off, val, sz)
        else:
            self._write_split(off, val, sz)

    def write_many(self, offset: object, data: object, size: object = 1) -> None:
        """Write *data* to the register at *offset* as ``len(data) // size``
        successive *size*-byte writes (little-endian chunks), exactly as that
        many :meth:`write` calls would, in one call (string I/O; a driver's
        byte loop into a FIFO).
        """
        off: cython.Py_ssize_t = self._check("write", offset, size)
        sz: cython.int = self._size
        aligned: cython.bint = sz <= _MAX_PIECE and not (off & (sz - 1))
        i: cython.Py_ssize_t
        k: cython.Py_ssize_t
        n: cython.Py_ssize_t
        j: cython.Py_ssize_t
        value: cython.ulonglong
        raw: bytes
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AccessError(f"{self._name} write_many: data must be bytes-like, got {type(data).__name__}")
        raw = bytes(data)
        n = len(raw)
        if n % sz:
            raise AccessError(
                f"{self._name} write_many: {n} bytes of data are not a whole number of {sz}-byte writes"
            )
        for k in range(n // sz):  # (a constant step keeps the compiled loop in C)
            i = k * sz
            value = 0
            for j in range(sz - 1, -1, -1):
                value = (value << 8) | raw[i + j]
            if self._posted is not None:
                self._apply_posted()
            if aligned:
                self._write(off, value, sz)
            else:
                self._write_split(off, value, sz)

    def read_many(self, offset: object, count: object, size: object = 1) -> bytes:
        """*count* successive *size*-byte reads of the register at *offset*,
        exactly as that many :meth:`read` calls would, returned as bytes
        (each value little-endian). A response drained in one call.
        """
        off: cython.Py_ssize_t = self._check("read", offset, size)
        sz: cython.int = self._size
        aligned: cython.bint = sz <= _MAX_PIECE and not (off & (sz - 1))
        cnt: cython.Py_ssize_t = self._bounded(count, _MAX_COUNT)
        i: cython.Py_ssize_t
        j: cython.Py_ssize_t
        value: cython.ulonglong
        if cnt < 0:
            raise AccessError(
                f"{self._name} read_many: count {count!r} must be an int 0 .. 0x{_MAX_COUNT:X} (not bool)"
            )
        out = bytearray(cnt * sz)
        for i in range(cnt):
            if self._posted is not None:
                self._apply_posted()
            value = self._read(off, sz) if aligned else self._read_split(off, sz)
            for j in range(sz):
                out[i * sz + j] = (value >> (8 * j)) & 0xFF
        return bytes(out)

    # -- the one check ----------------------------------------------------
    def _check(self, op: str, offset: object, size: object) -> cython.Py_ssize_t:
        """Check an access; return the offset and leave the size in ``_size``.

        Exact ints go straight to the C conversion (one that overflows is out
        of range); the range test never adds, so it cannot overflow.
        """
        off: cython.Py_ssize_t
        sz: cython.Py_ssize_t
        if type(offset) is not int or type(size) is not int:
            return self._check_index(op, offset, size)
        off = _small(offset)
        sz = _small(size)
        if not self._fits(off, sz):
            raise AccessError(self._bad_range(op, offset, size))
        self._size = sz
        return off

    def _fits(self, off: cython.Py_ssize_t, sz: cython.Py_ssize_t) -> cython.bint:
        """Whether *sz* bytes at *off* is an access this region takes: a size
        it accepts, all of it inside (never adds, so it cannot overflow)."""
        return (
            0 <= off < self._region
            and 0 < sz <= 8
            and bool((self._sizes >> sz) & 1)
            and sz <= self._region - off
        )

    def _check_index(self, op: str, offset: object, size: object) -> cython.Py_ssize_t:
        """:meth:`_check` for integers of other types (numpy, IntEnum); the rest refused."""
        o = _index(offset)
        s = _index(size)
        if o is None or s is None:
            raise AccessError(
                f"{self._name} {op}: offset and size must be ints (numpy integers too; not bool), "
                f"got offset={offset!r}, size={size!r}"
            )
        try:
            return self._check(op, o, s)
        except AccessError:  # (said with the host's own arguments)
            raise AccessError(self._bad_range(op, offset, size)) from None

    def _value(self, value: object, size: object, sz: cython.int) -> cython.ulonglong:
        """A written value as an unsigned integer of *sz* bytes, or AccessError."""
        val: cython.ulonglong
        number: object = value
        if type(value) is not int:
            number = _index(value)
            if number is None:
                raise AccessError(
                    f"{self._name} write: value must be an int (numpy integers too; not bool), got {value!r}"
                )
        try:
            val = number
        except OverflowError:  # negative, or 2**64 and above
            raise AccessError(self._bad_value(size, value)) from None
        # Two shifts: one by 64 is undefined in C; a negative stays negative in Python.
        if (val >> (8 * sz - 1)) >> 1:
            raise AccessError(self._bad_value(size, value))
        return val

    def _bounded(self, x: object, limit: cython.Py_ssize_t) -> cython.Py_ssize_t:
        """*x* if it is an int (any integer type, not bool) in ``0 .. limit``, else -1.

        For a subclass's own host arguments (a count, a locality number); the
        caller raises with its own message."""
        n: cython.Py_ssize_t = -1
        number: object = x if type(x) is int else _index(x)
        if number is not None:
            try:
                n = number
            except OverflowError:
                return -1
        if n < 0 or n > limit:
            return -1
        return n

    def _bad_range(self, op: str, offset: object, size: object) -> str:
        sizes = ", ".join(str(s) for s in self._size_list)
        return (
            f"{self._name} {op}: size {size!r} at offset {offset!r} is not a valid access: size must be "
            f"one of {sizes} and the access must lie within 0x0..0x{self._region - 1:X}"
        )

    def _bad_value(self, size: object, value: object) -> str:
        return (
            f"{self._name} write: value {value!r} does not fit in {size!r} byte(s): "
            "need 0 <= value < 2**(8 * size)"
        )

    # -- splitting, as QEMU's memory core does it ----------------------------
    def _read_split(self, off: cython.Py_ssize_t, size: cython.int) -> cython.ulonglong:
        result: cython.ulonglong = 0
        piece_value: cython.ulonglong
        done: cython.int = 0
        piece: cython.int
        while done < size:
            piece = _piece(off + done, size - done)
            piece_value = self._read(off + done, piece)
            result |= piece_value << (8 * done)
            done += piece
        return result

    def _write_split(self, off: cython.Py_ssize_t, value: cython.ulonglong, size: cython.int) -> None:
        done: cython.int = 0
        piece: cython.int
        while done < size:
            piece = _piece(off + done, size - done)
            self._write(off + done, (value >> (8 * done)) & (_U32 >> (32 - 8 * piece)), piece)
            done += piece

    # -- what a subclass implements ---------------------------------------------
    def _read(self, off: cython.Py_ssize_t, size: cython.int) -> cython.uint:
        """Read an aligned piece of 1, 2 or 4 bytes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _read")

    def _write(self, off: cython.Py_ssize_t, value: cython.uint, size: cython.int) -> None:
        """Write an aligned piece of 1, 2 or 4 bytes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _write")

    def _complete(self, response: object, selftest_done: cython.bint, failed: cython.bint) -> None:
        """Deliver the response to the command in flight (see :meth:`complete`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _complete")

    # ------------------------------------------------------------------
    # The request/complete vocabulary
    # ------------------------------------------------------------------
    def _ask(self, kind: cython.int) -> None:
        if self._request is not None:
            self._request(kind)

    def _query_established(self) -> cython.int:
        """The owner's established flag now: 1, 0, or -1 if it did not answer."""
        source = self._established_source
        if source is not None:
            return 1 if source() else 0
        self._established = _UNKNOWN
        self._ask(REQUEST_ESTABLISHED)
        return self._established

    def set_established(self, established: bool) -> None:
        """The owner's answer to :data:`REQUEST_ESTABLISHED`: the backend's
        established flag, shown by the read that asked. Only an answer given
        inside that request counts; nothing is cached."""
        self._established = 1 if established else 0

    def set_established_source(self, source: Optional[Callable[[], object]]) -> None:
        """Answer the established flag by calling *source* (no arguments; a
        true result means established) at each read that shows it, in place
        of :data:`REQUEST_ESTABLISHED`. None goes back to the request.

        *source* is called on the guest's access path: it must not raise
        (an owner contains its backend's failures and answers False)."""
        if source is not None and not callable(source):
            raise ConfigurationError(
                f"{self._name} set_established_source: the source must be a callable or None, "
                f"got {type(source).__name__}"
            )
        self._established_source = source

    def complete(self, response: BytesLike, selftest_done: bool = False, failed: bool = False) -> None:
        """Deliver the response to the command in flight.

        *selftest_done* reports a successful TPM 1.2 ContinueSelfTest;
        *failed* says the backend failed (the response is then the fatal
        response the owner chose). Does nothing if no command is in flight.
        """
        if not isinstance(response, (bytes, bytearray, memoryview)):
            raise AccessError(
                f"{self._name} complete: response must be bytes-like, got {type(response).__name__}"
            )
        self._complete(response, bool(selftest_done), bool(failed))

    def post(self, response: BytesLike, selftest_done: bool = False, failed: bool = False) -> None:
        """Hand over a completion from another thread; applied at the next access.

        A second post before the first was applied replaces it."""
        if not isinstance(response, (bytes, bytearray, memoryview)):
            raise AccessError(
                f"{self._name} post: response must be bytes-like, got {type(response).__name__}"
            )
        self._posted = (bytes(response), bool(selftest_done), bool(failed))  # type: ignore[assignment]

    def poll(self) -> bool:
        """Apply a posted completion now. Returns True if there was one."""
        return bool(self._apply_posted())

    def _apply_posted(self) -> cython.bint:
        posted = self._posted
        if posted is None:
            return False
        self._posted = None
        self._complete(posted[0], posted[1], posted[2])
        return True

    def _drop_posted(self) -> None:
        """Forget a posted completion (a machine reset)."""
        self._posted = None

    @property
    def region_size(self) -> int:
        """Size of the region :meth:`read` and :meth:`write` address."""
        return self._region

    @property
    def access_sizes(self) -> tuple[int, ...]:
        """The access sizes the core takes."""
        return self._size_list

    # ------------------------------------------------------------------
    # State capture (migration, snapshots)
    # ------------------------------------------------------------------
    def _capture_base(self) -> object:
        """What the base keeps that defines behaviour: a posted completion
        not yet applied (None, or ``(response, selftest_done, failed)``)."""
        return self._posted

    def _restore_base(self, posted: object) -> None:
        """Put back :meth:`_capture_base`'s value; no established-flag answer
        survives (the next read asks again)."""
        self._posted = posted  # type: ignore[assignment]
        self._established = _UNKNOWN

    def _copy_into(self, dst: Any, src: Any) -> None:
        """Copy *src* (bytes) over the live view *dst* of the same length
        (compiled: one memory copy)."""
        dst[:] = src

    # Batch execution
    # ------------------------------------------------------------------
    def execute(self, ops: object, out: object = None) -> np.ndarray:
        """Run a batch of register accesses (a 1-D array of
        :data:`~tpmdev.hw.ops.OP_DTYPE`) in order, exactly as that many
        :meth:`read` / :meth:`write` calls would, in one call; return the
        values read (each write's value echoed) as a uint64 array: *out*
        if given (a writable uint64 array of the batch's length, reused by
        a host that runs many batches), else a new one.

        Every row is checked first (kind, size, the whole access inside the
        region, a written value that fits its size): a bad row raises
        :class:`~tpmdev.errors.AccessError` naming it, and nothing runs.
        Requests (a command at tpmGo or START) reach the owner mid-batch, as
        they would between single calls, and a posted completion is applied
        before each row.
        """
        kinds, sizes, offsets, values = _batch_columns(self._name, ops)
        bad: cython.Py_ssize_t = self._check_batch(kinds, sizes, offsets, values)
        if bad >= 0:
            raise AccessError(self._bad_row(bad, kinds[bad], sizes[bad], offsets[bad], values[bad]))
        result = _batch_result(self._name, len(kinds), out)
        self._run_batch(kinds, sizes, offsets, values, result.data)
        return result

    def _check_batch(
        self, kinds: object, sizes: object, offsets: object, values: object
    ) -> cython.Py_ssize_t:
        """The first row that is not a valid access, or -1."""
        i: cython.Py_ssize_t
        kind: cython.int
        sz: cython.int
        off: cython.Py_ssize_t
        value: cython.ulonglong
        for i in range(kinds.shape[0]):  # type: ignore[attr-defined]
            kind = kinds[i]  # type: ignore[index]
            sz = sizes[i]  # type: ignore[index]
            off = offsets[i]  # type: ignore[index]
            if (kind != OP_READ and kind != OP_WRITE) or not self._fits(off, sz):
                return i
            if kind == OP_WRITE and sz < 8:
                value = values[i]  # type: ignore[index]
                if value >> (8 * sz):
                    return i
        return -1

    def _run_batch(self, kinds: object, sizes: object, offsets: object, values: object, out: object) -> None:
        """Run checked rows; each as :meth:`read` / :meth:`write` runs one."""
        i: cython.Py_ssize_t
        sz: cython.int
        off: cython.Py_ssize_t
        value: cython.ulonglong
        for i in range(kinds.shape[0]):  # type: ignore[attr-defined]
            sz = sizes[i]  # type: ignore[index]
            off = offsets[i]  # type: ignore[index]
            if self._posted is not None:
                self._apply_posted()
            if kinds[i] == OP_READ:  # type: ignore[index]
                if sz <= _MAX_PIECE and not (off & (sz - 1)):
                    value = self._read(off, sz)
                else:
                    value = self._read_split(off, sz)
            else:
                value = values[i]  # type: ignore[index]
                if sz <= _MAX_PIECE and not (off & (sz - 1)):
                    self._write(off, value, sz)
                else:
                    self._write_split(off, value, sz)
            out[i] = value  # type: ignore[index]

    def _int(self, value: cython.ulonglong) -> int:
        """*value* as a Python int, the last one reused when it repeats: a
        guest polling a register reads one value over and over, and the int
        object :meth:`read` returns is most of a call's cost after the call
        itself (ints are immutable: nothing can tell)."""
        if self._last_int is None or value != self._last_value:
            self._last_int = value
            self._last_value = value
        return self._last_int  # type: ignore[return-value]

    def _bad_row(self, row: object, kind: object, size: object, offset: object, value: object) -> str:
        sizes = ", ".join(str(s) for s in self._size_list)
        return (
            f"{self._name} execute: row {row} (kind={kind}, size={size}, offset=0x{offset:X}, "
            f"value=0x{value:X}) is not a valid access: kind must be OP_READ (0) or OP_WRITE (1), size "
            f"one of {sizes}, the access within 0x0..0x{self._region - 1:X}, and a written value must "
            "fit in size bytes; nothing in the batch was run"
        )


def _batch_columns(name: str, ops: object) -> tuple[memoryview, memoryview, memoryview, memoryview]:
    """The kind, size, offset and value columns of a batch (views, no copies), or AccessError."""
    if not isinstance(ops, np.ndarray) or ops.ndim != 1 or ops.dtype != OP_DTYPE:
        got = f"{ops.dtype} of shape {ops.shape}" if isinstance(ops, np.ndarray) else type(ops).__name__
        raise AccessError(
            f"{name} execute: ops must be a 1-D numpy array of dtype tpmdev.OP_DTYPE "
            f"(build one with numpy.zeros(n, tpmdev.OP_DTYPE) or tpmdev.make_ops), got {got}"
        )
    return ops["kind"].data, ops["size"].data, ops["offset"].data, ops["value"].data


def _batch_result(name: str, n: int, out: object) -> np.ndarray:
    """*out* checked as the result array of an *n*-row batch, or a new one."""
    if out is None:
        return np.zeros(n, dtype=np.uint64)
    if (
        not isinstance(out, np.ndarray)
        or out.dtype != np.uint64
        or out.shape != (n,)
        or not out.flags.writeable
    ):
        got = f"{out.dtype} of shape {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise AccessError(
            f"{name} execute: out must be a writable 1-D numpy uint64 array of the batch's length {n}, "
            f"or None, got {got}"
        )
    return out


@cython.cclass
class RecordingCore(MmioCore):
    """A core with no registers that records the pieces reaching it.

    For tests of the door and of the splitting, and the smallest example of
    a subclass: every aligned piece is appended to :attr:`log` as
    ``("r" | "w", offset, size, value)``; a read returns the piece's offset
    repeated in each byte (``0x19`` reads ``0x19``, 2 bytes at 0x1A read
    ``0x1A1A``), so an assembled value shows where each byte came from.
    """

    def __init__(self, region: int = 0x1000, sizes: tuple[int, ...] = ACCESS_SIZES) -> None:
        MmioCore.__init__(self, "RecordingCore", region, sizes, None)
        self.log: list[tuple[object, ...]] = []

    def _read(self, off: cython.Py_ssize_t, size: cython.int) -> cython.uint:
        byte: cython.uint = off & 0xFF
        value: cython.uint = (byte * 0x01010101) >> (32 - 8 * size)
        self.log.append(("r", off, size, value))
        return value

    def _write(self, off: cython.Py_ssize_t, value: cython.uint, size: cython.int) -> None:
        self.log.append(("w", off, size, value))

    def _complete(self, response: object, selftest_done: cython.bint, failed: cython.bint) -> None:
        self.log.append(("complete", bytes(response), selftest_done, failed))  # type: ignore[call-overload]
