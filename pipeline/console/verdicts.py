"""A reviewer's verdicts as `feedback` events on the events topic: the same path as any other
event (the worker applies them, ClickHouse and replay see the same history); the console writes
nothing into ClickHouse itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from pipeline.config import Config
from schemas.records import SchemaError, validate_event

Send = Callable[[list[dict[str, Any]]], None]


class NotSent(RuntimeError):
    """Kafka did not take the verdicts; none of them counts as given."""


def feedback(org: str, finding_id: str, verdict: str, actor: str, note: str, now_ms: int) -> dict[str, Any]:
    """One verdict as a valid feedback event (SchemaError when it is not one)."""
    event = {"kind": "feedback", "event_id": f"console-{uuid.uuid4().hex}", "org_id": org, "ts": now_ms,
             "finding_id": finding_id, "verdict": verdict, "actor_id": actor, "note": note}
    validate_event(event)
    return event


class KafkaSender:
    """Sends feedback events keyed by org and waits until the broker has them (acks=all)."""

    def __init__(self, cfg: Config, timeout: float = 15.0) -> None:
        self._cfg = cfg
        self._timeout = timeout
        self._producer: Any = None

    def __call__(self, events: Sequence[dict[str, Any]]) -> None:
        from kafka.errors import KafkaError

        from pipeline.kafka import producer

        try:
            if self._producer is None:
                self._producer = producer(self._cfg)
            topic = self._cfg.topic("events")
            futures = [self._producer.send(topic, key=e["org_id"].encode(), value=orjson.dumps(e)) for e in events]
            self._producer.flush(self._timeout)
            for f in futures:
                f.get(timeout=self._timeout)
        except KafkaError as exc:
            raise NotSent(f"Kafka ({self._cfg.kafka.url}) did not take the verdicts: {exc}") from exc

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(5)


__all__ = ["KafkaSender", "NotSent", "SchemaError", "Send", "feedback"]
