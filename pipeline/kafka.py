"""Kafka plumbing shared by the CLI commands: bootstrap servers, topics, a producer."""

from __future__ import annotations

import logging
import time

from pipeline.config import Config

TOPICS = ("events", "findings", "alerts", "deadletter")

logging.getLogger("kafka").setLevel(logging.ERROR)


def bootstrap(url: str) -> list[str]:
    """`kafka://h1:9092,h2:9092` → ['h1:9092', 'h2:9092']."""
    rest = url.split("://", 1)[-1]
    return [h.strip() for h in rest.split(",") if h.strip()]


def ensure_topics(cfg: Config, timeout: float = 30.0) -> None:
    """Create the qunguard topics with the configured partition count where they do not exist."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap(cfg.kafka.url), client_id="qunguard-admin")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
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
