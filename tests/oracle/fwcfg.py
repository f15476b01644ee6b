"""Read QEMU's fw_cfg over qtest: the file directory, any file, and the ACPI tables blob.

Theory of operation
-------------------

QEMU's fw_cfg (docs/specs/fw_cfg.rst) is a selector plus a data register:
writing a 16-bit key to the selector rewinds the item of that key, and each
data read returns its next byte. Key 0x0019 (FILE_DIR) is the file
directory: a big-endian 32-bit count, then one 64-byte entry per file
(size be32, select be16, reserved be16, name[56] NUL-padded).

* x86 (pc/q35): selector I/O port 0x510 (16 bits, little-endian as any
  port), data port 0x511 (one byte per ``inb``), DMA address at ports
  0x514 (high 32 bits) and 0x518 (low 32 bits, the write that starts the
  transfer), both big-endian.
* Arm virt: MMIO at 0x09020000: data at +0, selector at +8 (16-bit,
  big-endian), DMA address at +16 (64-bit, big-endian).

A read byte by byte costs a qtest round trip per byte, and
``etc/acpi/tables`` is 128 KiB on q35 (the tables padded). When key 0x0001
(ID) has bit 1 (DMA) set, :class:`FwCfg` reads through DMA instead: it
writes a ``FWCfgDmaAccess`` descriptor (control be32 = select << 16 |
SELECT | READ, length be32, address be64) into guest RAM, writes the
descriptor's address to the DMA register, reads the control word back
(zero: done, bit 0: error) and fetches the data with one qtest ``read``.
Guest RAM exists before the machine runs (``-S``), so this works before
any firmware did.

The big-endian registers sit behind a little-endian CPU: a qtest ``outl`` /
``writew`` of the value whose little-endian bytes are the wanted big-endian
bytes puts those bytes on the register.

:func:`acpi_tables` splits ``etc/acpi/tables`` into tables by their headers
(signature at +0, length at +4; the FACS has no more header than that) and
skips the zero padding QEMU puts between and after them. :func:`aml_object`
finds one named AML object (``Device (TPM)``) in a DSDT by walking the
AML: it returns the object's bytes exactly, opcode to end.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "FwCfg",
    "files",
    "read_file",
    "acpi_tables",
    "split_tables",
    "aml_object",
    "aml_named_objects",
    "FILE_DIR",
    "ID",
]

#: fw_cfg keys
SIGNATURE, ID, FILE_DIR = 0x0000, 0x0001, 0x0019
#: FWCfgDmaAccess control bits
DMA_ERROR, DMA_READ, DMA_SKIP, DMA_SELECT = 0x01, 0x02, 0x04, 0x08
#: ID bits: traditional interface, DMA interface
ID_TRADITIONAL, ID_DMA = 0x01, 0x02

X86_SELECTOR, X86_DATA, X86_DMA = 0x510, 0x511, 0x514
VIRT_FW_CFG = 0x09020000

#: Guest RAM offsets the DMA transfer uses (descriptor, then data), from the start of RAM.
_DMA_DESC_OFFSET = 0x100000
_DMA_DATA_OFFSET = 0x200000
#: one qtest ``read`` answer per chunk (hex doubles it)
_DMA_CHUNK = 0x10000


class _Qtest(Protocol):
    """What fw_cfg needs of the harness's :class:`~tests.oracle.qtest.Qemu`."""

    def command(self, line: str) -> str: ...


def _machine(qt: object) -> str:
    platform = getattr(qt, "platform", None)
    machine = getattr(platform, "machine", "q35")
    return "virt" if machine == "virt" else "q35"


class FwCfg:
    """fw_cfg of one QEMU (x86 ports or Arm virt MMIO), DMA when QEMU offers it."""

    def __init__(self, qt: _Qtest, machine: str | None = None, *, dma: bool | None = None) -> None:
        self.qt = qt
        self.machine = machine or _machine(qt)
        if self.machine not in ("q35", "pc", "virt"):
            raise ValueError(f"fw_cfg: unsupported machine {self.machine!r} (q35, pc or virt)")
        self.ram_base = 0x40000000 if self.machine == "virt" else 0
        self.select(SIGNATURE)
        sig = self._read_bytes_pio(4)
        if sig != b"QEMU":
            raise RuntimeError(f"fw_cfg signature {sig!r}, expected b'QEMU'")
        self.select(ID)
        features = int.from_bytes(self._read_bytes_pio(4), "little")
        self.dma = bool(features & ID_DMA) if dma is None else dma
        self._files: dict[str, tuple[int, int]] | None = None

    # -- registers ------------------------------------------------------
    def select(self, key: int) -> None:
        be = key.to_bytes(2, "big")
        if self.machine == "virt":
            self.qt.command(f"writew 0x{VIRT_FW_CFG + 8:x} 0x{int.from_bytes(be, 'little'):x}")
        else:  # a port: the key is written as a plain (little-endian) value
            self.qt.command(f"outw 0x{X86_SELECTOR:x} 0x{key:x}")

    def _read_byte(self) -> int:
        if self.machine == "virt":
            answer = self.qt.command(f"readb 0x{VIRT_FW_CFG:x}")
        else:
            answer = self.qt.command(f"inb 0x{X86_DATA:x}")
        return int(answer.split()[1], 16)

    def _read_bytes_pio(self, length: int) -> bytes:
        return bytes(self._read_byte() for _ in range(length))

    def _write_dma_address(self, address: int) -> None:
        be = address.to_bytes(8, "big")
        hi, lo = int.from_bytes(be[:4], "little"), int.from_bytes(be[4:], "little")
        if self.machine == "virt":
            self.qt.command(f"writel 0x{VIRT_FW_CFG + 16:x} 0x{hi:x}")
            self.qt.command(f"writel 0x{VIRT_FW_CFG + 20:x} 0x{lo:x}")
        else:
            self.qt.command(f"outl 0x{X86_DMA:x} 0x{hi:x}")
            self.qt.command(f"outl 0x{X86_DMA + 4:x} 0x{lo:x}")

    def _mem_read(self, address: int, length: int) -> bytes:
        out = bytearray()
        for off in range(0, length, _DMA_CHUNK):
            n = min(_DMA_CHUNK, length - off)
            answer = self.qt.command(f"read 0x{address + off:x} 0x{n:x}")
            out += bytes.fromhex(answer.split()[1][2:])
        return bytes(out)

    def _read_dma(self, key: int, length: int) -> bytes:
        desc = self.ram_base + _DMA_DESC_OFFSET
        data = self.ram_base + _DMA_DATA_OFFSET
        control = (key << 16) | DMA_SELECT | DMA_READ
        blob = control.to_bytes(4, "big") + length.to_bytes(4, "big") + data.to_bytes(8, "big")
        self.qt.command(f"write 0x{desc:x} 0x{len(blob):x} 0x{blob.hex()}")
        self._write_dma_address(desc)
        status = int.from_bytes(self._mem_read(desc, 4), "big")
        if status:  # QEMU clears the control word when done, sets bit 0 on error
            raise RuntimeError(f"fw_cfg DMA of key 0x{key:04x} ({length} bytes): control 0x{status:x}")
        return self._mem_read(data, length)

    # -- items ----------------------------------------------------------
    def read_key(self, key: int, length: int) -> bytes:
        """The first *length* bytes of the item *key*."""
        if length == 0:
            return b""
        if self.dma:
            return self._read_dma(key, length)
        self.select(key)
        return self._read_bytes_pio(length)

    def files(self) -> dict[str, tuple[int, int]]:
        """name -> (select key, size) of every fw_cfg file."""
        if self._files is None:
            self.select(FILE_DIR)
            count = int.from_bytes(self._read_bytes_pio(4), "big")
            raw = self.read_key(FILE_DIR, 4 + 64 * count)[4:]
            out: dict[str, tuple[int, int]] = {}
            for i in range(count):
                entry = raw[64 * i : 64 * (i + 1)]
                size = int.from_bytes(entry[0:4], "big")
                select = int.from_bytes(entry[4:6], "big")
                name = entry[8:].split(b"\0", 1)[0].decode()
                out[name] = (select, size)
            self._files = out
        return self._files

    def read_file(self, name: str) -> bytes:
        """The whole contents of the fw_cfg file *name* (KeyError if QEMU has none)."""
        entries = self.files()
        if name not in entries:
            raise KeyError(f"fw_cfg has no file {name!r}; it has {sorted(entries)}")
        select, size = entries[name]
        return self.read_key(select, size)


def files(qt: _Qtest) -> dict[str, tuple[int, int]]:
    """name -> (select key, size) of every fw_cfg file of the QEMU behind *qt*."""
    return FwCfg(qt).files()


def read_file(qt: _Qtest, name: str) -> bytes:
    """The fw_cfg file *name* of the QEMU behind *qt*."""
    return FwCfg(qt).read_file(name)


def split_tables(blob: bytes) -> dict[str, list[bytes]]:
    """signature -> the tables of that signature in *blob*, in blob order.

    Zero bytes between tables (alignment, the padding at the end) are skipped.
    """
    out: dict[str, list[bytes]] = {}
    pos = 0
    while pos < len(blob):
        if blob[pos] == 0:
            pos += 1
            continue
        head = blob[pos : pos + 8]
        sig = head[:4]
        length = int.from_bytes(head[4:8], "little") if len(head) == 8 else 0
        printable = len(sig) == 4 and all(0x20 < c < 0x7F for c in sig)
        if not printable or length < 8 or pos + length > len(blob):
            raise ValueError(f"no ACPI table header at offset 0x{pos:x} of the tables blob: {head.hex()}")
        out.setdefault(sig.decode(), []).append(blob[pos : pos + length])
        pos += length
    return out


def acpi_tables(qt: _Qtest) -> dict[str, list[bytes]]:
    """signature -> tables of QEMU's ``etc/acpi/tables`` (DSDT, FACP, TPM2, SSDT, ...)."""
    return split_tables(read_file(qt, "etc/acpi/tables"))


# -- AML walking ----------------------------------------------------------

#: the header of every definition block (DSDT, SSDT)
_HEADER = 36
_EXT = 0x5B
#: ExtOpPrefix opcodes with a PkgLength followed by a NameString (ACPI 6.5, 20.2.5)
_EXT_NAMED = {0x82: "Device", 0x83: "Processor", 0x84: "PowerResource", 0x85: "ThermalZone"}
#: one-byte opcodes with a PkgLength followed by a NameString
_NAMED = {0x10: "Scope", 0x14: "Method"}


def _pkg_length(aml: bytes, pos: int) -> tuple[int, int]:
    """(PkgLength value, bytes of its encoding) at *pos*."""
    lead = aml[pos]
    follow = lead >> 6
    if follow == 0:
        return lead & 0x3F, 1
    value = lead & 0x0F
    for i in range(follow):
        value |= aml[pos + 1 + i] << (4 + 8 * i)
    return value, 1 + follow


def _name_string(aml: bytes, pos: int) -> tuple[str, int]:
    """(the NameString as ASL writes it, bytes it takes) at *pos*."""
    start = pos
    prefix = ""
    while aml[pos] in (0x5C, 0x5E):
        prefix += chr(aml[pos])
        pos += 1
    lead = aml[pos]
    if lead == 0x00:
        return prefix, pos + 1 - start
    if lead == 0x2E:
        count, pos = 2, pos + 1
    elif lead == 0x2F:
        count, pos = aml[pos + 1], pos + 2
    else:
        count = 1
    segs = [aml[pos + 4 * i : pos + 4 * i + 4].decode("ascii") for i in range(count)]
    pos += 4 * count
    return prefix + ".".join(s.rstrip("_") or "_" for s in segs), pos - start


def _data_object(aml: bytes, pos: int) -> int:
    """The end of the data object (or name reference) at *pos*."""
    op = aml[pos]
    if op in (0x00, 0x01, 0xFF):
        return pos + 1
    if op in (0x0A, 0x0B, 0x0C, 0x0E):
        return pos + 1 + {0x0A: 1, 0x0B: 2, 0x0C: 4, 0x0E: 8}[op]
    if op == 0x0D:
        return aml.index(b"\0", pos + 1) + 1
    if op in (0x11, 0x12, 0x13):
        length, _ = _pkg_length(aml, pos + 1)
        return pos + 1 + length
    if op in (0x5C, 0x5E, 0x2E, 0x2F, 0x5F) or 0x41 <= op <= 0x5A:
        return pos + _name_string(aml, pos)[1]
    raise ValueError(f"AML walk: unexpected data object opcode 0x{op:02x} at offset 0x{pos:x}")


def aml_named_objects(table: bytes) -> list[tuple[str, str, int, int]]:
    """Every Scope / Device / Method / ... of a definition block: (kind, path, start, end).

    *path* joins the names of the enclosing objects with ``.`` (relative
    names appended to the enclosing path, as written in the AML); *start*
    and *end* delimit the object's bytes in *table*. The walk knows the
    declarations a DSDT holds at scope level (Name, Scope, Device, Method,
    OperationRegion, Field, If/Else, Mutex, External, ...) and steps over
    each whole term; an opcode it does not know raises ValueError naming the
    offset (extend the walk, never guess).
    """
    found: list[tuple[str, str, int, int]] = []

    def walk(start: int, end: int, scope: str) -> None:
        pos = start
        while pos < end:
            op = table[pos]
            if op == _EXT:
                ext = table[pos + 1]
                if ext in _EXT_NAMED:
                    kind, oplen = _EXT_NAMED[ext], 2
                elif ext in (0x81, 0x86, 0x87):  # Field, IndexField, BankField
                    length, _ = _pkg_length(table, pos + 2)
                    pos += 2 + length
                    continue
                elif ext == 0x80:  # OperationRegion: name, space, offset, length
                    pos += 2 + _name_string(table, pos + 2)[1] + 1
                    pos = _data_object(table, _data_object(table, pos))
                    continue
                elif ext == 0x01:  # Mutex: name, flags
                    pos += 2 + _name_string(table, pos + 2)[1] + 1
                    continue
                elif ext == 0x02:  # Event
                    pos += 2 + _name_string(table, pos + 2)[1]
                    continue
                else:
                    raise ValueError(f"AML walk: unexpected opcode 5b {ext:02x} at offset 0x{pos:x}")
            elif op in _NAMED:
                kind, oplen = _NAMED[op], 1
            elif op == 0x08:  # Name: name, data object
                pos = _data_object(table, pos + 1 + _name_string(table, pos + 1)[1])
                continue
            elif op in (0xA0, 0xA1, 0xA2):  # If, Else, While: skipped whole
                length, _ = _pkg_length(table, pos + 1)
                pos += 1 + length
                continue
            elif op == 0x15:  # External: name, type, argument count
                pos += 1 + _name_string(table, pos + 1)[1] + 2
                continue
            elif op == 0x06:  # Alias: two names
                pos += 1 + _name_string(table, pos + 1)[1]
                pos += _name_string(table, pos)[1]
                continue
            else:
                raise ValueError(f"AML walk: unexpected opcode {op:02x} at offset 0x{pos:x}")
            length, nlen = _pkg_length(table, pos + oplen)
            obj_end = pos + oplen + length
            if obj_end > end:
                raise ValueError(f"AML walk: {kind} at offset 0x{pos:x} runs past its parent")
            name, name_len = _name_string(table, pos + oplen + nlen)
            path = name[1:] if name.startswith("\\") else (f"{scope}.{name}" if scope else name)
            found.append((kind, path, pos, obj_end))
            body = pos + oplen + nlen + name_len
            if kind == "Processor":
                body += 6  # ProcID, PblkAddr, PblkLen
            elif kind == "PowerResource":
                body += 3  # SystemLevel, ResourceOrder
            if kind != "Method":  # a method body is code, not declarations
                walk(body, obj_end, path)
            pos = obj_end

    walk(_HEADER, len(table), "")
    return found


def aml_object(table: bytes, name: str, kind: str = "Device") -> bytes:
    """The bytes of the one *kind* object whose last name segment is *name* (``TPM``, ``TPM0``).

    Raises ValueError when there is none or more than one.
    """
    hits = [
        table[s:e] for k, p, s, e in aml_named_objects(table) if k == kind and p.rsplit(".", 1)[-1] == name
    ]
    if len(hits) != 1:
        raise ValueError(f"{len(hits)} {kind} objects named {name!r} in the table (expected exactly one)")
    return hits[0]
