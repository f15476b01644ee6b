"""A small ACPI Machine Language (AML) encoder: ACPI 6.5 chapter 20.

Theory of operation
-------------------

Every AML term is a byte string, and every function here returns the
encoded bytes of one term (``bytes``), taking the encoded bytes of its
operands. So a term is built inside out as ASL reads, and the bytes of any
sub-term can be tested alone::

    device("TPM", name("_HID", string("MSFT0101")), name("_UID", integer(1)))

The opcodes live in tables (:class:`Op`, :class:`ExtOp`, the operator
tables below); each function is a row of "opcode + operand shape":

* containers (Scope, Device, Method, If, Else, While, Buffer, Package,
  Field) put a PkgLength (20.2.4) in front of their body: 1 to 4 bytes,
  the smallest that holds the length *including itself*, which is what
  ACPICA's and QEMU's encoders emit. Field units use the same encoding for a
  bit count, without counting themselves.
* name strings (20.2.2): segments of 4 characters, ``_``-padded; a root
  prefix ``\\`` or parent prefixes ``^``; two segments behind
  DualNamePrefix, more behind MultiNamePrefix and a count; the empty name
  is NullName.
* integers (20.2.3): :func:`integer` picks the smallest encoding, and 0 and
  1 become ZeroOp and OneOp, as QEMU's ``aml_int`` does; ``0xFF...FF`` is a
  QWord there too (OnesOp only when asked for with :data:`ONES`).
* operators with a Target (Add, And, Index, ToInteger, ...) take it as a
  last argument; the default is NullName (no target), as QEMU emits when it
  passes NULL.
* resource templates (6.4) are Buffers of resource descriptors closed by an
  End Tag whose checksum byte is 0 ("treated as if the checksum
  succeeded", 6.4.2.9), which is what QEMU emits.

Host misuse (a name that is not a name, an integer out of range, more than
7 method arguments) raises :class:`~tpmdev.errors.ConfigurationError`
naming what was wrong.
"""

from __future__ import annotations

import enum
import uuid as _uuid
from dataclasses import dataclass
from typing import Optional

from tpmdev.errors import ConfigurationError

__all__ = [
    # tables
    "Op",
    "ExtOp",
    "RegionSpace",
    "AccessType",
    "LockRule",
    "UpdateRule",
    # encodings
    "check_unsigned",
    "pkg_length",
    "name_seg",
    "name_string",
    # data objects
    "ZERO",
    "ONE",
    "ONES",
    "NULL_NAME",
    "integer",
    "string",
    "buffer",
    "package",
    "eisaid",
    "uuid",
    # resource descriptors
    "resource_template",
    "memory32_fixed",
    "interrupt",
    "irq",
    "irq_no_flags",
    # named objects and declarations
    "name",
    "scope",
    "device",
    "method",
    "operation_region",
    "field",
    "FieldUnit",
    "named_field",
    "reserved_field",
    "offset",
    "create_field",
    "create_bit_field",
    "create_byte_field",
    "create_word_field",
    "create_dword_field",
    "create_qword_field",
    # references
    "arg",
    "local",
    "ref",
    "call",
    # control flow
    "if_",
    "else_",
    "while_",
    "return_",
    "break_",
    "noop",
    # operators
    "store",
    "land",
    "lor",
    "lnot",
    "lequal",
    "lgreater",
    "lless",
    "lnot_equal",
    "lgreater_equal",
    "lless_equal",
    "add",
    "subtract",
    "multiply",
    "and_",
    "or_",
    "xor",
    "nand",
    "nor",
    "not_",
    "shift_left",
    "shift_right",
    "increment",
    "decrement",
    "derefof",
    "refof",
    "index",
    "sizeof",
    "to_integer",
    "to_buffer",
]


class Op(enum.IntEnum):
    """One-byte opcodes (ACPI 6.5, 20.3)."""

    ZERO = 0x00
    ONE = 0x01
    NAME = 0x08
    BYTE_PREFIX = 0x0A
    WORD_PREFIX = 0x0B
    DWORD_PREFIX = 0x0C
    STRING_PREFIX = 0x0D
    QWORD_PREFIX = 0x0E
    SCOPE = 0x10
    BUFFER = 0x11
    PACKAGE = 0x12
    VAR_PACKAGE = 0x13
    METHOD = 0x14
    DUAL_NAME_PREFIX = 0x2E
    MULTI_NAME_PREFIX = 0x2F
    EXT_OP_PREFIX = 0x5B
    ROOT_CHAR = 0x5C
    PARENT_PREFIX_CHAR = 0x5E
    LOCAL0 = 0x60
    ARG0 = 0x68
    STORE = 0x70
    REF_OF = 0x71
    ADD = 0x72
    SUBTRACT = 0x74
    INCREMENT = 0x75
    DECREMENT = 0x76
    MULTIPLY = 0x77
    SHIFT_LEFT = 0x79
    SHIFT_RIGHT = 0x7A
    AND = 0x7B
    NAND = 0x7C
    OR = 0x7D
    NOR = 0x7E
    XOR = 0x7F
    NOT = 0x80
    DEREF_OF = 0x83
    SIZE_OF = 0x87
    INDEX = 0x88
    CREATE_DWORD_FIELD = 0x8A
    CREATE_WORD_FIELD = 0x8B
    CREATE_BYTE_FIELD = 0x8C
    CREATE_BIT_FIELD = 0x8D
    CREATE_QWORD_FIELD = 0x8F
    LAND = 0x90
    LOR = 0x91
    LNOT = 0x92
    LEQUAL = 0x93
    LGREATER = 0x94
    LLESS = 0x95
    TO_BUFFER = 0x96
    TO_INTEGER = 0x99
    NOOP = 0xA3
    IF = 0xA0
    ELSE = 0xA1
    WHILE = 0xA2
    RETURN = 0xA4
    BREAK = 0xA5
    ONES = 0xFF


class ExtOp(enum.IntEnum):
    """Second bytes of the opcodes behind ExtOpPrefix (0x5B)."""

    CREATE_FIELD = 0x13
    OP_REGION = 0x80
    FIELD = 0x81
    DEVICE = 0x82


class RegionSpace(enum.IntEnum):
    """OperationRegion RegionSpace (19.6.100)."""

    SYSTEM_MEMORY = 0x00
    SYSTEM_IO = 0x01
    PCI_CONFIG = 0x02
    EMBEDDED_CONTROL = 0x03
    SMBUS = 0x04
    SYSTEM_CMOS = 0x05
    PCI_BAR_TARGET = 0x06


class AccessType(enum.IntEnum):
    """Field AccessType, FieldFlags bits 0-3."""

    ANY = 0
    BYTE = 1
    WORD = 2
    DWORD = 3
    QWORD = 4
    BUFFER = 5


class LockRule(enum.IntEnum):
    """Field LockRule, FieldFlags bit 4."""

    NO_LOCK = 0
    LOCK = 1


class UpdateRule(enum.IntEnum):
    """Field UpdateRule, FieldFlags bits 5-6."""

    PRESERVE = 0
    WRITE_AS_ONES = 1
    WRITE_AS_ZEROS = 2


# -- encodings --------------------------------------------------------------

#: largest value a PkgLength holds (4 bytes: 4 + 8 * 3 bits)
PKG_LENGTH_MAX = (1 << 28) - 1


def check_unsigned(name: str, value: object, bits: int) -> int:
    """*value* if it is an int (not a bool) that fits in *bits* unsigned bits,
    else a :class:`ConfigurationError` naming *name* (the check of every
    integer field of the firmware tables and fw_cfg files)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an int, got {value!r}")
    if not 0 <= value < 1 << bits:
        raise ConfigurationError(f"{name} must fit in {bits} bits (0..{(1 << bits) - 1:#x}), got {value:#x}")
    return value


def pkg_length(length: int, *, include_self: bool = True) -> bytes:
    """The PkgLength of a body of *length* bytes (20.2.4).

    With *include_self* (containers) the encoded value counts the PkgLength
    bytes too; without it (field units) it is *length* itself. One byte
    holds up to 63 (bits 0-5); otherwise bits 6-7 of the lead byte count the
    1 to 3 bytes that follow, the lead byte holds the low 4 bits.
    """
    if not 0 <= length <= PKG_LENGTH_MAX:
        raise ConfigurationError(f"AML PkgLength {length} is out of range (0 to {PKG_LENGTH_MAX})")
    for size in (1, 2, 3, 4):
        value = length + size if include_self else length
        if size == 1 and value <= 0x3F:
            return bytes([value])
        if size > 1 and value < 1 << (4 + 8 * (size - 1)):
            follow = (value >> 4).to_bytes(size - 1, "little")
            return bytes([((size - 1) << 6) | (value & 0x0F)]) + follow
    raise ConfigurationError(f"AML PkgLength {length} is out of range (0 to {PKG_LENGTH_MAX})")


def _pkg(opcode: bytes, body: bytes) -> bytes:
    return opcode + pkg_length(len(body)) + body


def _is_lead(c: str) -> bool:
    return "A" <= c <= "Z" or c == "_"


def _is_name_char(c: str) -> bool:
    # ASCII digits only: str.isdigit() also takes other scripts' digits
    return _is_lead(c) or "0" <= c <= "9"


def name_seg(seg: str) -> bytes:
    """One NameSeg: 1 to 4 of ``A-Z _ 0-9`` (not starting with a digit), ``_``-padded."""
    if not isinstance(seg, str):
        raise ConfigurationError(f"AML name segment must be a str, got {type(seg).__name__}")
    if not 1 <= len(seg) <= 4 or not _is_lead(seg[0]) or not all(_is_name_char(c) for c in seg):
        raise ConfigurationError(
            f"AML name segment {seg!r} is not 1 to 4 characters of A-Z, _ and 0-9 starting with A-Z or _"
        )
    return seg.ljust(4, "_").encode("ascii")


def name_string(path: str) -> bytes:
    """A NameString from its ASL spelling: ``TPM``, ``\\_SB.PCI0``, ``^^PPRQ``, ``\\``."""
    if not isinstance(path, str):
        raise ConfigurationError(f"AML name must be a str, got {type(path).__name__}")
    prefix = b""
    rest = path
    if rest.startswith("\\"):
        prefix, rest = b"\\", rest[1:]
    else:
        while rest.startswith("^"):
            prefix, rest = prefix + b"^", rest[1:]
    if not rest:
        if not prefix:
            raise ConfigurationError("AML name is empty (use NULL_NAME for no name)")
        return prefix + bytes([Op.ZERO])  # NullName after the prefix
    segs = [name_seg(s) for s in rest.split(".")]
    if len(segs) > 255:
        raise ConfigurationError(f"AML name {path!r} has more than 255 segments")
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([Op.DUAL_NAME_PREFIX]) + b"".join(segs)
    return prefix + bytes([Op.MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


# -- data objects -----------------------------------------------------------

ZERO = bytes([Op.ZERO])
ONE = bytes([Op.ONE])
#: OnesOp: all bits set at the integer width of the definition block
ONES = bytes([Op.ONES])
#: NullName: "no target" for operators that take one
NULL_NAME = bytes([Op.ZERO])

_INT_PREFIX = ((0xFF, Op.BYTE_PREFIX, 1), (0xFFFF, Op.WORD_PREFIX, 2), (0xFFFFFFFF, Op.DWORD_PREFIX, 4))


def integer(value: int) -> bytes:
    """An integer constant in its smallest encoding: ZeroOp, OneOp, Byte/Word/DWord/QWord."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ConfigurationError(f"AML integer must be an int from 0 to 2**64 - 1, got {value!r}")
    if value == 0:
        return ZERO
    if value == 1:
        return ONE
    for top, prefix, size in _INT_PREFIX:
        if value <= top:
            return bytes([prefix]) + value.to_bytes(size, "little")
    return bytes([Op.QWORD_PREFIX]) + value.to_bytes(8, "little")


def _integer_sized(value: int, size: int) -> bytes:
    """An integer with a fixed prefix (Byte/Word/DWord/QWord), whatever its value."""
    prefix = {1: Op.BYTE_PREFIX, 2: Op.WORD_PREFIX, 4: Op.DWORD_PREFIX, 8: Op.QWORD_PREFIX}[size]
    return bytes([prefix]) + value.to_bytes(size, "little")


def string(text: str) -> bytes:
    """A String: ASCII characters 0x01-0x7F, NUL-terminated."""
    if not isinstance(text, str) or not all(0x01 <= ord(c) <= 0x7F for c in text):
        raise ConfigurationError(f"AML string must be ASCII without NUL, got {text!r}")
    return bytes([Op.STRING_PREFIX]) + text.encode("ascii") + b"\0"


def buffer(data: bytes = b"", size: Optional[int] = None) -> bytes:
    """A Buffer of *data*; *size* (default ``len(data)``) may be larger (zero-filled)."""
    size = len(data) if size is None else size
    if size < len(data):
        raise ConfigurationError(f"AML buffer size {size} is smaller than its {len(data)} bytes of data")
    return _pkg(bytes([Op.BUFFER]), integer(size) + bytes(data))


def package(*elements: bytes) -> bytes:
    """A Package of encoded data objects (VarPackage beyond 255 elements)."""
    if len(elements) <= 255:
        return _pkg(bytes([Op.PACKAGE]), bytes([len(elements)]) + b"".join(elements))
    return _pkg(bytes([Op.VAR_PACKAGE]), integer(len(elements)) + b"".join(elements))


def eisaid(text: str) -> bytes:
    """EISAID("PNP0C31"): a compressed EISA id, always a DWord (its bytes big-endian)."""
    if (
        not isinstance(text, str)
        or len(text) != 7
        or not all("A" <= c <= "Z" for c in text[:3])
        or not all(c in "0123456789ABCDEF" for c in text[3:])
    ):
        raise ConfigurationError(f"EISA id must be 3 letters A-Z and 4 upper-case hex digits, got {text!r}")
    value = 0
    for c in text[:3]:
        value = (value << 5) | (ord(c) - 0x40)
    value = (value << 16) | int(text[3:], 16)
    return _integer_sized(int.from_bytes(value.to_bytes(4, "big"), "little"), 4)


def uuid(text: str) -> bytes:
    """ToUUID("aabbccdd-eeff-gghh-iijj-kkllmmnnoopp"): a 16-byte Buffer, the first three fields
    little-endian (19.6.142)."""
    try:
        value = _uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        raise ConfigurationError(
            f"ToUUID needs a UUID string like 3DDDFAA6-361B-4EB4-A424-8D10089D1653, got {text!r}"
        ) from None
    return buffer(value.bytes_le)


# -- resource descriptors (ACPI 6.5, 6.4) -----------------------------------

_END_TAG = 0x79


def resource_template(*descriptors: bytes) -> bytes:
    """ResourceTemplate(): a Buffer of the descriptors and an End Tag with checksum byte 0."""
    return buffer(b"".join(descriptors) + bytes([_END_TAG, 0]))


def memory32_fixed(base: int, length: int, *, read_write: bool = True) -> bytes:
    """Memory32Fixed(ReadWrite|ReadOnly, base, length): large item 0x86, 9 bytes (6.4.3.4)."""
    info = 1 if read_write else 0
    return (
        bytes([0x86, 0x09, 0x00, info])
        + check_unsigned("Memory32Fixed base", base, 32).to_bytes(4, "little")
        + check_unsigned("Memory32Fixed length", length, 32).to_bytes(4, "little")
    )


def interrupt(
    *numbers: int,
    consumer: bool = True,
    edge: bool = False,
    active_low: bool = False,
    shared: bool = False,
    wake: bool = False,
) -> bytes:
    """Interrupt(ResourceConsumer, Level, ActiveHigh, Exclusive) {n, ...}: large item 0x89 (6.4.3.6)."""
    if not 1 <= len(numbers) <= 255:
        raise ConfigurationError(f"Interrupt needs 1 to 255 interrupt numbers, got {len(numbers)}")
    flags = consumer | edge << 1 | active_low << 2 | shared << 3 | wake << 4
    body = bytes([flags, len(numbers)]) + b"".join(
        check_unsigned("interrupt number", n, 32).to_bytes(4, "little") for n in numbers
    )
    return bytes([0x89]) + len(body).to_bytes(2, "little") + body


def _irq_mask(numbers: tuple[int, ...]) -> bytes:
    mask = 0
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 15:
            raise ConfigurationError(f"IRQ numbers must be 0 to 15, got {n!r}")
        mask |= 1 << n
    return mask.to_bytes(2, "little")


def irq(*numbers: int, edge: bool = True, active_low: bool = False, shared: bool = False) -> bytes:
    """IRQ(Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {n, ...}: small item, 3 bytes (6.4.2.1)."""
    flags = edge | active_low << 3 | shared << 4
    return bytes([0x23]) + _irq_mask(numbers) + bytes([flags])


def irq_no_flags(*numbers: int) -> bytes:
    """IRQNoFlags() {n, ...}: small item, 2 bytes (edge, active high, exclusive)."""
    return bytes([0x22]) + _irq_mask(numbers)


# -- named objects and declarations -----------------------------------------


def name(path: str, obj: bytes) -> bytes:
    """Name(path, obj)."""
    return bytes([Op.NAME]) + name_string(path) + obj


def scope(path: str, *body: bytes) -> bytes:
    """Scope(path) {body}."""
    return _pkg(bytes([Op.SCOPE]), name_string(path) + b"".join(body))


def device(path: str, *body: bytes) -> bytes:
    """Device(path) {body}."""
    return _pkg(bytes([Op.EXT_OP_PREFIX, ExtOp.DEVICE]), name_string(path) + b"".join(body))


def method(path: str, args: int, *body: bytes, serialized: bool = False, sync_level: int = 0) -> bytes:
    """Method(path, args, NotSerialized|Serialized, sync_level) {body}."""
    if isinstance(args, bool) or not isinstance(args, int) or not 0 <= args <= 7:
        raise ConfigurationError(f"a method takes 0 to 7 arguments, got {args!r}")
    if isinstance(sync_level, bool) or not isinstance(sync_level, int) or not 0 <= sync_level <= 15:
        raise ConfigurationError(f"method sync level must be 0 to 15, got {sync_level!r}")
    flags = args | bool(serialized) << 3 | sync_level << 4
    return _pkg(bytes([Op.METHOD]), name_string(path) + bytes([flags]) + b"".join(body))


def operation_region(path: str, space: int, offset: bytes, length: bytes) -> bytes:
    """OperationRegion(path, space, offset, length); offset and length are encoded terms."""
    return bytes([Op.EXT_OP_PREFIX, ExtOp.OP_REGION]) + name_string(path) + bytes([space]) + offset + length


@dataclass(frozen=True)
class FieldUnit:
    """One entry of a Field list: a named unit, reserved bits, or an Offset()."""

    name: Optional[str]
    bits: int = 0
    #: Offset(n) in bytes: the next unit starts there (reserved bits fill the gap)
    offset: Optional[int] = None


def named_field(path: str, bits: int) -> FieldUnit:
    """``NAME, bits`` inside a Field."""
    name_seg(path)
    return FieldUnit(path, bits)


def reserved_field(bits: int) -> FieldUnit:
    """``, bits`` inside a Field: skipped bits."""
    return FieldUnit(None, bits)


def offset(byte_offset: int) -> FieldUnit:
    """``Offset(n)`` inside a Field: the next unit starts at byte *n* of the region."""
    return FieldUnit(None, offset=byte_offset)


def field(
    region: str,
    *units: FieldUnit,
    access: AccessType = AccessType.ANY,
    lock: LockRule = LockRule.NO_LOCK,
    update: UpdateRule = UpdateRule.PRESERVE,
) -> bytes:
    """Field(region, access, lock, update) {units}."""
    flags = access | lock << 4 | update << 5
    body = bytearray(name_string(region) + bytes([flags]))
    position = 0
    for unit in units:
        if unit.offset is not None:
            target = unit.offset * 8
            if target < position:
                raise ConfigurationError(
                    f"Field {region}: Offset({unit.offset:#x}) is before bit {position} already used"
                )
            bits, unit_name = target - position, None
            if bits == 0:
                continue
        else:
            bits, unit_name = unit.bits, unit.name
        if isinstance(bits, bool) or not isinstance(bits, int) or not 0 < bits <= PKG_LENGTH_MAX:
            raise ConfigurationError(f"Field {region}: unit {unit_name or 'reserved'} has {bits!r} bits")
        body += (name_seg(unit_name) if unit_name else bytes([0x00])) + pkg_length(bits, include_self=False)
        position += bits
    return _pkg(bytes([Op.EXT_OP_PREFIX, ExtOp.FIELD]), bytes(body))


def _create_field(opcode: int, source: bytes, index_: bytes, path: str) -> bytes:
    return bytes([opcode]) + source + index_ + name_string(path)


def create_bit_field(source: bytes, bit_index: bytes, path: str) -> bytes:
    """CreateBitField(source, bit index, name)."""
    return _create_field(Op.CREATE_BIT_FIELD, source, bit_index, path)


def create_byte_field(source: bytes, byte_index: bytes, path: str) -> bytes:
    """CreateByteField(source, byte index, name)."""
    return _create_field(Op.CREATE_BYTE_FIELD, source, byte_index, path)


def create_word_field(source: bytes, byte_index: bytes, path: str) -> bytes:
    """CreateWordField(source, byte index, name)."""
    return _create_field(Op.CREATE_WORD_FIELD, source, byte_index, path)


def create_dword_field(source: bytes, byte_index: bytes, path: str) -> bytes:
    """CreateDWordField(source, byte index, name)."""
    return _create_field(Op.CREATE_DWORD_FIELD, source, byte_index, path)


def create_qword_field(source: bytes, byte_index: bytes, path: str) -> bytes:
    """CreateQWordField(source, byte index, name)."""
    return _create_field(Op.CREATE_QWORD_FIELD, source, byte_index, path)


def create_field(source: bytes, bit_index: bytes, num_bits: bytes, path: str) -> bytes:
    """CreateField(source, bit index, bit count, name)."""
    return bytes([Op.EXT_OP_PREFIX, ExtOp.CREATE_FIELD]) + source + bit_index + num_bits + name_string(path)


# -- references -------------------------------------------------------------


def arg(n: int) -> bytes:
    """Arg0 .. Arg6."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 6:
        raise ConfigurationError(f"ArgN: N must be 0 to 6, got {n!r}")
    return bytes([Op.ARG0 + n])


def local(n: int) -> bytes:
    """Local0 .. Local7."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 7:
        raise ConfigurationError(f"LocalN: N must be 0 to 7, got {n!r}")
    return bytes([Op.LOCAL0 + n])


def ref(path: str) -> bytes:
    """A reference to a named object (its NameString)."""
    return name_string(path)


def call(path: str, *args: bytes) -> bytes:
    """A method invocation: its name, then its arguments."""
    if len(args) > 7:
        raise ConfigurationError(f"a method takes at most 7 arguments, {path} got {len(args)}")
    return name_string(path) + b"".join(args)


# -- control flow -----------------------------------------------------------


def if_(predicate: bytes, *body: bytes) -> bytes:
    """If(predicate) {body}."""
    return _pkg(bytes([Op.IF]), predicate + b"".join(body))


def else_(*body: bytes) -> bytes:
    """Else {body}; follows an If directly."""
    return _pkg(bytes([Op.ELSE]), b"".join(body))


def while_(predicate: bytes, *body: bytes) -> bytes:
    """While(predicate) {body}."""
    return _pkg(bytes([Op.WHILE]), predicate + b"".join(body))


def return_(value: bytes) -> bytes:
    """Return(value)."""
    return bytes([Op.RETURN]) + value


def break_() -> bytes:
    """Break."""
    return bytes([Op.BREAK])


def noop() -> bytes:
    """Noop."""
    return bytes([Op.NOOP])


# -- operators --------------------------------------------------------------


def store(source: bytes, target: bytes) -> bytes:
    """Store(source, target)."""
    return bytes([Op.STORE]) + source + target


def _op(opcode: int, *operands: bytes) -> bytes:
    return bytes([opcode]) + b"".join(operands)


def land(a: bytes, b: bytes) -> bytes:
    """LAnd(a, b)."""
    return _op(Op.LAND, a, b)


def lor(a: bytes, b: bytes) -> bytes:
    """LOr(a, b)."""
    return _op(Op.LOR, a, b)


def lnot(a: bytes) -> bytes:
    """LNot(a)."""
    return _op(Op.LNOT, a)


def lequal(a: bytes, b: bytes) -> bytes:
    """LEqual(a, b)."""
    return _op(Op.LEQUAL, a, b)


def lgreater(a: bytes, b: bytes) -> bytes:
    """LGreater(a, b)."""
    return _op(Op.LGREATER, a, b)


def lless(a: bytes, b: bytes) -> bytes:
    """LLess(a, b)."""
    return _op(Op.LLESS, a, b)


def lnot_equal(a: bytes, b: bytes) -> bytes:
    """LNotEqual(a, b): encoded LNot(LEqual(a, b))."""
    return lnot(lequal(a, b))


def lgreater_equal(a: bytes, b: bytes) -> bytes:
    """LGreaterEqual(a, b): encoded LNot(LLess(a, b))."""
    return lnot(lless(a, b))


def lless_equal(a: bytes, b: bytes) -> bytes:
    """LLessEqual(a, b): encoded LNot(LGreater(a, b))."""
    return lnot(lgreater(a, b))


def add(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """Add(a, b, target)."""
    return _op(Op.ADD, a, b, target)


def subtract(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """Subtract(a, b, target)."""
    return _op(Op.SUBTRACT, a, b, target)


def multiply(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """Multiply(a, b, target)."""
    return _op(Op.MULTIPLY, a, b, target)


def and_(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """And(a, b, target)."""
    return _op(Op.AND, a, b, target)


def or_(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """Or(a, b, target)."""
    return _op(Op.OR, a, b, target)


def xor(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """XOr(a, b, target)."""
    return _op(Op.XOR, a, b, target)


def nand(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """NAnd(a, b, target)."""
    return _op(Op.NAND, a, b, target)


def nor(a: bytes, b: bytes, target: bytes = NULL_NAME) -> bytes:
    """NOr(a, b, target)."""
    return _op(Op.NOR, a, b, target)


def not_(a: bytes, target: bytes = NULL_NAME) -> bytes:
    """Not(a, target): bitwise complement."""
    return _op(Op.NOT, a, target)


def shift_left(a: bytes, count: bytes, target: bytes = NULL_NAME) -> bytes:
    """ShiftLeft(a, count, target)."""
    return _op(Op.SHIFT_LEFT, a, count, target)


def shift_right(a: bytes, count: bytes, target: bytes = NULL_NAME) -> bytes:
    """ShiftRight(a, count, target)."""
    return _op(Op.SHIFT_RIGHT, a, count, target)


def increment(target: bytes) -> bytes:
    """Increment(target)."""
    return _op(Op.INCREMENT, target)


def decrement(target: bytes) -> bytes:
    """Decrement(target)."""
    return _op(Op.DECREMENT, target)


def derefof(reference: bytes) -> bytes:
    """DerefOf(reference)."""
    return _op(Op.DEREF_OF, reference)


def refof(obj: bytes) -> bytes:
    """RefOf(obj)."""
    return _op(Op.REF_OF, obj)


def index(source: bytes, index_: bytes, target: bytes = NULL_NAME) -> bytes:
    """Index(source, index, target): a reference to one element."""
    return _op(Op.INDEX, source, index_, target)


def sizeof(obj: bytes) -> bytes:
    """SizeOf(obj)."""
    return _op(Op.SIZE_OF, obj)


def to_integer(value: bytes, target: bytes = NULL_NAME) -> bytes:
    """ToInteger(value, target)."""
    return _op(Op.TO_INTEGER, value, target)


def to_buffer(value: bytes, target: bytes = NULL_NAME) -> bytes:
    """ToBuffer(value, target)."""
    return _op(Op.TO_BUFFER, value, target)
