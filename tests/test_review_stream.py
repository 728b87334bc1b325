"""The review loop for real: Kafka → `qunguard worker` → ClickHouse, a reviewer's `false_positive`
sent as a `feedback` event withdraws a finding and its strike, a worker killed in the middle of a
member's ladder keeps the count, and the final state in ClickHouse is replay's."""

from __future__ import annotations

import time

import orjson
import pytest

from pipeline.cli import main
from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import START_TS, Record, Simulator
from pipeline.kafka import ensure_topics
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from schemas.records import finding_id
from tests.conftest import REPORT, Worker, count, make_config, query, server_url, unique, wait_for

pytestmark = pytest.mark.slow
HOUR = 3_600_000
GAMBLING = "澳门赌场线上开户，百家乐充值送彩金"


def _post(n: int, at: int) -> dict:
    return {"kind": "message", "event_id": f"rv-e{n}", "org_id": "org1", "ts": at, "platform": "qq",
            "group_id": "g-review", "msg_id": f"rv-m{n}", "sender_id": "gambler", "text": GAMBLING}


def _record(event: dict) -> Record:
    return Record((event.get("group_id") or event["org_id"]).encode(), orjson.dumps(event), [event["event_id"]])



def _config_file(tmp_path, cfg):
    path = tmp_path / "qunguard.yaml"
    path.write_text(f"clickhouse: {{url: '{cfg.clickhouse.url}'}}\n", encoding="utf-8")
    return path


def test_a_false_positive_withdraws_its_strike_and_a_restart_keeps_the_ladder(tmp_path, kafka, clickhouse,
                                                                               workers, capsys):
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("rv")), worker={"timer_seconds": 1.0})
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    traffic = list(Simulator(orgs=2, groups=10, members=8, seed=91).records(3000, envelope=10, linger_ms=1000))
    posts = [_post(i, START_TS + (2 + i) * HOUR) for i in range(4)]
    wrong = finding_id("content.gambling", "g-review", posts[1]["msg_id"], "gambler")
    feedback = {"kind": "feedback", "event_id": "rv-fb1", "org_id": "org1", "ts": START_TS + 3 * HOUR + 60_000,
                "finding_id": wrong, "verdict": "false_positive", "actor_id": "reviewer-li", "note": "是转发的新闻"}
    first = traffic + [_record(p) for p in posts[:2]]
    second = [_record(feedback), _record(posts[2]), _record(posts[3])]
    expected = replay([r.value for r in first + second], until=int(time.time() * 1000))
    assert expected.status(wrong) == "false_positive"
    ladder = [(f["rule"], f["evidence"]["count"]) for f in expected.final()
              if f["rule"].startswith("sanction.") and f["user_id"] == "gambler"]
    assert ladder == [("sanction.warn", 1), ("sanction.mute", 3)], "the withdrawn strike does not count"

    workers.append(Worker(cfg, tmp_path / "worker.log"))
    ends = produce(cfg, first, show_progress=False)
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None)
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.findings WHERE rule = 'sanction.warn' "
                                "AND user_id = 'gambler'") == 1, 60, "the first warning")
    workers[0].kill()  # SIGKILL with two strikes on the ladder
    workers.append(Worker(cfg, tmp_path / "worker2.log"))
    ends = produce(cfg, second, show_progress=False)
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[1].proc.poll() is None)
    wait_for(lambda: count(cfg, "SELECT uniqExact(finding_id) FROM {db}.findings") >= len(expected.findings), 120,
             "every finding, sanctions included")
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.finding_status") >= sum(map(len, expected.statuses.values())),
             60, "every verdict")

    stored = {r[0]: r[1:] for r in query(cfg, "SELECT finding_id, rule, user_id, policy_version FROM {db}.findings")}
    want = {f["finding_id"]: (f["rule"], f["user_id"], f["policy_version"]) for f in expected.findings}
    assert stored == want
    history = set(query(cfg, "SELECT finding_id, seq, status, actor_id FROM {db}.finding_status"))
    assert history == {(fid, r["seq"], r["status"], r["actor_id"]) for fid, h in expected.statuses.items() for r in h}
    open_now = {r[0] for r in query(cfg, "SELECT finding_id FROM {db}.findings_current "
                                          "WHERE status != 'false_positive'")}
    assert open_now == {f["finding_id"] for f in expected.final()}, "ClickHouse's final state is replay's"
    assert query(cfg, f"SELECT status, decided_by FROM {{db}}.findings_current WHERE finding_id = '{wrong}'") == [
        ("false_positive", "reviewer-li")]
    mute = query(cfg, "SELECT visitParamExtractInt(evidence, 'count') FROM {db}.findings_current "
                       "WHERE rule = 'sanction.mute' AND user_id = 'gambler'")
    assert mute == [(3,)], "the strikes before the kill were still counted after it"
    # what the reviewers decided on content is labelled data for the classifier, and teaches the policy
    decided = ("confirmed", "false_positive")
    reviewed = {f["finding_id"]: expected.status(f["finding_id"]) for f in expected.findings
                if f["rule"].startswith("content.") and expected.status(f["finding_id"]) in decided}
    labelled = dict(query(cfg, "SELECT finding_id, label FROM {db}.labelled_examples"))
    assert labelled == {fid: int(status == "confirmed") for fid, status in reviewed.items()}
    capsys.readouterr()
    assert main(["--config", str(_config_file(tmp_path, cfg)), "policy", "suggest", "--min", "1"]) == 0
    assert "org1\tcontent.gambling\t" in capsys.readouterr().out, "the withdrawn match is a suggestion"
    withdrawn = len(expected.findings) - len(expected.final())
    REPORT.append(f"review: {len(expected.findings)} findings, {sum(map(len, expected.statuses.values()))} verdicts "
                  f"({withdrawn} withdrawn) through Kafka and a SIGKILL mid-ladder = replay's final state; "
                  f"{sum(1 for f in expected.final() if f['rule'].startswith('sanction.'))} sanctions")
