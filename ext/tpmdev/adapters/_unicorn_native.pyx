# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native MMIO callbacks for unicorn: the guest's accesses reach the compiled
register core with no Python frame.

Why a .pyx: pure mode cannot express a C function pointer, and unicorn's
``uc_mmio_map`` wants two (``uint64_t (*)(uc_engine*, uint64_t, unsigned,
void*)`` and ``void (*)(uc_engine*, uint64_t, unsigned, uint64_t, void*)``).
Nothing of unicorn is needed to build this module: the few prototypes are
declared here and the functions are found at run time in the libunicorn the
Python binding loaded (their addresses come from ctypes), the engine handle
from the binding's ``Uc`` object. :mod:`tpmdev.adapters.unicorn` is the
public face; it falls back to Python callbacks where this module or the
compiled register models are not loaded.

The GIL. The register core is Python objects (and may call the device
layer, which runs the backend), so a callback needs the GIL. ``Uc.emu_start``
is a ctypes call, which releases it: each callback then takes it back
(``PyGILState_Ensure``) and gives it up again. :func:`emu_start` here calls
``uc_emu_start`` with the GIL held, so a callback only checks that it holds
it (``PyGILState_Check``); to let another Python thread run meanwhile (the
worker of an asynchronous device), the GIL is released for a moment every
``_YIELD_EVERY`` device accesses.

Errors. A callback cannot raise into unicorn: an exception from the core
(none is expected: guest input never raises) is kept on the window, the
emulation is stopped (``uc_emu_stop``), and :func:`emu_start` (or the
adapter's ``check()``) raises it afterwards.
"""

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from cpython.exc cimport PyErr_Fetch, PyErr_NormalizeException
from cpython.ref cimport PyObject, Py_XDECREF

from tpmdev.hw.core cimport MmioCore

cdef extern from "Python.h":
    int PyGILState_Check() nogil
    int PyException_SetTraceback(object ex, object tb)

# Whether this thread is inside emu_start below, which holds the GIL whenever
# unicorn runs (one per thread: two threads may each run an engine).
cdef extern from *:
    """
    static __thread int tpmdev_uc_gil_held = 0;
    """
    int tpmdev_uc_gil_held

ctypedef uint64_t (*read_cb_t)(void* uc, uint64_t offset, unsigned size, void* user_data) noexcept nogil
ctypedef void (*write_cb_t)(void* uc, uint64_t offset, unsigned size, uint64_t value,
                            void* user_data) noexcept nogil
ctypedef int (*uc_mmio_map_t)(void* uc, uint64_t address, uint64_t size, read_cb_t read_cb,
                              void* user_data_read, write_cb_t write_cb, void* user_data_write) noexcept nogil
ctypedef int (*uc_emu_start_t)(void* uc, uint64_t begin, uint64_t until, uint64_t timeout,
                               size_t count) noexcept nogil
ctypedef int (*uc_emu_stop_t)(void* uc) noexcept nogil
ctypedef void (*hookmem_t)(void* uc, int type, uint64_t address, int size, int64_t value,
                           void* user_data) noexcept nogil
ctypedef int (*uc_hook_add_t)(void* uc, size_t* hh, int type, void* callback, void* user_data,
                              uint64_t begin, uint64_t end, ...) noexcept nogil

cdef struct Ctx:
    void* core          # the MmioCore (a reference owned by the window object)
    void* window        # the window object itself (errors are kept there)
    uint64_t region     # bytes of the device region; the mapping past it is unassigned
    unsigned char* ram  # a RAM window: the bytes (owned by an array the window keeps)
    uc_emu_stop_t stop
    int countdown
    # exact splitting of unaligned accesses (see DeviceWindow.exact_unaligned)
    uint64_t base
    int pending             # 0 none, 1 a read served from `bytes`, 2 a write already done
    uint64_t pending_start  # the guest access, offsets in the region
    uint64_t pending_end
    uint64_t pending_last   # where unicorn's last piece of it ends
    unsigned char bytes[8]

# The callbacks below run the register core only when this thread holds the
# GIL (they check, or take it); Cython cannot see that check, so the locked
# halves are called through pointers of these types.
# (they return -1 with the exception set)
ctypedef int (*locked_read_t)(void* uc, Ctx* ctx, uint64_t offset, unsigned size,
                              uint64_t* value) noexcept nogil
ctypedef int (*locked_write_t)(void* uc, Ctx* ctx, uint64_t offset, unsigned size,
                               uint64_t value) noexcept nogil
ctypedef void (*failed_t)(void* uc, Ctx* ctx) noexcept nogil

__all__ = ["DeviceWindow", "RamWindow", "map_null", "emu_start"]

#: Device accesses between two moments without the GIL (see the module doc).
cdef int _YIELD_EVERY = 4096

#: Windows unicorn still points into although their attachment failed half way.
_stranded: list = []


cdef inline bint _gil_held() noexcept nogil:
    # (emu_start's flag first: the callbacks it runs need not ask Python)
    if tpmdev_uc_gil_held:
        return True
    return PyGILState_Check()



cdef class _Window:
    cdef Ctx ctx
    cdef public object error
    cdef object _keep

    def check(self):
        """Raise the exception a callback met (once), if any."""
        error, self.error = self.error, None
        if error is not None:
            raise error

    cdef void _fail(self, void* uc, BaseException exc) noexcept:
        if self.error is None:
            self.error = exc
        if self.ctx.stop != NULL:
            self.ctx.stop(uc)


cdef inline void _yield_gil(Ctx* ctx) noexcept:
    ctx.countdown -= 1
    if ctx.countdown <= 0:
        ctx.countdown = _YIELD_EVERY
        with nogil:
            pass


# ---------------------------------------------------------------------------
# A device window: the compiled register core
# ---------------------------------------------------------------------------
cdef int _device_read_locked(void* uc, Ctx* ctx, uint64_t offset, unsigned size,
                             uint64_t* value) except -1:
    cdef MmioCore core = <MmioCore>ctx.core
    cdef int sz = size
    if offset >= ctx.region or sz > ctx.region - offset:
        value[0] = 0  # unassigned memory past the region
        return 0
    if ctx.pending == 1:
        value[0] = _pending_piece(ctx, offset, sz)
        return 0
    _yield_gil(ctx)
    if core._posted is not None:
        core._apply_posted()
    if sz <= 4 and not (offset & (sz - 1)):
        value[0] = core._read(offset, sz)
    else:
        value[0] = core._read_split(offset, sz)
    return 0


cdef int _device_write_locked(void* uc, Ctx* ctx, uint64_t offset, unsigned size,
                              uint64_t value) except -1:
    cdef MmioCore core = <MmioCore>ctx.core
    cdef int sz = size
    if offset >= ctx.region or sz > ctx.region - offset:
        return 0  # unassigned memory past the region
    if ctx.pending == 2:
        if offset + sz >= ctx.pending_last:
            ctx.pending = 0  # the last byte of the access it split: done
        return 0
    _yield_gil(ctx)
    if core._posted is not None:
        core._apply_posted()
    if sz <= 4 and not (offset & (sz - 1)):
        core._write(offset, <unsigned int>value, sz)
    else:
        core._write_split(offset, value, sz)
    return 0


cdef void _failed(void* uc, Ctx* ctx) noexcept:
    """Keep the exception the core raised (pending; the GIL is held) and stop the emulation."""
    cdef PyObject* kind = NULL
    cdef PyObject* value = NULL
    cdef PyObject* tb = NULL
    PyErr_Fetch(&kind, &value, &tb)
    PyErr_NormalizeException(&kind, &value, &tb)
    exc = <object>value if value != NULL else RuntimeError("a device callback failed")
    if value != NULL and tb != NULL:
        PyException_SetTraceback(exc, <object>tb)
    Py_XDECREF(kind)
    Py_XDECREF(value)
    Py_XDECREF(tb)
    (<_Window>ctx.window)._fail(uc, exc)


cdef uint64_t _device_read(void* uc, uint64_t offset, unsigned size, void* user_data) noexcept nogil:
    cdef Ctx* ctx = <Ctx*>user_data
    cdef uint64_t value = 0
    if _gil_held():
        if (<locked_read_t>_device_read_locked)(uc, ctx, offset, size, &value) < 0:
            (<failed_t>_failed)(uc, ctx)
        return value
    with gil:  # (through the pointer too: Cython would swallow the error of a direct call here)
        if (<locked_read_t>_device_read_locked)(uc, ctx, offset, size, &value) < 0:
            _failed(uc, ctx)
    return value


cdef void _device_write(void* uc, uint64_t offset, unsigned size, uint64_t value,
                        void* user_data) noexcept nogil:
    cdef Ctx* ctx = <Ctx*>user_data
    if _gil_held():
        if (<locked_write_t>_device_write_locked)(uc, ctx, offset, size, value) < 0:
            (<failed_t>_failed)(uc, ctx)
        return
    with gil:
        if (<locked_write_t>_device_write_locked)(uc, ctx, offset, size, value) < 0:
            _failed(uc, ctx)


cdef uint64_t _pending_piece(Ctx* ctx, uint64_t offset, int size) noexcept nogil:
    """A piece unicorn cut from an unaligned read, served from the whole access's bytes."""
    cdef uint64_t value = 0
    cdef int i
    cdef uint64_t at
    for i in range(size - 1, -1, -1):
        at = offset + i
        value <<= 8
        if ctx.pending_start <= at < ctx.pending_end:
            value |= ctx.bytes[at - ctx.pending_start]
    if offset + size >= ctx.pending_last:
        ctx.pending = 0  # unicorn's last piece of it: done
    return value


cdef int _exact_locked(Ctx* ctx, int write, uint64_t offset, int size, uint64_t value) except -1:
    """An unaligned guest access, seen whole before unicorn cuts it: run it as QEMU's memory
    core would (naturally aligned pieces, lowest first) and let the pieces that follow only
    deliver its bytes (reads) or be dropped (writes)."""
    cdef MmioCore core = <MmioCore>ctx.core
    cdef int i
    _yield_gil(ctx)
    if core._posted is not None:
        core._apply_posted()
    ctx.pending_start = offset
    ctx.pending_end = offset + size
    # unicorn stores an unaligned write byte by byte, and loads an unaligned read as two
    # aligned loads of its size around it
    ctx.pending_last = offset + size if write else (offset & ~(<uint64_t>size - 1)) + 2 * size
    if write:
        core._write_split(offset, value, size)
        ctx.pending = 2
    else:
        value = core._read_split(offset, size)
        for i in range(size):
            ctx.bytes[i] = (value >> (8 * i)) & 0xFF
        ctx.pending = 1
    return 0


ctypedef int (*exact_locked_t)(Ctx* ctx, int write, uint64_t offset, int size, uint64_t value) noexcept nogil


cdef void _exact_hook(void* uc, int type, uint64_t address, int size, int64_t value,
                      void* user_data) noexcept nogil:
    cdef Ctx* ctx = <Ctx*>user_data
    cdef uint64_t offset = address - ctx.base
    cdef int write = type == 17  # UC_MEM_WRITE (16 is UC_MEM_READ)
    if address < ctx.base or offset >= ctx.region or size > 8 or size > ctx.region - offset:
        return
    if not (offset & (size - 1)):
        return  # aligned: unicorn hands it over as QEMU's memory core would
    if _gil_held():
        if (<exact_locked_t>_exact_locked)(ctx, write, offset, size, <uint64_t>value) < 0:
            (<failed_t>_failed)(uc, ctx)
        return
    with gil:
        if (<exact_locked_t>_exact_locked)(ctx, write, offset, size, <uint64_t>value) < 0:
            _failed(uc, ctx)


cdef class DeviceWindow(_Window):
    """The register core of a device mapped at one address (``uc_mmio_map``)."""

    def __init__(self, MmioCore core, size_t uch, uint64_t address, uint64_t size,
                 size_t mmio_map, size_t emu_stop, size_t hook_add=0):
        """*hook_add* (``uc_hook_add``), if given, adds the memory hooks that split
        unaligned accesses exactly (see the adapter's ``exact_unaligned``)."""
        cdef int err
        cdef size_t handle = 0
        self.error = None
        self._keep = core
        self.ctx.core = <void*>core
        self.ctx.window = <void*>self
        self.ctx.region = core._region
        self.ctx.ram = NULL
        self.ctx.stop = <uc_emu_stop_t>emu_stop
        self.ctx.countdown = _YIELD_EVERY
        self.ctx.base = address
        self.ctx.pending = 0
        err = (<uc_mmio_map_t>mmio_map)(<void*>uch, address, size, _device_read, &self.ctx,
                                        _device_write, &self.ctx)
        if err:
            raise _uc_error(err)
        if hook_add:
            # UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE over the region
            err = (<uc_hook_add_t>hook_add)(<void*>uch, &handle, 1024 | 2048, <void*>_exact_hook,
                                            &self.ctx, address, address + size - 1)
            if err:
                # the region is mapped with callbacks that point into this
                # window: it must outlive the engine, whatever the caller does
                _stranded.append(self)
                raise _uc_error(err)


# ---------------------------------------------------------------------------
# A RAM window: bytes of a numpy array served as plain memory (any size,
# any alignment, no side effects), where unicorn's page granularity forbids
# uc_mem_map_ptr
# ---------------------------------------------------------------------------
cdef uint64_t _ram_read(void* uc, uint64_t offset, unsigned size, void* user_data) noexcept nogil:
    cdef Ctx* ctx = <Ctx*>user_data
    cdef uint64_t value = 0
    if size <= 8 and offset < ctx.region and size <= ctx.region - offset:
        memcpy(&value, ctx.ram + offset, size)  # (little-endian host)
    return value


cdef void _ram_write(void* uc, uint64_t offset, unsigned size, uint64_t value,
                     void* user_data) noexcept nogil:
    cdef Ctx* ctx = <Ctx*>user_data
    if size <= 8 and offset < ctx.region and size <= ctx.region - offset:
        memcpy(ctx.ram + offset, &value, size)


cdef class RamWindow(_Window):
    """*memory* (a writable C-contiguous uint8 numpy array) as RAM at one address."""

    def __init__(self, memory, size_t uch, uint64_t address, uint64_t size, size_t mmio_map):
        cdef unsigned char[::1] view = memory
        cdef int err
        self.error = None
        self._keep = memory
        self.ctx.core = NULL
        self.ctx.window = <void*>self
        self.ctx.region = view.shape[0]
        self.ctx.ram = &view[0]
        self.ctx.stop = NULL
        err = (<uc_mmio_map_t>mmio_map)(<void*>uch, address, size, _ram_read, &self.ctx,
                                        _ram_write, &self.ctx)
        if err:
            raise _uc_error(err)


# ---------------------------------------------------------------------------
# The floor: a native callback that does nothing (benchmarks)
# ---------------------------------------------------------------------------
cdef uint64_t _null_read(void* uc, uint64_t offset, unsigned size, void* user_data) noexcept nogil:
    return 0


cdef void _null_write(void* uc, uint64_t offset, unsigned size, uint64_t value,
                      void* user_data) noexcept nogil:
    pass


def map_null(size_t uch, uint64_t address, uint64_t size, size_t mmio_map):
    """Map do-nothing native callbacks (reads 0, writes dropped): unicorn's
    own cost of an MMIO access, the floor the benchmarks compare with."""
    cdef int err = (<uc_mmio_map_t>mmio_map)(<void*>uch, address, size, _null_read, NULL, _null_write, NULL)
    if err:
        raise _uc_error(err)


def emu_start(size_t uch, uint64_t begin, uint64_t until, uint64_t timeout, size_t count,
              size_t start_fn):
    """``uc_emu_start`` called with the GIL held (see the module doc); the error code."""
    global tpmdev_uc_gil_held
    cdef int was_held = tpmdev_uc_gil_held
    tpmdev_uc_gil_held = 1
    try:
        return (<uc_emu_start_t>start_fn)(<void*>uch, begin, until, timeout, count)
    finally:
        tpmdev_uc_gil_held = was_held


cdef object _uc_error(int err):
    from unicorn import UcError
    return UcError(err)
