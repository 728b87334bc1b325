"""The sink against the real ClickHouse server: batching, exactly-once bookkeeping, outages."""

import threading
import time

import orjson
import pytest

from pipeline.config import SinkConfig, load_config
from pipeline.devtools.devservices import start_clickhouse
from pipeline.devtools.simulate import Simulator
from pipeline.ingest import Decoded
from pipeline.processor import Batch, Processor
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from pipeline.sink.writer import ClickHouseSink
from schemas.rows import Source
from tests.conftest import server_url, unique


def _batch(n: int, seed: int = 3, first_offset: int = 0) -> tuple[Batch, list[str]]:
    sim = Simulator(orgs=1, groups=5, members=6, seed=seed)
    records = [(r.value, Source("qg.events", 0, first_offset + i)) for i, r in enumerate(sim.records(n))]
    return Processor(load_config(env={})).process(records), [orjson.loads(v)["event_id"] for v, _ in records]


def _counts(backend):
    db = backend.database
    return backend.query(f"SELECT count(), uniqExact(event_id) FROM {db}.raw_events")[0]


def test_batches_by_rows_and_time():
    cfg = SinkConfig(batch_rows=10, batch_seconds=0.2)
    sink = ClickHouseSink(backend=None, cfg=cfg)  # admission of new partitions needs no server when empty
    assert not sink.due()
    sink.pending_rows, sink.oldest = 3, time.monotonic()
    assert not sink.due()
    time.sleep(0.25)
    assert sink.due()
    sink.pending_rows, sink.oldest = 10, time.monotonic()
    assert sink.due()


@pytest.fixture
def backend(clickhouse):
    backend = connect(server_url(clickhouse, unique("sink")))
    migrate(backend)
    yield backend
    backend.close()


def test_restart_after_write_before_commit_stores_nothing_twice(backend):
    batch, ids = _batch(300)
    first = ClickHouseSink(backend, SinkConfig())
    first.admit(batch)
    assert first.flush() == len(batch)
    # A new process (the restarted worker) gets the same uncommitted records again.
    second = ClickHouseSink(backend, SinkConfig())
    again = second.admit(batch)
    assert len(again) == 0 and second.flush() == 0
    assert _counts(backend) == (len(ids), len(ids))
    # and the records after them go through
    more, more_ids = _batch(100, seed=4, first_offset=300)
    assert len(second.admit(more)) == len(more)
    second.flush()
    assert _counts(backend) == (len(ids) + len(more_ids),) * 2


def test_event_sent_twice_is_stored_once(backend):
    batch, ids = _batch(50)
    sink = ClickHouseSink(backend, SinkConfig())
    sink.admit(batch)
    # the same events again at later offsets (a producer that re-sent them)
    later = Batch(rows={t: [r[:-3] + (r[-3], r[-2] + 1000, r[-1]) for r in rows] for t, rows in batch.rows.items()})
    sink.admit(later)
    sink.flush()
    assert _counts(backend) == (len(ids), len(ids))


def test_flush_waits_out_a_clickhouse_outage(tmp_path):
    ch = start_clickhouse(tmp_path / "ch")
    port = int(ch.url.rsplit(":", 1)[1].split("/")[0])
    backend = connect(server_url(ch, "outage"))
    migrate(backend)
    batch, ids = _batch(200)
    sink = ClickHouseSink(backend, SinkConfig(max_backoff_seconds=0.5))
    sink.admit(batch)
    ch.stop()
    done = threading.Event()
    t = threading.Thread(target=lambda: (sink.flush(), done.set()), daemon=True)
    t.start()
    time.sleep(2)
    assert not done.is_set() and sink.retries >= 2  # blocked, retrying, nothing lost
    ch2 = start_clickhouse(tmp_path / "ch", port=port)
    try:
        assert done.wait(30)
        assert _counts(backend) == (len(ids), len(ids))
    finally:
        ch2.stop()


def test_empty_decoded_is_no_batch():
    assert len(Batch()) == 0 and Decoded().events == []


def test_recent_key_cache_is_bounded(backend):
    batch, _ = _batch(500)
    sink = ClickHouseSink(backend, SinkConfig(dedupe_cache=100))
    sink.admit(batch)
    assert all(len(keys) <= 100 for keys in sink._recent.values())
    assert sink.flush() == len(batch)  # the bound limits memory, not what is written


def test_a_restart_drops_every_row_already_stored_not_only_its_first_take(backend):
    # The dead worker stored offsets 0..999 but committed none; the new one re-reads them in
    # takes of 200 records, and then goes on with new ones.
    batch, ids = _batch(1000)
    first = ClickHouseSink(backend, SinkConfig())
    first.admit(batch)
    first.flush()
    second = ClickHouseSink(backend, SinkConfig())
    sim = Simulator(orgs=1, groups=5, members=6, seed=3)
    records = [(r.value, Source("qg.events", 0, i)) for i, r in enumerate(sim.records(1000))]
    processor = Processor(load_config(env={}))
    for start in range(0, len(records), 200):
        assert len(second.admit(processor.process(records[start:start + 200]))) == 0
    more, more_ids = _batch(100, seed=4, first_offset=1000)
    assert len(second.admit(more)) == len(more)
    second.flush()
    assert _counts(backend) == (len(ids) + len(more_ids),) * 2


def test_chdb_stores_each_row_as_given(tmp_path):
    """The embedded backend's insert (one JSON array for all rows, its brackets left out): values
    that look like the row separators, quotes, line breaks, emoji, nulls and empty arrays."""
    backend = connect(f"chdb:{tmp_path / 'db'}")
    db = backend.database
    backend.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    backend.execute(f"CREATE TABLE {db}.t (a UInt32, s String, xs Array(String), n Nullable(String)) "
                    "ENGINE = MergeTree ORDER BY a")
    rows = [(1, "],[2,\"x\",[],null],[", ["[", "]", ","], None),
            (2, "换行\n和\"引号\"\\ 🙂", [], "群"),
            (3, "", ["收到"], "")]
    backend.insert("t", ("a", "s", "xs", "n"), rows)
    assert backend.query(f"SELECT a, s, xs, n FROM {db}.t ORDER BY a") == [
        (1, "],[2,\"x\",[],null],[", ["[", "]", ","], None),
        (2, "换行\n和\"引号\"\\ 🙂", [], "群"),
        (3, "", ["收到"], "")]
    backend.close()
