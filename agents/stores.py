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
- Between batches a value rests as the JSON its changelog record was made of (pipeline/packed_store.py).
This module does not import Faust: it is handed the table (agents/app.py is the Faust module).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pipeline.packed_store import PackedStore, Snapshot

Outgoing = tuple[bytes, bytes | None, int | None]  # key, value (None: a tombstone), partition (None: by key)


class TableStore(PackedStore):
    """A `PackedStore` over the table's local store: values rest as JSON between batches."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        del self._data  # found on first use, below
        self.table = table

    def __getattr__(self, name: str) -> Any:
        """`_data`, on first use (the table makes its store lazily): the local store without Faust's
        per-access hooks; for the in-memory store, the dict inside it (Faust's memory store only
        clears and updates that dict, never replaces it), which saves two Python calls per read."""
        if name != "_data":
            raise AttributeError(name)
        store = self.table.data
        inner = getattr(store, "data", None)
        self._data = inner if type(inner) is dict else store
        return self._data

    def changelog(self, keys: Snapshot) -> tuple[str, list[Outgoing]]:
        """The changelog topic and one record per key: (key, value, partition); a deleted key is a
        tombstone to the partition it had. The caller hands them to the producer itself
        (agents/app.py), not through Faust's `send_soon` buffer: when that buffer runs over, Faust
        throttles the consumer, and under load we saw records delivered twice and offset commits
        stall (a duplicate in the consumer's acked list) — measured in tests/test_e2e.py."""
        topic = self.table.changelog_topic
        prepare = topic.prepare_key
        # the key as Faust writes it (its tables' changelog keys are JSON: "g1\u001fu1"), so that
        # recovery reads it and compaction meets the records of earlier releases
        return topic.get_topic_name(), [(prepare(key, None)[0], value, partition)
                                        for key, (partition, value) in keys.items()]


def create_stores(app: Any, names: Collection[str], partitions: int) -> dict[str, TableStore]:
    return {
        name: TableStore(app.Table(f"state-{name}", partitions=partitions,
                                   help=f"state of the {name} detector"))
        for name in names
    }
