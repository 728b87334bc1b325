"""Detector state resting as JSON between batches (pipeline/packed_store.py): the same findings as
state held as objects, the changelog's bytes kept in place, and memory near the JSON's size."""

from __future__ import annotations

import tracemalloc

import orjson

from pipeline.devtools.simulate import Simulator
from pipeline.engine import Engine
from pipeline.packed_store import PackedStore
from pipeline.policy import Policy
from schemas.records import validate_event
from schemas.rows import json_bytes as pack

STATE = [2, ["o", 1_793_498_400_000, [1_793_498_400_000, "k", "m1", "u1"], None, None, None, None,
             {"u1": [0, 1_793_498_400_000, "m1"]}, None, 3, 10], [3, 41, 0]]


def test_a_key_left_alone_for_a_batch_rests_as_its_changelog_bytes_and_reads_decode_them() -> None:
    store = PackedStore()
    store["g1"] = STATE
    snap = store.snapshot()
    assert snap == {"g1": (3, orjson.dumps(STATE))}
    assert store._data["g1"] is STATE  # the next batch may change it again: not packed yet
    assert store.snapshot() == {}  # nothing changed since
    raw = store._data["g1"]
    assert type(raw) is bytes and raw is snap["g1"][1]  # one serialisation for both
    assert store["g1"] == STATE and store["g1"] is not store["g1"]  # each read a fresh object
    assert store.snapshot() == {}
    del store["g1"]
    assert store.snapshot() == {"g1": (3, None)}  # a tombstone to the partition it had
    assert len(store) == 0


def test_a_key_changed_in_every_batch_is_never_decoded() -> None:
    store = PackedStore()
    value = [1, {"n": 0}, [0, 0, 0]]
    store["g1"] = value
    store.snapshot()
    for n in range(1, 5):  # a batch each
        env = store["g1"]
        assert env is value  # the live object, not a decode of its JSON
        env[1] = {"n": n}
        store["g1"] = env
        assert store.snapshot() == {"g1": (0, orjson.dumps([1, {"n": n}, [0, 0, 0]]))}
    assert store.snapshot() == {} and store._data["g1"] == orjson.dumps([1, {"n": 4}, [0, 0, 0]])


def test_values_read_back_from_a_changelog_are_packed_unless_changed_since() -> None:
    other = [1, {"n": 1}, [5, 2, 0]]
    store = PackedStore({"g1": STATE, "g2": other})  # as recovery leaves them: objects
    store["g2"] = [1, {"n": 2}, [5, 3, 0]]  # changed before the next snapshot
    assert store.pack() == 1
    assert type(store._data["g1"]) is bytes and store["g1"] == STATE
    assert store._data["g2"] == [1, {"n": 2}, [5, 3, 0]]  # left for its snapshot
    assert store.snapshot() == {"g2": (5, orjson.dumps([1, {"n": 2}, [5, 3, 0]]))}
    assert store.keep_only({5}) == 1 and list(store) == ["g2"]  # g1 followed partition 3


def test_packed_values_take_about_their_json_not_orjsons_buffer() -> None:
    states = [[2, {"tail": list(range(i, i + 40)), "id": f"m{i}"}, [0, i, 0]] for i in range(2_000)]
    size = sum(len(orjson.dumps(s)) for s in states)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [pack(s) for s in states]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert b"".join(kept) == b"".join(orjson.dumps(s) for s in states)
    # a bytes object's header is 33 bytes; orjson.dumps alone keeps 4-8 KB per value here
    assert held < size + 80 * len(states), (held, size)


def _run(packed: bool, every: int) -> tuple[list[dict], dict[str, dict]]:
    """The simulator's week through every detector, as replay runs it; with `packed`, the state
    rests as JSON and is snapshotted every `every` events, as the worker does after each batch."""
    sim = Simulator(orgs=2, groups=12, members=8, seed=11)
    events = sorted((validate_event(e) for e in sim.events(6_000)), key=lambda e: e["ts"])
    stores: dict[str, PackedStore] = {}
    engine = Engine(Policy(), loopback=True)
    if packed:
        stores = {name: PackedStore() for name in engine.stores}
        engine.stores = dict(stores)
    findings: list[dict] = []
    for n, event in enumerate(events, 1):
        findings += engine.process(event, list(event["text"]) if event["kind"] == "message" else []).findings
        if n % 50 == 0:
            findings += engine.tick(event["ts"]).findings
        if n % every == 0:
            for store in stores.values():
                store.snapshot()
    findings += engine.tick(events[-1]["ts"] + 30 * 86_400_000).findings
    final = {name: {k: store[k] for k in store} for name, store in engine.stores.items()}
    return findings, final


def test_the_engine_finds_the_same_over_packed_state_as_over_objects() -> None:
    plain, plain_state = _run(packed=False, every=1)
    assert len({f["rule"] for f in plain}) >= 4  # the data reaches several rule families
    for every in (1, 7, 200):
        found, state = _run(packed=True, every=every)
        assert found == plain, every
        assert state == plain_state, every
