"""Flood state in the streaming worker survives a SIGKILL: an episode that straddles the kill is
reported once, on the message that completed it, and an episode reported before the kill is not
reported again. Real Apache Kafka, Debian's ClickHouse, `qunguard worker` as a child process."""

from __future__ import annotations

import itertools

import orjson
import pytest

from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import Record
from pipeline.kafka import ensure_topics
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import Worker, count, make_config, server_url, unique, wait_for

pytestmark = pytest.mark.slow

T0 = 1_793_498_400_000 + 3_600_000  # 2026-11-02 10:00 Asia/Shanghai
_n = itertools.count(1)


def post(group: str, text: str, at_s: float, sender: str = "u1") -> dict:
    n = next(_n)
    return {"kind": "message", "event_id": f"fe{n}", "org_id": "o", "ts": T0 + int(at_s * 1000),
            "platform": "wecom", "group_id": group, "msg_id": f"fm{n}", "sender_id": sender, "text": text}


def send(cfg, events: list[dict]) -> dict[int, int]:
    return produce(cfg, [Record(e["group_id"].encode(), orjson.dumps(e), [e["event_id"]]) for e in events],
                   show_progress=False)


def stored(cfg, event: dict) -> bool:
    return count(cfg, f"SELECT count() FROM {{db}}.raw_events WHERE event_id = '{event['event_id']}'") > 0


def flood_findings(cfg, group: str) -> list[tuple]:
    backend = connect(cfg.clickhouse.url)
    try:
        return backend.query(f"SELECT DISTINCT finding_id, msg_id FROM {backend.database}.findings "
                             f"WHERE rule = 'flood.repeat' AND group_id = '{group}'")
    finally:
        backend.close()


def test_a_kill_in_the_middle_of_an_episode_gives_exactly_one_finding(tmp_path, kafka, clickhouse, workers):
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("flood")),
                      sink={"batch_rows": 50, "batch_seconds": 0.2})
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    # Other groups talk throughout, so the episode's records share batches with others.
    chatter = itertools.count()

    def others(k: int) -> list[dict]:
        return [post(f"other{i % 7}", f"第{next(chatter)}条工作消息", k + i * 0.01, f"x{i}") for i in range(40)]

    workers.append(Worker(cfg, tmp_path / "w1.log"))
    # Episode 1: two of three before the kill.
    a1, a2 = post("g-mid", "广告位招租!!!", 10), post("g-mid", "广告位招租!!", 12, "u2")
    # Episode 2: complete before the kill.
    b = [post("g-done", "快来帮我砍一刀", 20 + i) for i in range(3)]
    send(cfg, others(0) + [a1, a2] + b + others(30))
    wait_for(lambda: stored(cfg, a2) and flood_findings(cfg, "g-done"), 120, "the first records stored")
    workers[0].kill()  # SIGKILL: the last offsets may not be committed; the changelog may be ahead

    workers.append(Worker(cfg, tmp_path / "w2.log"))
    a3 = post("g-mid", "广告位招租", 14, "u3")
    b4 = post("g-done", "快来帮我砍一刀", 24)
    ends = send(cfg, others(40) + [a3, b4] + others(60))
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[1].proc.poll() is None), \
        (tmp_path / "w2.log").read_text()[-3000:]

    assert [m for _, m in flood_findings(cfg, "g-mid")] == [a3["msg_id"]], \
        "one finding for the episode that straddled the kill, on the message that completed it"
    done = flood_findings(cfg, "g-done")
    assert [m for _, m in done] == [b[2]["msg_id"]], "the episode reported before the kill is not reported again"
    assert count(cfg, "SELECT count() FROM {db}.findings FINAL WHERE rule = 'flood.repeat'") == 2
