"""One stage from Kafka records to what the sink writes: decode, validate, tokenize, detect.

The worker's agent and the benchmarks call `Processor.process` on a batch of records; it is plain
Python with no Faust or ClickHouse in it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.alerts import deadline_alerts
from pipeline.config import Config
from pipeline.engine import Engine
from pipeline.ingest import Decoded, decode_record
from pipeline.policy import load_policy
from pipeline.text.tokenize import get_tokenizer
from schemas.rows import TABLES, Source, deadletter_row, detector_row, finding_row, message_row, raw_row


@dataclass
class Batch:
    """Rows per ClickHouse table (key first, source position last) and what goes to the topics."""

    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in TABLES})
    findings: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    forward: list[dict[str, Any]] = field(default_factory=list)  # events for other keys' partitions

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Processor:
    def __init__(self, cfg: Config, engine: Engine | None = None) -> None:
        self.cfg = cfg
        t = cfg.tokenizer
        self.tokenizer = get_tokenizer(hmm=t.hmm, user_dict=t.user_dict, cache_size=t.cache_size)
        self.engine = engine or Engine(load_policy(cfg.policy.file))

    def process(self, records: Iterable[tuple[bytes | None, Source]]) -> Batch:
        decoded = Decoded()
        for raw, src in records:
            decode_record(raw, src, self.cfg.ingest.max_text_chars, decoded)
        batch = Batch()
        rows = batch.rows
        tokenize = self.tokenizer.tokens
        for event, src in decoded.events:
            if event["kind"] != "membership":  # qunguard's own forwarded facts are not input
                rows["raw_events"].append(raw_row(event, src))
            tokens: list[str] = []
            if event["kind"] == "message":
                tokens = tokenize(event["text"])
                rows["messages"].append(message_row(event, tokens, src))
            for finding in self.engine.process(event, tokens, (src.partition, src.offset, src.index)):
                rows["findings"].append(finding_row(finding, src))
                batch.findings.append(finding)
            if self.engine.records:
                for table, record in self.engine.records:
                    rows[table].append(detector_row(table, record, src))
                self.engine.records.clear()
        batch.forward, self.engine.derived = self.engine.derived, []
        for dl in decoded.dead:
            rows["deadletter"].append(deadletter_row(dl))
            batch.dead.append(dl)
        return batch

    def tick(self, partitions: Collection[int] | None = None, now: int | None = None) -> Batch:
        """Timers at `now` (default: the latest event time seen): findings whose moment has come, the
        owners' reminders, state released. Rows carry the timer as their source, offset = `now`."""
        now = self.engine.watermark if now is None else now
        batch = Batch()
        timer = self.cfg.topic("timer")
        for i, finding in enumerate(self.engine.tick(now, partitions)):
            batch.rows["findings"].append(finding_row(finding, Source(timer, 0, now, i)))
            batch.findings.append(finding)
        for i, (table, record) in enumerate(self.engine.records):
            batch.rows[table].append(detector_row(table, record, Source(timer, 0, now, i)))
        self.engine.records.clear()
        batch.alerts = deadline_alerts(batch.findings)
        return batch
