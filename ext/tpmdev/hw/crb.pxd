# Declarations that Cython adds to tpmdev/hw/crb.py when compiling it.
# C types only: no behaviour lives here.

from tpmdev.hw.core cimport MmioCore

cdef int REQUEST_CANCEL, REQUEST_COMMAND, REQUEST_RESET_ESTABLISHED
cdef int CRB_BUFFER_SIZE, CRB_LOCALITY_SIZE, CRB_NO_LOCALITY, CRB_NUM_LOCALITIES
cdef int TPM_LOC_STATE, TPM_LOC_CTRL, TPM_LOC_STS, TPM_CRB_INTF_ID, TPM_CRB_INTF_ID_HIGH
cdef int TPM_CRB_CTRL_REQ, TPM_CRB_CTRL_STS, TPM_CRB_CTRL_CANCEL, TPM_CRB_CTRL_START
cdef int TPM_CRB_CTRL_CMD_SIZE, TPM_CRB_CTRL_CMD_LADDR, TPM_CRB_CTRL_CMD_HADDR
cdef int TPM_CRB_CTRL_RSP_SIZE, TPM_CRB_CTRL_RSP_ADDR, TPM_CRB_CTRL_RSP_ADDR_HIGH, TPM_CRB_DATA_BUFFER
cdef int TPM_LOC_STATE_ACTIVE_LOCALITY_SHIFT
cdef unsigned int TPM_LOC_STATE_TPM_ESTABLISHED, TPM_LOC_STATE_LOC_ASSIGNED, TPM_LOC_STATE_TPM_REG_VALID_STS
cdef unsigned int TPM_LOC_CTRL_REQUEST_ACCESS, TPM_LOC_CTRL_RELINQUISH, TPM_LOC_CTRL_SEIZE
cdef unsigned int TPM_LOC_CTRL_RESET_ESTABLISHMENT_BIT, TPM_LOC_STS_GRANTED, TPM_LOC_STS_BEEN_SEIZED
cdef unsigned int TPM_CRB_CTRL_REQ_CMD_READY, TPM_CRB_CTRL_REQ_GO_IDLE
cdef unsigned int TPM_CRB_CTRL_STS_TPM_STS, TPM_CRB_CTRL_STS_TPM_IDLE
cdef unsigned int TPM_CRB_CTRL_CANCEL_INVOKE, TPM_CRB_CTRL_START_INVOKE, TPM_CRB_INTF_ID_HIGH_VALUE

cdef int _REGS_END, _WINDOW_MASK, _LOCALITY_SHIFT
cdef unsigned int _U32


cdef class CrbCore(MmioCore):
    cdef readonly object mmio
    cdef unsigned char[::1] _m8
    cdef unsigned int[::1] _m32
    cdef int _localities
    cdef unsigned long long _address
    cdef int _version
    cdef Py_ssize_t _bufsize
    cdef int _active
    cdef int _waiting
    cdef int _cmd_locty
    cdef Py_ssize_t _cmd_len

    cdef unsigned int _read(self, Py_ssize_t off, int size) except? 0xFFFFFFFF
    cdef void _write(self, Py_ssize_t off, unsigned int value, int size) except *
    cdef void _complete(self, object response, bint selftest_done, bint failed) except *
    cdef unsigned int _get32(self, Py_ssize_t off) noexcept
    cdef void _set32(self, Py_ssize_t off, unsigned int value) noexcept
    cdef void _set_shared(self, Py_ssize_t reg, unsigned int value) noexcept
    cdef unsigned int _ctrl_sts(self) noexcept
    cdef void _set_ctrl_sts(self, unsigned int value) noexcept
    cdef void _grant(self, int locty) noexcept
    cdef void _request_access(self, int locty) noexcept
    cdef void _relinquish(self, int locty) noexcept
    cdef void _seize(self, int locty) noexcept
    cdef void _start(self, int locty) except *

    # -- state capture: capture() and restore() are def methods (nothing to declare)
