"""Firmware's run_pending on a real swtpm (the Emulator backend), through TIS and CRB.

The request is written where QEMU's _DSM stores it (PPRQ 0x109, PPRM 0x10D);
the outcome is read where _DSM function 5 reads it (LPPR 0x111, PPRP 0x105),
and the TPM's state is checked with TPM commands: after a clear the owner's
NV index is gone, after set-PCR-banks and a reset the allocation is the
requested one; for TPM 1.2, the permanent flags follow enable / disable /
activate / deactivate / clear.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Union

import pytest
from test_ppi import (
    OWNER_INDEX,
    TPM_RC_HANDLE_P1,
    boot,
    check_done,
    ok,
    pcr_banks,
    provision_owner,
    request_op,
)

import tpmdev
from tpmdev.backends.emulator import Emulator
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.firmware import ppi as P
from tpmdev.wire import build_command, response_code

pytestmark = pytest.mark.swtpm

Dev = Union[tpmdev.TIS, tpmdev.CRB]


@pytest.fixture(params=["tis", "crb"])
def ppi_class(
    request: pytest.FixtureRequest, tis_class: type[tpmdev.TIS], crb_class: type[tpmdev.CRB]
) -> type[Dev]:
    return tis_class if request.param == "tis" else crb_class


@pytest.fixture
def swtpm2(tmp_path: Path) -> Iterator[Emulator]:
    backend = Emulator.spawn(tmp_path / "state", tpm_version=2)
    yield backend
    backend.close()


def test_clear(ppi_class: type[Dev], swtpm2: Emulator) -> None:
    with ppi_class(swtpm2, close_backend=False) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        provision_owner(driver)
        request_op(dev.ppi, 5)
        result = P.run_pending(dev, driver)
        assert (result.response, result.responses, result.reboot) == (0, (0, 0), True)
        check_done(dev.ppi, 5, 0)
        assert response_code(driver.transmit(C.tpm2_nv_read_public(OWNER_INDEX))) == TPM_RC_HANDLE_P1
        ok(driver, C.tpm2_nv_define_space(OWNER_INDEX, 8))  # the owner's empty password works


def test_set_pcr_banks(ppi_class: type[Dev], swtpm2: Emulator) -> None:
    with ppi_class(swtpm2, close_backend=False) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        before = {alg for alg, sel in pcr_banks(driver).items() if any(sel)}
        assert {0x0004, 0x000B} <= before  # a fresh libtpms has every bank allocated
        request_op(dev.ppi, 23, 0x2 | 0x4)  # SHA-256 and SHA-384
        result = P.run_pending(dev, driver)
        assert (result.response, result.responses, result.reboot) == (0, (0, 0), True)
        check_done(dev.ppi, 23, 0)
        dev.reset()  # the firmware's reboot: CMD_INIT, a TPM power-on
        driver = boot(dev)
        allocated = pcr_banks(driver)
        assert {alg for alg, sel in allocated.items() if any(sel)} == {0x000B, 0x000C}
        _, digests = C.decode_pcr_read(ok(driver, C.tpm2_pcr_read([0], 0x0004)))
        assert digests == []
        _, digests = C.decode_pcr_read(ok(driver, C.tpm2_pcr_read([0], 0x000C)))
        assert len(digests) == 1 and len(digests[0]) == 48


def test_unsupported_bank_refused(ppi_class: type[Dev], swtpm2: Emulator) -> None:
    with ppi_class(swtpm2, close_backend=False) as dev:
        assert dev.ppi is not None
        driver = boot(dev)
        request_op(dev.ppi, 23, 0x2 | 0x80)  # an undefined bank bit
        assert P.run_pending(dev, driver).response == P.RESPONSE_BIOS_FAILURE
        check_done(dev.ppi, 23, P.RESPONSE_BIOS_FAILURE)


# -- TPM 1.2 ---------------------------------------------------------------------

#: TPM_GetCapability(TPM_CAP_FLAG, TPM_CAP_FLAG_PERMANENT)
GET_PERMANENT_FLAGS = build_command(0x00C1, 0x65, struct.pack(">III", 4, 4, 0x108))


def permanent_flags(driver: TisDriver) -> tuple[int, int, int]:
    """(disable, ownership, deactivated) of TPM_PERMANENT_FLAGS."""
    rsp = driver.transmit(GET_PERMANENT_FLAGS)
    assert response_code(rsp) == 0
    flags = rsp[16:]  # header, respSize, tag
    return flags[0], flags[1], flags[2]


def test_tpm12_operations(tis_class: type[tpmdev.TIS], tmp_path: Path) -> None:
    with tis_class(Emulator.spawn(tmp_path / "state", tpm_version=1)) as dev:
        assert dev.ppi is not None
        driver = TisDriver(dev)
        assert response_code(driver.transmit(C.tpm12_startup())) == 0
        P.init_functions(dev)
        assert dev.ppi.fields["func"][2] == P.PPI_FUNC_ALLOWED_USR_REQ
        for op, expected in [
            (2, (1, 0)),  # disable -> disable set
            (1, (0, 0)),  # enable
            (4, (0, 1)),  # deactivate -> deactivated set
            (3, (0, 0)),  # activate
            (7, (1, 1)),  # deactivate + disable
            (6, (0, 0)),  # enable + activate
        ]:
            request_op(dev.ppi, op)
            result = P.run_pending(dev, driver)
            assert result.response == 0, (op, result)
            check_done(dev.ppi, op, 0)
            disable, _ownership, deactivated = permanent_flags(driver)
            assert (disable, deactivated) == expected, op
        request_op(dev.ppi, 5)  # force clear: the TPM ends up disabled and deactivated
        assert P.run_pending(dev, driver).response == 0
        assert permanent_flags(driver)[0] == 1
        request_op(dev.ppi, 8)  # set owner install while disabled: the TPM's TPM_DISABLED (7)
        assert P.run_pending(dev, driver).response == 7
        check_done(dev.ppi, 8, 7)
        request_op(dev.ppi, 23)  # not a PPI 1.2 operation
        assert P.run_pending(dev, driver).response == P.RESPONSE_BIOS_FAILURE
