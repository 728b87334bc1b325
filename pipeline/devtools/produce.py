"""Send records to qg.events at a chosen rate, with a progress bar; and wait for a group to drain."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.config import Config
from pipeline.devtools.simulate import Record
from pipeline.kafka import bootstrap, producer


def file_records(lines: Iterable[bytes], envelope: int = 1) -> Iterator[Record]:
    """JSON Lines → records keyed by group (or user, or org). Lines that do not parse are sent as
    they are: the worker dead-letters them with the reason, nothing is dropped here."""
    pending: dict[bytes, list[bytes]] = {}
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            key = (obj.get("group_id") or obj.get("user_id") or obj.get("org_id") or "").encode()
        except (orjson.JSONDecodeError, AttributeError):
            yield Record(b"", line, [], 1)
            continue
        if envelope <= 1:
            yield Record(key, line, [])
            continue
        buf = pending.setdefault(key, [])
        buf.append(line)
        if len(buf) >= envelope:
            yield Record(key, b"[" + b",".join(buf) + b"]", [])
            del pending[key]
    for key, buf in pending.items():
        yield Record(key, b"[" + b",".join(buf) + b"]", [])


def progress_bar(label: str, show: bool = True) -> Progress:
    """The progress bar of the commands that send or write events (on stderr)."""
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
                    TimeElapsedColumn(), disable=not show, console=Console(stderr=True))


def produce(cfg: Config, records: Iterable[Record], rate: float = 0.0, total: int | None = None,
            show_progress: bool = True) -> dict[int, int]:
    """Send `records` (rate = events per second, 0 = as fast as possible); return, per partition,
    the offset after the last record sent there."""
    prod = producer(cfg)
    topic = cfg.topic("events")
    ends: dict[int, int] = {}
    futures = []
    started = time.monotonic()
    sent_events = 0
    with progress_bar("producing", show_progress) as bar:
        task = bar.add_task("produce", total=total)
        for rec in records:
            futures.append(prod.send(topic, key=rec.key or None, value=rec.value))
            n = max(1, len(rec.valid_ids))
            sent_events += n
            bar.advance(task, n)
            if rate > 0:
                ahead = sent_events / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if len(futures) >= 5000:
                _collect(futures, ends)
        prod.flush()
        _collect(futures, ends)
    prod.close()
    return ends


def _collect(futures: list, ends: dict[int, int]) -> None:
    for f in futures:
        md = f.get(timeout=60)
        ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    futures.clear()


def wait_drained(cfg: Config, ends: dict[int, int], timeout: float = 120.0,
                 alive: Callable[[], bool] = lambda: True) -> bool:
    """Wait until the worker group has committed every offset in `ends` (everything is stored)."""
    from kafka import KafkaConsumer, TopicPartition

    # Reads the group's committed offsets without joining the group.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(cfg.kafka.url), group_id=cfg.worker.app_id,
                             enable_auto_commit=False)
    tps = {p: TopicPartition(cfg.topic("events"), p) for p in ends}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and alive():
            if all((consumer.committed(tps[p]) or -1) >= end for p, end in ends.items()):
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()
