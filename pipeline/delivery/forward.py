"""Forwarded facts as the records that carry them: one envelope per destination partition.

A batch forwards thousands of facts to other keys (a strike per finding to the member's ladder,
memberships to the user's partition, verdicts): as one record each, the worker spent more on
sending and re-reading them than on the events that caused them. A fact must reach the partition
its key hashes to (where that key's state lives, and where a producer's events with that key go),
in the order the batch made them; so the facts are grouped by that partition, in order, into
batch envelopes (JSON arrays, which the decode step reads as it reads a producer's envelopes),
none over `max_bytes`. The partitioner comes in from the edge (Kafka's murmur2 in the worker).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from schemas.records import event_key
from schemas.rows import json_bytes

Envelope = tuple[int, bytes, bytes]  # partition, key (that of its first fact), value


def envelopes(facts: Iterable[dict[str, Any]], partition_of: Callable[[bytes], int],
              max_bytes: int) -> list[Envelope]:
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for fact in facts:
        key = event_key(fact).encode()
        by_partition.setdefault(partition_of(key), []).append((key, json_bytes(fact)))
    out: list[Envelope] = []
    for partition, items in by_partition.items():
        chunk: list[bytes] = []
        first = b""
        size = 2  # the brackets
        for key, value in items:
            if chunk and size + len(value) + 1 > max_bytes:
                out.append((partition, first, b"[" + b",".join(chunk) + b"]"))
                chunk, size = [], 2
            if not chunk:
                first = key
            chunk.append(value)
            size += len(value) + 1
        out.append((partition, first, b"[" + b",".join(chunk) + b"]"))
    return out
