"""The detect step, from records to what the sink writes: decode, validate, tokenize, run the engine.

Plain Python with no Faust or ClickHouse in it: the worker's delivery path (pipeline/delivery/),
the benchmarks and the tests call `Processor.process` on a batch of records. Whatever a record
holds, it ends as rows or as a dead letter with the reason: an event that makes a detector fail is
a dead letter too ("detector error"), and the records after it go on.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.config import Config
from pipeline.detectors.content.pii import mask_text
from pipeline.engine import Engine, Settled
from pipeline.ingest import Decoded, decode_record
from pipeline.policy import load_policy
from pipeline.text.tokenize import get_tokenizer
from schemas.records import INTERNAL_KINDS
from schemas.rows import (
    TABLES,
    Source,
    alert_row,
    deadletter_record,
    deadletter_row,
    detector_deadletter,
    detector_row,
    dumps,
    finding_row,
    message_row,
    raw_row,
)

log = logging.getLogger("qunguard.processor")


def tune_gc() -> None:
    """The worker's garbage collector. A worker makes millions of short-lived rows beside a large
    long-lived heap (jieba's dictionary, the lexicon automaton, caches, every active group's
    state): freeze what start-up built, so collections skip it, and collect young objects less
    often. Measured: a third less time building rows; the flood detector over 100,000 active
    groups 1.7x faster (bench/bench_flood.py, which runs with this too)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@dataclass
class Batch:
    """Rows per ClickHouse table (key first, source position last) and what goes to the topics."""

    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})
    findings: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    forward: list[dict[str, Any]] = field(default_factory=list)  # events for other keys' partitions
    early: set[str] = field(default_factory=set)  # ids of `alerts` published already, during detection
    # Per source (topic, partition), the latest event time of a producer's event (not a forwarded
    # fact): the progress other partitions' forwards are measured against (delivery/settled.py).
    event_time: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Processor:
    def __init__(self, cfg: Config, engine: Engine | None = None) -> None:
        self.cfg = cfg
        t = cfg.tokenizer
        self.tokenizer = get_tokenizer(hmm=t.hmm, user_dict=t.user_dict, cache_size=t.cache_size, backend=t.backend)
        self.engine = engine or Engine(load_policy(cfg.policy.file))
        self.timer_topic = cfg.topic("timer")

    def process(self, records: Iterable[tuple[bytes | None, Source] | tuple[bytes | None, Source, bool]],
                urgent: Callable[[list[dict[str, Any]], Source], None] | None = None) -> Batch:
        """Records as (value, source[, internal]); `internal` marks qunguard's own forwarded facts.
        `urgent` is handed each event's alerts as soon as that event is detected (the delivery path
        publishes them then, instead of after the whole batch); they are in the batch as well."""
        decoded = Decoded()
        limit = self.cfg.ingest.max_text_chars
        for rec in records:
            decode_record(rec[0], rec[1], limit, decoded, internal=bool(rec[2]) if len(rec) > 2 else False)
        batch = Batch()
        rows = batch.rows
        tokenize = self.tokenizer.tokens
        engine = self.engine
        for event, src in decoded.events:
            try:
                tokens = tokenize(event["text"]) if event["kind"] == "message" else []
                out = engine.process(event, tokens, (src.partition, src.offset, src.index))
            except Exception as exc:  # a bug met by one event must not stop everyone else's
                log.exception("detector error on %s", event.get("event_id"))
                dl = deadletter_record(dumps(event).encode(), f"detector error: {type(exc).__name__}: {exc}", src)
                rows["deadletter"].append(deadletter_row(dl))
                batch.dead.append(dl)
                continue
            if event["kind"] == "message" and event["text"]:
                event, tokens = self._masked(event, tokens)  # detection saw the clear text
            if event["kind"] not in INTERNAL_KINDS:  # qunguard's own forwarded facts are not input
                rows["raw_events"].append(raw_row(event, src))
                tp = (src.topic, src.partition)
                if event["ts"] > batch.event_time.get(tp, -1):
                    batch.event_time[tp] = event["ts"]
            if event["kind"] == "message":
                rows["messages"].append(message_row(event, tokens, src))
            for finding in out.findings:
                rows["findings"].append(finding_row(finding, src))
            batch.findings.extend(out.findings)
            if out.rows:
                _detector_rows(batch, out.rows, partial(_same, src))
            batch.forward.extend(out.forward)
            if out.alerts:
                batch.alerts.extend(out.alerts)
                for alert in out.alerts:
                    rows["alerts"].append(alert_row(alert, src))
                if urgent is not None:
                    urgent(out.alerts, src)
        for dl in decoded.dead:
            rows["deadletter"].append(deadletter_row(dl))
            batch.dead.append(dl)
        return batch

    def _masked(self, event: dict[str, Any], tokens: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The message as stored: personal data of the kinds its group's policy masks, masked."""
        kinds = self.engine.policy.content_for(event["org_id"], event["group_id"]).mask_stored
        text = mask_text(event["text"], kinds)
        if text == event["text"]:
            return event, tokens
        return {**event, "text": text}, self.tokenizer.tokens(text)

    def tick(self, partitions: Collection[int] | None = None, now: int | None = None,
             settled: Settled = None, bounds: Mapping[int, int] | None = None) -> Batch:
        """Timers at `now` (default: the latest event time seen): findings whose moment has come, the
        owners' reminders, state released. Rows carry the timer as their source, offset = `now`.
        `settled` and `bounds`: how far the stages fed from other partitions and each partition may
        go (Engine.tick)."""
        now = self.engine.watermark if now is None else now
        batch = Batch()
        out = self.engine.tick(now, partitions, settled, bounds)
        for i, finding in enumerate(out.findings):
            batch.rows["findings"].append(finding_row(finding, Source(self.timer_topic, 0, now, i)))
        batch.findings = out.findings
        _detector_rows(batch, out.rows, lambda i: Source(self.timer_topic, 0, now, i))
        batch.forward = out.forward
        batch.alerts = out.alerts
        for i, alert in enumerate(out.alerts):
            batch.rows["alerts"].append(alert_row(alert, Source(self.timer_topic, 0, now, i)))
        return batch


def _same(src: Source, _: int) -> Source:
    return src


def _detector_rows(batch: Batch, rows: list[tuple[str, dict[str, Any]]], source: Callable[[int], Source]) -> None:
    """Rows the detectors handed over; their dead letters go to the topic too."""
    for i, (table, record) in enumerate(rows):
        if table == "deadletter":
            dl = detector_deadletter(record, source(i))
            batch.rows["deadletter"].append(deadletter_row(dl))
            batch.dead.append(dl)
        else:
            batch.rows[table].append(detector_row(table, record, source(i)))
