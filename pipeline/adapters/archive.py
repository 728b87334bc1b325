"""`qunguard bridge wecom-archive`: decrypted WeCom archive records (JSON lines: each the message
`DecryptData` returned with the `seq` of its chatdata item, or a `groupchat/get` answer with its
`roomid`) from files, directories or stdin, into qg.events.

Resuming exactly. The cursor file holds the last `seq` Kafka acknowledged. Before a chunk is sent
the file also records the chunk's last seq and every events partition's end offset; once Kafka
has acknowledged the chunk the cursor moves to that seq. A bridge killed in between finds the
chunk in its cursor at the next start, reads what reached Kafka since those end offsets, and sends
only the chunk's records that are not there. So a restart neither skips nor repeats a record.
Member lists carry no `seq`: their ids come from their content, and they are sent on every run
(storage keeps one of each). A bad line without a seq is a dead letter once: the cursor keeps the
ids of the dead letters it sent.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline.adapters.bridge import Sender, error_record, need_org
from pipeline.adapters.onebot import Unmappable
from pipeline.adapters.wecom import map_record
from pipeline.config import Config
from pipeline.kafka import bootstrap

CHUNK = 1000  # records per acknowledged chunk: GetChatData's own page size
DEAD_KEPT = 10_000  # ids of dead letters sent for lines without a seq, so a rerun does not send them again


def read_cursor(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {"seq": 0}
    except orjson.JSONDecodeError as exc:
        from pipeline.config import ConfigError

        raise ConfigError(f"config: bridge.wecom_cursor: {path} is not a cursor file ({exc}); "
                          "move it away to start from the first record") from exc
    return data if isinstance(data, dict) else {"seq": 0}


def write_cursor(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def lines(sources: list[str]) -> Iterator[bytes]:
    """Files in the order given, a directory's files by name, `-` for stdin."""
    for src in sources or ["-"]:
        if src == "-":
            yield from sys.stdin.buffer
            continue
        path = Path(src)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for f in files:
            with open(f, "rb") as fh:
                yield from fh


class ArchiveBridge:
    def __init__(self, cfg: Config, sender: Sender | None = None) -> None:
        need_org(cfg, "WeCom groups")
        self.cfg = cfg
        self.org = cfg.bridge.org_id
        self.cursor_path = Path(cfg.bridge.wecom_cursor)
        self.sender = sender or Sender(cfg)
        self.counts = {"records": 0, "events": 0, "dead": 0, "skipped": 0}

    def run(self, source: Iterable[bytes]) -> dict[str, int]:
        cursor = read_cursor(self.cursor_path)
        seen = self._recover(cursor)
        chunk: list[tuple[int | None, list[dict[str, Any]]]] = []
        for line in source:
            if not line.strip():
                continue
            seq, events = self._map(line)
            if seq is not None and seq <= cursor["seq"]:
                self.counts["skipped"] += 1
                continue
            if seq is None and events and all(e["event_id"] in cursor.get("dead", ()) for e in events):
                self.counts["skipped"] += 1  # a bad line without a seq, a dead letter already
                continue
            if seen and events and all(e["event_id"] in seen for e in events):
                self.counts["skipped"] += 1  # sent by the run that was killed, before its cursor moved
                if seq is None:  # a dead letter it sent: remembered as ours are, so no rerun sends it again
                    dead = [e["event_id"] for e in events if e["kind"] == "bridge_error"]
                    cursor = {**cursor, "dead": (list(cursor.get("dead", [])) + dead)[-DEAD_KEPT:]}
                continue
            chunk.append((seq, events))
            if len(chunk) >= CHUNK:
                cursor = self._send(chunk, cursor)
                chunk = []
        if chunk:
            cursor = self._send(chunk, cursor)
        self.sender.close()
        return self.counts

    def _map(self, line: bytes) -> tuple[int | None, list[dict[str, Any]]]:
        self.counts["records"] += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            self.counts["dead"] += 1
            return None, [error_record("wecom-archive", f"wecom: invalid JSON: {exc}", line.rstrip(b"\r\n"), self.org)]
        seq = record.get("seq") if isinstance(record, dict) else None
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        try:
            return seq, map_record(record, self.org)
        except Unmappable as exc:
            self.counts["dead"] += 1
            return seq, [error_record("wecom-archive", str(exc), record, self.org)]

    def _send(self, chunk: list[tuple[int | None, list[dict[str, Any]]]], cursor: dict[str, Any]) -> dict[str, Any]:
        seqs = [s for s, _ in chunk if s is not None]
        last = max(seqs, default=cursor["seq"])
        # Still recovering from a killed run (no chunk of ours completed yet): read back from where
        # that run began sending, or a second kill would forget what it sent and resend its lines.
        before = cursor.get("sending")
        ends = before["ends"] if isinstance(before, dict) and "ends" in before else self._ends()
        write_cursor(self.cursor_path, {**cursor, "sending": {"to": last, "ends": ends}})
        events = [e for _, evs in chunk for e in evs]
        self.sender.send(events)
        self.counts["events"] += sum(1 for e in events if e["kind"] != "bridge_error")
        dead = [e["event_id"] for e in events if e["kind"] == "bridge_error"]
        cursor = {"seq": max(last, cursor["seq"]), "dead": (list(cursor.get("dead", [])) + dead)[-DEAD_KEPT:]}
        write_cursor(self.cursor_path, cursor)
        return cursor

    def _ends(self) -> dict[str, int]:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=bootstrap(self.cfg.kafka.url), enable_auto_commit=False)
        try:
            topic = self.cfg.topic("events")
            tps = [TopicPartition(topic, p) for p in range(self.cfg.kafka.partitions)]
            return {str(tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()

    def _recover(self, cursor: dict[str, Any]) -> set[str]:
        """The event ids the killed run's last chunk got into Kafka (none if it ended cleanly)."""
        sending = cursor.get("sending")
        if not isinstance(sending, dict):
            return set()
        from kafka import KafkaConsumer, TopicPartition

        topic = self.cfg.topic("events")
        consumer = KafkaConsumer(bootstrap_servers=bootstrap(self.cfg.kafka.url), enable_auto_commit=False)
        seen: set[str] = set()
        try:
            starts = {TopicPartition(topic, int(p)): int(o) for p, o in sending["ends"].items()}
            ends = consumer.end_offsets(list(starts))
            consumer.assign(list(starts))
            for tp, o in starts.items():
                consumer.seek(tp, o)
            left = {tp for tp in starts if ends[tp] > starts[tp]}
            deadline = time.monotonic() + 120
            while left and time.monotonic() < deadline:
                for tp, recs in consumer.poll(timeout_ms=1000).items():
                    for r in recs:
                        seen.update(_event_ids(r.value))
                        if r.offset + 1 >= ends[tp]:
                            left.discard(tp)
        finally:
            consumer.close()
        if left:
            raise RuntimeError(f"wecom-archive: could not read back what the last run sent (partitions "
                               f"{sorted(tp.partition for tp in left)}); nothing sent, try again")
        return seen


def _event_ids(value: bytes) -> list[str]:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    items = obj if isinstance(obj, list) else [obj]
    return [str(e["event_id"]) for e in items if isinstance(e, dict) and "event_id" in e]


def run_archive(cfg: Config, sources: list[str], org: str | None = None) -> int:
    from pipeline.kafka import ensure_topics

    if org:
        cfg = cfg.model_copy(update={"bridge": cfg.bridge.model_copy(update={"org_id": org})})
    need_org(cfg, "WeCom groups")
    ensure_topics(cfg)
    counts = ArchiveBridge(cfg).run(lines(sources))
    print(f"wecom-archive: {counts['records']:,} records read, {counts['events']:,} events sent, "
          f"{counts['dead']:,} dead letters, {counts['skipped']:,} already sent before")
    return 0
