"""The libtpms backend against the real libtpms: commands, localities, DRTM
hashing, cancel, state save/restore, NVRAM persistence, one-per-process.

libtpms holds one TPM per process, so every test opens its backend through
the ``open_tpm`` factory, which closes it afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tpmdev
import tpmdev.backends._libtpms_api as api_mod
from tpmdev.backends.base import STATE_KEYS
from tpmdev.backends.libtpms import Libtpms, unwrap_state_blob, wrap_state_blob
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.errors import BackendError, ConfigurationError, StateError
from tpmdev.wire import header_size, response_code

TPM_RC_SUCCESS = 0x000
TPM_RC_INITIALIZE = 0x100
TPM_RC_LOCALITY = 0x907
TPM_RC_CANCELED = 0x909
TPM_RC_RETRY = 0x922
TPM_RS_PW = 0x40000009
TPM_RH_OWNER = 0x40000001
TPM_ORD_SAVE_STATE = 0x98
TPM_ST_STATE = 0x0002

OpenTpm = Callable[..., Libtpms]


@pytest.fixture
def open_tpm() -> Iterator[OpenTpm]:
    opened: list[Libtpms] = []

    def make(tpm_version: int = 2, state_dir: str | os.PathLike[str] | None = None) -> Libtpms:
        tpm = Libtpms(tpm_version, state_dir)
        opened.append(tpm)
        return tpm

    yield make
    for tpm in opened:
        tpm.close()


def ok(response: bytes) -> bytes:
    assert len(response) >= 10 and header_size(response) == len(response), response.hex()
    assert response_code(response) == 0, f"response code 0x{response_code(response):X}"
    return response


def run_retrying(tpm: Libtpms, command: bytes) -> bytes:
    """Execute, repeating after TPM_RC_RETRY: the first use of a DA-protected
    authorization after Startup answers it while the TPM records daUsed."""
    response = tpm.execute(command)
    if response_code(response) == TPM_RC_RETRY:
        response = tpm.execute(command)
    return ok(response)


def started(open_tpm: OpenTpm, tpm_version: int = 2, state_dir: Path | None = None) -> Libtpms:
    tpm = open_tpm(tpm_version, state_dir)
    ok(tpm.execute(C.tpm2_startup() if tpm_version == 2 else C.tpm12_startup()))
    return tpm


def pcr2(tpm: Libtpms, pcr: int, locality: int = 0) -> bytes:
    _, values = C.decode_pcr_read(ok(tpm.execute(C.tpm2_pcr_read([pcr]), locality)))
    return values[0]


def pcr12(tpm: Libtpms, pcr: int) -> bytes:
    return C.decode_tpm12_digest(ok(tpm.execute(C.tpm12_pcr_read(pcr))))


def extend2(old: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(old + digest).digest()


def password_session() -> bytes:
    session = struct.pack(">IHBH", TPM_RS_PW, 0, 0, 0)
    return struct.pack(">I", len(session)) + session


def create_primary_rsa(bits: int = 2048) -> bytes:
    """TPM2_CreatePrimary of an unrestricted RSA key under the owner hierarchy.

    Its prime search polls libtpms' cancel flag.
    """
    sensitive = struct.pack(">HH", 0, 0)
    public = struct.pack(">HHIH", 0x0001, 0x000B, 0x00060072, 0)  # RSA, SHA256, sign|decrypt|...
    public += struct.pack(">HHHIH", 0x0010, 0x0010, bits, 0, 0)  # no symmetric, no scheme, e=65537
    body = struct.pack(">I", TPM_RH_OWNER) + password_session()
    body += struct.pack(">H", len(sensitive)) + sensitive + struct.pack(">H", len(public)) + public
    body += struct.pack(">HI", 0, 0)  # outsideInfo, creationPCR
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x131) + body


def flush_context(handle: int) -> bytes:
    return struct.pack(">HIII", 0x8001, 14, 0x165, handle)


def run_into(tpm: Libtpms, command: bytes, result: dict[str, bytes]) -> None:
    result["r"] = tpm.execute(command)


# -- commands ---------------------------------------------------------------------
def test_tpm2_startup_getrandom_and_pcr_extend(open_tpm: OpenTpm) -> None:
    tpm = open_tpm(2)
    assert tpm.tpm_version == 2
    assert tpm.library_version >= (0, 9, 0)
    # Powered on at construction: no startup() needed before TPM2_Startup.
    assert tpm.execute(C.tpm2_startup()) == bytes.fromhex("80010000000a00000000")
    random_bytes = C.decode_get_random(ok(tpm.execute(C.tpm2_get_random(32))))
    assert len(random_bytes) == 32
    assert C.decode_get_random(ok(tpm.execute(C.tpm2_get_random(32)))) != random_bytes
    expected = bytes(32)
    for n in range(3):
        digest = hashlib.sha256(b"event %d" % n).digest()
        ok(tpm.execute(C.tpm2_pcr_extend(16, digest)))
        expected = extend2(expected, digest)
    assert pcr2(tpm, 16) == expected


def test_tpm2_commands_before_startup_fail_in_tpm_format(open_tpm: OpenTpm) -> None:
    tpm = open_tpm(2)
    assert response_code(tpm.execute(C.tpm2_get_random(8))) == TPM_RC_INITIALIZE


def test_tpm12_startup_getrandom_and_extend(open_tpm: OpenTpm) -> None:
    tpm = open_tpm(1)
    assert tpm.tpm_version == 1
    assert tpm.execute(C.tpm12_startup()) == bytes.fromhex("00c40000000a00000000")
    assert len(C.decode_get_random(ok(tpm.execute(C.tpm12_get_random(16))), 1)) == 16
    digest = hashlib.sha1(b"tpm 1.2 event").digest()
    response = ok(tpm.execute(C.tpm12_extend(10, digest)))
    new_value = hashlib.sha1(bytes(20) + digest).digest()
    assert C.decode_tpm12_digest(response) == new_value  # TPM_Extend returns outDigest
    assert pcr12(tpm, 10) == new_value


def test_get_info_reports_the_family(open_tpm: OpenTpm) -> None:
    assert '"family":"2.0"' in open_tpm(2).get_info()


def test_bad_tpm_version_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="tpm_version"):
        Libtpms(3)


# -- localities --------------------------------------------------------------------
# PCR_Reset as libtpms' PC client profile decides: PCRs 20..22 only from
# locality 2, PCR 23 from 0..3, PCR 16 from anywhere but 4, PCR 10 never.
PCR_RESET_TABLE = [
    (16, {0, 1, 2, 3}),
    (20, {2}),
    (21, {2}),
    (22, {2}),
    (23, {0, 1, 2, 3}),
    (10, set()),
]


@pytest.mark.parametrize(("pcr", "allowed"), PCR_RESET_TABLE, ids=[f"pcr{p}" for p, _ in PCR_RESET_TABLE])
def test_pcr_reset_by_locality(open_tpm: OpenTpm, pcr: int, allowed: set[int]) -> None:
    tpm = started(open_tpm)
    for locality in range(5):
        rc = response_code(tpm.execute(C.tpm2_pcr_reset(pcr), locality))
        assert (rc == TPM_RC_SUCCESS) == (locality in allowed), (locality, hex(rc))


def test_locality_reaches_libtpms_per_command(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    digest = hashlib.sha256(b"x").digest()
    # PCR 20 is extendable from locality 2 only ... and the next command at
    # locality 0 is refused again: the locality is not sticky.
    assert response_code(tpm.execute(C.tpm2_pcr_extend(20, digest), 2)) == TPM_RC_SUCCESS
    assert response_code(tpm.execute(C.tpm2_pcr_extend(20, digest), 0)) == TPM_RC_LOCALITY


@pytest.mark.parametrize("locality", [-1, 5, 255, "0"])
def test_locality_out_of_range_is_a_host_error(open_tpm: OpenTpm, locality: object) -> None:
    tpm = open_tpm(2)
    with pytest.raises(ValueError, match="locality"):
        tpm.execute(C.tpm2_get_random(1), locality)  # type: ignore[arg-type]


# -- established flag and DRTM hashing ----------------------------------------------
def test_tpm2_hash_sequence_sets_established_and_measures_into_pcr17(
    open_tpm: OpenTpm, caplog: pytest.LogCaptureFixture
) -> None:
    tpm = started(open_tpm)
    assert tpm.get_established_flag() is False
    assert pcr2(tpm, 17) == b"\xff" * 32  # DRTM PCRs start as all ones
    tpm.hash_start()
    assert tpm.get_established_flag() is True
    tpm.hash_data(b"measured ")
    tpm.hash_data(b"launch environment")
    tpm.hash_end()
    measurement = hashlib.sha256(b"measured launch environment").digest()
    assert pcr2(tpm, 17) == extend2(bytes(32), measurement)
    assert pcr2(tpm, 18) == bytes(32)  # reset to zero by the DRTM event
    # Only localities 3 and 4 may reset the flag; others are logged.
    with caplog.at_level(logging.WARNING, logger="tpmdev.backends.libtpms"):
        for locality in (0, 1, 2):
            tpm.reset_established_flag(locality)
            assert tpm.get_established_flag() is True
    assert "TPM_BAD_LOCALITY" in caplog.text
    tpm.reset_established_flag(3)
    assert tpm.get_established_flag() is False
    tpm.hash_start()
    tpm.hash_end()
    tpm.reset_established_flag(4)
    assert tpm.get_established_flag() is False


def test_tpm12_hash_sequence_and_flag(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm, 1)
    assert tpm.get_established_flag() is False
    tpm.hash_start()
    assert tpm.get_established_flag() is True
    tpm.hash_data(b"abc")
    tpm.hash_end()
    assert pcr12(tpm, 17) == hashlib.sha1(bytes(20) + hashlib.sha1(b"abc").digest()).digest()
    tpm.reset_established_flag(4)  # QEMU resets TPM 1.2's flag never
    assert tpm.get_established_flag() is True


def test_tpm12_hash_before_startup_is_refused(open_tpm: OpenTpm) -> None:
    tpm = open_tpm(1)
    with pytest.raises(BackendError, match=r"TPM_IO_Hash_Start.*TPM_INVALID_POSTINIT"):
        tpm.hash_start()


def test_established_flag_is_read_from_the_tpm_each_time(open_tpm: OpenTpm) -> None:
    # No copy to go stale: a change made past the backend shows at once.
    tpm = started(open_tpm)
    assert tpm.get_established_flag() is False
    s = tpm._s
    with s.lock:
        s.locality = 4
        assert s.api.TPM_IO_Hash_Start() == 0  # straight into libtpms
        assert s.api.TPM_IO_Hash_End() == 0
    assert tpm.get_established_flag() is True
    tpm.reset_established_flag(3)
    assert tpm.get_established_flag() is False
    tpm.hash_start()
    tpm.hash_end()
    state = tpm.get_state()  # the volatile blob carries the flag
    tpm.reset_established_flag(4)
    assert tpm.get_established_flag() is False
    tpm.set_state(state)
    assert tpm.get_established_flag() is True
    tpm.startup(0)  # a machine reset keeps the flag, as swtpm's INIT does
    assert tpm.get_established_flag() is True


def test_tpm12_established_flag_follows_tsc_reset_establishment_bit(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm, 1)
    tpm.hash_start()
    tpm.hash_end()
    assert tpm.get_established_flag() is True
    ok(tpm.execute(bytes.fromhex("00c10000000a4000000b"), 3))  # TSC_ResetEstablishmentBit
    assert tpm.get_established_flag() is False


def test_established_flag_never_takes_the_command_lock(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    with tpm._s.lock:  # as while a command runs
        reader = threading.Thread(target=tpm.get_established_flag)
        reader.start()
        reader.join(5)
        assert not reader.is_alive()


# -- cancel ---------------------------------------------------------------------------
def test_cancel_from_another_thread_ends_a_key_generation(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    # Uncancelled, for reference (about 20 ms with libtpms 0.9.2 here).
    response = ok(tpm.execute(create_primary_rsa()))
    ok(tpm.execute(flush_context(struct.unpack_from(">I", response, 10)[0])))

    codes = []
    for _ in range(5):
        result: dict[str, bytes] = {}
        worker = threading.Thread(target=run_into, args=(tpm, create_primary_rsa(), result))
        worker.start()
        slowest_flag_read = 0.0
        while worker.is_alive():
            t0 = time.perf_counter()
            tpm.get_established_flag()  # never waits for the command
            slowest_flag_read = max(slowest_flag_read, time.perf_counter() - t0)
            tpm.cancel()
            time.sleep(0.0005)
        worker.join()
        assert slowest_flag_read < 0.05  # far below a key generation (the structural check is below)
        code = response_code(result["r"])
        if code == TPM_RC_SUCCESS:
            ok(tpm.execute(flush_context(struct.unpack_from(">I", result["r"], 10)[0])))
        codes.append(code)
    assert TPM_RC_CANCELED in codes, [hex(c) for c in codes]
    assert set(codes) <= {TPM_RC_CANCELED, TPM_RC_SUCCESS}
    # A cancel between commands is forgotten when the next one starts.
    tpm.cancel()
    ok(tpm.execute(C.tpm2_get_random(8)))


def test_tpm12_cancel_is_a_noop(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm, 1)
    tpm.cancel()
    ok(tpm.execute(C.tpm12_get_random(4)))


# -- power and buffer size ------------------------------------------------------------
@pytest.mark.parametrize(("version", "limits"), [(2, (2808, 4096)), (1, (3072, 4096))])
def test_buffer_size_is_clamped_by_libtpms(open_tpm: OpenTpm, version: int, limits: tuple[int, int]) -> None:
    tpm = open_tpm(version)
    assert tpm.buffer_size_limits == limits
    assert tpm.get_buffer_size() == limits[1]
    tpm.startup(3500)
    assert tpm.get_buffer_size() == 3500
    tpm.startup(16)
    assert tpm.get_buffer_size() == limits[0]
    tpm.startup(1 << 20)
    assert tpm.get_buffer_size() == limits[1]
    tpm.startup(0)  # leaves it
    assert tpm.get_buffer_size() == limits[1]


def test_startup_is_tpm_init(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    ok(tpm.execute(C.tpm2_pcr_extend(16, bytes(range(32)))))
    tpm.startup()
    assert response_code(tpm.execute(C.tpm2_get_random(8))) == TPM_RC_INITIALIZE
    ok(tpm.execute(C.tpm2_startup()))
    assert pcr2(tpm, 16) == bytes(32)


# -- state save and restore -----------------------------------------------------------
@pytest.mark.parametrize("version", [2, 1])
def test_state_round_trip_through_a_new_instance(open_tpm: OpenTpm, version: int) -> None:
    tpm = started(open_tpm, version)
    if version == 2:
        digest = hashlib.sha256(b"before migration").digest()
        ok(tpm.execute(C.tpm2_pcr_extend(16, digest)))
        before = pcr2(tpm, 16)
    else:
        ok(tpm.execute(C.tpm12_extend(16, hashlib.sha1(b"before migration").digest())))
        before = pcr12(tpm, 16)
    state = tpm.get_state()
    assert set(state) == set(STATE_KEYS)
    assert state["permanent"] and state["volatile"] and state["savestate"] == b""
    tpm.close()

    other = open_tpm(version)
    other.set_state(state)
    # Running from the saved volatile state: no Startup needed.
    assert (pcr2(other, 16) if version == 2 else pcr12(other, 16)) == before
    again = other.get_state()
    assert unwrap_state_blob(again["permanent"]) == unwrap_state_blob(state["permanent"])


def test_tpm2_state_blob_sizes_match_swtpm_0_7_1(open_tpm: OpenTpm) -> None:
    # swtpm 0.7.1 on this libtpms reports 1321 and 8992 bytes for a fresh TPM 2.
    state = open_tpm(2).get_state()
    assert (len(state["permanent"]), len(state["volatile"]), len(state["savestate"])) == (1321, 8992, 0)


def test_set_state_refuses_bad_blobs_and_keeps_running(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    ok(tpm.execute(C.tpm2_pcr_extend(16, b"\x01" * 32)))
    before = pcr2(tpm, 16)
    good = tpm.get_state()
    with pytest.raises(StateError, match="not a swtpm state blob"):
        tpm.set_state({"permanent": b"garbage"})
    with pytest.raises(StateError, match="unknown state keys"):
        tpm.set_state({"nvram": good["permanent"]})
    with pytest.raises(StateError, match="no savestate"):
        tpm.set_state({"savestate": good["volatile"]})
    with pytest.raises(StateError, match="libtpms refused the volatile state blob"):
        tpm.set_state({"volatile": wrap_state_blob(b"\x00" * 100)})
    raw = unwrap_state_blob(good["permanent"])
    with pytest.raises(StateError, match="permanent state blob is truncated"):
        tpm.set_state({"permanent": wrap_state_blob(raw[:-40])})  # our check
    # the first compile-time constant libtpms wrote differs from its own: libtpms' check
    other_build = raw[:20] + b"\xff" * 4 + raw[24:]
    with pytest.raises(StateError, match="libtpms refused the permanent state blob"):
        tpm.set_state({"permanent": wrap_state_blob(other_build)})
    assert pcr2(tpm, 16) == before  # the previous state came back
    ok(tpm.execute(C.tpm2_get_random(8)))


def test_set_state_without_volatile_is_a_fresh_power_on(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    ok(tpm.execute(C.tpm2_pcr_extend(16, b"\x01" * 32)))
    tpm.set_state({"permanent": tpm.get_state()["permanent"], "volatile": b"", "savestate": b""})
    assert response_code(tpm.execute(C.tpm2_get_random(8))) == TPM_RC_INITIALIZE


def test_encrypted_swtpm_blobs_are_refused() -> None:
    blob = bytearray(wrap_state_blob(b"data"))
    blob[5] |= 0x02  # BLOB_FLAG_MIGRATION_ENCRYPTED
    with pytest.raises(StateError, match="migration key"):
        unwrap_state_blob(bytes(blob))
    assert unwrap_state_blob(wrap_state_blob(b"data")) == b"data"


def test_tpm12_savestate_blob_resumes_with_startup_state(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm, 1)
    ok(tpm.execute(C.tpm12_extend(10, b"\x33" * 20)))
    before = pcr12(tpm, 10)
    ok(tpm.execute(struct.pack(">HII", 0x00C1, 10, TPM_ORD_SAVE_STATE)))
    state = tpm.get_state()
    assert state["savestate"]
    tpm.close()

    other = open_tpm(1)
    other.set_state({"permanent": state["permanent"], "savestate": state["savestate"]})
    ok(other.execute(struct.pack(">HIIH", 0x00C1, 12, 0x99, TPM_ST_STATE)))
    assert pcr12(other, 10) == before
    assert other.get_state()["savestate"] == b""  # consumed by Startup(ST_STATE)


# -- NVRAM in a state directory ----------------------------------------------------------
NV_INDEX = 0x01500016


def test_state_dir_keeps_the_permanent_state(open_tpm: OpenTpm, tmp_path: Path) -> None:
    state_dir = tmp_path / "tpm"
    tpm = started(open_tpm, 2, state_dir)
    assert tpm.state_dir == str(state_dir)
    ok(tpm.execute(C.tpm2_nv_define_space(NV_INDEX, 16)))
    run_retrying(tpm, C.tpm2_nv_write(NV_INDEX, b"kept across runs"))
    tpm.close()
    assert (state_dir / "tpm2-00.permall").is_file()
    assert not list(state_dir.glob("TMP*"))

    again = started(open_tpm, 2, state_dir)
    assert run_retrying(again, C.tpm2_nv_read(NV_INDEX, 16))[16:32] == b"kept across runs"
    permanent = unwrap_state_blob(again.get_state()["permanent"])
    again.close()
    # What libtpms stored is what the running TPM reported at the end.
    third = open_tpm(2, state_dir)
    assert unwrap_state_blob(third.get_state()["permanent"]) == permanent


def test_state_dir_resumes_after_shutdown_state(open_tpm: OpenTpm, tmp_path: Path) -> None:
    tpm = started(open_tpm, 2, tmp_path)
    ok(tpm.execute(C.tpm2_pcr_extend(10, b"\x44" * 32)))
    before = pcr2(tpm, 10)
    ok(tpm.execute(C.tpm2_shutdown(0x0001)))  # TPM_SU_STATE
    tpm.close()
    again = open_tpm(2, tmp_path)
    ok(again.execute(C.tpm2_startup(0x0001)))
    assert pcr2(again, 10) == before


def test_in_memory_state_is_not_shared(open_tpm: OpenTpm) -> None:
    tpm = started(open_tpm)
    ok(tpm.execute(C.tpm2_nv_define_space(NV_INDEX, 8)))
    tpm.close()
    fresh = started(open_tpm)
    assert response_code(fresh.execute(C.tpm2_nv_read_public(NV_INDEX))) != 0


def test_tpm12_state_dir_file_names(open_tpm: OpenTpm, tmp_path: Path) -> None:
    started(open_tpm, 1, tmp_path).close()
    assert (tmp_path / "tpm-00.permall").is_file()


# -- one TPM per process, lifetime ----------------------------------------------------------
def test_second_instance_is_refused_until_the_first_closes(open_tpm: OpenTpm) -> None:
    first = open_tpm(2)
    with pytest.raises(StateError, match=r"one TPM per process.*close\(\)"):
        Libtpms(2)
    with pytest.raises(StateError, match="one TPM per process"):
        Libtpms(1)
    first.close()
    second = open_tpm(1)
    ok(second.execute(C.tpm12_startup()))


@pytest.mark.parametrize("version", [2, 1])
def test_new_instance_does_not_inherit_the_buffer_size(open_tpm: OpenTpm, version: int) -> None:
    first = open_tpm(version)
    default = first.get_buffer_size()
    assert default == first.buffer_size_limits[1] == 4096
    first.startup(3968)
    assert first.get_buffer_size() == 3968
    first.close()
    second = open_tpm(version)
    assert second.get_buffer_size() == default


def test_new_instance_does_not_inherit_the_established_flag(open_tpm: OpenTpm) -> None:
    first = started(open_tpm)
    first.hash_start()
    first.hash_end()
    assert first.get_established_flag() is True
    first.close()
    second = open_tpm(2)
    assert second.get_established_flag() is False
    ok(second.execute(C.tpm2_startup()))
    assert second.get_established_flag() is False


def test_new_instance_on_a_stored_volatile_state_keeps_its_flag(open_tpm: OpenTpm, tmp_path: Path) -> None:
    # The defaults are set before the TPM powers on: a volatile state found
    # then (swtpm's CMD_STORE_VOLATILE) still brings its flag along.
    first = started(open_tpm, 2, tmp_path)
    first.hash_start()
    first.hash_end()
    volatile = unwrap_state_blob(first.get_state()["volatile"])
    first.close()
    # swtpm's unencrypted state file: 10-byte header, then a data TLV
    header = struct.pack(">BBHHI", 2, 1, 10, 0, 10 + 6 + len(volatile))
    (tmp_path / "tpm2-00.volatilestate").write_bytes(header + struct.pack(">HI", 1, len(volatile)) + volatile)
    second = open_tpm(2, tmp_path)
    assert second.get_established_flag() is True


def test_closed_backend_raises_state_error(open_tpm: OpenTpm) -> None:
    tpm = open_tpm(2)
    tpm.close()
    tpm.close()  # idempotent
    assert tpm.closed
    for call in (
        lambda: tpm.execute(C.tpm2_startup()),
        tpm.get_state,
        lambda: tpm.set_state({}),
        tpm.startup,
        tpm.get_buffer_size,
        tpm.get_established_flag,
        tpm.hash_start,
    ):
        with pytest.raises(StateError, match="closed"):
            call()
    tpm.cancel()  # never raises


def test_context_manager_closes() -> None:
    with Libtpms(2) as tpm:
        ok(tpm.execute(C.tpm2_startup()))
    assert tpm.closed
    with Libtpms(2) as again:  # the library is free again
        ok(again.execute(C.tpm2_startup()))


def test_forgotten_instance_is_released_when_collected() -> None:
    Libtpms(2)  # never closed, dropped at once
    import gc

    gc.collect()
    with Libtpms(2) as tpm:
        ok(tpm.execute(C.tpm2_startup()))


# -- a missing library -------------------------------------------------------------------------
def test_missing_library_explains_how_to_install() -> None:
    with pytest.raises(BackendError, match=r"apt-get install libtpms0"):
        Libtpms(2, library="libtpms-does-not-exist.so.0")


def test_missing_library_by_default_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_mod, "LIBRARY_NAMES", ("libtpms-nowhere.so.7",))
    with pytest.raises(
        BackendError, match=r"libtpms is not available.*libtpms-nowhere.*apt-get install libtpms0"
    ):
        Libtpms(2)
    monkeypatch.undo()
    with Libtpms(2) as tpm:  # a failed load leaves nothing behind
        ok(tpm.execute(C.tpm2_startup()))


# -- guest garbage -------------------------------------------------------------------------------
def well_formed(response: bytes, tpm_version: int) -> bool:
    tag = int.from_bytes(response[:2], "big")
    tags = {0x8001, 0x8002} if tpm_version == 2 else {0x00C4, 0x00C5, 0x00C6}
    return len(response) >= 10 and header_size(response) == len(response) and tag in tags


@pytest.mark.parametrize("version", [2, 1])
def test_random_garbage_always_gets_a_well_formed_response(open_tpm: OpenTpm, version: int) -> None:
    tpm = started(open_tpm, version)
    rnd = random.Random(20240601 + version)
    tags = [0x8001, 0x8002] if version == 2 else [0x00C1, 0x00C2, 0x00C3]
    for _ in range(3000):
        size = rnd.choice([0, 1, 5, 9, 10, 11, 14, 20, 64, 300, 4096, 4200])
        command = bytearray(rnd.getrandbits(8) for _ in range(size))
        if size >= 10 and rnd.random() < 0.7:  # plausible header, random body
            struct.pack_into(">HI", command, 0, rnd.choice(tags), rnd.choice([size, size + 1, size - 1, 10]))
            if rnd.random() < 0.5:
                struct.pack_into(">I", command, 6, rnd.choice(list(C.TPM2_CC.values()) or [0x17B]))
        response = tpm.execute(bytes(command), rnd.randrange(5))
        assert well_formed(response, version), (bytes(command[:16]).hex(), response.hex())
    ok(tpm.execute(C.tpm2_get_random(8) if version == 2 else C.tpm12_get_random(8)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.binary(max_size=600), locality=st.integers(0, 4))
def test_hypothesis_garbage_tpm2(libtpms2: Libtpms, command: bytes, locality: int) -> None:
    assert well_formed(libtpms2.execute(command, locality), 2)


@pytest.fixture
def libtpms2() -> Iterator[Libtpms]:
    with Libtpms(2) as tpm:
        ok(tpm.execute(C.tpm2_startup()))
        yield tpm


# -- behind the TIS frontend ---------------------------------------------------------------------
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_tis_frontend_over_libtpms(tis_class: type[tpmdev.TIS], asynchronous: bool) -> None:
    with tis_class(Libtpms(2), asynchronous=asynchronous) as dev:
        driver = TisDriver(dev, locality=0, timeout=10)
        assert response_code(driver.transmit(C.tpm2_startup())) == 0
        digest = hashlib.sha256(b"through the registers").digest()
        assert response_code(driver.transmit(C.tpm2_pcr_extend(16, digest))) == 0
        _, values = C.decode_pcr_read(driver.transmit(C.tpm2_pcr_read([16])))
        assert values == [extend2(bytes(32), digest)]
        # The locality the guest holds reaches libtpms.
        assert response_code(driver.transmit(C.tpm2_pcr_reset(20))) == TPM_RC_LOCALITY
        driver.relinquish_locality()
        at_2 = TisDriver(dev, locality=2, timeout=10)
        assert response_code(at_2.transmit(C.tpm2_pcr_reset(20))) == TPM_RC_SUCCESS
    with Libtpms(2):  # the frontend closed the backend
        pass
