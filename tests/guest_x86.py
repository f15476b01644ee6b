"""A few x86-64 instructions assembled by hand, with labels: enough for the
guest programs that drive a TPM under unicorn (tests and benchmarks).

Every method appends one instruction's bytes; ``label`` marks a position and
the jumps take a label (rel32, resolved by ``assemble``). Addressing is
``[rbx + disp32]`` for device registers and ``[rsi]`` / ``[rdi]`` for RAM.
"""

from __future__ import annotations

import struct

__all__ = ["Asm", "tis_program", "crb_program", "sts_poll_program", "unaligned_fifo_program"]


class Asm:
    def __init__(self, origin: int) -> None:
        self.origin = origin
        self.code = bytearray()
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str]] = []

    def _emit(self, *parts: bytes) -> None:
        for part in parts:
            self.code += part

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def address(self, name: str) -> int:
        return self.origin + self.labels[name]

    # -- moves ------------------------------------------------------------------
    def mov_r64_imm(self, reg: str, value: int) -> None:  # mov rbx/rsi/rdi, imm64
        self._emit(bytes([0x48, {"rbx": 0xBB, "rsi": 0xBE, "rdi": 0xBF}[reg]]), struct.pack("<Q", value))

    def mov_ecx_imm(self, value: int) -> None:
        self._emit(b"\xb9", struct.pack("<I", value))

    def mov_ecx_eax(self) -> None:
        self._emit(b"\x89\xc1")

    def store8(self, disp: int, value: int) -> None:  # mov byte [rbx+disp], imm8
        self._emit(b"\xc6\x83", struct.pack("<iB", disp, value))

    def store32(self, disp: int, value: int) -> None:  # mov dword [rbx+disp], imm32
        self._emit(b"\xc7\x83", struct.pack("<iI", disp, value))

    def load8(self, disp: int) -> None:  # movzx eax, byte [rbx+disp]
        self._emit(b"\x0f\xb6\x83", struct.pack("<i", disp))

    def load32(self, disp: int) -> None:  # mov eax, [rbx+disp]
        self._emit(b"\x8b\x83", struct.pack("<i", disp))

    def load16(self, disp: int) -> None:  # movzx eax, word [rbx+disp]
        self._emit(b"\x0f\xb7\x83", struct.pack("<i", disp))

    def ax_to_rdi(self) -> None:  # mov [rdi], ax
        self._emit(b"\x66\x89\x07")

    def add_rdi(self, n: int) -> None:  # add rdi, imm8
        self._emit(b"\x48\x83\xc7", bytes([n]))

    def dl_from_rsi(self) -> None:  # mov dl, [rsi]
        self._emit(b"\x8a\x16")

    def dl_to_rdi(self) -> None:  # mov [rdi], dl
        self._emit(b"\x88\x17")

    def dl_to_reg(self, disp: int) -> None:  # mov [rbx+disp], dl
        self._emit(b"\x88\x93", struct.pack("<i", disp))

    def dl_from_reg(self, disp: int) -> None:  # mov dl, [rbx+disp]
        self._emit(b"\x8a\x93", struct.pack("<i", disp))

    # -- arithmetic -------------------------------------------------------------
    def test_eax(self, mask: int) -> None:
        self._emit(b"\xa9", struct.pack("<I", mask))

    def and_eax(self, mask: int) -> None:
        self._emit(b"\x25", struct.pack("<I", mask))

    def cmp_eax(self, value: int) -> None:
        self._emit(b"\x3d", struct.pack("<I", value))

    def shr_eax(self, n: int) -> None:
        self._emit(b"\xc1\xe8", bytes([n]))

    def bswap_eax(self) -> None:
        self._emit(b"\x0f\xc8")

    def inc(self, reg: str) -> None:  # rsi / rdi
        self._emit(bytes([0x48, 0xFF, {"rsi": 0xC6, "rdi": 0xC7}[reg]]))

    def dec(self, reg: str) -> None:  # eax / ecx
        self._emit(bytes([0xFF, {"eax": 0xC8, "ecx": 0xC9}[reg]]))

    # -- control ------------------------------------------------------------------
    def _jump(self, opcode: bytes, target: str) -> None:
        self._emit(opcode)
        self.fixups.append((len(self.code), target))
        self._emit(b"\0\0\0\0")

    def jz(self, target: str) -> None:
        self._jump(b"\x0f\x84", target)

    def jnz(self, target: str) -> None:
        self._jump(b"\x0f\x85", target)

    def jmp(self, target: str) -> None:
        self._jump(b"\xe9", target)

    def hlt(self) -> None:
        self._emit(b"\xf4")

    def assemble(self) -> bytes:
        for at, target in self.fixups:
            self.code[at : at + 4] = struct.pack("<i", self.labels[target] - (at + 4))
        return bytes(self.code)


def tis_program(origin: int, base: int, commands: list[tuple[int, int, int]]) -> tuple[bytes, int]:
    """Request locality 0, then for each ``(command address, length, response
    address)``: commandReady, the command byte by byte through DATA_FIFO in
    bursts of burstCount (polling STS), tpmGo, poll stsValid + dataAvail,
    the response byte by byte into RAM in bursts, commandReady. Returns the
    code and the address of its last instruction (a hlt)."""
    a = Asm(origin)
    a.mov_r64_imm("rbx", base)
    a.store8(0x00, 0x02)  # ACCESS.requestUse
    a.label("active")
    a.load8(0x00)
    a.test_eax(0x20)  # activeLocality
    a.jz("active")
    for n, (command, length, response) in enumerate(commands):
        a.mov_r64_imm("rsi", command)
        a.mov_ecx_imm(length)
        a.mov_r64_imm("rdi", response)
        a.store32(0x18, 0x40)  # STS.commandReady
        a.label(f"ready{n}")
        a.load32(0x18)
        a.test_eax(0x40)
        a.jz(f"ready{n}")
        a.label(f"send{n}")
        a.load32(0x18)
        a.shr_eax(8)
        a.and_eax(0xFFFF)  # burstCount
        a.jz(f"send{n}")
        a.label(f"burst{n}")
        a.dl_from_rsi()
        a.dl_to_reg(0x24)  # DATA_FIFO
        a.inc("rsi")
        a.dec("ecx")
        a.jz(f"sent{n}")
        a.dec("eax")
        a.jnz(f"burst{n}")
        a.jmp(f"send{n}")
        a.label(f"sent{n}")
        a.store32(0x18, 0x20)  # STS.tpmGo
        a.label(f"avail{n}")
        a.load32(0x18)
        a.and_eax(0x90)
        a.cmp_eax(0x90)  # stsValid + dataAvail
        a.jnz(f"avail{n}")
        a.label(f"recv{n}")
        a.load32(0x18)
        a.test_eax(0x10)  # dataAvail
        a.jz(f"done{n}")
        a.shr_eax(8)
        a.and_eax(0xFFFF)
        a.jz(f"recv{n}")
        a.label(f"rburst{n}")
        a.dl_from_reg(0x24)
        a.dl_to_rdi()
        a.inc("rdi")
        a.dec("eax")
        a.jnz(f"rburst{n}")
        a.jmp(f"recv{n}")
        a.label(f"done{n}")
        a.store32(0x18, 0x40)  # commandReady: the TPM may drop the response
    a.label("end")
    a.hlt()
    return a.assemble(), a.address("end")


def crb_program(origin: int, base: int, commands: list[tuple[int, int, int]]) -> tuple[bytes, int]:
    """Request locality 0 (LOC_CTRL, poll LOC_STS.Granted), then for each
    ``(command address, length, response address)``: cmdReady (poll tpmIdle
    clear), the command copied into the data buffer byte by byte, START,
    poll START clear, the response copied out (its size read from the
    header with an unaligned 4-byte load, as RAM allows)."""
    a = Asm(origin)
    a.mov_r64_imm("rbx", base)
    a.store32(0x08, 1)  # LOC_CTRL.requestAccess
    a.label("granted")
    a.load32(0x0C)
    a.test_eax(1)  # LOC_STS.Granted
    a.jz("granted")
    for n, (command, length, response) in enumerate(commands):
        a.store32(0x40, 1)  # CTRL_REQ.cmdReady
        a.label(f"idle{n}")
        a.load32(0x44)
        a.test_eax(2)  # CTRL_STS.tpmIdle
        a.jnz(f"idle{n}")
        a.mov_r64_imm("rsi", command)
        a.mov_ecx_imm(length)
        a.mov_r64_imm("rdi", base + 0x80)
        a.label(f"copy{n}")
        a.dl_from_rsi()
        a.dl_to_rdi()
        a.inc("rsi")
        a.inc("rdi")
        a.dec("ecx")
        a.jnz(f"copy{n}")
        a.store32(0x4C, 1)  # CTRL_START
        a.label(f"busy{n}")
        a.load32(0x4C)
        a.test_eax(1)
        a.jnz(f"busy{n}")
        a.load32(0x82)  # the response's size field (big-endian, unaligned)
        a.bswap_eax()
        a.mov_ecx_eax()
        a.mov_r64_imm("rsi", base + 0x80)
        a.mov_r64_imm("rdi", response)
        a.label(f"out{n}")
        a.dl_from_rsi()
        a.dl_to_rdi()
        a.inc("rsi")
        a.inc("rdi")
        a.dec("ecx")
        a.jnz(f"out{n}")
    a.label("end")
    a.hlt()
    return a.assemble(), a.address("end")


def sts_poll_program(origin: int, base: int, count: int) -> tuple[bytes, int]:
    """Read TIS STS *count* times (a guest polling it): ``mov eax, [rbx+0x18]``
    in a loop counted down in ecx."""
    a = Asm(origin)
    a.mov_r64_imm("rbx", base)
    a.mov_ecx_imm(count)
    a.label("poll")
    a.load32(0x18)
    a.dec("ecx")
    a.jnz("poll")
    a.label("end")
    a.hlt()
    return a.assemble(), a.address("end")


def unaligned_fifo_program(
    origin: int, base: int, command: bytes, response: int, reads: int
) -> tuple[bytes, int]:
    """Send *command* through DATA_FIFO (aligned byte writes), then read the
    response with *reads* unaligned 2-byte loads at DATA_FIFO + 1 (0x25) into
    RAM at *response*: QEMU's memory core cuts each into two 1-byte FIFO
    reads, unicorn into two 2-byte loads at 0x24 and 0x26."""
    a = Asm(origin)
    a.mov_r64_imm("rbx", base)
    a.store8(0x00, 0x02)
    a.label("active")
    a.load8(0x00)
    a.test_eax(0x20)
    a.jz("active")
    a.store32(0x18, 0x40)
    a.label("ready")
    a.load32(0x18)
    a.test_eax(0x40)
    a.jz("ready")
    for byte in command:
        a.store8(0x24, byte)
    a.store32(0x18, 0x20)
    a.label("avail")
    a.load32(0x18)
    a.and_eax(0x90)
    a.cmp_eax(0x90)
    a.jnz("avail")
    a.mov_r64_imm("rdi", response)
    for _ in range(reads):
        a.load16(0x25)
        a.ax_to_rdi()
        a.add_rdi(2)
    a.label("end")
    a.hlt()
    return a.assemble(), a.address("end")
