"""Detector state that rests as JSON bytes: the mapping the worker's engine reads and writes.

Every stored value is an engine envelope (pipeline/engine.py). A key changed since the last
`snapshot` holds its live object; `snapshot` serialises the changed keys (the changelog needs their
JSON anyway). A key that the next batch leaves alone then rests as that JSON, and a read of it
decodes it; a key changed again in the next batch (a busy group: in the alert benchmark every group,
every batch) stays an object, so it is never decoded, only serialised for its changelog.
Python objects cost three to four times their JSON (a flood state of 500 bytes of JSON held 1.8 KB
as lists and ints): with 100,000 active groups the flood state took 903 bytes per group instead of
1,759, index included (bench/bench_flood.py), for one decode per key each time it wakes from rest.

What rests here is a right-sized copy of orjson's result (`schemas.rows.json_bytes` says why).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, MutableMapping
from typing import Any

import orjson

from pipeline.engine import envelope_partition
from schemas.rows import json_bytes as pack

Snapshot = dict[str, tuple[int | None, bytes | None]]  # key → (partition, JSON, or None for deleted)


class PackedStore(MutableMapping[str, Any]):
    # What holds the values: a plain attribute, not a property, because the engine reads and writes
    # every detector's store for every event (a subclass may set it lazily, agents/stores.py).
    _data: MutableMapping[str, Any]

    def __init__(self, data: MutableMapping[str, Any] | None = None) -> None:
        self._data = {} if data is None else data
        self.dirty: dict[str, int | None] = {}  # key → for a deleted key, the partition it had
        self.cooling: dict[str, bytes] = {}  # keys the last snapshot serialised → that JSON

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return orjson.loads(value) if type(value) is bytes else value

    def get(self, key: str, default: Any = None) -> Any:
        # Mapping.get goes through __getitem__ and a KeyError for every new key: twice the calls.
        value = self._data.get(key, default)
        return orjson.loads(value) if type(value) is bytes else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.dirty[key] = None

    def __delitem__(self, key: str) -> None:
        self.dirty[key] = envelope_partition(self[key])
        del self._data[key]
        self.cooling.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data.keys()))

    def __len__(self) -> int:
        return len(self._data)

    def snapshot(self) -> Snapshot:
        """The keys changed since the last snapshot, serialised now. Those the last snapshot
        serialised and nothing changed since rest as that JSON from now on."""
        dirty, self.dirty = self.dirty, {}
        data = self._data
        for key, raw in self.cooling.items():
            if key not in dirty and key in data:
                data[key] = raw
        self.cooling = cooling = {}
        out: Snapshot = {}
        for key, had in dirty.items():
            value = data.get(key)
            if value is None:
                out[key] = (had, None)
                continue
            if type(value) is bytes:
                out[key] = (envelope_partition(orjson.loads(value)), value)
            else:
                cooling[key] = raw = pack(value)
                out[key] = (envelope_partition(value), raw)
        return out

    def pack(self) -> int:
        """Let every value that is not changed since the last snapshot rest as JSON (after a
        changelog was read back, whose values arrive as objects). Returns how many were packed."""
        data = self._data
        live = [k for k, v in data.items() if type(v) is not bytes and k not in self.dirty]
        for key in live:
            raw = self.cooling.pop(key, None)
            data[key] = raw if raw is not None else pack(data[key])
        return len(live)

    def keep_only(self, partitions: Collection[int]) -> int:
        """Forget (locally, nothing recorded) keys of partitions this worker no longer owns."""
        data = self._data
        gone = [k for k in data if (p := envelope_partition(self[k])) is not None and p not in partitions]
        for k in gone:
            del data[k]
            self.dirty.pop(k, None)
            self.cooling.pop(k, None)
        return len(gone)
