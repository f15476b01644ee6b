"""The AML encoder: golden bytes per construct (hand-derived from ACPI 6.5 chapter 20 and 6.4),
bad input, and ``iasl -d`` of every construct with no error or warning."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from iasl_check import compile_asl, disassemble, ssdt

from tpmdev.errors import ConfigurationError
from tpmdev.firmware import aml as A

PPI = "3DDDFAA6-361B-4EB4-A424-8D10089D1653"


def h(text: str) -> bytes:
    """Hex with spaces; quoted runs are ASCII ('TPM_')."""
    out = bytearray()
    for part in text.split():
        if part.startswith("'"):
            out += part.strip("'").encode()
        else:
            out += bytes.fromhex(part)
    return bytes(out)


# (id, construct, expected bytes)
GOLDEN: list[tuple[str, Callable[[], bytes], str]] = [
    # PkgLength (20.2.4): the value counts its own bytes; 1 byte up to 63, then 1-3 follow bytes.
    ("pkglen-0", lambda: A.pkg_length(0), "01"),
    ("pkglen-62", lambda: A.pkg_length(62), "3f"),
    ("pkglen-63", lambda: A.pkg_length(63), "41 04"),  # 65 = 0x41: lead 0x40 | 1, then 0x04
    ("pkglen-4093", lambda: A.pkg_length(4093), "4f ff"),  # 4095
    ("pkglen-4094", lambda: A.pkg_length(4094), "81 00 01"),  # 4097 = 0x1001
    ("pkglen-1M", lambda: A.pkg_length(0xFFFFF - 3), "8f ff ff"),
    (
        "pkglen-4byte",
        lambda: A.pkg_length(0xFFFFF - 2),
        "c1 00 00 01",
    ),  # 3 bytes cannot hold 0x100000: 0x100001
    ("pkglen-field-8", lambda: A.pkg_length(8, include_self=False), "08"),
    ("pkglen-field-63", lambda: A.pkg_length(63, include_self=False), "3f"),
    ("pkglen-field-64", lambda: A.pkg_length(64, include_self=False), "40 04"),
    ("pkglen-field-max", lambda: A.pkg_length((1 << 28) - 1, include_self=False), "cf ff ff ff"),
    # NameString (20.2.2)
    ("name-seg-pad", lambda: A.name_string("TPM"), "'TPM_'"),
    ("name-seg-4", lambda: A.name_string("TPM0"), "'TPM0'"),
    ("name-root", lambda: A.name_string("\\"), "5c 00"),
    ("name-root-seg", lambda: A.name_string("\\_SB"), "5c '_SB_'"),
    ("name-dual", lambda: A.name_string("\\_SB.PCI0"), "5c 2e '_SB_PCI0'"),
    ("name-multi", lambda: A.name_string("_SB.PCI0.SF8"), "2f 03 '_SB_PCI0SF8_'"),
    ("name-parent", lambda: A.name_string("^^PPRQ"), "5e 5e 'PPRQ'"),
    ("name-parent-only", lambda: A.name_string("^"), "5e 00"),
    # integers (20.2.3): smallest encoding, 0 and 1 as ZeroOp / OneOp (QEMU's aml_int)
    ("int-0", lambda: A.integer(0), "00"),
    ("int-1", lambda: A.integer(1), "01"),
    ("int-2", lambda: A.integer(2), "0a 02"),
    ("int-ff", lambda: A.integer(0xFF), "0a ff"),
    ("int-100", lambda: A.integer(0x100), "0b 00 01"),
    ("int-ffff", lambda: A.integer(0xFFFF), "0b ff ff"),
    ("int-10000", lambda: A.integer(0x10000), "0c 00 00 01 00"),
    ("int-dword", lambda: A.integer(0xFED45000), "0c 00 50 d4 fe"),
    ("int-qword", lambda: A.integer(0x100000000), "0e 00 00 00 00 01 00 00 00"),
    ("int-max", lambda: A.integer((1 << 64) - 1), "0e ff ff ff ff ff ff ff ff"),
    ("ones", lambda: A.ONES, "ff"),
    # strings, buffers, packages
    ("string", lambda: A.string("1.3"), "0d '1.3' 00"),
    ("string-empty", lambda: A.string(""), "0d 00"),
    ("buffer", lambda: A.buffer(b"\xff\x01"), "11 05 0a 02 ff 01"),
    ("buffer-1", lambda: A.buffer(b"\x00"), "11 03 01 00"),
    ("buffer-empty", lambda: A.buffer(), "11 02 00"),
    ("buffer-sized", lambda: A.buffer(size=4), "11 03 0a 04"),
    ("package", lambda: A.package(A.ZERO, A.ZERO), "12 04 02 00 00"),
    ("package-empty", lambda: A.package(), "12 02 00"),
    ("package-mixed", lambda: A.package(A.integer(0x10), A.string("a")), "12 07 02 0a 10 0d 'a' 00"),
    ("var-package", lambda: A.package(*[A.ZERO] * 256), "13 45 10 0b 00 01" + " 00" * 256),
    # EISAID: 3 letters of 5 bits, 4 hex digits; the DWord's bytes big-endian
    ("eisaid", lambda: A.eisaid("PNP0C31"), "0c 41 d0 0c 31"),
    ("eisaid-pnp0a03", lambda: A.eisaid("PNP0A03"), "0c 41 d0 0a 03"),
    # ToUUID: first three fields little-endian
    ("touuid", lambda: A.uuid(PPI), "11 13 0a 10 a6 fa dd 3d 1b 36 b4 4e a4 24 8d 10 08 9d 16 53"),
    # resource descriptors (6.4)
    ("mem32fixed", lambda: A.memory32_fixed(0xFED40000, 0x5000), "86 09 00 01 00 00 d4 fe 00 50 00 00"),
    (
        "mem32fixed-ro",
        lambda: A.memory32_fixed(0x1000, 0x10, read_write=False),
        "86 09 00 00 00 10 00 00 10 00 00 00",
    ),
    ("interrupt", lambda: A.interrupt(0x70), "89 06 00 01 01 70 00 00 00"),
    (
        "interrupt-flags",
        lambda: A.interrupt(1, 2, consumer=False, edge=True, active_low=True, shared=True, wake=True),
        "89 0a 00 1e 02 01 00 00 00 02 00 00 00",
    ),
    ("irq", lambda: A.irq(5), "23 20 00 01"),
    ("irq-level-low-shared", lambda: A.irq(3, 4, edge=False, active_low=True, shared=True), "23 18 00 18"),
    ("irq-no-flags", lambda: A.irq_no_flags(1), "22 02 00"),
    (
        "resource-template",
        lambda: A.resource_template(A.memory32_fixed(0xFED40000, 0x5000)),
        "11 11 0a 0e 86 09 00 01 00 00 d4 fe 00 50 00 00 79 00",
    ),
    ("resource-template-empty", lambda: A.resource_template(), "11 05 0a 02 79 00"),
    # declarations
    ("name", lambda: A.name("_UID", A.ONE), "08 '_UID' 01"),
    ("scope", lambda: A.scope("\\_SB"), "10 06 5c '_SB_'"),
    ("device", lambda: A.device("TPM"), "5b 82 05 'TPM_'"),
    (
        "device-body",
        lambda: A.device("TPM", A.name("_STA", A.integer(0xF))),
        "5b 82 0c 'TPM_' 08 '_STA' 0a 0f",
    ),
    ("method", lambda: A.method("TPFN", 1, serialized=True), "14 06 'TPFN' 09"),
    ("method-flags", lambda: A.method("M", 2, A.noop(), sync_level=3), "14 07 'M___' 32 a3"),
    (
        "opregion",
        lambda: A.operation_region("TPP3", A.RegionSpace.SYSTEM_MEMORY, A.integer(0xFED4515A), A.ONE),
        "5b 80 'TPP3' 00 0c 5a 51 d4 fe 01",
    ),
    (
        "opregion-io",
        lambda: A.operation_region("PIO", A.RegionSpace.SYSTEM_IO, A.integer(0x510), A.integer(2)),
        "5b 80 'PIO_' 01 0b 10 05 0a 02",
    ),
    (
        "field",
        lambda: A.field("TPP3", A.named_field("MOVV", 8), access=A.AccessType.BYTE),
        "5b 81 0b 'TPP3' 01 'MOVV' 08",
    ),
    (
        "field-offset-reserved",
        lambda: A.field(
            "REG",
            A.named_field("A", 8),
            A.offset(4),
            A.named_field("B", 16),
            A.reserved_field(8),
            access=A.AccessType.DWORD,
            lock=A.LockRule.LOCK,
            update=A.UpdateRule.WRITE_AS_ZEROS,
        ),
        "5b 81 14 'REG_' 53 'A___' 08 00 18 'B___' 10 00 08",
    ),
    (
        "field-offset-here",
        lambda: A.field("R", A.named_field("A", 8), A.offset(1)),
        "5b 81 0b 'R___' 00 'A___' 08",
    ),
    ("create-bit", lambda: A.create_bit_field(A.arg(0), A.integer(3), "BT"), "8d 68 0a 03 'BT__'"),
    ("create-byte", lambda: A.create_byte_field(A.arg(0), A.ZERO, "BY"), "8c 68 00 'BY__'"),
    ("create-word", lambda: A.create_word_field(A.arg(0), A.integer(2), "WD"), "8b 68 0a 02 'WD__'"),
    ("create-dword", lambda: A.create_dword_field(A.arg(0), A.integer(4), "DW"), "8a 68 0a 04 'DW__'"),
    ("create-qword", lambda: A.create_qword_field(A.arg(0), A.integer(8), "QW"), "8f 68 0a 08 'QW__'"),
    (
        "create-field",
        lambda: A.create_field(A.local(0), A.ZERO, A.integer(8), "CF"),
        "5b 13 60 00 0a 08 'CF__'",
    ),
    # references
    ("arg0", lambda: A.arg(0), "68"),
    ("arg6", lambda: A.arg(6), "6e"),
    ("local0", lambda: A.local(0), "60"),
    ("local7", lambda: A.local(7), "67"),
    ("call", lambda: A.call("TPFN", A.local(0)), "'TPFN' 60"),
    ("call-none", lambda: A.call("\\_SB.PCNT"), "5c 2e '_SB_PCNT'"),
    # control flow
    ("if", lambda: A.if_(A.lequal(A.arg(2), A.ZERO), A.return_(A.ONE)), "a0 06 93 6a 00 a4 01"),
    ("else", lambda: A.else_(A.return_(A.ZERO)), "a1 03 a4 00"),
    (
        "while",
        lambda: A.while_(A.lless(A.local(0), A.integer(4)), A.increment(A.local(0))),
        "a2 07 95 60 0a 04 75 60",
    ),
    ("return", lambda: A.return_(A.ref("TPPF")), "a4 'TPPF'"),
    ("break", A.break_, "a5"),
    ("noop", A.noop, "a3"),
    # operators
    ("store", lambda: A.store(A.local(0), A.ref("PPRQ")), "70 60 'PPRQ'"),
    ("land", lambda: A.land(A.local(0), A.local(1)), "90 60 61"),
    ("lor", lambda: A.lor(A.local(0), A.local(1)), "91 60 61"),
    ("lnot", lambda: A.lnot(A.local(0)), "92 60"),
    ("lequal", lambda: A.lequal(A.local(0), A.local(1)), "93 60 61"),
    ("lgreater", lambda: A.lgreater(A.local(0), A.local(1)), "94 60 61"),
    ("lless", lambda: A.lless(A.local(0), A.local(1)), "95 60 61"),
    ("lnotequal", lambda: A.lnot_equal(A.local(0), A.local(1)), "92 93 60 61"),
    ("lgreaterequal", lambda: A.lgreater_equal(A.arg(0), A.integer(0x100)), "92 95 68 0b 00 01"),
    ("llessequal", lambda: A.lless_equal(A.local(0), A.local(1)), "92 94 60 61"),
    ("add", lambda: A.add(A.integer(0xFED45000), A.arg(0)), "72 0c 00 50 d4 fe 68 00"),
    ("add-target", lambda: A.add(A.local(0), A.ONE, A.local(0)), "72 60 01 60"),
    ("subtract", lambda: A.subtract(A.local(0), A.ONE), "74 60 01 00"),
    ("multiply", lambda: A.multiply(A.local(0), A.integer(3)), "77 60 0a 03 00"),
    ("and", lambda: A.and_(A.local(1), A.integer(7)), "7b 61 0a 07 00"),
    ("or", lambda: A.or_(A.local(0), A.local(1), A.local(2)), "7d 60 61 62"),
    ("xor", lambda: A.xor(A.local(0), A.local(1)), "7f 60 61 00"),
    ("nand", lambda: A.nand(A.local(0), A.local(1)), "7c 60 61 00"),
    ("nor", lambda: A.nor(A.local(0), A.local(1)), "7e 60 61 00"),
    ("not", lambda: A.not_(A.local(0)), "80 60 00"),
    ("shiftleft", lambda: A.shift_left(A.local(0), A.integer(2)), "79 60 0a 02 00"),
    ("shiftright", lambda: A.shift_right(A.local(0), A.integer(2), A.local(1)), "7a 60 0a 02 61"),
    ("increment", lambda: A.increment(A.local(0)), "75 60"),
    ("decrement", lambda: A.decrement(A.local(0)), "76 60"),
    ("derefof-index", lambda: A.derefof(A.index(A.arg(3), A.ZERO)), "83 88 6b 00 00"),
    ("index-target", lambda: A.index(A.ref("TPM3"), A.integer(2), A.local(0)), "88 'TPM3' 0a 02 60"),
    ("refof", lambda: A.refof(A.ref("TPM2")), "71 'TPM2'"),
    ("sizeof", lambda: A.sizeof(A.arg(0)), "87 68"),
    ("tointeger", lambda: A.to_integer(A.arg(0), A.local(0)), "99 68 60"),
    ("tobuffer", lambda: A.to_buffer(A.arg(0)), "96 68 00"),
]


@pytest.mark.parametrize(
    ("construct", "expected"), [(c, e) for _, c, e in GOLDEN], ids=[i for i, _, _ in GOLDEN]
)
def test_golden_bytes(construct: Callable[[], bytes], expected: str) -> None:
    assert construct().hex(" ") == h(expected).hex(" ")


def test_pkg_length_boundaries() -> None:
    """Every length round-trips through the decoder and uses the smallest encoding."""
    for length in (*range(0, 300), *range(4080, 4110), 0xFFFF0, 0xFFFFF, 0x100000, (1 << 28) - 5):
        enc = A.pkg_length(length)
        follow = enc[0] >> 6
        value = enc[0] & 0x3F if follow == 0 else (enc[0] & 0x0F) | int.from_bytes(enc[1:], "little") << 4
        assert len(enc) == follow + 1
        assert value == length + len(enc)
        assert len(enc) == min(
            n for n in (1, 2, 3, 4) if length + n < (64 if n == 1 else 1 << (4 + 8 * (n - 1)))
        )


BAD: list[tuple[str, Callable[[], object]]] = [
    ("pkglen-negative", lambda: A.pkg_length(-1)),
    ("pkglen-too-long", lambda: A.pkg_length(1 << 28)),
    ("name-digit-first", lambda: A.name_string("1ABC")),
    ("name-too-long", lambda: A.name_string("TOOLONG")),
    ("name-lower", lambda: A.name_string("tpm")),
    ("name-empty", lambda: A.name_string("")),
    ("name-empty-seg", lambda: A.name_string("\\_SB..TPM")),
    ("name-not-str", lambda: A.name_string(b"TPM")),  # type: ignore[arg-type]
    ("name-seg-unicode-digit", lambda: A.name_seg("TPM\u0661")),  # ARABIC-INDIC DIGIT ONE
    ("name-seg-unicode-digit-in-path", lambda: A.name_string("\\_SB.T\u00b2")),  # SUPERSCRIPT TWO
    ("name-seg-not-str", lambda: A.name_seg(b"TPM")),  # type: ignore[arg-type]
    ("name-seg-none", lambda: A.name_seg(None)),  # type: ignore[arg-type]
    ("method-name-int", lambda: A.method(7, 0)),  # type: ignore[arg-type]
    ("unsigned-negative", lambda: A.check_unsigned("x", -1, 8)),
    ("unsigned-too-big", lambda: A.check_unsigned("x", 256, 8)),
    ("unsigned-bool", lambda: A.check_unsigned("x", True, 8)),
    ("unsigned-float", lambda: A.check_unsigned("x", 1.0, 8)),
    ("int-negative", lambda: A.integer(-1)),
    ("int-too-big", lambda: A.integer(1 << 64)),
    ("int-bool", lambda: A.integer(True)),
    ("string-nul", lambda: A.string("a\0b")),
    ("string-non-ascii", lambda: A.string("é")),
    ("buffer-size-small", lambda: A.buffer(b"abc", size=2)),
    ("eisaid-short", lambda: A.eisaid("PNP0C3")),
    ("eisaid-lower-hex", lambda: A.eisaid("PNP0c31")),
    ("uuid-bad", lambda: A.uuid("not-a-uuid")),
    ("mem32-base", lambda: A.memory32_fixed(1 << 32, 1)),
    ("mem32-length", lambda: A.memory32_fixed(0, -1)),
    ("interrupt-none", lambda: A.interrupt()),
    ("irq-16", lambda: A.irq(16)),
    ("method-8-args", lambda: A.method("M", 8)),
    ("method-sync", lambda: A.method("M", 0, sync_level=16)),
    ("arg7", lambda: A.arg(7)),
    ("local8", lambda: A.local(8)),
    ("call-8-args", lambda: A.call("M", *[A.ZERO] * 8)),
    ("field-zero-bits", lambda: A.field("R", A.named_field("A", 0))),
    ("field-offset-back", lambda: A.field("R", A.named_field("A", 16), A.offset(1))),
    ("field-bad-name", lambda: A.named_field("a", 8)),
]


@pytest.mark.parametrize("construct", [c for _, c in BAD], ids=[i for i, _ in BAD])
def test_bad_input_is_a_configuration_error(construct: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        construct()


# -- iasl -d ---------------------------------------------------------------------


def _kitchen_sink() -> bytes:
    """Every construct in a definition block whose references all resolve."""
    body = [
        A.name("INT0", A.ZERO),
        A.name("INT1", A.ONE),
        A.name("INTB", A.integer(0x12)),
        A.name("INTW", A.integer(0x1234)),
        A.name("INTD", A.integer(0x12345678)),
        A.name("INTQ", A.integer(0x123456789ABCDEF0)),
        A.name("INTO", A.ONES),
        A.name("STR0", A.string("TPM 2.0 Device")),
        A.name("BUF0", A.buffer(b"\xff\x01")),
        A.name("BUF1", A.buffer(size=8)),
        A.name("PKG0", A.package(A.ZERO, A.integer(0x10), A.string("x"), A.package(A.ONE))),
        A.name("PKGV", A.package(*[A.ZERO] * 300)),
        A.name("UUID", A.uuid(PPI)),
        A.name(
            "RES0",
            A.resource_template(
                A.memory32_fixed(0xFED40000, 0x5000),
                A.memory32_fixed(0x1000, 0x10, read_write=False),
                A.interrupt(0x70),
                A.interrupt(1, 2, consumer=False, edge=True, active_low=True, shared=True),
                A.irq(5),
                A.irq(3, 4, edge=False, active_low=True, shared=True),
                A.irq_no_flags(1),
            ),
        ),
        A.operation_region("REG0", A.RegionSpace.SYSTEM_MEMORY, A.integer(0xFED45100), A.integer(0x5A)),
        A.field(
            "REG0",
            A.named_field("FLDA", 8),
            A.offset(4),
            A.named_field("FLDB", 32),
            A.reserved_field(8),
            A.named_field("FLDC", 8),
            access=A.AccessType.DWORD,
            lock=A.LockRule.LOCK,
            update=A.UpdateRule.WRITE_AS_ZEROS,
        ),
        A.operation_region("PIO0", A.RegionSpace.SYSTEM_IO, A.integer(0x510), A.integer(2)),
        A.field("PIO0", A.named_field("SEL0", 16), access=A.AccessType.WORD),
        A.scope(
            "\\_SB",
            A.device(
                "DEV0",
                A.name("_HID", A.string("MSFT0101")),
                A.name("_UID", A.ONE),
                A.method("_STA", 0, A.return_(A.integer(0x0F))),
            ),
            A.device("DEV1", A.name("_HID", A.eisaid("PNP0C31"))),
        ),
        A.method(
            "MTH0",
            4,
            A.create_bit_field(A.arg(0), A.integer(3), "CBT0"),
            A.create_byte_field(A.arg(0), A.ZERO, "CBY0"),
            A.create_word_field(A.arg(0), A.integer(2), "CWD0"),
            A.create_dword_field(A.arg(0), A.integer(4), "CDW0"),
            A.create_qword_field(A.arg(0), A.integer(8), "CQW0"),
            A.create_field(A.arg(0), A.integer(128), A.integer(8), "CFL0"),
            A.store(A.derefof(A.index(A.arg(3), A.ZERO)), A.local(0)),
            A.store(A.call("MTH1", A.local(0)), A.local(1)),
            A.if_(A.lequal(A.and_(A.local(1), A.integer(7)), A.ZERO), A.return_(A.ONE)),
            A.else_(A.store(A.ONE, A.local(2))),
            A.if_(A.land(A.lgreater(A.local(0), A.ONE), A.lless(A.local(0), A.integer(9))), A.noop()),
            A.if_(A.lor(A.lnot_equal(A.arg(1), A.ONE), A.lnot(A.arg(2))), A.noop()),
            A.if_(A.lgreater_equal(A.arg(1), A.integer(0x100)), A.noop()),
            A.if_(A.lless_equal(A.arg(1), A.integer(2)), A.noop()),
            A.store(A.ZERO, A.local(3)),
            A.while_(A.lless(A.local(3), A.integer(4)), A.increment(A.local(3)), A.break_()),
            A.decrement(A.local(3)),
            A.add(A.local(0), A.ONE, A.local(4)),
            A.subtract(A.local(0), A.ONE, A.local(4)),
            A.multiply(A.local(0), A.integer(3), A.local(4)),
            A.or_(A.local(0), A.local(1), A.local(4)),
            A.xor(A.local(0), A.local(1), A.local(4)),
            A.nand(A.local(0), A.local(1), A.local(4)),
            A.nor(A.local(0), A.local(1), A.local(4)),
            A.not_(A.local(0), A.local(4)),
            A.shift_left(A.local(0), A.integer(2), A.local(4)),
            A.shift_right(A.local(0), A.integer(2), A.local(4)),
            A.store(A.sizeof(A.arg(3)), A.local(5)),
            A.to_integer(A.arg(2), A.local(6)),
            A.to_buffer(A.arg(2), A.local(6)),
            A.store(A.refof(A.ref("PKG0")), A.local(7)),
            A.store(A.ref("STR0"), A.index(A.ref("PKG0"), A.integer(2))),
            A.store(A.local(0), A.ref("FLDB")),
            A.store(A.ref("\\_SB.DEV0._UID"), A.local(0)),
            A.return_(A.lequal(A.arg(0), A.uuid(PPI))),
            serialized=True,
        ),
        A.method("MTH1", 1, A.return_(A.arg(0))),
    ]
    return b"".join(body)


@pytest.fixture(scope="module")
def sink_asl(tmp_path_factory: pytest.TempPathFactory) -> str:
    return disassemble(ssdt(_kitchen_sink()), tmp_path_factory.mktemp("iasl"), "sink")


#: ASL iasl writes for each construct of the kitchen sink (whitespace-normalised)
ASL = [
    "Name (INT0, Zero)",
    "Name (INT1, One)",
    "Name (INTB, 0x12)",
    "Name (INTW, 0x1234)",
    "Name (INTD, 0x12345678)",
    "Name (INTQ, 0x123456789ABCDEF0)",
    "Name (INTO, Ones)",
    'Name (STR0, "TPM 2.0 Device")',
    "Name (BUF0, Buffer (0x02) { 0xFF, 0x01",
    "Name (BUF1, Buffer (0x08) {})",
    'Name (PKG0, Package (0x04) { Zero, 0x10, "x", Package (0x01) { One } })',
    "Name (PKGV, Package (0x012C) { Zero,",
    'Device (DEV1) { Name (_HID, EisaId ("PNP0C31"))',
    'Name (UUID, ToUUID ("3dddfaa6-361b-4eb4-a424-8d10089d1653")',
    "Memory32Fixed (ReadWrite, 0xFED40000, // Address Base 0x00005000, // Address Length )",
    "Memory32Fixed (ReadOnly, 0x00001000, // Address Base 0x00000010, // Address Length )",
    "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) { 0x00000070, }",
    "Interrupt (ResourceProducer, Edge, ActiveLow, Shared, ,, ) { 0x00000001, 0x00000002, }",
    "IRQ (Edge, ActiveHigh, Exclusive, ) {5}",
    "IRQ (Level, ActiveLow, Shared, ) {3,4}",
    "IRQNoFlags () {1}",
    "OperationRegion (REG0, SystemMemory, 0xFED45100, 0x5A)",
    "Field (REG0, DWordAcc, Lock, WriteAsZeros) { FLDA, 8, Offset (0x04), FLDB, 32, Offset (0x09), FLDC, 8 }",
    "OperationRegion (PIO0, SystemIO, 0x0510, 0x02)",
    "Field (PIO0, WordAcc, NoLock, Preserve) { SEL0, 16 }",
    'Device (DEV0) { Name (_HID, "MSFT0101"',
    "Method (_STA, 0, NotSerialized) // _STA: Status { Return (0x0F) }",
    "Method (MTH0, 4, Serialized)",
    "CreateBitField (Arg0, 0x03, CBT0)",
    "CreateByteField (Arg0, Zero, CBY0)",
    "CreateWordField (Arg0, 0x02, CWD0)",
    "CreateDWordField (Arg0, 0x04, CDW0)",
    "CreateQWordField (Arg0, 0x08, CQW0)",
    "CreateField (Arg0, 0x80, 0x08, CFL0)",
    "Local0 = DerefOf (Arg3 [Zero])",
    "Local1 = MTH1 (Local0)",
    "If (((Local1 & 0x07) == Zero)) { Return (One) } Else { Local2 = One }",
    "If (((Local0 > One) && (Local0 < 0x09))) { Noop }",
    "If (((Arg1 != One) || !Arg2)) { Noop }",
    "If ((Arg1 >= 0x0100)) { Noop }",
    "If ((Arg1 <= 0x02)) { Noop }",
    "While ((Local3 < 0x04)) { Local3++ Break }",
    "Local3--",
    "Local4 = (Local0 + One)",
    "Local4 = (Local0 - One)",
    "Local4 = (Local0 * 0x03)",
    "Local4 = (Local0 | Local1)",
    "Local4 = (Local0 ^ Local1)",
    "NAnd (Local0, Local1, Local4)",
    "NOr (Local0, Local1, Local4)",
    "Local4 = ~Local0",
    "Local4 = (Local0 << 0x02)",
    "Local4 = (Local0 >> 0x02)",
    "Local5 = SizeOf (Arg3)",
    "ToInteger (Arg2, Local6)",
    "ToBuffer (Arg2, Local6)",
    "Local7 = RefOf (PKG0)",
    "PKG0 [0x02] = STR0",
    "FLDB = Local0",
    "Local0 = \\_SB.DEV0._UID",
    'Return ((Arg0 == ToUUID ("3dddfaa6-361b-4eb4-a424-8d10089d1653")',
    "Method (MTH1, 1, NotSerialized) { Return (Arg0) }",
]


def _squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("asl", ASL)
def test_iasl_disassembles_each_construct(sink_asl: str, asl: str) -> None:
    if "//" not in asl:  # compare the code without iasl's comments
        sink_asl = "\n".join(line.split("//", 1)[0] for line in sink_asl.splitlines())
    assert _squash(asl) in _squash(sink_asl)


def test_iasl_compiles_the_disassembly_back_to_the_same_bytes(tmp_path: Path) -> None:
    """Round trip AML -> iasl -d -> iasl -> AML: the kitchen sink is written in the forms iasl itself
    emits (a target operand rather than Store of the result), so the bytes come back unchanged."""
    table = ssdt(_kitchen_sink())
    again = compile_asl(disassemble(table, tmp_path, "sink"), tmp_path)
    assert again[36:].hex(" ") == table[36:].hex(" ")


def test_iasl_complains_about_a_broken_table(tmp_path: Path) -> None:
    """The check itself: a bad checksum and a truncated table are reported."""
    table = bytearray(ssdt(A.name("INT0", A.ZERO)))
    table[9] ^= 1
    with pytest.raises(AssertionError, match=r"(?i)checksum"):
        disassemble(bytes(table), tmp_path, "checksum")
    with pytest.raises(AssertionError):
        disassemble(ssdt(A.name("INT0", A.ZERO))[:-1], tmp_path, "short")
