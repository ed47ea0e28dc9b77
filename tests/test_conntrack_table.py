"""ConntrackTable: the compiled table and its pure-Python twin against a brute-force oracle.

Every test runs on both implementations (`impl` fixture: "c" = emu._fastpath, "py" = the
twin) or on both at once (`both`), where every return value and exception type must agree.
A missing extension fails the "c" runs unless EMU_NO_EXTENSIONS=1.
"""

from __future__ import annotations

import importlib
import math
import random
import struct
from array import array
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
INF = math.inf
REC = struct.Struct("=IIHHB3x")

U32 = st.integers(0, 2**32 - 1)
U16 = st.integers(0, 0xFFFF)
TUPLE = st.tuples(U32, U32, st.integers(0, 255), U16, U16)


from tests.tables import both, impl  # noqa: E402,F401  (fixtures)


# ---------------------------------------------------------------------------
# the oracle: a list scan over a dict of entries, with the documented id policy
# ---------------------------------------------------------------------------


class Oracle:
    """What a ConntrackTable must answer, computed the slow obvious way.

    Ids: a freed id goes on a stack and is reused last-freed-first (expire frees in
    ascending order); an empty table starts again at 0.
    """

    def __init__(self) -> None:
        self.e: dict[int, list] = {}
        self.free: list[int] = []
        self.next = 0

    def find(self, t: tuple) -> tuple[int, int]:
        for i, ent in self.e.items():
            for d in (0, 1):
                if ent[d] == t:
                    return (i, d)
        return (-1, 0)

    def create(self, o: tuple, r: tuple, state: int, status: int, expires: float, mark: int) -> int:
        if o == r:
            raise ValueError
        if self.find(o)[0] >= 0 or self.find(r)[0] >= 0:
            return -1
        if self.free:
            i = self.free.pop()
        else:
            i = self.next
            self.next += 1
        self.e[i] = [o, r, state, status, float(expires), mark, 0, 0, 0, 0]
        return i

    def _freed(self, ids: list[int]) -> None:
        self.free.extend(ids)
        if not self.e:
            self.free.clear()
            self.next = 0

    def delete(self, i: int) -> bool:
        if self.e.pop(i, None) is None:
            return False
        self._freed([i])
        return True

    def expire(self, now: float) -> list[int]:
        gone = sorted(i for i, ent in self.e.items() if ent[4] <= now)
        for i in gone:
            del self.e[i]
        self._freed(gone)
        return gone

    def next_expiry(self) -> float:
        return min((ent[4] for ent in self.e.values()), default=INF)

    def get(self, i: int) -> tuple:
        if i not in self.e:
            raise KeyError(i)
        return tuple(self.e[i])


def outcome(fn, *args):  # noqa: ANN001, ANN201
    """("ok", type, value) or ("err", exception type): comparable across implementations."""
    try:
        r = fn(*args)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return ("err", type(exc))
    if isinstance(r, array):
        r = (r.typecode, r.tolist())
    return ("ok", type(r), r)


# ---------------------------------------------------------------------------
# random operation sequences on a small tuple universe (so clashes and hits are common)
# ---------------------------------------------------------------------------

BASE = (0x0A000001, 0x0A600002, 6, 40000, 80)
UNIVERSE = [
    BASE,
    (0x0A600002, 0x0A000001, 6, 80, 40000),  # BASE reversed
    (0xC0A80001, 0x0A000001, 6, 80, 61000),  # BASE's reply after DNAT + SNAT
    (0x0A000002, 0x0A600002, 6, 40000, 80),  # one field differs at a time
    (0x0A000001, 0x0A600003, 6, 40000, 80),
    (0x0A000001, 0x0A600002, 17, 40000, 80),
    (0x0A000001, 0x0A600002, 6, 40001, 80),
    (0x0A000001, 0x0A600002, 6, 40000, 81),
    (0x0A000001, 0x0A600002, 1, 7, 0),  # ICMP echo: id as sport, 0 as dport
    (0x0A600002, 0x0A000001, 1, 7, 0),
    (0, 0, 0, 0, 0),
    (0xFFFFFFFF, 0xFFFFFFFF, 255, 0xFFFF, 0xFFFF),
]
NT = len(UNIVERSE)
DT = st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 2.0, 5.0, 30.0, INF, -INF])
IDS = st.one_of(st.integers(0, 4), st.integers(-1, 12))
STATE = st.sampled_from([0, 1, 7, -(2**31), 2**31 - 1])
STATUS = st.sampled_from([0, 0x1A, 2**32 - 1])
MARK = st.sampled_from([0, 1, 0xDEADBEEF, 2**32 - 1])

CT_OP = st.one_of(
    st.tuples(st.just("create"), st.integers(0, NT - 1), st.integers(0, NT - 1), STATE, STATUS, DT, MARK),
    st.tuples(st.just("create"), st.integers(0, NT - 1), st.integers(0, NT - 1), STATE, STATUS, DT, MARK),
    st.tuples(st.just("find"), st.integers(0, NT - 1)),
    st.tuples(st.just("in_use"), st.integers(0, NT - 1)),
    st.tuples(st.just("update"), IDS, STATE, STATUS, DT),
    st.tuples(st.just("mark"), IDS, MARK),
    st.tuples(st.just("account"), IDS, st.integers(0, 1), st.sampled_from([0, 60, 1500, 2**63 - 1])),
    st.tuples(st.just("delete"), IDS),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    st.tuples(st.just("next"),),
    st.tuples(st.just("batch"),),
)


def run_ops(tables: list, ops: list) -> None:
    """Apply ops to every table and the oracle; all results (and errors) must be equal."""
    oracle = Oracle()
    now = 100.0
    for op in ops:
        kind = op[0]
        if kind == "create":
            _, oi, ri, state, status, dt, mark = op
            args = (UNIVERSE[oi], UNIVERSE[ri], state, status, now + dt, mark)
            want = outcome(oracle.create, *args)
            got = [outcome(t.create, *args) for t in tables]
        elif kind in ("find", "in_use"):
            t_ = UNIVERSE[op[1]]
            hit = oracle.find(t_)
            want = ("ok", tuple, hit) if kind == "find" else ("ok", bool, hit[0] >= 0)
            got = [outcome(getattr(t, kind), t_) for t in tables]
        elif kind == "update":
            _, i, state, status, dt = op
            if i in oracle.e:
                oracle.e[i][2:5] = [state, status, now + dt]
                want = ("ok", type(None), None)
            else:
                want = ("err", KeyError)
            got = [outcome(t.update, i, state, status, now + dt) for t in tables]
        elif kind == "mark":
            _, i, mark = op
            if i in oracle.e:
                oracle.e[i][5] = mark
                want = ("ok", type(None), None)
            else:
                want = ("err", KeyError)
            got = [outcome(t.set_mark, i, mark) for t in tables]
        elif kind == "account":
            _, i, d, nbytes = op
            if i in oracle.e:
                ent = oracle.e[i]
                ent[6 + 2 * d] = (ent[6 + 2 * d] + 1) % 2**64
                ent[7 + 2 * d] = (ent[7 + 2 * d] + nbytes) % 2**64
                want = ("ok", type(None), None)
            else:
                want = ("err", KeyError)
            got = [outcome(t.account, i, d, nbytes) for t in tables]
        elif kind == "delete":
            want = ("ok", bool, oracle.delete(op[1]))
            got = [outcome(t.delete, op[1]) for t in tables]
        elif kind == "advance":
            now += op[1]
            want = ("ok", list, oracle.expire(now))
            got = [outcome(t.expire, now) for t in tables]
        elif kind == "next":
            want = ("ok", float, oracle.next_expiry())
            got = [outcome(t.next_expiry) for t in tables]
        else:
            want_list = [2 * i + d if i >= 0 else -1 for i, d in map(oracle.find, UNIVERSE)]
            want = ("ok", tuple, ("q", want_list))
            got = []
            for t in tables:
                keys = importlib.import_module(type(t).__module__).pack_tuples(UNIVERSE)
                got.append(outcome(t.find_batch, keys))
        assert got == [want] * len(tables), (op, got, want)
        # state visible without side effects: size, ids, every entry's fields
        for t in tables:
            assert len(t) == len(oracle.e)
            assert t.ids() == sorted(oracle.e)
            for i in oracle.e:
                assert t.get(i) == oracle.get(i)


@settings(SETTINGS, max_examples=300)
@given(ops=st.lists(CT_OP, min_size=20, max_size=150))
def test_sequences_match_oracle(impl: ModuleType, ops: list) -> None:
    run_ops([impl.ConntrackTable()], ops)


@settings(SETTINGS, max_examples=300)
@given(ops=st.lists(CT_OP, min_size=20, max_size=150))
def test_compiled_and_twin_agree(both: tuple[ModuleType, ModuleType], ops: list) -> None:
    """The same sequence on both modules in lockstep: identical return values, ids and errors."""
    run_ops([m.ConntrackTable() for m in both], ops)
    tables = [m.ConntrackTable() for m in both]
    for op in ops:  # and once more comparing the two directly, with next_expiry after every step
        if op[0] == "create":
            args = (UNIVERSE[op[1]], UNIVERSE[op[2]], *op[3:])
            res = [outcome(t.create, *args) for t in tables]
        elif op[0] == "delete":
            res = [outcome(t.delete, op[1]) for t in tables]
        elif op[0] == "update":
            res = [outcome(t.update, *op[1:]) for t in tables]
        elif op[0] == "advance":
            res = [outcome(t.expire, op[1] * 3) for t in tables]
        else:
            continue
        assert res[0] == res[1], op
        assert tables[0].next_expiry() == tables[1].next_expiry()
        assert tables[0].ids() == tables[1].ids()


# ---------------------------------------------------------------------------
# arbitrary tuples: packing, find_batch against scalar find
# ---------------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(pairs=st.lists(st.tuples(TUPLE, TUPLE), max_size=60), probes=st.lists(TUPLE, max_size=20),
       pad=st.binary(min_size=3, max_size=3))
def test_find_batch_equals_find(impl: ModuleType, pairs: list, probes: list, pad: bytes) -> None:
    t = impl.ConntrackTable()
    keys = []
    for o, r in pairs:
        if o == r:
            with pytest.raises(ValueError):
                t.create(o, r, 0, 0, 1.0)
            continue
        i = t.create(o, r, 0, 0, 1.0)
        assert i == -1 or t.find(o) == (i, 0) and t.find(r) == (i, 1)
        keys += [o, r]
    keys += probes
    packed = impl.pack_tuples(keys)
    assert packed == b"".join(REC.pack(s, d, sp, dp, p) for s, d, p, sp, dp in keys)
    want = [2 * i + d if i >= 0 else -1 for i, d in map(t.find, keys)]
    assert t.find_batch(packed).tolist() == want
    assert [t.in_use(k) for k in keys] == [w >= 0 for w in want]
    # the 3 pad bytes of a record are not part of the key
    padded = b"".join(packed[i : i + 13] + pad for i in range(0, len(packed), 16))
    assert t.find_batch(padded).tolist() == want


def test_find_batch_buffers(impl: ModuleType) -> None:
    t = impl.ConntrackTable()
    o, r = BASE, UNIVERSE[2]
    assert t.find_batch(impl.pack_tuples([o])).tolist() == [-1]  # empty table
    i = t.create(o, r, 1, 0, 5.0)
    packed = impl.pack_tuples([o, UNIVERSE[3], r])
    want = [2 * i, -1, 2 * i + 1]
    for buf in (packed, bytearray(packed), memoryview(packed), array("I", packed), array("Q", packed)):
        res = t.find_batch(buf)
        assert isinstance(res, array) and res.typecode == "q"
        assert res.tolist() == want
    assert t.find_batch(b"").tolist() == []
    with pytest.raises(ValueError):
        t.find_batch(packed[:-1])
    with pytest.raises(ValueError):
        t.find_batch(memoryview(bytearray(64))[::2])  # not contiguous
    with pytest.raises(TypeError):
        t.find_batch([1, 2, 3])


# ---------------------------------------------------------------------------
# semantics spelled out
# ---------------------------------------------------------------------------


def test_clashes(impl: ModuleType) -> None:
    """A tuple can belong to one entry only, whichever direction it was or would be."""
    t = impl.ConntrackTable()
    o1, r1 = BASE, UNIVERSE[2]
    a = t.create(o1, r1, 1, 0, 10.0)
    assert a == 0
    other = UNIVERSE[5]
    assert t.create(o1, other, 1, 0, 10.0) == -1  # orig already an orig
    assert t.create(r1, other, 1, 0, 10.0) == -1  # orig equals another entry's reply
    assert t.create(other, o1, 1, 0, 10.0) == -1  # reply equals another entry's orig
    assert t.create(other, r1, 1, 0, 10.0) == -1  # reply already a reply
    assert t.create(r1, o1, 1, 0, 10.0) == -1  # the same pair swapped
    assert len(t) == 1 and t.ids() == [0]
    assert not t.in_use(other)  # nothing half-stored by a failed create
    with pytest.raises(ValueError):
        t.create(other, other, 1, 0, 10.0)
    with pytest.raises(ValueError):
        t.create(o1, o1, 1, 0, 10.0)  # invalid beats clash
    # a plain swap is not required: NAT'ed replies differ in more fields
    b = t.create(other, UNIVERSE[6], 1, 0, 10.0)
    assert b == 1 and t.find(UNIVERSE[6]) == (1, 1)
    assert t.delete(a)
    assert t.create(r1, other, 1, 0, 10.0) == -1  # `other` still belongs to b
    assert t.create(r1, o1, 1, 0, 10.0) == 0  # freed tuples (and id) are usable again
    assert t.find(o1) == (0, 1) and t.find(r1) == (0, 0)


def test_entry_fields_and_counters(impl: ModuleType) -> None:
    t = impl.ConntrackTable()
    i = t.create(BASE, UNIVERSE[2], 3, 0x180, 12.5, mark=0x10)
    assert t.get(i) == (BASE, UNIVERSE[2], 3, 0x180, 12.5, 0x10, 0, 0, 0, 0)
    t.account(i, 0, 60)
    t.account(i, 0, 1500)
    t.account(i, 1, 40)
    t.update(i, 4, 0x19A, 99.0)
    t.set_mark(i, 0xFFFFFFFF)
    assert t.get(i) == (BASE, UNIVERSE[2], 4, 0x19A, 99.0, 0xFFFFFFFF, 2, 1560, 1, 40)
    t.account(i, 1, 2**63 - 1)
    t.account(i, 1, 2**63 - 1)
    assert t.get(i)[8:] == (3, (40 + 2 * (2**63 - 1)) % 2**64)  # 64-bit counters wrap
    t2 = impl.ConntrackTable()
    j = t2.create(BASE, UNIVERSE[2], 0, 0, 7)  # an int expiry is stored as a float
    assert t2.get(j)[4] == 7.0 and type(t2.get(j)[4]) is float
    for bad_id in (-1, 1, 2**40):
        assert t.delete(bad_id) is False
        with pytest.raises(KeyError):
            t.get(bad_id)
        with pytest.raises(KeyError):
            t.update(bad_id, 0, 0, 1.0)
        with pytest.raises(KeyError):
            t.set_mark(bad_id, 0)
        with pytest.raises(KeyError):
            t.account(bad_id, 0, 1)


def test_expired_entries_stay_until_expire(impl: ModuleType) -> None:
    """The caller checks expiry: lookups do not hide an entry whose time has passed."""
    t = impl.ConntrackTable()
    i = t.create(BASE, UNIVERSE[2], 1, 0, 5.0)
    j = t.create(UNIVERSE[3], UNIVERSE[4], 1, 0, 5.0)
    k = t.create(UNIVERSE[5], UNIVERSE[6], 1, 0, 6.0)
    assert t.find(BASE) == (i, 0) and t.in_use(UNIVERSE[2])
    assert t.get(i)[4] == 5.0
    assert t.expire(4.999) == []
    assert t.expire(5.0) == [i, j]  # expires <= now, ties included, ids ascending
    assert t.find(BASE) == (-1, 0) and not t.in_use(UNIVERSE[4])
    assert t.find(UNIVERSE[6]) == (k, 1)
    assert t.expire(float("nan")) == [] and len(t) == 1


def test_next_expiry(impl: ModuleType) -> None:
    t = impl.ConntrackTable()
    assert t.next_expiry() == INF
    ids = [t.create((1, 2, 6, p, 80), (2, 1, 6, 80, p), 0, 0, float(e)) for p, e in
           zip(range(10), [50, 20, 30, 10, 40, 60, 10, 70, 80, 90], strict=True)]
    assert t.next_expiry() == 10.0
    t.delete(ids[3])
    assert t.next_expiry() == 10.0  # the other 10
    t.delete(ids[6])
    assert t.next_expiry() == 20.0
    t.update(ids[1], 0, 0, 100.0)  # pushed later: the next one is 30
    assert t.next_expiry() == 30.0
    t.update(ids[9], 0, 0, 5.0)  # pulled earlier
    assert t.next_expiry() == 5.0
    assert t.expire(30.0) == sorted([ids[9], ids[2]])
    assert t.next_expiry() == 40.0
    t.update(ids[4], 0, 0, INF)
    t.update(ids[0], 0, 0, -INF)
    assert t.next_expiry() == -INF
    assert t.expire(-1e300) == [ids[0]]
    assert t.expire(1e300) == sorted([ids[1], ids[5], ids[7], ids[8]])
    assert t.next_expiry() == INF and len(t) == 1
    assert t.expire(INF) == [ids[4]]
    assert t.next_expiry() == INF and len(t) == 0


def test_id_reuse_is_deterministic(both: tuple[ModuleType, ModuleType]) -> None:
    """Last freed first; expire frees in ascending order; an empty table restarts at 0."""
    for mod in both:
        t = mod.ConntrackTable()
        mk = [((1, 2, 6, p, 80), (2, 1, 6, 80, p)) for p in range(20)]
        assert [t.create(o, r, 0, 0, float(p)) for p, (o, r) in enumerate(mk[:8])] == list(range(8))
        assert t.delete(3) and t.delete(6)
        assert t.create(*mk[8], 0, 0, 50.0) == 6
        assert t.expire(2.0) == [0, 1, 2]
        assert [t.create(*m, 0, 0, 50.0) for m in mk[9:13]] == [2, 1, 0, 3]
        assert t.create(*mk[13], 0, 0, 50.0) == 8
        for i in t.ids():
            t.delete(i)
        assert len(t) == 0 and t.ids() == []
        assert t.create(*mk[14], 0, 0, 1.0) == 0


def test_memory_grows_and_is_released(impl: ModuleType) -> None:
    t = impl.ConntrackTable()
    empty = t.memory_bytes()
    for p in range(2000):
        t.create((1, 2, 6, p, 80), (2, 1, 6, 80, p), 0, 0, 1.0)
    full = t.memory_bytes()
    assert full > empty + 2000 * 32
    assert t.expire(1.0) == list(range(2000))
    assert t.memory_bytes() <= empty + 1024


BAD_CALLS = [
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 4), 0, 0, 1.0)),  # orig == reply
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0, 0, float("nan"))),
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 2**31, 0, 1.0)),
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0, -1, 1.0)),
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0, 2**32, 1.0)),
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0, 0, 1.0, 2**32)),
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 2**64, 0, 1.0)),
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 2**64, 0, "1")),  # expires converts first
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0.0, 0, 1.0)),
    ("create", ((2**32, 2, 6, 3, 4), (1, 2, 6, 3, 5), 2**64, 0, 1.0)),  # tuples before state
    ("create", ((1, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0, 0, "1")),
    ("create", ((2**32, 2, 6, 3, 4), (1, 2, 6, 3, 5), 0, 0, 1.0)),
    ("create", ((1, 2, 256, 3, 4), (1, 2, 6, 3, 5), 0, 0, 1.0)),
    ("create", ((1, 2, 6, 3, 2**16), (1, 2, 6, 3, 5), 0, 0, 1.0)),
    ("create", ((1, 2, 6, 3, 4), (1, -2, 6, 3, 5), 0, 0, 1.0)),
    ("create", ((1, 2, 6, 3), (1, 2, 6, 3, 5), 0, 0, 1.0)),
    ("create", ((1, 2, 6, 3, 4, 5), (1, 2, 6, 3, 5), 0, 0, 1.0)),
    ("create", (None, (1, 2, 6, 3, 5), 0, 0, 1.0)),
    ("find", ((1, 2, 6, 3, 4.0),)),  # no silent truncation of floats
    ("find", ((1.0, 2, 6, 3, 4),)),
    ("find", ((1, 2, 6, 3, 2**70),)),
    ("find", ((1, 2, 6, 3, -1),)),
    ("find", ("abcde",)),
    ("in_use", ((1, 2, 6, 3),)),
    ("get", (2**64,)),
    ("get", (0.0,)),
    ("delete", (0.0,)),
    ("set_mark", (0, 1.0)),
    ("account", (0, 0, 1.0)),
    ("update", (0, 0.0, 0, 1.0)),
    ("update", (0, 0, 0, float("nan"))),
    ("update", (0, 2**31, 0, 1.0)),
    ("update", (5, 2**31, 0, 1.0)),  # a bad value is reported before an unknown id
    ("set_mark", (0, -1)),
    ("account", (0, 2, 10)),
    ("account", (0, 0, -1)),
    ("account", (0, 2**40, 1)),
    ("account", (9, 0, -1)),
    ("delete", ("0",)),
    ("expire", ("now",)),
    ("find_batch", (b"\0" * 15,)),
    ("find_batch", (12,)),
]


@pytest.mark.parametrize(("name", "args"), BAD_CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_CALLS)])
def test_same_errors(both: tuple[ModuleType, ModuleType], name: str, args: tuple) -> None:
    kinds = []
    for mod in both:
        t = mod.ConntrackTable()
        assert t.create((9, 9, 6, 1, 2), (9, 9, 6, 2, 1), 0, 0, 1.0) == 0
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is what is compared
            getattr(t, name)(*args)
        kinds.append(type(info.value))
        assert len(t) == 1 and t.find((9, 9, 6, 1, 2)) == (0, 0)  # nothing changed
    assert kinds[0] is kinds[1], kinds


@pytest.mark.parametrize("arg", [[(1, 2, 3, 4, 5), (1, 2, 3, 4)], [(1, 2, 300, 4, 5)], [None], 5])
def test_pack_tuples_errors(both: tuple[ModuleType, ModuleType], arg: object) -> None:
    kinds = []
    for mod in both:
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is what is compared
            mod.pack_tuples(arg)
        kinds.append(type(info.value))
    assert kinds[0] is kinds[1], kinds


def test_same_public_api(both: tuple[ModuleType, ModuleType]) -> None:
    c, py = both
    assert hasattr(c, "pack_tuples") and "pack_tuples" in py.__all__ and "ConntrackTable" in py.__all__
    methods = {m for m in dir(py.ConntrackTable) if not m.startswith("_")}
    assert methods == {m for m in dir(c.ConntrackTable) if not m.startswith("_")}
    assert methods == {"create", "find", "in_use", "get", "update", "set_mark", "account", "delete",
                       "expire", "next_expiry", "ids", "find_batch", "memory_bytes"}


# ---------------------------------------------------------------------------
# growth, shrink and deletion under churn, 200k entries
# ---------------------------------------------------------------------------


def _random_pair(rng: random.Random) -> tuple[tuple, tuple]:
    """A pod-to-service flow and its reply after DNAT to a backend and SNAT to a node port."""
    src, svc, backend, node = (rng.getrandbits(32) for _ in range(4))
    proto = rng.choice((6, 17, 1))
    sport = rng.getrandbits(16)
    dport = 0 if proto == 1 else rng.getrandbits(16)
    nat_port = rng.getrandbits(16)
    return (src, svc, proto, sport, dport), (backend, node, proto, dport if proto != 1 else nat_port,
                                             nat_port if proto != 1 else 0)


def test_churn_200k(both: tuple[ModuleType, ModuleType]) -> None:
    """200k entries, then rounds of deletes, expiries and creates; both modules and a dict agree."""
    rng = random.Random(2024)
    tables = [m.ConntrackTable() for m in both]
    model: dict[tuple, tuple[int, int]] = {}  # tuple -> (id, direction)
    pairs: dict[int, tuple[tuple, tuple]] = {}
    expires: dict[int, float] = {}
    clock = 0.0

    def add(n: int) -> None:
        for _ in range(n):
            o, r = _random_pair(rng)
            e = clock + rng.choice((1.0, 2.0, 3.0, 1000.0))
            got = [t.create(o, r, 1, 0, e) for t in tables]
            assert got[0] == got[1]
            if got[0] < 0:
                assert o in model or r in model or o == r
                continue
            i = got[0]
            model[o], model[r] = (i, 0), (i, 1)
            pairs[i] = (o, r)
            expires[i] = e

    def drop(i: int) -> None:
        o, r = pairs.pop(i)
        del model[o], model[r], expires[i]

    def check(extra: list[tuple]) -> None:
        keys = list(model) + extra
        packed = both[0].pack_tuples(keys)
        want = [2 * model[k][0] + model[k][1] if k in model else -1 for k in keys]
        for t in tables:
            assert len(t) == len(pairs)
            assert t.find_batch(packed).tolist() == want
        assert tables[0].ids() == tables[1].ids() == sorted(pairs)
        assert tables[0].next_expiry() == tables[1].next_expiry() == min(expires.values(), default=INF)

    add(200_000)
    check([])
    removed: list[tuple] = []
    for _ in range(3):
        for i in rng.sample(sorted(pairs), 60_000):
            removed += pairs[i]
            assert [t.delete(i) for t in tables] == [True, True]
            drop(i)
        clock += 1.5
        gone = sorted(i for i, e in expires.items() if e <= clock)
        for i in gone:
            removed += pairs[i]
            drop(i)
        assert tables[0].expire(clock) == tables[1].expire(clock) == gone
        check(rng.sample(removed, 5000))
        add(70_000)
        check(rng.sample(removed, 5000))
    # shrink to a handful, then grow again
    peak = tables[0].memory_bytes()
    for i in sorted(pairs)[10:]:
        assert [t.delete(i) for t in tables] == [True, True]
        drop(i)
    check(rng.sample(removed, 2000))
    # the compiled slot table shrank; entry arrays keep the highest live id's size
    assert tables[0].memory_bytes() < 0.8 * peak
    add(20_000)
    check([])
    clock = 1e9
    assert tables[0].expire(clock) == tables[1].expire(clock) == sorted(pairs)
    assert len(tables[0]) == len(tables[1]) == 0
    assert [t.memory_bytes() for t in tables] == [m.ConntrackTable().memory_bytes() for m in both]
