# Declarations that Cython adds to tpmdev/hw/tis.py when compiling it.
# C types only: no behaviour lives here. The entry points, the host-input
# checks, the splitting and the request/complete plumbing are MmioCore's.

from tpmdev.hw.core cimport MmioCore

cdef int TIS_BUFFER_MAX, TIS_NO_DATA_BYTE, TIS_NO_LOCALITY, TIS_NUM_LOCALITIES, TIS_REGION_SIZE
cdef int TIS_STATE_COMPLETION, TIS_STATE_EXECUTION, TIS_STATE_IDLE, TIS_STATE_READY, TIS_STATE_RECEPTION
cdef int TPM_ACCESS, TPM_ACCESS_ACTIVE_LOCALITY, TPM_ACCESS_BEEN_SEIZED, TPM_ACCESS_PENDING_REQUEST
cdef int TPM_ACCESS_REQUEST_USE, TPM_ACCESS_SEIZE, TPM_ACCESS_TPM_ESTABLISHMENT, TPM_ACCESS_TPM_REG_VALID_STS
cdef int TPM_DATA_FIFO, TPM_DID_VID, TPM_INT_ENABLE, TPM_INT_STATUS, TPM_INT_VECTOR, TPM_INTERFACE_ID
cdef int TPM_INTF_CAPABILITY, TPM_RID, TPM_STS, TPM_XDATA_FIFO, TPM_XDATA_FIFO_END
cdef unsigned int TPM_DID_VID_VALUE, TPM_RID_VALUE
cdef unsigned int TPM_INT_COMMAND_READY, TPM_INT_DATA_AVAIL, TPM_INT_ENABLE_WRITABLE, TPM_INT_GLOBAL_ENABLE
cdef unsigned int TPM_INT_LOCALITY_CHANGE, TPM_INT_POLARITY_LOW_LEVEL, TPM_INT_STS_VALID, TPM_INT_SUPPORTED
cdef unsigned int TPM_INTERFACE_ID_INT_SEL_LOCK
cdef unsigned int TPM_STS_COMMAND_CANCEL, TPM_STS_COMMAND_READY, TPM_STS_DATA_AVAIL, TPM_STS_EXPECT, TPM_STS_GO
cdef unsigned int TPM_STS_RESET_ESTABLISHMENT, TPM_STS_RESPONSE_RETRY, TPM_STS_SELFTEST_DONE
cdef unsigned int TPM_STS_TPM_FAMILY_MASK, TPM_STS_VALID

cdef unsigned int _U32

cdef unsigned int _size_mask(int size) noexcept


cdef class TisCore(MmioCore):
    cdef readonly object mmio
    cdef unsigned char[::1] _m8
    cdef unsigned int[::1] _m32
    cdef bytearray _buffer
    cdef unsigned char[::1] _buf
    cdef unsigned char[::1] _state
    cdef object _irq
    cdef int _irq_level
    cdef bint _int_any_locality
    cdef int _version
    cdef Py_ssize_t _bufsize
    cdef Py_ssize_t _rw_offset
    cdef int _active
    cdef int _next
    cdef int _aborting
    cdef int _cmd_locty

    cdef unsigned int _read(self, Py_ssize_t off, int size) except? 0xFFFFFFFF
    cdef void _write(self, Py_ssize_t off, unsigned int value, int size) except *
    cdef void _complete(self, object response, bint selftest_done, bint failed) except *
    cdef unsigned int _get32(self, Py_ssize_t off) noexcept
    cdef void _set32(self, Py_ssize_t off, unsigned int value) noexcept
    cdef unsigned int _sts(self, int locty) noexcept
    cdef unsigned int _access(self, int locty) noexcept
    cdef void _set_access(self, int locty, unsigned int value) noexcept
    cdef void _sts_set(self, int locty, unsigned int flags) noexcept
    cdef unsigned int _cmd_size(self) noexcept
    cdef unsigned int _sts_read(self, int locty, int size) noexcept
    cdef void _sts_write(self, int locty, unsigned int val) except *
    cdef unsigned int _fifo_read(self, int locty, int count) except? 0xFFFFFFFF
    cdef unsigned int _data_read(self, int locty) except? 0xFFFFFFFF
    cdef unsigned int _past_buffer(self, Py_ssize_t index) noexcept
    cdef void _fifo_write(self, int locty, unsigned int value, int count) except *
    cdef unsigned int _access_read(self, int locty) except? 0xFFFFFFFF
    cdef void _access_write(self, int locty, unsigned int val) except *
    cdef void _new_active_locality(self, int new) except *
    cdef void _prep_abort(self, int locty, int new) except *
    cdef void _abort(self) except *
    cdef void _raise_irq(self, int locty, unsigned int mask) except *
    cdef void _int_status_write(self, int locty, unsigned int val) except *
    cdef void _set_irq(self, int level) except *
    cdef void _send(self, int locty) except *

    # -- state capture: capture() and restore() are def methods (nothing to declare)
