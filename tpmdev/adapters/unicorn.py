"""Map a tpmdev device into a unicorn engine (PyPI ``unicorn`` 2.x).

:func:`attach` maps a memory-mapped frontend (:class:`tpmdev.TIS`,
:class:`tpmdev.TISSysbus`, :class:`tpmdev.CRB`) into a ``unicorn.Uc`` at its
platform address, as QEMU's machine maps it:

* the register region (TIS 0x5000 bytes, CRB 0x1000 per locality) with
  ``uc_mmio_map``. When the compiled register models are loaded, the
  callbacks are C functions (``tpmdev.adapters._unicorn_native``, built
  from ``ext/tpmdev/adapters/_unicorn_native.pyx``) that call the compiled
  core directly: no Python frame per guest access. Otherwise they are
  Python callables through ``Uc.mmio_map``, calling ``dev.core.read`` /
  ``dev.core.write``;
* memory that is RAM in QEMU as RAM, on the device's own numpy arrays
  (nothing is copied, the device and the guest see the same bytes). The PPI
  page (0xFED45000, when the device has one, ``dev.ppi.memory``) is mapped
  with ``uc_mem_map_ptr`` when its array starts a page-aligned buffer of a
  whole page, else served as plain memory by callbacks over the same bytes.
  QEMU's CRB data buffer (0x80..0xFFF of a window) is RAM there: unicorn
  maps whole pages only, so it shares the registers' MMIO page here, and the
  core serves it as memory (bytes stored and read back at any size and
  alignment, no side effects), which is what the guest sees of RAM.

How accesses reach the device. Unicorn hands an MMIO region accesses of 1,
2 and 4 bytes as the guest made them when they are naturally aligned, and an
8-byte access as two 4-byte accesses, lowest first: exactly the pieces
QEMU's memory core gives a TPM device (at most 4 bytes, naturally aligned),
so for every aligned access (all that the Linux, EDK2 and SeaBIOS drivers
make) the device sees what it sees under QEMU. A guest access that is not
naturally aligned is cut by unicorn's TCG before any callback runs: a read
into two aligned reads of its own size around it (a 4-byte read at 0x25
becomes 4 bytes at 0x24 and 4 at 0x28), a write into single bytes. The
callbacks cannot tell those pieces from aligned accesses, so an unaligned
read of a FIFO port would consume more bytes than QEMU's. With
``exact_unaligned=True`` the adapter also hooks the region's memory
accesses (unicorn calls a memory hook once per guest access, before it cuts
it): an unaligned access then runs whole, cut the way QEMU's memory core
cuts it, and unicorn's pieces only carry its bytes back (reads) or are
dropped (writes). It is off by default because unicorn takes its slow path
for every guest memory access, RAM included, while a memory hook exists;
drivers make aligned accesses only.

Running. Start the guest with :func:`emu_start` (same arguments as
``Uc.emu_start``): it calls ``uc_emu_start`` without releasing the GIL, so
a native callback need not take it back per access, and it raises what a
callback met. ``uc.emu_start`` works too (each device access then takes
the GIL, which is slower), but an exception a callback met only stops the
guest: call the attachment's :meth:`Attachment.check` afterwards to raise it.

Unassigned space: bytes of the mapped pages past the device's region (the
rest of a page) read 0 and drop writes, as QEMU's unassigned memory.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

import tpmdev
from tpmdev.errors import ConfigurationError, StateError
from tpmdev.firmware.ppi import PPI_ADDRESS as _PPI_ADDRESS

# The native callbacks exist where the compiled register models were built with them; they
# use the compiled core, so they are loaded only with it (never beside the pure models).
_unicorn_native: Any = None
if tpmdev.USE_EXTENSIONS:
    try:
        from tpmdev.adapters import _unicorn_native  # type: ignore[attr-defined,no-redef]
    except ImportError:  # a build without them: Python callbacks
        pass

__all__ = ["attach", "emu_start", "map_null", "Attachment", "PAGE_SIZE", "PPI_ADDRESS", "native_available"]

#: Unicorn maps whole pages (x86).
PAGE_SIZE = 0x1000
#: Where QEMU's PC machine puts the PPI page (a device's own ``ppi_address`` wins).
PPI_ADDRESS = _PPI_ADDRESS
#: unicorn's UC_MEM_WRITE (a memory hook's access kind).
_UC_MEM_WRITE = 17
#: The engine attribute holding its attachments.
_KEPT = "_tpmdev_attachments"


def _uclib() -> Any:
    try:
        from unicorn.unicorn_py3 import unicorn as binding
    except ImportError as exc:
        raise ConfigurationError(
            "tpmdev.adapters.unicorn needs unicorn 2.x: pip install 'tpmdev[unicorn]'"
        ) from exc
    return binding.uclib


def _address(fn: Any) -> int:
    address = ctypes.cast(fn, ctypes.c_void_p).value
    assert address is not None
    return address


def _handle(uc: Any) -> int:
    """The ``uc_engine *`` of a ``unicorn.Uc``."""
    handle = getattr(uc, "_uch", None)
    value = getattr(handle, "value", None)
    if not isinstance(value, int) or not value:
        raise ConfigurationError(f"expected an open unicorn.Uc engine (unicorn 2.x), got {uc!r}")
    return value


def native_available(dev: Any = None) -> bool:
    """True if :func:`attach` would map *dev* (or any compiled device) with native callbacks."""
    if _unicorn_native is None or not tpmdev.USE_EXTENSIONS:
        return False
    if dev is None:
        return True
    from tpmdev.hw.core import MmioCore

    return isinstance(dev.core, MmioCore)


@dataclass
class Attachment:
    """What :func:`attach` mapped; keeps alive what unicorn points into."""

    device: Any
    base: int
    size: int
    native: bool
    #: ``(address, size, how)`` of every mapping: how is "mmio", "ram" (mem_map_ptr) or "ram-mmio"
    mappings: list[tuple[int, int, str]] = field(default_factory=list)
    _keep: list[Any] = field(default_factory=list, repr=False)
    _error: Optional[BaseException] = field(default=None, repr=False)

    def check(self) -> None:
        """Raise (once) the exception a callback met; :func:`emu_start` calls it."""
        error, self._error = self._error, None
        if error is not None:
            raise error
        for kept in self._keep:
            check = getattr(kept, "check", None)
            if check is not None:
                check()

    def _fail(self, uc: Any, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        uc.emu_stop()


def _pieces(offset: int, size: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of the naturally aligned pieces of at most 4 bytes QEMU's memory core
    cuts an access into, lowest first (as :class:`tpmdev.hw.core.MmioCore` does)."""
    pieces = []
    done = 0
    while done < size:
        piece = 4 if size - done >= 4 else (2 if size - done >= 2 else 1)
        while (offset + done) & (piece - 1):
            piece >>= 1
        pieces.append((offset + done, piece))
        done += piece
    return pieces


def _round_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _platform_base(dev: Any, base: Optional[int]) -> int:
    own = getattr(dev, "address", None)  # a CRB shows its address in its registers
    if own is None:
        own = getattr(dev, "base_address", None)
    if base is None:
        base = own
    if base is None:
        raise ConfigurationError(f"{type(dev).__name__} has no platform address: pass base=")
    if isinstance(base, bool) or not isinstance(base, int) or base < 0 or base % PAGE_SIZE:
        raise ConfigurationError(f"base must be a page-aligned (0x1000) address, got {base!r}")
    if hasattr(dev, "address") and base != dev.address:
        raise ConfigurationError(
            f"this CRB shows address 0x{dev.address:X} in its command/response address registers; "
            f"build it with address=0x{base:X} to map it at 0x{base:X}"
        )
    return base


def _page_backed(memory: np.ndarray) -> Optional[int]:
    """The address of *memory* if it starts a page-aligned buffer holding a whole page, else None."""
    root: Any = memory
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not (memory.flags.c_contiguous and memory.flags.writeable and root.flags.c_contiguous):
        return None
    start = memory.ctypes.data
    end = root.ctypes.data + root.nbytes
    if start % PAGE_SIZE or end - start < PAGE_SIZE:
        return None
    return int(start)


def attach(
    uc: Any,
    dev: Any,
    base: Optional[int] = None,
    *,
    native: Optional[bool] = None,
    exact_unaligned: bool = False,
) -> Attachment:
    """Map *dev* into the unicorn engine *uc* at *base* (default: its
    platform address: ``dev.base_address`` for a TIS, ``dev.address`` for a
    CRB) and its PPI page, if it has one, at 0xFED45000. See the module doc.

    *native*: None takes the native callbacks where they can be used (the
    compiled register models and the native module are loaded), False
    always Python callbacks, True the native ones or ConfigurationError.

    *exact_unaligned*: also see every guest access whole, before unicorn
    cuts it (memory hooks over the region), so that an unaligned one reaches
    the device exactly as QEMU's memory core cuts it (see the module doc).
    Costs every guest memory access: unicorn takes its slow path for all of
    them while any memory hook exists.
    """
    if not hasattr(dev, "core") or not hasattr(dev, "region_size") or not hasattr(dev, "execute"):
        raise ConfigurationError(f"expected a memory-mapped tpmdev device (TIS, TISSysbus, CRB), got {dev!r}")
    if getattr(dev, "closed", False):
        raise StateError(f"the {type(dev).__name__} is closed")
    base = _platform_base(dev, base)
    region = int(dev.region_size)
    size = _round_up(region)
    available = native_available(dev)
    if native is None:
        native = available
    elif native and not available:
        raise ConfigurationError(
            "native unicorn callbacks need the compiled register models and tpmdev's native unicorn "
            "module (build in place with a C compiler and Cython); use native=None to fall back"
        )
    lib = _uclib()
    handle = _handle(uc)
    found = Attachment(dev, base, size, native)
    if native:
        assert _unicorn_native is not None
        hook_add = _address(lib.uc_hook_add) if exact_unaligned else 0
        window = _unicorn_native.DeviceWindow(
            dev.core, handle, base, size, _address(lib.uc_mmio_map), _address(lib.uc_emu_stop), hook_add
        )
        found._keep.append(window)
    else:
        core_read, core_write = dev.core.read, dev.core.write
        # an unaligned access run whole (exact_unaligned): kind (0, 1 read, 2 write), its start,
        # its bytes, where unicorn's last piece of it ends
        pending: list[Any] = [0, 0, b"", 0]

        def piece(offset: int, size: int) -> int:
            """A piece unicorn cut from an unaligned read: the whole access's bytes."""
            _, start, data, last = pending
            value = 0
            for at in range(offset + size - 1, offset - 1, -1):
                value = (value << 8) | (data[at - start] if start <= at < start + len(data) else 0)
            if offset + size >= last:
                pending[0] = 0
            return value

        # (an exception is kept and the emulation stopped, as the native path does: unicorn's
        # binding cannot return a value from a read callback that raised)
        def read(uc: Any, offset: int, size: int, user_data: object) -> int:
            if offset >= region or size > region - offset:
                return 0
            if pending[0] == 1:
                return piece(offset, size)
            try:
                value: int = core_read(offset, size)
            except BaseException as exc:  # noqa: BLE001 (nothing may escape into unicorn)
                found._fail(uc, exc)
                return 0
            return value

        def write(uc: Any, offset: int, size: int, value: int, user_data: object) -> None:
            if pending[0] == 2:
                if offset + size >= pending[3]:
                    pending[0] = 0
                return
            if offset < region and size <= region - offset:
                try:
                    core_write(offset, value, size)
                except BaseException as exc:  # noqa: BLE001 (nothing may escape into unicorn)
                    found._fail(uc, exc)

        def whole(uc: Any, access: int, address: int, size: int, value: int, user_data: object) -> None:
            offset = address - base
            if not (0 <= offset < region and size <= region - offset) or not offset & (size - 1):
                return  # outside, or aligned: unicorn hands it over as QEMU's memory core would
            try:  # QEMU's cut: naturally aligned pieces of at most 4 bytes, lowest first
                if access == _UC_MEM_WRITE:
                    value &= (1 << (8 * size)) - 1
                    for at, n in _pieces(offset, size):
                        core_write(at, (value >> (8 * (at - offset))) & ((1 << (8 * n)) - 1), n)
                    pending[:] = [2, offset, b"", offset + size]
                else:
                    data = b"".join(core_read(at, n).to_bytes(n, "little") for at, n in _pieces(offset, size))
                    pending[:] = [1, offset, data, (offset & ~(size - 1)) + 2 * size]
            except BaseException as exc:  # noqa: BLE001 (nothing may escape into unicorn)
                found._fail(uc, exc)

        uc.mmio_map(base, size, read, None, write, None)
        found._keep += [read, write]
        if exact_unaligned:
            from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

            uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, whole, None, base, base + size - 1)
    found.mappings.append((base, size, "mmio"))
    # unicorn points into what the attachment keeps: it lives as long as the
    # engine, from the moment the region is mapped (a failure below leaves
    # the device mapped, never a callback into freed memory)
    kept = getattr(uc, _KEPT, None)
    if kept is None:
        kept = []
        setattr(uc, _KEPT, kept)
    kept.append(found)
    memory = getattr(getattr(dev, "ppi", None), "memory", None)
    if memory is not None:
        address = getattr(dev, "ppi_address", None) or PPI_ADDRESS
        _map_ram(uc, lib, handle, found, memory, address, native)
    return found


def _map_ram(
    uc: Any, lib: Any, handle: int, found: Attachment, memory: Any, address: int, native: bool
) -> None:
    """Map the uint8 array *memory* as RAM at *address* (one or more whole pages)."""
    from unicorn import UC_PROT_READ, UC_PROT_WRITE

    array = np.asarray(memory)
    if array.dtype != np.uint8 or array.ndim != 1 or not array.flags.c_contiguous:
        raise ConfigurationError(f"RAM to map must be a C-contiguous 1-D uint8 array, got {array.dtype}")
    size = _round_up(array.nbytes)
    pointer = _page_backed(array) if array.nbytes % PAGE_SIZE == 0 else None
    if pointer is not None:
        uc.mem_map_ptr(address, size, UC_PROT_READ | UC_PROT_WRITE, pointer)
        found.mappings.append((address, size, "ram"))
        found._keep.append(array)
        return
    if native:
        assert _unicorn_native is not None
        found._keep.append(_unicorn_native.RamWindow(array, handle, address, size, _address(lib.uc_mmio_map)))
    else:
        n = array.nbytes

        def read(uc: Any, offset: int, size: int, user_data: object) -> int:
            if offset >= n or size > n - offset:
                return 0
            return int.from_bytes(array[offset : offset + size].tobytes(), "little")

        def write(uc: Any, offset: int, size: int, value: int, user_data: object) -> None:
            if offset < n and size <= n - offset:
                array[offset : offset + size] = np.frombuffer(value.to_bytes(size, "little"), np.uint8)

        uc.mmio_map(address, size, read, None, write, None)
        found._keep += [array, read, write]
    found.mappings.append((address, size, "ram-mmio"))


def map_null(uc: Any, address: int, size: int) -> None:
    """Map do-nothing native MMIO callbacks (reads 0, writes dropped) at
    *address*: unicorn's own cost of an MMIO access, the floor the
    benchmarks compare the device with. Needs the native module."""
    if _unicorn_native is None:
        raise ConfigurationError("map_null needs tpmdev's native unicorn module (a compiled build)")
    lib = _uclib()
    _unicorn_native.map_null(_handle(uc), address, size, _address(lib.uc_mmio_map))


def emu_start(uc: Any, begin: int, until: int, timeout: int = 0, count: int = 0) -> None:
    """``uc.emu_start(begin, until, timeout, count)``, calling ``uc_emu_start``
    with the GIL held when the native module is loaded (see the module doc);
    raises unicorn's error, or what a callback met (a native one's after
    the Python binding's)."""
    from unicorn.unicorn_py3.unicorn import UcError

    try:
        if _unicorn_native is None:
            uc.emu_start(begin, until, timeout, count)
        else:
            uc._hook_exception = None  # as Uc.emu_start: Python hooks park their exception there
            start = _address(_uclib().uc_emu_start)
            err = _unicorn_native.emu_start(_handle(uc), begin, until, timeout, count, start)
            if err:
                raise UcError(err)
            if uc._hook_exception is not None:
                raise uc._hook_exception
    finally:
        # what a device callback met comes first (it is why the guest stopped);
        # it is never left behind for a later run
        for attachment in getattr(uc, _KEPT, ()):
            attachment.check()
