"""The bridges for real: a WebSocket client and an HTTP client play the OneBot implementation
against `qunguard bridge onebot`; WeCom archive dumps go through `bridge wecom-archive`; real
Kafka, the worker and ClickHouse; the findings are replay's over the mapped events."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from hashlib import sha1
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline.adapters import archive
from pipeline.adapters.archive import ArchiveBridge
from pipeline.adapters.bridge import Sender
from pipeline.adapters.onebot import map_payload
from pipeline.adapters.wecom import map_record
from pipeline.devtools.devservices import free_port, wait_port
from pipeline.kafka import bootstrap, ensure_topics
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import Worker, count, make_config, onebot_actions, query, scrape, server_url, unique, wait_for

pytestmark = pytest.mark.slow
PAYLOADS = Path(__file__).parent / "data" / "payloads"
GAMBLING = "澳门赌场百家乐，注册就送彩金，加我微信"


def _cfg(tmp_path, kafka, clickhouse, **bridge):
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("br")), worker={"timer_seconds": 1.0},
                      bridge={"org_id": "qqorg", **bridge})
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    return cfg


def _frames() -> list[bytes]:
    """What a NapCat or go-cqhttp instance sends: the captured payloads, and traffic in their shape."""
    load = lambda n: json.loads((PAYLOADS / n).read_text(encoding="utf-8"))  # noqa: E731
    now = int(time.time()) - 600
    base = load("onebot_group_message_napcat_capture_reply.json")
    frames = [load("onebot_group_message_napcat_doc.json"), base,
              load("onebot_notice_group_increase_approve_capture.json"),
              load("onebot_notice_group_decrease_kick_capture.json")]
    for i in range(6):  # a member posting gambling ads, in CQ-code string form (go-cqhttp's default)
        frames.append({**base, "time": now + i, "message_id": 5000 + i, "user_id": 777, "message_format": "string",
                       "sender": {"user_id": 777, "nickname": "发财", "card": "", "role": "member"},
                       "message": f"[CQ:at,qq=all] {GAMBLING}{i}", "raw_message": f"[CQ:at,qq=all] {GAMBLING}{i}"})
    return [orjson.dumps(f) for f in frames]


def test_onebot_traffic_by_websocket_and_http_post_ends_in_replays_findings(tmp_path, kafka, clickhouse, workers):
    from aiohttp import ClientSession, WSServerHandshakeError

    port = free_port()
    cfg = _cfg(tmp_path, kafka, clickhouse, onebot_listen=f"127.0.0.1:{port}", onebot_secret="s3cret",
               onebot_access_token="t0ken")
    workers.append(Worker(cfg, tmp_path / "bridge.log", ["bridge", "onebot"]))
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    wait_port(port, 30, workers[0].proc, "bridge")
    frames = _frames()
    bad = [b"{not json", orjson.dumps(json.loads((PAYLOADS / "onebot_http_post_private_message_spec.json")
                                                 .read_text(encoding="utf-8")))]

    async def play() -> None:
        async with ClientSession() as http:
            with pytest.raises(WSServerHandshakeError) as refused:
                await http.ws_connect(f"http://127.0.0.1:{port}/onebot/v11/ws", headers={"Authorization": "Bearer no"})
            assert refused.value.status == 401
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/onebot/v11/ws",
                                       headers={"Authorization": "Bearer t0ken", "X-Self-ID": "168238719",
                                                "X-Client-Role": "Universal"})
            for f in frames[:6]:
                await ws.send_str(f.decode())
            for f in bad:  # malformed frames do not stop the bridge, nor this connection
                await ws.send_str(f.decode())
            await ws.send_str(frames[6].decode())
            await asyncio.sleep(1)
            assert not ws.closed
            await ws.close()
            for f in frames[7:]:  # the rest by HTTP POST, signed
                signed = {"X-Signature": "sha1=" + hmac.new(b"s3cret", f, sha1).hexdigest(),
                          "Content-Type": "application/json"}
                async with http.post(f"http://127.0.0.1:{port}/", data=f, headers=signed) as r:
                    assert r.status == 204
            async with http.post(f"http://127.0.0.1:{port}/", data=frames[7],
                                 headers={"X-Signature": "sha1=00"}) as r:
                assert r.status == 401

    asyncio.run(play())
    # the bridge's /metrics: every frame read, the refused handshake and POST counted, the bad frames as dead letters
    bridge = scrape(f"http://127.0.0.1:{port}/metrics")
    assert bridge["qunguard_bridge_received_total"][()] == len(frames) + len(bad)
    assert bridge["qunguard_bridge_refused_total"][()] == 2 and bridge["qunguard_bridge_dead_total"][()] == 2
    assert bridge["qunguard_bridge_unacknowledged"][()] == 0
    events = [e for f in frames for e in map_payload(orjson.loads(f), "qqorg")]
    expected = replay([orjson.dumps(e) for e in events], until=int(time.time() * 1000))
    assert any(f["rule"] == "content.gambling" for f in expected.findings)
    wait_for(lambda: count(cfg, "SELECT uniqExact(event_id) FROM {db}.raw_events") >= len(events), 120,
             "the bridged events stored")
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.deadletter") >= 2, 60, "the two bad frames' dead letters")
    stored = {r[0] for r in query(cfg, "SELECT event_id FROM {db}.raw_events")}
    assert stored == {e["event_id"] for e in events}  # the refused POST stored nothing
    reasons = sorted(r[0] for r in query(cfg, "SELECT error FROM {db}.deadletter"))
    assert len(reasons) == 2 and reasons[0].startswith("onebot: 'private' message") and "invalid JSON" in reasons[1]
    content = {f["finding_id"] for f in expected.findings if f["rule"].startswith("content.")}
    wait_for(lambda: content <= {r[0] for r in query(cfg, "SELECT finding_id FROM {db}.findings")}, 60,
             "the content findings")
    got = {r[0] for r in query(cfg, "SELECT finding_id FROM {db}.findings WHERE startsWith(rule, 'content.')")}
    assert got == content
    groups = {r[0] for r in query(cfg, "SELECT DISTINCT group_id FROM {db}.messages")}
    assert groups == {"987654321", "984466158"}


def _archive_lines(n: int) -> list[bytes]:
    """n records in the archive's shapes for one room, with their seq; a member list; a bad line."""
    text = json.loads((PAYLOADS / "wecom_archive_text.json").read_text(encoding="utf-8"))
    link = json.loads((PAYLOADS / "wecom_archive_link.json").read_text(encoding="utf-8"))
    t0 = int(time.time() * 1000) - 3_600_000
    out = [orjson.dumps({**json.loads((PAYLOADS / "wecom_msgaudit_groupchat_get_response.json").read_text()),
                         "roomid": "wrROOM1"})]
    for i in range(n):
        rec = (link if i % 7 == 3 else text) | {"msgid": f"m{i}_{t0}", "roomid": "wrROOM1", "msgtime": t0 + i * 1000,
                                                "seq": i + 1, "from": f"u{i % 9}"}
        if i % 50 == 10:
            rec["text"] = {"content": GAMBLING}
        out.append(orjson.dumps(rec))
        if i == n // 2:
            out.append(b"{\"seq\": ")  # a truncated line
    return out


def _topic_ids(cfg) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(cfg.kafka.url), enable_auto_commit=False)
    topic = cfg.topic("events")
    tps = [TopicPartition(topic, p) for p in range(cfg.kafka.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(tps)
    ids: list[str] = []
    left = {tp for tp in tps if ends[tp] > 0}
    while left:
        for tp, recs in consumer.poll(timeout_ms=1000).items():
            for r in recs:
                ids += archive._event_ids(r.value) or ["<not json>"]
                if r.offset + 1 >= ends[tp]:
                    left.discard(tp)
    consumer.close()
    return ids


def _dump(tmp_path: Path, lines: list[bytes], split: int) -> Path:
    """The archive lines as a dump directory of two files, split at `split`."""
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "001.jsonl").write_bytes(b"\n".join(lines[:split]) + b"\n")
    (dump / "002.jsonl").write_bytes(b"\n".join(lines[split:]) + b"\n")
    return dump


def _member_list(lines: list[bytes]) -> set[str]:
    return {e["event_id"] for e in map_record(orjson.loads(lines[0]), "qqorg")}


def _each_record_once_on_the_topic(cfg, lines: list[bytes], records: int) -> None:
    messages = [i for i in _topic_ids(cfg) if i not in _member_list(lines)]
    assert len(messages) == len(set(messages)) == records + 1  # every record once, and the bad line's dead letter


def _stored_with_replays_findings(cfg, lines: list[bytes], records: int, workers, log: Path,
                                  timeout: float) -> None:
    """The worker takes all of it: every event stored, the messages once, replay's content
    findings over the same records, and the bad line's one dead letter."""
    workers.append(Worker(cfg, log))
    events = [e for line in lines if line.startswith(b"{\"msgid") or line.startswith(b"{\"roomname")
              for e in map_record(orjson.loads(line), "qqorg")]
    expected = replay([orjson.dumps(e) for e in events], until=int(time.time() * 1000))
    wait_for(lambda: count(cfg, "SELECT uniqExact(event_id) FROM {db}.raw_events") >= len({e["event_id"]
                                                                                       for e in events}),
             timeout, "the archive's events stored")
    # the tables of one write are inserted one after another: wait for the messages too
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.messages") >= records, 60, "the messages stored")
    assert count(cfg, "SELECT count() FROM {db}.messages") == records
    content = {f["finding_id"] for f in expected.findings if f["rule"].startswith("content.")}
    assert content
    wait_for(lambda: content <= {r[0] for r in query(cfg, "SELECT finding_id FROM {db}.findings")}, 60,
             "the content findings")
    errors = [r[0] for r in query(cfg, "SELECT error FROM {db}.deadletter")]
    assert len(errors) == 1 and errors[0].startswith("wecom: invalid JSON")


class DyingSender(Sender):
    """Kafka acknowledges the k-th chunk, then the bridge is killed before its cursor moves."""

    def __init__(self, cfg, die_after: int) -> None:
        super().__init__(cfg)
        self.chunks = 0
        self.die_after = die_after

    def send(self, events):
        super().send(events)
        self.chunks += 1
        if self.chunks == self.die_after:
            raise KeyboardInterrupt("killed")


def test_a_killed_archive_bridge_neither_skips_nor_repeats_a_record(tmp_path, kafka, clickhouse, workers,
                                                                      monkeypatch):
    cfg = _cfg(tmp_path, kafka, clickhouse, wecom_cursor=str(tmp_path / "cursor"))
    monkeypatch.setattr(archive, "CHUNK", 40)
    lines = _archive_lines(300)
    dump = _dump(tmp_path, lines, 150)
    with pytest.raises(KeyboardInterrupt):
        ArchiveBridge(cfg, DyingSender(cfg, die_after=3)).run(archive.lines([str(dump)]))
    cursor = orjson.loads((tmp_path / "cursor").read_bytes())
    # chunks of 40: the member list and seq 1-39, 40-79, 80-119; the third was sent, not recorded
    assert cursor["seq"] == 79 and cursor["sending"]["to"] == 119
    # killed again while recovering: its first chunk (the member list again, seq 120-157 and the bad
    # line) sent, not recorded; what the first run sent must not be forgotten
    with pytest.raises(KeyboardInterrupt):
        ArchiveBridge(cfg, DyingSender(cfg, die_after=1)).run(archive.lines([str(dump)]))
    cursor = orjson.loads((tmp_path / "cursor").read_bytes())
    assert cursor["seq"] == 79 and cursor["sending"]["to"] == 157
    again = ArchiveBridge(cfg).run(archive.lines([str(dump)]))
    assert again["skipped"] == 79 + 1 + 40 + 38 + 1  # recorded; then read back: both killed runs' chunks
    _each_record_once_on_the_topic(cfg, lines, 300)
    # a third run sends nothing new but the member list, which is idempotent by its ids
    third = ArchiveBridge(cfg).run(archive.lines([str(dump)]))
    assert third["events"] == len(_member_list(lines)) and third["skipped"] == 301
    _stored_with_replays_findings(cfg, lines, 300, workers, tmp_path / "worker.log", 120)


def test_a_bridge_process_sigkilled_while_sending_resends_exactly_what_is_missing(tmp_path, kafka, clickhouse,
                                                                                  workers):
    """`qunguard bridge wecom-archive` as operators run it, SIGKILLed three times at moments of its
    own choosing (while a chunk is being sent: its cursor says so), then run to the end: every
    record is on the topic exactly once, the bad line's dead letter once, and the worker stores it
    all with replay's findings."""
    import random
    import signal
    import subprocess
    import sys

    from pipeline.config import config_env

    cfg = _cfg(tmp_path, kafka, clickhouse, wecom_cursor=str(tmp_path / "cursor"))
    n = 9 * archive.CHUNK + 300  # ten chunks of the bridge's own size
    lines = _archive_lines(n)
    dump = _dump(tmp_path, lines, n // 2)
    cursor_path = tmp_path / "cursor"
    rng = random.Random(11)

    def bridge() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "bridge", "wecom-archive", str(dump)],
                                env=config_env(cfg), stdout=open(tmp_path / "bridge.log", "ab"),
                                stderr=subprocess.STDOUT)

    def sending_past(seq: int) -> bool:
        try:
            cursor = orjson.loads(cursor_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return False
        return "sending" in cursor and cursor["sending"]["to"] > seq

    killed_at: list[int] = []
    for _ in range(3):
        past = max([orjson.loads(cursor_path.read_bytes())["seq"] if cursor_path.exists() else 0, *killed_at])
        proc = bridge()
        wait_for(lambda p=proc, past=past: sending_past(past) or p.poll() is not None, 120,
                 "the bridge sending a chunk", interval=0.005)
        time.sleep(rng.uniform(0, 0.08))  # before, during or after the chunk's acknowledgement
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the bridge finished before it could be killed"
        killed_at.append(orjson.loads(cursor_path.read_bytes()).get("sending", {}).get("to", 0))
    final = bridge()
    assert final.wait(timeout=300) == 0, (tmp_path / "bridge.log").read_text()[-2000:]
    _each_record_once_on_the_topic(cfg, lines, n)
    _stored_with_replays_findings(cfg, lines, n, workers, tmp_path / "worker.log", 180)


def test_an_enforcing_groups_sanctions_are_carried_out_over_the_websocket(tmp_path, kafka, clickhouse, workers):
    """The bot's implementation connects, sends a member's gambling ads in two groups; only the
    group whose policy enforces gets set_group_ban, set_group_kick and delete_msg; a refused kick
    is tried again; every attempt and reply is in ClickHouse."""
    from aiohttp import ClientSession

    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text("groups:\n  '984466158': {enforcement: {enabled: true}}\n", encoding="utf-8")
    cfg = _cfg(tmp_path, kafka, clickhouse, onebot_listen=f"127.0.0.1:{port}")
    cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"file": str(policy)})})
    workers.append(Worker(cfg, tmp_path / "bridge.log", ["bridge", "onebot"]))
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    wait_port(port, 30, workers[0].proc, "bridge")
    wait_for(lambda: b"enforcement: on" in (tmp_path / "bridge.log").read_bytes(), 30, "the enforcer")
    time.sleep(3)  # its consumer joins before the first finding (it starts at the topic's end)
    frames = _frames()[4:]  # 984466158: member 777's six ads
    doc = json.loads((PAYLOADS / "onebot_group_message_napcat_doc.json").read_text(encoding="utf-8"))
    now = int(time.time()) - 600
    frames += [orjson.dumps({**doc, "time": now + i, "message_id": 6000 + i, "user_id": 888,
                             "message": [{"type": "text", "data": {"text": f"{GAMBLING}{i}"}}],
                             "sender": {"user_id": 888, "nickname": "888", "role": "member"}}) for i in range(4)]
    received: list[dict] = []

    async def play() -> None:
        async with ClientSession() as http:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/onebot/v11/ws", headers={"X-Self-ID": "168238719"})
            for f in frames:
                await ws.send_str(f.decode())
            refused_once = False
            async for action in onebot_actions(ws, 180, 5):
                if action is None:
                    if {"set_group_ban", "set_group_kick"} <= {a["action"] for a in received} and refused_once:
                        break
                    continue
                received.append(action)
                if action["action"] == "set_group_kick" and not refused_once:
                    refused_once = True
                    await ws.send_json({"status": "failed", "retcode": 102, "data": None, "wording": "权限不足",
                                        "echo": action["echo"]})
                    continue
                await ws.send_json({"status": "ok", "retcode": 0, "data": None, "echo": action["echo"]})
            await ws.close()

    asyncio.run(play())
    # delete_msg names only the message; its ids below are the enforcing group's own messages
    assert {a["params"]["group_id"] for a in received if a["action"] != "delete_msg"} == {984466158}
    bans = [a for a in received if a["action"] == "set_group_ban"]
    assert bans and bans[0]["params"] == {"group_id": 984466158, "user_id": 777, "duration": 86400}
    kicks = [a for a in received if a["action"] == "set_group_kick"]
    assert len(kicks) == 2 and kicks[0]["params"]["user_id"] == 777  # refused, then tried again
    deleted = {a["params"]["message_id"] for a in received if a["action"] == "delete_msg"}
    assert deleted and deleted <= set(range(5000, 5006))
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.sanction_actions") >= len(received), 60, "the attempts")
    rows = query(cfg, "SELECT action, status, retcode, error FROM {db}.sanction_actions "
                      "WHERE action = 'set_group_kick' ORDER BY attempt")
    assert [r[:3] for r in rows] == [("set_group_kick", "retry", 102), ("set_group_kick", "ok", 0)]
    assert "权限不足" in rows[0][3]
    proposed = query(cfg, "SELECT count() FROM {db}.findings WHERE group_id = '987654321' AND rule = 'sanction.mute'")
    assert proposed[0][0] == 1  # the other group's member has a mute proposed, and nothing carried out
