"""What every bridge does once a payload is mapped: batch envelopes keyed by group into qg.events,
acknowledged by Kafka before the bridge answers or moves its cursor; a payload it cannot map goes
the same way as a `bridge_error` record, which the worker turns into a dead letter with the
bridge's reason (pipeline/ingest.py), so it reaches the `deadletter` table like any bad input."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.config import Config, ConfigError
from pipeline.ingest import BRIDGE_ERROR
from pipeline.kafka import producer

log = logging.getLogger("qunguard.bridge")


def need_org(cfg: Config, what: str) -> None:
    if not cfg.bridge.org_id:
        raise ConfigError(f"config: bridge.org_id: the bridge needs the organisation whose {what} it carries "
                          "(QG_BRIDGE_ORG_ID or --org)")


def error_record(source: str, reason: str, payload: Any, org_id: str) -> dict[str, Any]:
    """The record a bridge sends for a payload it cannot map (bytes that are not JSON as text)."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "backslashreplace")
    digest = hashlib.blake2b(orjson.dumps(payload, default=str) + reason.encode(), digest_size=10).hexdigest()
    return {"kind": BRIDGE_ERROR, "event_id": f"{source}:err:{digest}", "org_id": org_id or "-",
            "ts": int(time.time() * 1000), "source": source, "error": reason, "payload": payload}


def envelopes(events: Iterable[dict[str, Any]], size: int) -> list[tuple[bytes, bytes]]:
    """(key, value) records: each a JSON array of up to `size` events of one group, in order."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        key = ev.get("group_id") or ev.get("user_id") or f"bridge:{ev.get('source', '')}"
        by_key.setdefault(str(key), []).append(ev)
    out = []
    for key, evs in by_key.items():
        for i in range(0, len(evs), size):
            out.append((key.encode(), orjson.dumps(evs[i:i + size])))
    return out


class Sender:
    """Blocking: sends records and waits for Kafka's acknowledgement of every one."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topic = cfg.topic("events")
        self._producer = producer(cfg)
        self.sent = 0

    def send(self, events: list[dict[str, Any]]) -> None:
        records = envelopes(events, self.cfg.bridge.envelope)
        futures = [self._producer.send(self.topic, key=k, value=v) for k, v in records]
        self._producer.flush()
        for f in futures:
            f.get(timeout=60)  # raises if Kafka refused it: the caller does not acknowledge
        self.sent += len(events)

    def close(self) -> None:
        self._producer.close()


@dataclass
class _Waiting:
    events: list[dict[str, Any]]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """Async: events from many requests and frames share envelopes for `linger_ms`; each `put`
    returns once its events are acknowledged (or raises what Kafka said)."""

    def __init__(self, sender: Sender, linger_ms: int) -> None:
        self.sender = sender
        self.linger = linger_ms / 1000
        self._queue: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def put(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        w = _Waiting(events)
        self._queue.append(w)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        await w.done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.linger)
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            self._busy = True
            try:
                await asyncio.to_thread(self.sender.send, [e for w in batch for e in w.events])
            except Exception as exc:  # noqa: BLE001 -- each waiter hears it and answers its sender
                log.warning("not acknowledged by Kafka: %s: %s", type(exc).__name__, exc)
                for w in batch:
                    if not w.done.done():
                        w.done.set_exception(exc)
                continue
            finally:
                self._busy = False
            for w in batch:
                if not w.done.done():
                    w.done.set_result(None)

    async def drain(self) -> None:
        """Until everything put so far is sent (a shutdown)."""
        while self._queue or self._busy:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.to_thread(self.sender.close)
