# Declarations that Cython adds to tpmdev/hw/core.py when compiling it.
# C types only: no behaviour lives here. A frontend core derives from
# MmioCore with `from tpmdev.hw.core cimport MmioCore` in its own .pxd; what
# it shares beyond that (helpers, checks) are cdef methods of MmioCore, since
# module-level cdef functions do not cross modules in pure mode.

cdef int _MAX_PIECE, _UNKNOWN
cdef unsigned int _U32
cdef Py_ssize_t _MAX_COUNT
cdef int OP_READ, OP_WRITE

from cpython.long cimport PyLong_AsLongLongAndOverflow

cdef object _index(object x)
cdef inline Py_ssize_t _small(object x) noexcept
cdef int _piece(Py_ssize_t addr, int remaining) noexcept


cdef class MmioCore:
    cdef str _name
    cdef Py_ssize_t _region
    cdef unsigned int _sizes
    cdef tuple _size_list
    cdef object _request
    cdef object _established_source
    cdef object _posted
    cdef int _established
    cdef int _size  # the size _check accepted last

    cdef Py_ssize_t _check(self, str op, object offset, object size) except -1
    cdef inline bint _fits(self, Py_ssize_t off, Py_ssize_t sz) noexcept
    cdef Py_ssize_t _check_index(self, str op, object offset, object size) except -1
    cdef unsigned long long _value(self, object value, object size, int sz) except? 0xFFFFFFFFFFFFFFFF
    cdef Py_ssize_t _bounded(self, object x, Py_ssize_t limit) except? -2
    cdef str _bad_range(self, str op, object offset, object size)
    cdef str _bad_value(self, object size, object value)
    cdef unsigned long long _read_split(self, Py_ssize_t off, int size) except? 0xFFFFFFFFFFFFFFFF
    cdef void _write_split(self, Py_ssize_t off, unsigned long long value, int size) except *
    cdef unsigned int _read(self, Py_ssize_t off, int size) except? 0xFFFFFFFF
    cdef void _write(self, Py_ssize_t off, unsigned int value, int size) except *
    cdef void _complete(self, object response, bint selftest_done, bint failed) except *
    cdef void _ask(self, int kind) except *
    cdef int _query_established(self) except? -2
    cdef bint _apply_posted(self) except -1
    cdef void _drop_posted(self) noexcept

    # -- state capture
    cdef object _capture_base(self)
    cdef void _restore_base(self, object posted) except *
    cdef void _copy_into(self, unsigned char[::1] dst, const unsigned char[::1] src) except *

    # batch execution
    cdef Py_ssize_t _check_batch(self, const unsigned char[:] kinds, const unsigned char[:] sizes,
                                 const unsigned int[:] offsets, const unsigned long long[:] values) except -2
    cdef void _run_batch(self, const unsigned char[:] kinds, const unsigned char[:] sizes,
                         const unsigned int[:] offsets, const unsigned long long[:] values,
                         unsigned long long[:] out) except *
    cdef str _bad_row(self, object row, object kind, object size, object offset, object value)
    cdef object _last_int  # the int read() returned last, and its value
    cdef unsigned long long _last_value
    cdef object _int(self, unsigned long long value)


cdef class RecordingCore(MmioCore):
    cdef public list log

    cdef unsigned int _read(self, Py_ssize_t off, int size) except? 0xFFFFFFFF
    cdef void _write(self, Py_ssize_t off, unsigned int value, int size) except *
    cdef void _complete(self, object response, bint selftest_done, bint failed) except *
