"""`qunguard console`: the web console served by waitress, and `qunguard console-user`."""

from __future__ import annotations

import getpass
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError
from pipeline.console.users import ROLES, Users


class KafkaLag:
    """The worker group's lag on the events topic, per partition, asked at most every `every` s
    (a page view never waits on Kafka more than once in that time)."""

    def __init__(self, cfg: Config, every: float = 15.0) -> None:
        self._cfg = cfg
        self._every = every
        self._lock = threading.Lock()
        self._at = 0.0
        self._last: dict[str, Any] = {}

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._at > self._every:
                self._last = self._read()
                self._at = time.monotonic()
            return self._last

    def _read(self) -> dict[str, Any]:
        from kafka import KafkaConsumer, TopicPartition

        from pipeline.kafka import bootstrap

        try:
            consumer = KafkaConsumer(bootstrap_servers=bootstrap(self._cfg.kafka.url),
                                     group_id=self._cfg.worker.app_id, enable_auto_commit=False,
                                     request_timeout_ms=5000, bootstrap_timeout_ms=3000)
        except Exception as exc:  # unreachable, refused: the page says so instead of failing
            return {"error": f"Kafka ({self._cfg.kafka.url}) unreachable: {exc}"}
        try:
            topic = self._cfg.topic("events")
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            ends = consumer.end_offsets(tps)
            rows = []
            for tp in tps:
                committed = consumer.committed(tp) or 0
                rows.append({"topic": tp.topic, "partition": tp.partition, "committed": committed,
                             "end": ends[tp], "lag": max(0, ends[tp] - committed)})
            return {"partitions": rows, "lag": sum(r["lag"] for r in rows)}
        except Exception as exc:
            return {"error": f"Kafka ({self._cfg.kafka.url}): {exc}"}
        finally:
            consumer.close()


def users_of(cfg: Config) -> Users:
    return Users(Path(cfg.console.users))


def serve(cfg: Config, listen: str | None = None) -> int:
    from waitress import create_server

    from pipeline.console.app import create_app
    from pipeline.console.verdicts import KafkaSender
    from pipeline.sink.backends import connect
    from pipeline.sink.migrate import migrate

    if not cfg.kafka.url:
        raise ConfigError("config: kafka.url: the console sends verdicts to Kafka; set kafka.url")
    users = users_of(cfg)
    if not users.of_any():
        raise ConfigError(f"console.users: {cfg.console.users} has no users yet: add one with "
                          "`qunguard console-user add NAME --org ORG --role admin`")
    host, _, port = (listen or cfg.console.listen).rpartition(":")
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    sender = KafkaSender(cfg)
    app = create_app(backend, users, sender, tz=cfg.console.timezone, health=KafkaLag(cfg),
                     session_hours=cfg.console.session_hours)
    server = create_server(app, host=host, port=int(port), threads=8)
    print(f"qunguard console on http://{host}:{server.effective_port}/ (users: {cfg.console.users})", flush=True)
    if cfg.console.metrics_listen:  # apart from the pages: Prometheus scrapes it, staff never see it
        from prometheus_client import start_http_server

        from pipeline.metrics import counts_registry

        counts = app.extensions["qunguard_counts"]
        registry = counts_registry("qunguard_console", lambda: counts)
        m_host, _, m_port = cfg.console.metrics_listen.rpartition(":")
        try:
            start_http_server(int(m_port), addr=m_host, registry=registry)
        except OSError as exc:
            print(f"qunguard console: metrics not served on {cfg.console.metrics_listen} ({exc.strerror})",
                  file=sys.stderr, flush=True)

    def _stop(*_: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM ends the console as Ctrl-C does: what it started is stopped

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        sender.close()
        backend.close()
    return 0


def manage_users(cfg: Config, action: str, name: str | None, org: str | None, role: str,
                 password_stdin: bool) -> int:
    users = users_of(cfg)
    if action == "list":
        for u in users.all():
            print(f"{u.name}\t{u.org}\t{u.role}")
        return 0
    if not name:
        raise ConfigError(f"console-user {action}: a NAME is needed")
    if action == "remove":
        if not users.remove(name):
            raise ConfigError(f"console-user remove: no user {name!r}")
        print(f"removed {name}")
        return 0
    old = users.get(name)
    org = org or (old.org if old else None)
    if not org:
        raise ConfigError(f"console-user add: {name} is new: --org is needed")
    if role not in ROLES:
        raise ConfigError(f"console-user --role: {role!r} is not one of {', '.join(ROLES)}")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {name}: ")
        if password != getpass.getpass("again: "):
            raise ConfigError("console-user add: the two passwords differ")
    users.put(name, org, role, password)
    print(f"{name}: {role} of {org} (in {cfg.console.users})")
    return 0
