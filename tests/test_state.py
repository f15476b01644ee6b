"""Device state: save/load round trips, the format's checks (bad blobs change
nothing, byte for byte), snapshots and rollback, and state moving between
backends."""

from __future__ import annotations

import hashlib
import pickle
import random
import struct
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import tpmdev
from state_exchange import SCRIPTS, VARIANTS, Context, device_class, make_device, run
from tpmdev import _state
from tpmdev.backends import Backend, Builtin
from tpmdev.drivers import commands as C
from tpmdev.drivers.tis import TisDriver
from tpmdev.errors import StateError

FRONTENDS = ("TIS", "TISSysbus", "TISI2C", "CRB", "SPAPR")


def fingerprint(dev: Any) -> tuple[object, ...]:
    """Everything the device and its backend hold, without changing it (a
    Builtin's get_state would read its clock)."""
    backend = dev.backend
    if isinstance(backend, Builtin):
        clock = getattr(backend._clock, "ms", None)
        tpm: object = (pickle.dumps(backend.engine.state), backend._rng.get_key(), clock)
    else:
        tpm = backend.get_state()
    page = getattr(dev.ppi, "memory", None) if hasattr(dev, "ppi") else None
    return (
        dev.core.capture(),
        dev._capture_bus(),
        None if page is None else page.tobytes(),
        dev.tpm_version,
        dev._bufsize,
        tpm,
    )


def exchanged(
    frontend: str, impl: str, steps: int = 40, backend: Backend | None = None
) -> tuple[Any, Context]:
    """A device part way through its scripted exchange."""
    ctx = Context()
    dev = make_device(frontend, impl, backend or Builtin(seed=7), ctx)
    run(dev, ctx, SCRIPTS[frontend]()[:steps])
    return dev, ctx


def resign(blob: bytes, offset: int, new: bytes) -> bytes:
    """*blob* with bytes at *offset* replaced and the digest made right again."""
    body = bytearray(blob[:-32])
    body[offset : offset + len(new)] = new
    return bytes(body) + hashlib.sha256(body).digest()


def rebuild(blob: bytes, edit: Callable[[dict[bytes, bytes]], None]) -> bytes:
    """*blob* re-packed after *edit* changed its sections."""
    p = _state.parse(blob)
    sections = dict(p.sections)
    edit(sections)
    return _state._pack(p.frontend, p.tpm_version, p.backend, list(sections.items()))


# -- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize("frontend", FRONTENDS)
def test_round_trip_every_frontend(frontend: str, impl: str) -> None:
    dev, ctx = exchanged(frontend, impl)
    blob = dev.save()
    before = fingerprint(dev)
    with make_device(frontend, impl, Builtin(seed=99), Context(bytes(ctx.memory))) as other:
        other.load(blob)
        assert fingerprint(other)[:5] == before[:5]
        assert other.backend.get_state()["permanent"] == dev.backend.get_state()["permanent"]
    dev.close()


def test_save_completes_the_command_in_flight(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(seed=1), asynchronous=True) as dev:
        drv = TisDriver(dev)
        drv.request_locality()
        drv.command_ready()
        drv.send(C.tpm2_startup())
        dev.write(0x018, 0x20)  # tpmGo: runs on the worker
        blob = dev.save()
        assert not dev.busy
        with tis_class(Builtin(seed=2)) as other:
            other.load(blob)
            assert other.core.locality_state(0) == 2  # COMPLETION: the response is there
            assert other.read_many(0x24, 10) == bytes.fromhex("80010000000a00000000")


def test_load_asks_the_backend_again(crb_class: type[tpmdev.CRB]) -> None:
    class Small(Builtin):
        def _get_buffer_size(self) -> int:
            return 1024

    with crb_class(Builtin(seed=1)) as dev:
        blob = dev.save()
    with crb_class(Small(seed=1)) as other:
        # (a Builtin subclass is a Builtin: it loads Builtin states)
        other.load(blob)
        assert other.core.bufsize == 1024
        assert other.read(0x00) & 1 == 1  # tpmEstablished (inverted): asked, not established


def test_irq_level_comes_back(impl: str, tis_class: type[tpmdev.TIS]) -> None:
    levels: list[int] = []
    dev, _ = exchanged("TIS", impl, 32)
    assert dev.irq_level == 1
    blob = dev.save()
    with tis_class(Builtin(seed=7), irq=levels.append) as other:
        other.load(blob)
        assert other.irq_level == 1 and levels == [1]
    dev.close()


def test_ppi_page_travels_with_the_state(tis_class: type[tpmdev.TIS]) -> None:
    """The PPI page (``dev.ppi.memory``) is saved, loaded and rolled back in
    place: a simulator's mapping of it stays valid."""
    with tis_class(Builtin(seed=1)) as dev, tis_class(Builtin(seed=1)) as other:
        assert dev.ppi is not None and other.ppi is not None
        dev.ppi.memory[:4] = [1, 2, 3, 4]
        blob = dev.save()
        assert b"PPI " in _state.parse(blob).sections
        memory = other.ppi.memory
        other.load(blob)
        assert other.ppi.memory is memory
        assert bytes(memory[:5]) == b"\x01\x02\x03\x04\x00"
        snap = other.snapshot()
        memory[0] = 9
        other.rollback(snap)
        assert memory[0] == 1
    with tis_class(Builtin(seed=1), ppi=False) as plain, pytest.raises(StateError, match=r"ppi|PPI"):
        plain.load(blob)
    assert plain.ppi is None


# -- bad blobs ----------------------------------------------------------------------------
@pytest.fixture
def victim(impl: str) -> Iterator[tuple[Any, bytes]]:
    """A TIS part way through its exchange and a sample blob (of another TIS)."""
    yield from _victim(impl)


@pytest.fixture
def one_victim() -> Iterator[tuple[Any, bytes]]:
    """:func:`victim` on one variant (the format's checks come before the core)."""
    yield from _victim(VARIANTS[0])


def _victim(impl: str) -> Iterator[tuple[Any, bytes]]:
    dev, _ = exchanged("TIS", impl, 30)
    blob = dev.save()
    run(dev, Context(), SCRIPTS["TIS"]()[30:50])  # the victim moves on
    yield dev, blob
    dev.close()


def test_every_truncation_is_refused(one_victim: tuple[Any, bytes]) -> None:
    dev, blob = one_victim
    before = fingerprint(dev)
    for n in range(len(blob)):
        with pytest.raises(StateError, match="truncated"):
            dev.load(blob[:n])
    with pytest.raises(StateError, match="trailing bytes"):
        dev.load(blob + b"\0")
    assert fingerprint(dev) == before


def test_every_bit_flip_is_refused(one_victim: tuple[Any, bytes]) -> None:
    dev, blob = one_victim
    before = fingerprint(dev)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 1 << (i % 8)
        expected = (
            "bad magic" if i < 8
            else "format version" if i < 10
            else "truncated|trailing" if 14 <= i < 18
            else "integrity check failed"
        )  # fmt: skip
        with pytest.raises(StateError, match=expected):
            dev.load(bytes(bad))
    assert fingerprint(dev) == before


def test_wrong_format_versions(victim: tuple[Any, bytes]) -> None:
    dev, blob = victim
    before = fingerprint(dev)
    for version in (0, 2, 0xFFFF):
        with pytest.raises(StateError, match=f"format version {version} is not supported"):
            dev.load(resign(blob, 8, struct.pack(">H", version)))
    with pytest.raises(StateError, match="must be bytes"):
        dev.load("not bytes")  # type: ignore[arg-type]
    assert fingerprint(dev) == before


def test_inconsistent_blobs_are_refused(victim: tuple[Any, bytes]) -> None:
    dev, blob = victim
    before = fingerprint(dev)
    cases: list[tuple[bytes, str]] = [
        (resign(blob, 10, b"\x09"), "unknown frontend kind 9"),
        (resign(blob, 11, b"\x03"), "unknown TPM version 3"),
        (resign(blob, 12, b"\x07"), "unknown backend kind 7"),
        (resign(blob, 10, b"\x02"), "DEVC section disagrees"),
        (resign(blob, 18, b"XXXX"), "unknown section"),
        (rebuild(blob, lambda s: s.pop(b"CORE")), "CORE section is missing"),
        (rebuild(blob, lambda s: s.__setitem__(b"DEVC", b"\xff")), "not UTF-8 JSON"),
        (rebuild(blob, lambda s: s.__setitem__(b"CORE", b"T\0\0\0\x02")), "malformed"),
        (rebuild(blob, lambda s: s.__setitem__(b"CORE", _state.encode_tuple((1, 2)))), "2 fields"),
        (rebuild(blob, lambda s: s.__setitem__(b"I2C ", _state.encode_tuple(()))), "I2C section"),
    ]
    core = list(_state.decode_tuple(_state.parse(blob).sections[b"CORE"], "CORE"))
    for index, value, what in (
        (3, 99999, "rw_offset"),
        (4, 7, "active locality"),
        (8, 2, "IRQ level"),
        (0, b"short", "register image"),
        (2, b"\x00\x09\x00\x00\x00", "locality state"),
        (9, (b"", 2, 0), "posted completion"),
    ):
        changed = core.copy()
        changed[index] = value
        encoded = _state.encode_tuple(tuple(changed))
        cases.append((rebuild(blob, lambda s, e=encoded: s.__setitem__(b"CORE", e)), what))
    for bad, message in cases:
        with pytest.raises(StateError, match=message):
            dev.load(bad)
    assert fingerprint(dev) == before


def _edit_core(blob: bytes, index: int, value: object) -> bytes:
    core = list(_state.decode_tuple(_state.parse(blob).sections[b"CORE"], "CORE"))
    core[index] = value
    encoded = _state.encode_tuple(tuple(core))
    return rebuild(blob, lambda s: s.__setitem__(b"CORE", encoded))


@pytest.mark.parametrize(
    ("frontend", "index", "value", "message"),
    [
        ("TIS", 2, b"\x03\x00\x00\x00\x00", "locality 0 in EXECUTION"),
        ("TIS", 2, b"\x00\x00\x00\x00\x03", "locality 4 in EXECUTION"),
        ("TIS", 7, 0, "command locality = 0"),
        ("TIS", 9, (b"\x80\x01" + bytes(8), 0, 0), "posted completion"),
        ("TISI2C", 7, 0, "command locality = 0"),
        ("CRB", 3, 0, "command locality = 0"),
        ("CRB", 5, (b"\x80\x01" + bytes(8), 0, 0), "posted completion"),
        ("SPAPR", 3, 1, "state EXECUTION"),
        ("SPAPR", 4, (b"\x80\x01" + bytes(8), 0, 0), "posted completion"),
    ],
)
def test_a_command_in_flight_is_refused(
    frontend: str, index: int, value: object, message: str, impl: str
) -> None:
    """save() completes the command in flight: a state that has one (the guest
    would wait for a response no backend sends) is not one save() wrote."""
    dev, _ = exchanged(frontend, impl, 20)
    blob = dev.save()
    before = fingerprint(dev)
    with pytest.raises(StateError, match=rf"{message}.*completes the command in flight|{message}.*applies"):
        dev.load(_edit_core(blob, index, value))
    assert fingerprint(dev) == before
    dev.load(blob)  # the state as saved loads
    dev.close()


def test_i2c_register_address_is_worked_out_again(impl: str) -> None:
    """The TIS address an I2C transaction latched is not taken from the state
    (QEMU does not migrate it): a load works it out from the register the
    transaction addresses and the selected locality."""
    dev, _ = exchanged("TISI2C", impl, 12)
    dev.i2c.i2c_start(False)
    assert dev.i2c.i2c_send(0x18)  # TPM_I2C_STS: a read of it comes next
    blob = dev.save()
    bus = list(_state.decode_tuple(_state.parse(blob).sections[b"I2C "], "I2C"))
    latched = bus[3]
    bus[3] = 0x4FFE  # (a 4-byte read there would run past the TIS region)
    encoded = _state.encode_tuple(tuple(bus))
    forged = rebuild(blob, lambda s: s.__setitem__(b"I2C ", encoded))
    with device_class("TISI2C", impl)(Builtin(seed=1)) as other:
        other.load(forged)
        assert other._capture_bus()[3] == latched
        other.i2c.i2c_start(True)
        dev.i2c.i2c_start(True)
        assert [other.i2c.i2c_recv() for _ in range(4)] == [dev.i2c.i2c_recv() for _ in range(4)]
    dev.close()


def test_backend_classes_name_their_state_kind() -> None:
    from tpmdev.backends.emulator import Emulator
    from tpmdev.backends.libtpms import Libtpms
    from tpmdev.backends.passthrough import Passthrough

    kinds = {
        Builtin: "builtin",
        Libtpms: "libtpms",
        Emulator: "swtpm",
        Passthrough: "passthrough",
        Other: "other",
    }
    for cls, kind in kinds.items():
        assert cls.state_kind == kind

    class Mine(Builtin):
        pass

    class Declared(Other):
        state_kind = "libtpms"

    assert _state.backend_kind(Mine(seed=1)) == "builtin"
    assert _state.backend_kind(Declared()) == "libtpms"  # the attribute, not the class's name, decides


def test_malformed_descriptions_are_refused(one_victim: tuple[Any, bytes]) -> None:
    _, blob = one_victim
    deep = rebuild(blob, lambda s: s.__setitem__(b"DEVC", b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(StateError, match="not UTF-8 JSON"):
        _state.parse(deep)
    empty = rebuild(blob, lambda s: s.__setitem__(b"CORE", _state.encode_tuple(())))
    with pytest.raises(StateError, match="0 fields"):
        _state.describe(empty)


def test_wrong_frontend_kind(impl: str) -> None:
    crb, _ = exchanged("CRB", impl, 10)
    tis, _ = exchanged("TIS", impl, 10)
    sysbus, _ = exchanged("TISSysbus", impl, 10)
    tis_blob = tis.save()  # (saving reads a Builtin's clock)
    before = fingerprint(tis)
    with pytest.raises(StateError, match="is of a CRB, this device is a TIS"):
        tis.load(crb.save())
    with pytest.raises(StateError, match="is of a TIS-sysbus, this device is a TIS"):
        tis.load(sysbus.save())
    with pytest.raises(StateError, match="is of a TIS, this device is a CRB"):
        crb.load(tis_blob)
    assert fingerprint(tis) == before
    for dev in (crb, tis, sysbus):
        dev.close()


def test_wrong_tpm_version_and_configuration(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(tpm_version=1, seed=1)) as old, tis_class(Builtin(seed=1), irq_num=7) as dev:
        before = fingerprint(dev)
        with pytest.raises(StateError, match=r"is of a TPM 1\.2, this TIS presents TPM 2\.0"):
            dev.load(old.save())
        with (
            tis_class(Builtin(seed=1)) as five,
            pytest.raises(StateError, match=r"configured otherwise.*irq_num: state 5, device 7"),
        ):
            dev.load(five.save())
        assert fingerprint(dev) == before


class Other(Backend):
    """A backend class of the host's own, with state (for the "another class" rule)."""

    def __init__(self) -> None:
        self.pcr = b"\0" * 4

    @property
    def tpm_version(self) -> int:
        return 2

    def _execute(self, command: bytes, locality: int) -> bytes:
        self.pcr = hashlib.sha256(self.pcr + command).digest()[:4]
        return bytes.fromhex("80010000000e00000000") + self.pcr

    def _get_state(self) -> dict[str, bytes]:
        return {"permanent": self.pcr, "volatile": b"", "savestate": b""}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.pcr = state["permanent"]


def test_backend_kinds(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Other()) as a, tis_class(Other()) as b, tis_class(Builtin(seed=1)) as c:
        a.backend.execute(b"x" * 10)
        b.load(a.save())  # the same class loads it
        assert b.backend.pcr == a.backend.pcr  # type: ignore[attr-defined]
        c_blob = c.save()  # (saving reads a Builtin's clock)
        before = fingerprint(c)
        with pytest.raises(StateError, match=r"holds a other \(Other\) TPM state, which a Builtin"):
            c.load(a.save())
        with pytest.raises(StateError, match=r"holds a builtin \(Builtin\) TPM state, which a Other"):
            a.load(c_blob)
        assert fingerprint(c) == before


def test_a_backend_refusal_changes_nothing(tis_class: type[tpmdev.TIS]) -> None:
    """A blob the format accepts but the TPM cannot use (a Builtin blob of
    garbage): the backend refuses, nothing changes."""
    with tis_class(Builtin(seed=1)) as dev:
        run(dev, Context(), SCRIPTS["TIS"]()[:20])
        blob = rebuild(dev.save(), lambda s: s.__setitem__(b"TPMP", b"garbage"))
        before = fingerprint(dev)
        with pytest.raises(StateError, match="Builtin refused the TPM state"):
            dev.load(blob)
        assert fingerprint(dev) == before


def test_show_describes_a_blob() -> None:
    dev, _ = exchanged("TISI2C", VARIANTS[0], 12)
    text = _state.describe(dev.save())
    dev.close()
    assert "frontend:    TIS-I2C" in text and "TPM 2.0" in text and "builtin (Builtin)" in text
    assert "I2C state:" in text and "TPMP" in text and "SHA-256 verified" in text


# -- snapshots ----------------------------------------------------------------------------
def _random_op(rng: random.Random, frontend: str) -> tuple[Any, ...]:
    script = SCRIPTS[frontend]()
    if rng.random() < 0.7:
        return script[rng.randrange(len(script))]
    if frontend == "CRB":
        return ("w", rng.choice((0x08, 0x40, 0x4C, 0x48)), rng.choice((0, 1, 2)), 4)
    return ("w", rng.randrange(0x5000) & ~3, rng.getrandbits(32), 4)


@pytest.mark.parametrize("frontend", ["TIS", "CRB"])
def test_random_walk_with_rollbacks_equals_a_replay(frontend: str, impl: str) -> None:
    rng = random.Random(f"{frontend}-walk")
    ctx = Context()
    dev = make_device(frontend, impl, Builtin(seed=7), ctx)
    history: list[tuple[Any, ...]] = []
    values: list[object] = []
    snaps: list[tuple[Any, list[tuple[Any, ...]], list[object]]] = []
    rollbacks = 0
    for _ in range(1500):
        roll = rng.random()
        if roll < 0.04:
            snaps.append((dev.snapshot(), history.copy(), values.copy()))
        elif roll < 0.10 and snaps:
            snap, past, seen = rng.choice(snaps)
            dev.rollback(snap)
            history, values = past.copy(), seen.copy()
            rollbacks += 1
        else:
            op = _random_op(rng, frontend)
            history.append(op)
            values += run(dev, ctx, [op])
    assert rollbacks > 20
    replay_ctx = Context()
    with make_device(frontend, impl, Builtin(seed=7), replay_ctx) as fresh:
        assert run(fresh, replay_ctx, history) == values
        assert fingerprint(fresh) == fingerprint(dev)
    dev.close()


def test_rollback_refuses_foreign_snapshots(tis_class: type[tpmdev.TIS]) -> None:
    with tis_class(Builtin(seed=1)) as a, tis_class(Builtin(seed=1)) as b:
        snap = a.snapshot()
        with pytest.raises(StateError, match="snapshot of another device"):
            b.rollback(snap)
        with pytest.raises(StateError, match="got bytes"):
            a.rollback(b"x")  # type: ignore[arg-type]
        a.attach(Builtin(seed=2))
        with pytest.raises(StateError, match="backend was replaced"):
            a.rollback(snap)


def test_rollback_tells_the_irq_line(tis_class: type[tpmdev.TIS]) -> None:
    levels: list[int] = []
    with tis_class(Builtin(seed=1), irq=levels.append) as dev:
        snap = dev.snapshot()
        dev.write(0x000, 0x02, 1)
        dev.write(0x008, 0x80000080)
        dev.write(0x018, 0x40)  # commandReady: the line goes up
        assert levels == [1]
        dev.rollback(snap)
        assert levels == [1, 0] and dev.irq_level == 0


def _pcr16(dev: Any) -> bytes:
    return TisDriver(dev).transmit(C.tpm2_pcr_read([16]))


@pytest.fixture
def libtpms_backend() -> Iterator[Backend]:
    from tpmdev.backends import Libtpms

    backend = Libtpms(2)
    yield backend
    backend.close()


def test_rollback_restores_libtpms(libtpms_backend: Backend) -> None:
    with tpmdev.TIS(libtpms_backend, close_backend=False) as dev:
        drv = TisDriver(dev)
        drv.request_locality()
        drv.transmit(C.tpm2_startup())
        before = _pcr16(dev)
        snap = dev.snapshot()
        drv.transmit(C.tpm2_pcr_extend(16, bytes(32)))
        assert _pcr16(dev) != before
        dev.rollback(snap)
        assert _pcr16(dev) == before


# -- between backends -------------------------------------------------------------------------
NV_INDEX = 0x01500016


def _retrying(drv: TisDriver, command: bytes) -> bytes:
    for _ in range(10):
        response = drv.transmit(command)
        if response[6:10] != bytes.fromhex("00000922"):  # TPM_RC_RETRY
            return response
    raise AssertionError("the TPM kept asking to retry")


def _fill(dev: Any) -> tuple[bytes, bytes]:
    drv = TisDriver(dev)
    drv.request_locality()
    drv.transmit(C.tpm2_startup())
    drv.transmit(C.tpm2_pcr_extend(16, hashlib.sha256(b"cross").digest()))
    assert _retrying(drv, C.tpm2_nv_define_space(NV_INDEX, 8))[6:10] == bytes(4)
    assert _retrying(drv, C.tpm2_nv_write(NV_INDEX, b"tpmdev!!"))[6:10] == bytes(4)
    return _pcr16(dev), TisDriver(dev).transmit(C.tpm2_nv_read(NV_INDEX, 8))


@pytest.mark.swtpm
def test_emulator_state_into_libtpms_and_back(libtpms_backend: Backend) -> None:
    from tpmdev.backends import Emulator

    with tpmdev.TIS(Emulator.spawn(None, tpm_version=2)) as src:
        pcr, nv = _fill(src)
        assert b"\x00\x08tpmdev!!" in nv
        blob = src.save()
    assert _state.parse(blob).backend == "swtpm"
    with tpmdev.TIS(libtpms_backend, close_backend=False) as mid:
        mid.load(blob)
        assert _pcr16(mid) == pcr
        assert TisDriver(mid).transmit(C.tpm2_nv_read(NV_INDEX, 8)) == nv
        TisDriver(mid).transmit(C.tpm2_pcr_extend(16, bytes(32)))
        pcr2 = _pcr16(mid)
        back = mid.save()
    assert _state.parse(back).backend == "libtpms"
    with tpmdev.TIS(Emulator.spawn(None, tpm_version=2)) as dst:
        dst.load(back)
        assert _pcr16(dst) == pcr2
        assert TisDriver(dst).transmit(C.tpm2_nv_read(NV_INDEX, 8)) == nv
        with tpmdev.TIS(Builtin(seed=1)) as builtin:
            before = fingerprint(builtin)
            with pytest.raises(StateError, match=r"holds a libtpms .* which a Builtin backend cannot"):
                builtin.load(back)
            assert fingerprint(builtin) == before
            with pytest.raises(StateError, match=r"holds a builtin .* which a Emulator backend cannot"):
                dst.load(builtin.save())


@pytest.mark.swtpm
def test_rollback_restores_swtpm() -> None:
    from tpmdev.backends import Emulator

    with tpmdev.TIS(Emulator.spawn(None, tpm_version=2)) as dev:
        drv = TisDriver(dev)
        drv.request_locality()
        drv.transmit(C.tpm2_startup())
        before = _pcr16(dev)
        snap = dev.snapshot()
        for _ in range(2):
            drv.transmit(C.tpm2_pcr_extend(16, bytes(32)))
            assert _pcr16(dev) != before
            dev.rollback(snap)
            assert _pcr16(dev) == before


def test_device_class_builds_pure_variants() -> None:
    assert device_class("TIS", "py").__name__ == "TIS"


@pytest.mark.swtpm
def test_load_asks_the_established_flag_again() -> None:
    """The Emulator caches the flag; a load must not serve the cached answer."""
    from tpmdev.backends import Emulator

    with (
        tpmdev.TIS(Emulator.spawn(None, tpm_version=2)) as src,
        tpmdev.TIS(Emulator.spawn(None, tpm_version=2)) as dst,
    ):
        TisDriver(src).transmit(C.tpm2_startup())
        src.backend.hash_start()  # type: ignore[attr-defined]
        src.backend.hash_data(b"dynamic root of trust")  # type: ignore[attr-defined]
        src.backend.hash_end()  # type: ignore[attr-defined]
        assert src.read(0x000, 1) & 0x01 == 0  # tpmEstablishment clear: established
        assert dst.read(0x000, 1) & 0x01 == 1  # not established (and now cached)
        dst.load(src.save())
        assert dst.read(0x000, 1) & 0x01 == 0


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_rollback_replays_the_rest_of_every_exchange(frontend: str, impl: str) -> None:
    """Snapshot half way, play the rest, roll back, play it again: the same
    values, twice (the I2C transaction state and sPAPR's entry come back too)."""
    steps = SCRIPTS[frontend]()
    half = len(steps) // 2
    dev, ctx = exchanged(frontend, impl, half)
    snap = dev.snapshot()
    memory = bytes(ctx.memory)
    first = run(dev, ctx, steps[half:])
    for _ in range(2):
        dev.rollback(snap)
        ctx.memory[:] = memory
        assert run(dev, ctx, steps[half:]) == first
    dev.close()


def test_crb_with_five_localities(crb_class: type[tpmdev.CRB]) -> None:
    with crb_class(Builtin(seed=1), localities=5) as five, crb_class(Builtin(seed=1)) as one:
        five.write(0x3008, 1)  # locality 3 takes the TPM
        five.write(0x1008, 1)  # locality 1 waits
        blob = five.save()
        one_blob = one.save()
        before = fingerprint(one)
        with pytest.raises(StateError, match=r"configured otherwise \(localities: state 5, device 1\)"):
            one.load(blob)
        assert fingerprint(one) == before
        with crb_class(Builtin(seed=2), localities=5) as other:
            other.load(blob)
            assert other.active_locality == 3 and other.core.capture() == five.core.capture()
            with pytest.raises(StateError, match=r"localities: state 1, device 5"):
                other.load(one_blob)
