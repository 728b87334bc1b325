"""Kafka plumbing shared by the CLI commands: bootstrap servers, topics, a producer."""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import Any

from pipeline.config import Config
from pipeline.delivery.settled import Progress

TOPICS = ("events", "findings", "alerts", "deadletter")

logging.getLogger("kafka").setLevel(logging.ERROR)


def bootstrap(url: str) -> list[str]:
    """`kafka://h1:9092,h2:9092` → ['h1:9092', 'h2:9092']."""
    rest = url.split("://", 1)[-1]
    return [h.strip() for h in rest.split(",") if h.strip()]


class KafkaUnreachable(RuntimeError):
    """No broker answered: one line for the operator, no traceback."""


def ensure_topics(cfg: Config, timeout: float = 10.0) -> None:
    """Create the qunguard topics with the configured partition count where they do not exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap(cfg.kafka.url), client_id="qunguard-admin",
                                     bootstrap_timeout_ms=int(timeout * 1000))
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise KafkaUnreachable(f"Kafka ({cfg.kafka.url}): no broker answered within {timeout:.0f} s "
                                       f"({type(exc).__name__}); is kafka.url right and the broker up?") from None
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [cfg.topic(t) for t in TOPICS]
        new = [NewTopic(t, cfg.kafka.partitions, 1) for t in wanted if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


@lru_cache(maxsize=100_000)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, the Java client's and every
    Python client's): where a producer's records with that key go."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def producer(cfg: Config):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap(cfg.kafka.url), acks="all", linger_ms=20,
        batch_size=1 << 20, max_request_size=cfg.kafka.max_message_bytes, retries=10,
    )


def committed_offsets(cfg: Config, group: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    """Where `group` resumes on each partition: its committed offset, or where the log begins when
    nothing was committed (the worker reads from the earliest record). Blocking; kafka-python."""
    from kafka import KafkaConsumer, TopicPartition

    # A consumer with the group's id that never subscribes: it reads the group's offsets without
    # joining the group (KafkaConsumer.committed is the same call in kafka-python 2.x and 3.x).
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(cfg.kafka.url), group_id=group,
                             enable_auto_commit=False, client_id="qunguard-offsets",
                             request_timeout_ms=15_000)
    try:
        out: dict[tuple[str, int], int | None] = {}
        missing = []
        for topic, partition in tps:
            offset = consumer.committed(TopicPartition(topic, partition))
            if offset is not None and offset >= 0:
                out[(topic, partition)] = offset
            else:
                missing.append(TopicPartition(topic, partition))
        if missing:
            for tp, offset in consumer.beginning_offsets(missing).items():
                out[(tp.topic, tp.partition)] = offset
        return out
    finally:
        consumer.close()


class ProgressBoard:
    """Each partition's progress (pipeline/delivery/settled.py) kept in Kafka: the committed offsets
    and metadata of a consumer group of its own that no consumer ever joins, so every worker can
    write its partitions' and read all of them. Blocking (kafka-python); one client, one call at a
    time, from worker threads."""

    def __init__(self, cfg: Config, group: str) -> None:
        self.cfg = cfg
        self.group = group
        self._lock = threading.Lock()
        self._consumer: Any = None
        self._times: dict[tuple[str, int], int] = {}  # the latest event time known per partition

    def _client(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer

            self._consumer = KafkaConsumer(bootstrap_servers=bootstrap(self.cfg.kafka.url), group_id=self.group,
                                           enable_auto_commit=False, client_id="qunguard-progress",
                                           request_timeout_ms=15_000)
        return self._consumer

    def record(self, offsets: dict[tuple[str, int], int], times: dict[tuple[str, int], int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        with self._lock:
            consumer = self._client()
            out = {}
            for tp, offset in offsets.items():
                known = self._times.get(tp)
                if known is None:  # a partition new to this process: what its last owner recorded
                    before = consumer.committed(TopicPartition(*tp), metadata=True, timeout_ms=15_000)
                    known = _event_time(before.metadata) if before is not None else None
                seen = [x for x in (known, times.get(tp)) if x is not None]
                t = max(seen) if seen else None
                if t is not None:
                    self._times[tp] = t
                out[TopicPartition(*tp)] = OffsetAndMetadata(offset, "" if t is None else str(t))
            consumer.commit(out, timeout_ms=15_000)

    def catch_up(self, stored: dict[tuple[str, int], int]) -> None:
        """Move partitions whose board is behind what is stored (a worker killed between its commit
        and its progress record) up to that offset, keeping their event time; never backwards."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        with self._lock:
            consumer = self._client()
            out = {}
            for tp, offset in stored.items():
                got = consumer.committed(TopicPartition(*tp), metadata=True, timeout_ms=15_000)
                if got is not None and 0 <= got.offset < offset:
                    out[TopicPartition(*tp)] = OffsetAndMetadata(offset, got.metadata or "")
            if out:
                consumer.commit(out, timeout_ms=15_000)

    def read(self, topic: str, partitions: list[int]) -> tuple[dict[int, Progress], dict[int, int], dict[int, int]]:
        """(progress, end offsets, beginning offsets) of `topic`'s partitions; the ends read after
        the progress, as settled() needs."""
        from kafka import TopicPartition

        tps = [TopicPartition(topic, p) for p in partitions]
        with self._lock:
            consumer = self._client()
            progress = {}
            for tp in tps:
                got = consumer.committed(tp, metadata=True, timeout_ms=15_000)
                if got is not None and got.offset >= 0:
                    progress[tp.partition] = Progress(got.offset, _event_time(got.metadata))
            ends = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
            starts = {tp.partition: o for tp, o in consumer.beginning_offsets(tps).items()}
        return progress, ends, starts

    def forget(self, tps: list[tuple[str, int]]) -> None:
        """Partitions this process no longer owns: their next owner records from what is stored."""
        with self._lock:
            for tp in tps:
                self._times.pop(tp, None)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


class TickBoard:
    """How far each partition's stages have ticked (pipeline/delivery/settled.py): per stage a
    consumer group no consumer joins, `<prefix>-<stage>`, whose committed offset on each events
    partition is the moment (epoch ms) that stage reached there. The moment is the offset, not
    metadata: Tansu keeps no commit metadata (measured: it answers None). Written and read through
    one admin client, blocking, from worker threads."""

    def __init__(self, cfg: Config, prefix: str, topic: str) -> None:
        self.cfg = cfg
        self.prefix = prefix
        self.topic = topic
        self._lock = threading.Lock()
        self._admin: Any = None

    def _client(self) -> Any:
        if self._admin is None:
            from kafka.admin import KafkaAdminClient

            self._admin = KafkaAdminClient(bootstrap_servers=bootstrap(self.cfg.kafka.url), client_id="qunguard-ticks",
                                           request_timeout_ms=15_000)
        return self._admin

    def record(self, reached: dict[int, dict[str, int]]) -> None:
        from kafka import TopicPartition
        from kafka.errors import NoError
        from kafka.structs import OffsetAndMetadata

        by_stage: dict[str, dict[Any, Any]] = {}
        for p, stages in reached.items():
            for stage, moment in stages.items():
                if moment >= 0:  # an offset cannot be negative; such a stage has not ticked yet
                    by_stage.setdefault(stage, {})[TopicPartition(self.topic, p)] = OffsetAndMetadata(moment, "", -1)
        with self._lock:
            admin = self._client()
            for stage, offsets in by_stage.items():
                failed = {tp.partition: e.__name__ for tp, e in admin.alter_group_offsets(
                    f"{self.prefix}-{stage}", offsets).items() if e is not NoError}
                if failed:
                    raise RuntimeError(f"ticks of {stage} not recorded: {failed}")

    def read(self, partitions: list[int], stages: list[str]) -> dict[int, dict[str, int]]:
        with self._lock:
            got = self._client().list_group_offsets({f"{self.prefix}-{s}": None for s in stages})
        out: dict[int, dict[str, int]] = {p: {} for p in partitions}
        for stage in stages:
            for tp, om in got.get(f"{self.prefix}-{stage}", {}).items():
                if tp.topic == self.topic and tp.partition in out and om.offset >= 0:
                    out[tp.partition][stage] = om.offset
        return out

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None


def _event_time(metadata: str | None) -> int | None:
    try:
        return int(metadata) if metadata else None
    except ValueError:
        return None
