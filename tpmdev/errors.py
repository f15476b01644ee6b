"""The exceptions tpmdev raises.

Every error derives from :class:`TpmDevError`, so ``except tpmdev.TpmDevError``
catches anything this library raises on purpose. The subclasses say whose
fault it was:

* :class:`AccessError` -- the host called a device or a backend wrongly (an
  offset outside the region, a size that is not 1, 2 or 4, a value that is
  not an int or does not fit; a command that is not bytes, a locality outside
  0..4). Guest behaviour never raises it: a guest may write anything anywhere.
* :class:`BackendError` -- the TPM behind the device failed (a process died, a
  socket stalled or answered garbage, a control command was refused).
* :class:`ConfigurationError` -- a constructor got an option it cannot use
  (an unknown TPM version, an IRQ number out of range, ...).
* :class:`StateError` -- the object is in the wrong state for the call (used
  after close, a second live instance of a one-per-process TPM, ...).
* :class:`EventLogError` -- a TCG event log is truncated or inconsistent (the
  message names the record, its byte offset and the field), or a log cannot
  be written as asked.
"""

from __future__ import annotations

__all__ = ["TpmDevError", "AccessError", "BackendError", "ConfigurationError", "StateError", "EventLogError"]


class TpmDevError(Exception):
    """Base class of every error raised by tpmdev."""


class AccessError(TpmDevError, ValueError):
    """The host accessed a device region wrongly (offset, size or value), or
    passed a backend an argument of the wrong type or range."""


class BackendError(TpmDevError):
    """The TPM backend failed to run a command or a control operation."""


class StateError(TpmDevError):
    """The object is not in a state that allows the call."""


class ConfigurationError(TpmDevError, ValueError):
    """A device or backend was configured with an unusable option."""


class EventLogError(TpmDevError, ValueError):
    """A TCG event log is truncated or inconsistent, or cannot be written as asked.

    Parsing errors say where: :attr:`index` is the record (0 = the first),
    :attr:`record_offset` the byte offset where that record starts,
    :attr:`offset` the byte offset of the field that is wrong and
    :attr:`field` its name as the TCG structures spell it. Each is None when
    it does not apply (an error building a log, not reading one).
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        record_offset: int | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.index = index
        self.record_offset = record_offset
        self.offset = offset
        self.field = field
