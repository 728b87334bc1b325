"""Forwarded facts travel as one envelope per destination partition (pipeline/delivery/forward.py)."""

from aiokafka.partitioner import DefaultPartitioner
from kafka.partitioner import DefaultPartitioner as KafkaPythonPartitioner

from pipeline.delivery.forward import envelopes
from pipeline.ingest import decode_record
from pipeline.kafka import key_partition
from pipeline.review.ladder import strike_fact
from schemas.records import event_key, make_finding, validate_event
from schemas.rows import Source

PARTS = 8


def _facts(n: int) -> list[dict]:
    return [strike_fact(make_finding("flood.rate", "medium", "o1", f"g{i % 5}", f"m{i}", f"u{i % 37}",
                                     1_790_000_000_000 + i, {"count": i}))
            for i in range(n)]


class _Cluster:  # the metadata kafka-python's partitioner reads
    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return set(range(PARTS))

    available_partitions_for_topic = partitions_for_topic


def test_a_key_goes_where_every_kafka_client_sends_it():
    parts = list(range(PARTS))
    for i in range(500):
        key = f"o1\x1fg{i}\x1fu{i * 7}".encode()
        assert key_partition(key, PARTS) == DefaultPartitioner()(key, parts, parts)  # Faust's aiokafka
        assert key_partition(key, PARTS) == KafkaPythonPartitioner().partition("t", None, key, None, None, _Cluster())


def test_facts_reach_their_keys_partition_in_order_in_envelopes_under_the_limit():
    facts = _facts(400)
    limit = 3_000
    out = envelopes(facts, lambda key: key_partition(key, PARTS), limit)
    assert len(out) < len(facts) / 5  # the point: far fewer records than facts
    seen: dict[int, list[dict]] = {}
    for i, (partition, key, value) in enumerate(out):
        assert len(value) <= limit
        assert key_partition(key, PARTS) == partition
        decoded = decode_record(value, Source("events", partition, i, 0), 100_000, internal=True)
        assert not decoded.dead
        for event, _ in decoded.events:
            assert key_partition(event_key(event).encode(), PARTS) == partition
            seen.setdefault(partition, []).append(event)
    for partition, events in seen.items():
        want = [validate_event(f) for f in facts if key_partition(event_key(f).encode(), PARTS) == partition]
        assert events == want  # each once, in the order the batch made them
    assert sum(len(v) for v in seen.values()) == len(facts)


def test_a_fact_bigger_than_the_limit_still_goes_alone():
    facts = _facts(3)
    out = envelopes(facts, lambda key: 0, 10)
    assert len(out) == 3 and all(v.count(b'"kind":"strike"') == 1 for _, _, v in out)
    assert envelopes([], lambda key: 0, 10) == []
