"""`qunguard notifier`: reads `qg.alerts` (its own consumer group, `<app_id>-notifier`; run as many
as there are partitions) and delivers each alert to its channel (channels.py), each channel on its
own task so that a slow or dead one never delays another (outbox.py).

At least once, idempotent by `alert_id`: an offset is committed only once every alert before it
is settled (sent, given up, or a configuration error) and that attempt is stored in ClickHouse
(`alert_deliveries`). After a restart the uncommitted alerts are read again; those ClickHouse holds
as settled are not sent again, so a copy reaches a channel only when the notifier died between the
platform's answer and the write (the copy has the same alert_id). An alert given up is a dead
letter on `qg.deadletter` and in the `deadletter` table, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.alerting.budget import Budget
from pipeline.alerting.channels import Reply, send_http, send_mail
from pipeline.alerting.outbox import Attempt, Outbox, Pending
from pipeline.config import Config, ConfigError
from pipeline.kafka import bootstrap
from pipeline.policy import load_policy
from pipeline.sink import queries
from pipeline.sink.backends import Backend, connect
from pipeline.sink.migrate import migrate
from schemas.rows import DELIVERY_COLUMNS, Source, deadletter_message, deadletter_record, deadletter_row

log = logging.getLogger("qunguard.notifier")

FLUSH_SECONDS = 0.2
NAMES_SECONDS = 60.0
RECENT = 100_000  # alert ids settled by this process, against a copy the worker published twice
STOP_SECONDS = 5.0


class Redact(logging.Filter):
    """Secrets never appear in a log line, whatever logs it (an HTTP client's error with a URL)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg, record.args = self.redact(record.getMessage()), ()
        return True


@dataclass
class Offsets:
    """Per partition: what was read and what is settled; commit up to the first unsettled."""

    read: dict[tuple[str, int], int] = field(default_factory=dict)
    open: dict[tuple[str, int], set[int]] = field(default_factory=dict)

    def add(self, tp: tuple[str, int], offset: int) -> None:
        self.read[tp] = max(self.read.get(tp, -1), offset)
        self.open.setdefault(tp, set()).add(offset)

    def settle(self, tp: tuple[str, int], offset: int) -> None:
        self.open.get(tp, set()).discard(offset)

    def committable(self) -> dict[tuple[str, int], int]:
        return {tp: min(self.open[tp]) if self.open.get(tp) else last + 1 for tp, last in self.read.items()}


class Notifier:
    def __init__(self, cfg: Config, backend: Backend, clock: Any = time.time) -> None:
        self.cfg = cfg
        self.backend = backend
        self.clock = clock
        n = cfg.notifier
        self.channels = n.channels
        self.outboxes = {name: Outbox(name, Budget(*ch.budget), n.retry_seconds) for name, ch in n.channels.items()}
        self.offsets = Offsets()
        self.rows: list[tuple[Any, ...]] = []
        self.dead: list[dict[str, Any]] = []
        self.settled: list[tuple[tuple[str, int], int]] = []
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.names: dict[str, str] = {}
        self.wake = {name: asyncio.Event() for name in n.channels}
        self.reported: set[str] = set()
        self.queued: set[str] = set()  # alert ids in an outbox
        self.stopping = False
        self.attempts: dict[str, int] = {}  # status → attempts, for /metrics

    # --- reading ---------------------------------------------------------------------------

    def admit(self, records: list[tuple[tuple[str, int], int, bytes | None]], delivered: set[str]) -> None:
        """Records from qg.alerts into their channels' outboxes; `delivered`: ids ClickHouse holds
        as settled (a restart's re-read)."""
        now = self.clock()
        for tp, offset, value in records:
            self.offsets.add(tp, offset)
            try:
                alert = orjson.loads(value or b"")
                name = alert["channel"]
                alert_id = alert["alert_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                self._dead_record(tp, offset, value or b"", f"invalid alert: {type(exc).__name__}: {exc}")
                continue
            if alert_id in delivered or alert_id in self.recent or alert_id in self.queued:
                self.settled.append((tp, offset))  # a copy: the first one is settled, or will be
                continue
            self.queued.add(alert_id)
            p = Pending(alert, (tp, offset), now)
            box = self.outboxes.get(name)
            if box is None:
                self._record(Attempt(p, "dead", f"unknown channel {name!r} (not in notifier.channels)", now, ""))
                continue
            for a in box.add(p, now):
                self._record(a)
            self.wake[name].set()

    def _dead_record(self, tp: tuple[str, int], offset: int, raw: bytes, error: str) -> None:
        dl = deadletter_record(raw, error, Source(tp[0], tp[1], offset))
        self.dead.append(dl)
        self.settled.append((tp, offset))

    def _record(self, a: Attempt) -> None:
        alert, p = a.pending.alert, a.pending
        latency = int((a.at - p.read_at) * 1000)
        attempt_id = f"{alert['alert_id']}:{p.attempts}:{int(a.at * 1000)}"
        self.rows.append((attempt_id, alert["alert_id"], alert["channel"], alert["org_id"], p.attempts,
                          int(a.at * 1000), a.status, a.error, latency, a.message_id))
        self.attempts[a.status] = self.attempts.get(a.status, 0) + 1
        if a.status == "config_error" and alert["channel"] not in self.reported:
            self.reported.add(alert["channel"])
            log.error("channel %s: %s; its alerts are dead letters until the configuration is fixed",
                      alert["channel"], a.error)
        if a.final:
            if a.status != "sent":
                tp, offset = p.ref
                dl = deadletter_record(orjson.dumps(alert), a.error, Source(tp[0], tp[1], offset))
                self.dead.append(dl)
            self.recent[alert["alert_id"]] = None
            self.queued.discard(alert["alert_id"])
            while len(self.recent) > RECENT:
                self.recent.popitem(last=False)
            self.settled.append(p.ref)

    # --- sending ---------------------------------------------------------------------------

    async def channel_loop(self, name: str, session: Any) -> None:
        box, ch, wake = self.outboxes[name], self.channels[name], self.wake[name]
        n = self.cfg.notifier
        while not self.stopping:
            wait = box.ready_in(self.clock())
            if wait is None or wait > 0:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=wait if wait is not None else 1.0)
                except TimeoutError:
                    pass
                continue
            batch = box.take(self.clock())
            alerts = [p.alert for p in batch]
            try:
                if ch.type == "smtp":
                    reply = await asyncio.to_thread(send_mail, ch, alerts, self.names, n.base_url, n.timeout_seconds)
                else:
                    reply = await send_http(session, ch, alerts, self.names, n.base_url, n.timeout_seconds)
            except Exception as exc:  # noqa: BLE001 -- e.g. an alert that cannot be rendered: not this channel's end
                log.exception("channel %s: could not send %d alerts", name, len(batch))
                reply = Reply("failed", f"{type(exc).__name__} while sending")
            for a in box.settle(batch, reply, self.clock()):
                self._record(a)
            if reply.outcome in ("too_fast", "down"):
                log.warning("channel %s: %s; %d alerts wait", name, reply.error or reply.outcome, len(box.queue))

    # --- storing and committing ------------------------------------------------------------

    def take_settled(self) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]], list[tuple[tuple[str, int], int]]]:
        rows, dead, settled = self.rows, self.dead, self.settled
        self.rows, self.dead, self.settled = [], [], []
        return rows, dead, settled

    def store(self, rows: list[tuple[Any, ...]], dead: list[dict[str, Any]]) -> None:
        """Blocking: the attempts and dead letters into ClickHouse."""
        if rows:
            self.backend.insert("alert_deliveries", DELIVERY_COLUMNS, rows)
        if dead:
            from schemas.rows import DEADLETTER_COLUMNS

            self.backend.insert("deadletter", DEADLETTER_COLUMNS, [deadletter_row(d) for d in dead])

    def delivered(self, alert_ids: list[str]) -> set[str]:
        if not alert_ids:
            return set()
        found: set[str] = set()
        for i in range(0, len(alert_ids), 2000):
            sql = queries.alerts_settled(self.backend.database, alert_ids[i:i + 2000])
            found.update(r[0] for r in self.backend.query(sql))
        return found

    def refresh_names(self) -> None:
        try:
            self.names = dict(self.backend.query(queries.group_names(self.backend.database)))
        except Exception as exc:  # noqa: BLE001 -- the names are a nicety: keep the ones known
            log.warning("group names not refreshed: %s", type(exc).__name__)


def check(cfg: Config) -> None:
    """Bad routing stops start-up with one line naming the key (a route naming no channel)."""
    load_policy(cfg.policy.file).check_channels(cfg.notifier.channels)


async def _run(cfg: Config) -> int:
    import aiohttp
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    notifier = Notifier(cfg, backend)
    secrets = [s for ch in cfg.notifier.channels.values() for s in ch.secrets()]
    redact = Redact(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    consumer = KafkaConsumer(cfg.topic("alerts"), bootstrap_servers=bootstrap(cfg.kafka.url),
                             group_id=f"{cfg.worker.app_id}-notifier", enable_auto_commit=False,
                             auto_offset_reset="earliest", client_id="qunguard-notifier",
                             max_partition_fetch_bytes=cfg.kafka.max_message_bytes * 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap(cfg.kafka.url), acks="all",
                             max_request_size=cfg.kafka.max_message_bytes)
    kafka = asyncio.Lock()  # the consumer is used by one call at a time
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(notifier.refresh_names)
    runner = None
    if cfg.notifier.metrics_listen:
        from pipeline.metrics import counts_renderer, serve

        render = counts_renderer("qunguard_notifier", lambda: {
            "attempts": dict(notifier.attempts), "queued": len(notifier.queued)}, gauges=("queued",))
        runner = await serve(cfg.notifier.metrics_listen, render, lambda: (not stop.is_set(), {
            "channels": sorted(notifier.outboxes), "queued": len(notifier.queued),
            "misconfigured": sorted(notifier.reported)}), "notifier")

    async def read() -> None:
        while not stop.is_set():
            try:
                async with kafka:
                    polled = await asyncio.to_thread(consumer.poll, 200, 500)
            except Exception as exc:  # noqa: BLE001 -- the broker away: try again
                log.warning("reading %s failed (%s); retrying", cfg.topic("alerts"), type(exc).__name__)
                await asyncio.sleep(2)
                continue
            records = [((tp.topic, tp.partition), m.offset, m.value) for tp, ms in polled.items() for m in ms]
            if not records:
                continue
            ids = []
            for _, _, v in records:
                try:
                    ids.append(orjson.loads(v)["alert_id"])
                except Exception:  # noqa: BLE001,S112 -- a bad record is a dead letter in admit
                    continue
            while True:
                try:
                    delivered = await asyncio.to_thread(notifier.delivered, ids)
                    break
                except Exception as exc:  # noqa: BLE001 -- ClickHouse away: nothing is sent unchecked
                    log.warning("cannot ask ClickHouse what was delivered (%s); waiting", type(exc).__name__)
                    await asyncio.sleep(2)
            notifier.admit(records, delivered)

    async def settle() -> None:
        last_names = time.monotonic()
        while True:
            rows, dead, settled = notifier.take_settled()
            if rows or dead:
                while True:
                    try:
                        await asyncio.to_thread(notifier.store, rows, dead)
                        break
                    except Exception as exc:  # noqa: BLE001 -- ClickHouse away: keep them, commit nothing
                        log.warning("ClickHouse unavailable for delivery records (%s); retrying", type(exc).__name__)
                        await asyncio.sleep(2)
                while True:
                    try:
                        for d in dead:
                            producer.send(cfg.topic("deadletter"), key=d["dl_id"].encode(),
                                          value=orjson.dumps(deadletter_message(d)))
                        await asyncio.to_thread(producer.flush)
                        break
                    except Exception as exc:  # noqa: BLE001 -- the broker away: nothing is committed until sent
                        log.warning("dead letters not published (%s); retrying", type(exc).__name__)
                        await asyncio.sleep(2)
            for tp, offset in settled:
                notifier.offsets.settle(tp, offset)
            if settled:
                try:
                    async with kafka:
                        # only what this notifier still owns: a revoked partition's new owner re-reads it
                        owned = consumer.assignment()
                        commit = {TopicPartition(*tp): OffsetAndMetadata(o, "")
                                  for tp, o in notifier.offsets.committable().items() if TopicPartition(*tp) in owned}
                        if commit:
                            await asyncio.to_thread(consumer.commit, commit)
                except Exception as exc:  # noqa: BLE001 -- a rebalance: the new owner re-reads, CH dedupes
                    log.warning("commit failed (%s); those alerts are read again", type(exc).__name__)
            if stop.is_set() and notifier.stopping:
                return
            if time.monotonic() - last_names > NAMES_SECONDS:
                last_names = time.monotonic()
                await asyncio.to_thread(notifier.refresh_names)
            await asyncio.sleep(FLUSH_SECONDS)

    async with aiohttp.ClientSession() as session:
        senders = [asyncio.ensure_future(notifier.channel_loop(name, session)) for name in notifier.outboxes]
        reader = asyncio.ensure_future(read())
        settler = asyncio.ensure_future(settle())
        print(f"qunguard notifier: {len(notifier.outboxes)} channels, reading {cfg.topic('alerts')}", flush=True)
        await stop.wait()
        await asyncio.wait([reader], timeout=2.0)
        # what is being sent finishes (a few seconds at most); the rest is read again at the next start
        await asyncio.sleep(min(STOP_SECONDS, cfg.notifier.timeout_seconds) if any(
            b.queue for b in notifier.outboxes.values()) else 0)
        notifier.stopping = True
        for e in notifier.wake.values():
            e.set()
        await asyncio.wait(senders, timeout=STOP_SECONDS)
        await asyncio.wait_for(settler, timeout=STOP_SECONDS + 10)
    if runner is not None:
        await runner.cleanup()
    consumer.close()
    producer.close()
    backend.close()
    return 0


def run(cfg: Config) -> int:
    if not cfg.kafka.url:
        raise ConfigError("config: kafka.url: required for the notifier (set QG_KAFKA_URL)")
    if not cfg.notifier.channels:
        raise ConfigError("config: notifier.channels: no channel configured; alerts have nowhere to go")
    check(cfg)
    logging.basicConfig(level=cfg.worker.log_level.upper(), format="[%(asctime)s] [%(levelname)s] %(message)s")
    return asyncio.run(_run(cfg))
