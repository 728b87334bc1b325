"""Detector state in Faust tables: one changelog-backed table per stateful detector, keyed as the
detector keys its state (group; group and sender; org and user).

`TableStore` is the mapping the Engine sees. It reads and writes the table's local store directly
and sends the changelog itself, for three reasons:
- Faust picks a changelog partition from "the current event", which a batch taken with
  `noack_take` does not have per record. Here the partition is the one the key's events come
  from (`at` in the Engine's envelope), so after a rebalance the new owner of that partition
  recovers exactly the groups it now receives.
- Changes are serialised when a batch has been detected (`snapshot`) and sent only once that
  batch's rows are stored (`save`): the changelog must never run ahead of ClickHouse, and the live
  objects move on with the next batch meanwhile.
- One changelog record per key per batch, not per event.
This module does not import Faust: it is handed the table (agents/app.py is the Faust module).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator, MutableMapping
from typing import Any

import orjson

from pipeline.engine import envelope_partition

Send = Callable[[str, bytes, bytes | None, int | None], Awaitable[None]]  # topic, key, value, partition


class TableStore(MutableMapping[str, Any]):
    def __init__(self, table: Any) -> None:
        self.table = table
        self.dirty: dict[str, int | None] = {}  # key → for a deleted key, the partition it had

    @property
    def _data(self) -> MutableMapping[str, Any]:
        return self.table.data  # the local store, without Faust's per-access hooks

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.dirty[key] = None

    def __delitem__(self, key: str) -> None:
        self.dirty[key] = envelope_partition(self._data.pop(key))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data.keys()))

    def __len__(self) -> int:
        return len(self._data)

    def snapshot(self) -> dict[str, tuple[int | None, bytes | None]]:
        """The keys changed since the last snapshot, serialised now: key → (partition, JSON or None)."""
        dirty, self.dirty = self.dirty, {}
        data = self._data
        out: dict[str, tuple[int | None, bytes | None]] = {}
        for key, had in dirty.items():
            value = data.get(key)
            out[key] = (had, None) if value is None else (envelope_partition(value), orjson.dumps(value))
        return out

    async def save(self, keys: dict[str, tuple[int | None, bytes | None]], send: Send) -> None:
        """Send one changelog record per key (a deleted key: a tombstone to the partition it had)
        through `send(topic, key, value, partition)`, which hands it to the producer.

        Straight to the producer, not through Faust's `send_soon` buffer: when that buffer runs
        over, Faust throttles the consumer, and under load we saw records delivered twice and offset
        commits stall (a duplicate in the consumer's acked list) — measured in tests/test_e2e.py."""
        topic = self.table.changelog_topic
        name = topic.get_topic_name()
        for key, (partition, value) in keys.items():
            # the key as Faust writes it (its tables' changelog keys are JSON: "g1\u001fu1"),
            # so that recovery reads it and compaction meets the records of earlier releases
            raw, _ = topic.prepare_key(key, None)
            await send(name, raw, value, partition)

    def keep_only(self, partitions: Collection[int]) -> int:
        """Forget (locally, no changelog) keys of partitions this worker no longer owns."""
        gone = [k for k, v in self._data.items() if (p := envelope_partition(v)) is not None and p not in partitions]
        for k in gone:
            del self._data[k]
            self.dirty.pop(k, None)
        return len(gone)


def create_stores(app: Any, names: Collection[str], partitions: int) -> dict[str, TableStore]:
    return {
        name: TableStore(app.Table(f"state-{name}", partitions=partitions,
                                   help=f"state of the {name} detector"))
        for name in names
    }
