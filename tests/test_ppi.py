"""The PPI page of the TIS and the CRB, its reset, and firmware's run_pending on Builtin.

Layout: qemu-tpm-spec section 6 (every field at its offset, both ways through
``fields`` and ``memory``). Reset: contents persist; ``memory_clear`` is
called at every reset while movv bit 0 is set, never otherwise. Requests are
written where QEMU's ``_DSM`` functions 2 / 7 store them (PPRQ at 0x109, PPRM
at 0x10D, little-endian 32-bit fields of the TPP2 operation region) and
carried out by :func:`tpmdev.firmware.ppi.run_pending` through the device's
registers; the TPM effect is checked with TPM commands. The same on swtpm:
test_ppi_swtpm.py.
"""

from __future__ import annotations

import struct
from typing import Any, Union

import numpy as np
import pytest

import tpmdev
from tpmdev.backends.builtin import Builtin
from tpmdev.drivers import commands as C
from tpmdev.drivers.crb import CrbDriver
from tpmdev.drivers.tis import TisDriver
from tpmdev.firmware import ppi as P
from tpmdev.wire import response_code

Dev = Union[tpmdev.TIS, tpmdev.CRB]

# (field, offset, size in bytes) from the table of qemu-tpm-spec section 6
LAYOUT = [
    ("ppin", 0x100, 1),
    ("ppip", 0x101, 4),
    ("pprp", 0x105, 4),
    ("pprq", 0x109, 4),
    ("pprm", 0x10D, 4),
    ("lppr", 0x111, 4),
    ("fret", 0x115, 4),
    ("next_step", 0x159, 1),
    ("movv", 0x15A, 1),
]


@pytest.fixture(params=["tis", "crb"])
def ppi_class(
    request: pytest.FixtureRequest, tis_class: type[tpmdev.TIS], crb_class: type[tpmdev.CRB]
) -> type[Dev]:
    """TIS or CRB of the variant chosen by ``impl`` (both carry a PPI page)."""
    return tis_class if request.param == "tis" else crb_class


def driver_for(dev: Dev) -> Union[TisDriver, CrbDriver]:
    return CrbDriver(dev) if isinstance(dev, tpmdev.CRB) else TisDriver(dev)


def ok(driver: Union[TisDriver, CrbDriver], command: bytes) -> bytes:
    rsp = driver.transmit(command)
    assert response_code(rsp) == 0, f"{C.command_name(command)}: {response_code(rsp):#x}"
    return rsp


def request_op(page: P.PpiPage, op: int, parameter: int = 0) -> None:
    """What _DSM function 7 (revision 2) stores: PPRQ then PPRM, as 32-bit fields."""
    page.memory[0x109:0x10D] = np.frombuffer(struct.pack("<I", op), np.uint8)
    page.memory[0x10D:0x111] = np.frombuffer(struct.pack("<I", parameter), np.uint8)


def u32_at(page: P.PpiPage, offset: int) -> int:
    value: int = struct.unpack_from("<I", page.memory.tobytes(), offset)[0]
    return value


# -- the layout -------------------------------------------------------------------


def test_constants() -> None:
    assert (P.PPI_ADDRESS, P.PPI_SIZE) == (0xFED45000, 0x400)
    assert P.PPI_DTYPE.itemsize == 0x400
    fields = P.PPI_DTYPE.fields
    assert fields is not None
    assert [(name, fields[name][1]) for name, _, _ in LAYOUT] == [(n, o) for n, o, _ in LAYOUT]
    assert fields["func"][1] == 0 and P.PPI_DTYPE["func"].shape == (0x100,)
    assert fields["res1"][1] == 0x119 and P.PPI_DTYPE["res1"].shape == (0x40,)


@pytest.mark.parametrize(("name", "offset", "size"), LAYOUT)
def test_field_at_its_offset(name: str, offset: int, size: int) -> None:
    page = P.PpiPage()
    value = 0xA1B2C3D4 & ((1 << (8 * size)) - 1)
    page.fields[name] = value  # through the structured view ...
    expected = np.zeros(P.PPI_SIZE, np.uint8)
    expected[offset : offset + size] = np.frombuffer(value.to_bytes(size, "little"), np.uint8)
    assert (page.memory == expected).all()  # ... lands exactly there, little-endian
    page.memory[:] = 0
    page.memory[offset : offset + size] = np.frombuffer(
        (0x5A6B7C8D >> 3).to_bytes(4, "little")[:size], np.uint8
    )
    assert int(page.fields[name]) == int.from_bytes((0x5A6B7C8D >> 3).to_bytes(4, "little")[:size], "little")
    # the neighbours are untouched
    others = [n for n, _, _ in LAYOUT if n != name]
    assert all(int(page.fields[n]) == 0 for n in others)


def test_func_and_res1_arrays() -> None:
    page = P.PpiPage()
    page.fields["func"][5] = 3
    page.fields["func"][0xFF] = 4
    assert page.memory[5] == 3 and page.memory[0xFF] == 4 and page.memory.sum() == 7
    page.memory[0x119:0x159] = np.arange(0x40, dtype=np.uint8)
    assert (page.fields["res1"] == np.arange(0x40)).all()
    assert page.fields["func"].sum() == 7  # res1 is after func, not on it
    page.memory[0x15B:] = 0xEE  # past movv: no field there
    assert all(int(page.fields[n]) == 0 for n, _, _ in LAYOUT)


def test_fields_share_memory() -> None:
    page = P.PpiPage()
    assert page.fields.shape == () and page.fields.dtype == P.PPI_DTYPE
    assert np.shares_memory(page.fields, page.memory)
    assert page.memory.dtype == np.uint8 and page.memory.shape == (0x400,) and not page.memory.any()
    view = page.fields["pprq"]
    view[...] = 7
    assert u32_at(page, 0x109) == 7 and int(page.fields["pprq"]) == 7
    assert "pprq=7" in repr(page)


# -- the page on the devices ------------------------------------------------------------


def test_page_on_tis_and_crb(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert isinstance(dev.ppi, P.PpiPage)
        assert dev.ppi_address == dev.ppi.address == 0xFED45000
        assert dev.ppi.memory.shape == (0x400,) and not dev.ppi.memory.any()
    with ppi_class(Builtin(), ppi=False) as dev:
        assert dev.ppi is None and dev.ppi_address is None


def test_each_device_has_its_own_page(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as a, ppi_class(Builtin()) as b:
        assert a.ppi is not None and b.ppi is not None
        a.ppi.fields["pprq"] = 5
        assert int(b.ppi.fields["pprq"]) == 0


def test_sysbus_has_no_page(tis_sysbus_class: type[tpmdev.TISSysbus]) -> None:
    with tis_sysbus_class(Builtin()) as dev:
        assert dev.ppi is None and dev.ppi_address is None
    with pytest.raises(TypeError):
        tis_sysbus_class(Builtin(), memory_clear=lambda: None)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_ppi_must_be_a_bool(ppi_class: type[Dev], bad: Any) -> None:
    with pytest.raises(tpmdev.ConfigurationError, match="ppi must be True or False"):
        ppi_class(Builtin(), ppi=bad)


def test_memory_clear_must_be_callable(ppi_class: type[Dev]) -> None:
    with pytest.raises(tpmdev.ConfigurationError, match="memory_clear must be a callable"):
        ppi_class(Builtin(), memory_clear=42)  # type: ignore[arg-type]


def test_contents_persist_across_reset(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        dev.ppi.memory[:] = np.arange(0x400) % 251
        memory = dev.ppi.memory
        dev.reset()
        assert dev.ppi.memory is memory  # the same storage a simulator mapped
        assert (dev.ppi.memory == np.arange(0x400) % 251).all()


# -- memory clear (movv) at reset ------------------------------------------------------


@pytest.mark.parametrize(("movv", "calls"), [(0x00, 0), (0x01, 1), (0x02, 0), (0x03, 1), (0xFF, 1)])
def test_memory_clear_iff_movv_bit0(ppi_class: type[Dev], movv: int, calls: int) -> None:
    called: list[int] = []
    with ppi_class(Builtin(), memory_clear=lambda: called.append(1)) as dev:
        assert dev.ppi is not None
        assert called == []  # construction: the page is fresh, movv is 0
        dev.ppi.fields["movv"] = movv
        dev.reset()
        assert len(called) == calls
        dev.reset()  # QEMU never clears movv: the wipe repeats at every reset
        assert len(called) == 2 * calls
        assert int(dev.ppi.fields["movv"]) == movv
        assert dev.ppi.memory_clear_requested == bool(calls)
        dev.ppi.fields["movv"] = 0  # the OS cleared it: no more wipes
        dev.reset()
        assert len(called) == 2 * calls


def test_memory_clear_by_acpi_store(ppi_class: type[Dev]) -> None:
    """The memory-clear _DSM (function 1) stores Arg3[0] into MOVV at 0x15A."""
    called: list[int] = []
    with ppi_class(Builtin(), memory_clear=lambda: called.append(1)) as dev:
        assert dev.ppi is not None
        dev.ppi.memory[0x15A] = 1
        dev.reset()
        assert called == [1]


def test_no_memory_clear_without_page(ppi_class: type[Dev]) -> None:
    called: list[int] = []
    with ppi_class(Builtin(), ppi=False, memory_clear=lambda: called.append(1)) as dev:
        dev.reset()
        dev.reset()
    assert called == []


def test_memory_clear_failure_is_contained(ppi_class: type[Dev]) -> None:
    def boom() -> None:
        raise RuntimeError("host bug")

    with ppi_class(Builtin(), memory_clear=boom) as dev:
        assert dev.ppi is not None
        dev.ppi.fields["movv"] = 1
        dev.reset()  # does not raise; the registers are reset all the same
        assert isinstance(dev.callback_error, RuntimeError)
        driver = driver_for(dev)
        ok(driver, C.tpm2_startup())


def test_memory_clear_before_the_registers_reset(ppi_class: type[Dev]) -> None:
    """QEMU's frontend reset runs the PPI reset first: the callback sees the
    TPM still powered, the locality it had."""
    seen: list[object] = []
    with ppi_class(Builtin(), memory_clear=lambda: seen.append(dev2.active_locality)) as dev2:
        assert dev2.ppi is not None
        driver_for(dev2).request_locality()
        assert dev2.active_locality == 0
        dev2.ppi.fields["movv"] = 1
        dev2.reset()
        assert seen == [0] and dev2.active_locality is None


# -- firmware: init_functions ---------------------------------------------------------


def test_init_functions_tpm2(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        dev.ppi.fields["func"] = 0xAA  # stale contents from another firmware
        P.init_functions(dev)
        func = dev.ppi.fields["func"]
        offered = {0, 5, 14, 21, 22, 23, 24, 33, 96, 97}
        assert {i for i in range(256) if func[i]} == offered
        assert all(func[i] == P.PPI_FUNC_ALLOWED_USR_REQ for i in offered)
        assert int(dev.ppi.fields["ppin"]) == 1


def test_init_functions_marks_the_page_once(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        request_op(dev.ppi, 5)
        dev.ppi.fields["lppr"] = 9
        P.init_functions(dev)  # first boot: ppin 0 -> the page is initialised
        assert int(dev.ppi.fields["pprq"]) == 0 and int(dev.ppi.fields["lppr"]) == 0
        request_op(dev.ppi, 5)
        P.init_functions(dev)  # later boots keep the OS's request
        assert int(dev.ppi.fields["pprq"]) == 5


def test_init_functions_with_flags(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        flags = P.PpFlags(pp_required_for_clear=False)
        P.init_functions(dev, flags=flags)
        func = dev.ppi.fields["func"]
        assert func[5] == func[14] == P.PPI_FUNC_ALLOWED_USR_NOT_REQ
        assert func[23] == func[24] == P.PPI_FUNC_ALLOWED_USR_REQ
        assert func[17] == P.PPI_FUNC_ALLOWED_USR_NOT_REQ  # making it stricter needs nobody
        assert func[18] == P.PPI_FUNC_ALLOWED_USR_REQ
        assert func[0] == func[33] == P.PPI_FUNC_ALLOWED_USR_NOT_REQ


def test_init_functions_tpm12(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(1)) as dev:
        assert dev.ppi is not None
        P.init_functions(dev)
        func = dev.ppi.fields["func"]
        assert {i for i in range(256) if func[i]} == set(P.PPI_OPERATIONS_TPM12)


def test_without_page_refused(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin(), ppi=False) as dev:
        with pytest.raises(tpmdev.ConfigurationError, match="ppi=True"):
            P.run_pending(dev, driver_for(dev))
        with pytest.raises(tpmdev.ConfigurationError, match="ppi=True"):
            P.init_functions(dev)


def test_unknown_tpm_version_refused(ppi_class: type[Dev], monkeypatch: pytest.MonkeyPatch) -> None:
    # 0: the backend has not told the version; it must not pass for TPM 1.2
    with ppi_class(Builtin()) as dev:
        driver = driver_for(dev)
        monkeypatch.setattr(type(dev), "tpm_version", property(lambda self: 0))
        assert dev.ppi is not None
        request_op(dev.ppi, 5)
        with pytest.raises(tpmdev.ConfigurationError, match=r"TPM version is unknown \(0\)"):
            P.init_functions(dev)
        with pytest.raises(tpmdev.ConfigurationError, match=r"TPM version is unknown \(0\)"):
            P.run_pending(dev, driver)
        assert not dev.ppi.fields["func"].any() and int(dev.ppi.fields["pprq"]) == 5


def test_bad_arguments_refused(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        driver = driver_for(dev)
        with pytest.raises(tpmdev.ConfigurationError, match="confirm"):
            P.run_pending(dev, driver, confirm=5)  # type: ignore[arg-type]
        with pytest.raises(tpmdev.ConfigurationError, match="flags"):
            P.run_pending(dev, driver, flags={})  # type: ignore[arg-type]
        with pytest.raises(tpmdev.ConfigurationError, match="platform_auth"):
            P.run_pending(dev, driver, platform_auth="pw")  # type: ignore[arg-type]


# -- firmware: run_pending on Builtin ------------------------------------------------


OWNER_INDEX = 0x01000001
TPM_RC_HANDLE_P1 = 0x18B


def boot(dev: Dev) -> Union[TisDriver, CrbDriver]:
    """What firmware does before the PPI step: TPM2_Startup, func[] set."""
    driver = driver_for(dev)
    ok(driver, C.tpm2_startup())
    P.init_functions(dev)
    return driver


def provision_owner(driver: Union[TisDriver, CrbDriver]) -> None:
    ok(driver, C.tpm2_nv_define_space(OWNER_INDEX, 8))
    ok(driver, C.tpm2_nv_read_public(OWNER_INDEX))


def check_done(page: P.PpiPage, op: int, response: int) -> None:
    """What firmware leaves in the page, read where _DSM function 5 reads it."""
    assert u32_at(page, 0x111) == op  # LPPR
    assert u32_at(page, 0x105) == response  # PPRP
    assert u32_at(page, 0x109) == 0 and u32_at(page, 0x10D) == 0  # PPRQ, PPRM


def pcr_banks(driver: Union[TisDriver, CrbDriver]) -> dict[int, bytes]:
    """TPM_CAP_PCRS: hash algorithm -> pcrSelect."""
    rsp = ok(driver, C.tpm2_get_capability(5, 0, 1))
    (count,) = struct.unpack_from(">I", rsp, 15)
    out, offset = {}, 19
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", rsp, offset)
        out[alg] = rsp[offset + 3 : offset + 3 + size]
        offset += 3 + size
    return out


@pytest.mark.parametrize("op", [5, 14, 21, 22])
def test_clear(ppi_class: type[Dev], op: int) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        provision_owner(driver)
        request_op(dev.ppi, op)
        asked: list[tuple[int, int]] = []

        def confirm(operation: int, parameter: int) -> bool:
            asked.append((operation, parameter))
            return True

        result = P.run_pending(dev, driver, confirm=confirm)
        assert result == P.PpiResult(op, 0, 0, confirmed=True, reboot=True, responses=(0, 0))
        assert asked == [(op, 0)]
        check_done(dev.ppi, op, 0)
        assert response_code(driver.transmit(C.tpm2_nv_read_public(OWNER_INDEX))) == TPM_RC_HANDLE_P1


def test_clear_user_abort(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        provision_owner(driver)
        request_op(dev.ppi, 5)
        result = P.run_pending(dev, driver, confirm=lambda o, p: False)
        assert result.response == P.RESPONSE_USER_ABORT == 0xFFFFFFF0
        assert not result.confirmed and not result.reboot and result.responses == ()
        check_done(dev.ppi, 5, 0xFFFFFFF0)
        ok(driver, C.tpm2_nv_read_public(OWNER_INDEX))  # nothing happened


def test_clear_refused_by_the_tpm(ppi_class: type[Dev]) -> None:
    """A wrong platform password: ClearControl fails, Clear is never sent."""
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        provision_owner(driver)
        request_op(dev.ppi, 5)
        result = P.run_pending(dev, driver, platform_auth=b"not the password")
        assert result.response == P.RESPONSE_BIOS_FAILURE == 0xFFFFFFF1
        assert result.responses == (0x9A2,)  # TPM_RC_BAD_AUTH + session 1; Clear never sent
        check_done(dev.ppi, 5, 0xFFFFFFF1)
        ok(driver, C.tpm2_nv_read_public(OWNER_INDEX))


@pytest.mark.parametrize(("bitmap", "banks"), [(0x2, {0x000B}), (0x1, {0x0004}), (0xF, {4, 0xB, 0xC, 0xD})])
def test_set_pcr_banks(ppi_class: type[Dev], bitmap: int, banks: set[int]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        assert {alg for alg, sel in pcr_banks(driver).items() if any(sel)} == {0x0004, 0x000B}
        request_op(dev.ppi, 23, bitmap)
        result = P.run_pending(dev, driver)
        assert (result.operation, result.parameter, result.response, result.reboot) == (23, bitmap, 0, True)
        check_done(dev.ppi, 23, 0)
        # not before the TPM's next power-on ...
        assert {alg for alg, sel in pcr_banks(driver).items() if any(sel)} == {0x0004, 0x000B}
        dev.reset()  # ... which the firmware's reboot brings
        driver = boot(dev)
        allocated = pcr_banks(driver)
        assert {alg for alg, sel in allocated.items() if any(sel)} == banks
        assert all(allocated[alg] == b"\xff\xff\xff" for alg in banks)
        for alg in (0x0004, 0x000B, 0x000C, 0x000D):
            _, digests = C.decode_pcr_read(ok(driver, C.tpm2_pcr_read([0], alg)))
            assert len(digests) == (1 if alg in banks else 0)


@pytest.mark.parametrize("bitmap", [0, 0x10, 0x20, 0x3 | 0x100])
def test_set_pcr_banks_refused(ppi_class: type[Dev], bitmap: int) -> None:
    """No bank, or a bank the TPM does not support (SM3 0x10, unknown bits): firmware failure."""
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        request_op(dev.ppi, 23, bitmap)
        result = P.run_pending(dev, driver)
        assert result.response == P.RESPONSE_BIOS_FAILURE
        assert result.responses == (0,)  # GetCapability only
        check_done(dev.ppi, 23, P.RESPONSE_BIOS_FAILURE)
        dev.reset()
        driver = boot(dev)
        assert {alg for alg, sel in pcr_banks(driver).items() if any(sel)} == {0x0004, 0x000B}


def test_log_all_digests(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        request_op(dev.ppi, 33)
        called: list[int] = []

        def confirm(operation: int, parameter: int) -> bool:
            called.append(operation)
            return True

        result = P.run_pending(dev, driver, confirm=confirm)
        assert result.response == 0 and called == []  # no confirmation needed
        dev.reset()
        driver = boot(dev)
        assert {alg for alg, sel in pcr_banks(driver).items() if any(sel)} == {4, 0xB, 0xC, 0xD}


def test_change_eps(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        request_op(dev.ppi, 24)
        result = P.run_pending(dev, driver)
        assert (result.response, result.responses, result.reboot) == (0, (0,), True)
        check_done(dev.ppi, 24, 0)


@pytest.mark.parametrize(
    ("op", "response"),
    [
        (1, 0),  # in the table, not offered by this firmware: success, nothing done
        (17, 0),
        (34, 0),
        (35, 0xFFFFFFF1),  # past the table
        (96, 0xFFFFFFF1),  # QUIRK (OVMF): offered, nothing to run, firmware failure
        (97, 0xFFFFFFF1),
        (200, 0xFFFFFFF1),
        (0xFFFFFFFF, 0xFFFFFFF1),
    ],
)
def test_operations_not_run(ppi_class: type[Dev], op: int, response: int) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        provision_owner(driver)
        request_op(dev.ppi, op, 0x1234)
        result = P.run_pending(dev, driver)
        assert result.response == response and result.responses == ()
        check_done(dev.ppi, op, response)
        ok(driver, C.tpm2_nv_read_public(OWNER_INDEX))


def test_nothing_pending(ppi_class: type[Dev]) -> None:
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        dev.ppi.fields["lppr"] = 5
        dev.ppi.fields["pprm"] = 7
        before = dev.ppi.memory.copy()
        assert P.run_pending(dev, driver) == P.PpiResult(0, 7, None)
        assert (dev.ppi.memory == before).all()  # the page is left alone


def test_flags_operations(ppi_class: type[Dev]) -> None:
    """EDK2's firmware flags: op 18 lifts the confirmation for clear, op 17 restores it."""
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        flags = P.PpFlags()
        asked: list[int] = []

        def confirm(op: int, parameter: int) -> bool:
            asked.append(op)
            return True

        request_op(dev.ppi, 18)
        assert P.run_pending(dev, driver, confirm=confirm, flags=flags).response == 0
        assert asked == [18] and flags.pp_required_for_clear is False
        request_op(dev.ppi, 5)
        assert P.run_pending(dev, driver, confirm=confirm, flags=flags).response == 0
        assert asked == [18]  # clear ran without asking
        request_op(dev.ppi, 17)
        assert P.run_pending(dev, driver, confirm=confirm, flags=flags).response == 0
        assert asked == [18] and flags.pp_required_for_clear is True
        for op, name in [(25, "pp_required_for_change_pcrs"), (31, "pp_required_for_change_eps")]:
            request_op(dev.ppi, op)
            P.run_pending(dev, driver, confirm=confirm, flags=flags)
            assert getattr(flags, name) is False
            request_op(dev.ppi, op + 1)
            P.run_pending(dev, driver, confirm=confirm, flags=flags)
            assert getattr(flags, name) is True
        assert asked == [18, 25, 31]


def test_tpm12_on_builtin_reports_the_tpm_result(tis_class: type[tpmdev.TIS]) -> None:
    """Builtin's TPM 1.2 has no physical-presence commands: the TPM_RESULT of
    the first refused command (TPM_BAD_ORDINAL) is the response, as PPI 1.2 says."""
    with tis_class(Builtin(1)) as dev:
        assert dev.ppi is not None
        driver = TisDriver(dev)
        assert response_code(driver.transmit(C.tpm12_startup())) == 0
        request_op(dev.ppi, 1)
        result = P.run_pending(dev, driver)
        assert result.response == 0x0A
        check_done(dev.ppi, 1, 0x0A)


def test_result_is_reported_through_function_5_fields(ppi_class: type[Dev]) -> None:
    """_DSM function 5 returns {0, LPPR, PPRP}: both survive the reboot."""
    with ppi_class(Builtin()) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        request_op(dev.ppi, 5)
        P.run_pending(dev, driver)
        dev.reset()
        boot(dev)
        assert (u32_at(dev.ppi, 0x111), u32_at(dev.ppi, 0x105)) == (5, 0)
