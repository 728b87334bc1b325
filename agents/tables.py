"""Detector state in Faust tables: one changelog-backed table per stateful detector, keyed as the
detector keys its state (group; group and sender).

`TableStore` is the mapping the Engine sees. It reads and writes the table's local store directly
and sends the changelog itself, for two reasons:
- Faust picks a changelog partition from "the current event", which a batch taken with
  `noack_take` does not have per record. Here the partition is the one the key's events come
  from (`at` in the Engine's envelope), so after a rebalance the new owner of that partition
  recovers exactly the groups it now receives.
- Writes are buffered per batch and sent once per key (`flush`), before the batch's offsets are
  committed: a batch of 100 events of one group costs one changelog record, not 100.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, MutableMapping
from typing import Any

import faust


class TableStore(MutableMapping[str, Any]):
    def __init__(self, table: faust.Table) -> None:
        self.table = table
        self.dirty: dict[str, tuple[int | None, Any]] = {}

    @property
    def _data(self) -> MutableMapping[str, Any]:
        return self.table.data  # the local store, without Faust's per-access hooks

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.dirty[key] = (_partition(value), value)

    def __delitem__(self, key: str) -> None:
        old = self._data[key]
        del self._data[key]
        self.dirty[key] = (_partition(old), None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data.keys()))

    def __len__(self) -> int:
        return len(self._data)

    async def flush(self) -> int:
        """Send one changelog record per key changed since the last flush.

        Sent straight to the producer, not through Faust's `send_soon` buffer: when that buffer runs
        over, Faust throttles the consumer, and under load we saw records delivered twice and offset
        commits stall (a duplicate in the consumer's acked list) — measured in tests/test_e2e.py."""
        dirty, self.dirty = self.dirty, {}
        topic = self.table.changelog_topic
        for key, (partition, value) in dirty.items():
            await topic.send(key=key, value=value, partition=partition,
                             value_serializer="raw" if value is None else None)
        return len(dirty)

    def keep_only(self, partitions: Collection[int]) -> int:
        """Forget (locally, no changelog) keys of partitions this worker no longer owns."""
        gone = [k for k, v in self._data.items() if (p := _partition(v)) is not None and p not in partitions]
        for k in gone:
            del self._data[k]
            self.dirty.pop(k, None)
        return len(gone)


def _partition(envelope: Any) -> int | None:
    at = envelope.get("at") if isinstance(envelope, dict) else None
    return at[0] if at else None


def create_stores(app: faust.App, names: Collection[str], partitions: int) -> dict[str, TableStore]:
    return {
        name: TableStore(app.Table(f"state-{name}", partitions=partitions,
                                   help=f"state of the {name} detector"))
        for name in names
    }
