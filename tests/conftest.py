"""Real services for the suite: Debian's clickhouse-server, Apache Kafka from Maven jars, Tansu.

Each is started once per session on free loopback ports with data under pytest's temp dir; tests
isolate themselves with their own database, topic prefix and consumer group.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.config import Config, config_env, load_config
from pipeline.devtools import devservices
from pipeline.sink.backends import connect

ROOT = Path(__file__).resolve().parents[1]
_ids = itertools.count(1)

# Figures tests measure and the run prints at its end (pytest captures what tests print).
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("measured")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory) -> Iterator[devservices.Service]:
    svc = devservices.start_clickhouse(tmp_path_factory.mktemp("clickhouse"))
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory) -> Iterator[devservices.Service]:
    svc = devservices.start_kafka(tmp_path_factory.mktemp("kafka"))
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def tansu(tmp_path_factory) -> Iterator[devservices.Service]:
    svc = devservices.start_tansu(tmp_path_factory.mktemp("tansu"))
    yield svc
    svc.stop()


def unique(name: str) -> str:
    return f"{name}{os.getpid()}x{next(_ids)}"


def make_config(tmp_path: Path, kafka_url: str = "", clickhouse_url: str = "", **sections: dict) -> Config:
    """A config isolated from every other test: own database, topics, consumer group and data dir."""
    name = unique("t")
    env = {
        "QG_KAFKA_URL": kafka_url,
        "QG_KAFKA_TOPIC_PREFIX": f"{name}.",
        "QG_KAFKA_PARTITIONS": "4",
        "QG_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "QG_WORKER_APP_ID": f"qg-{name}",
        "QG_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "QG_WORKER_LOG_LEVEL": "info",
    }
    if clickhouse_url:  # else the default (chDB); a test without ClickHouse never opens it
        env["QG_CLICKHOUSE_URL"] = clickhouse_url
    for section, values in sections.items():
        for key, value in values.items():
            env[f"QG_{section.upper()}_{key.upper()}"] = str(value)
    return load_config(env=env)


def server_url(clickhouse: devservices.Service, database: str) -> str:
    return clickhouse.url.rsplit("/", 1)[0] + "/" + database


class Worker:
    """`qunguard worker` (or another long-running command) as a child process, the way operators run it."""

    def __init__(self, cfg: Config, log: Path, command: str | list[str] = "worker") -> None:
        self.log = log
        args = [command] if isinstance(command, str) else command
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args], env=config_env(cfg), cwd=ROOT,
            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        devservices.stop_process(self.proc, timeout=30)


@pytest.fixture
def workers(tmp_path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.kill()


async def onebot_actions(ws, seconds: float, idle: float) -> AsyncIterator[dict | None]:
    """The actions a bridge sends the bot's implementation over its WebSocket `ws`, and None after
    each `idle` seconds without one; until `seconds` have passed or the socket closes."""
    from aiohttp import WSMsgType

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            msg = await ws.receive(timeout=idle)
        except TimeoutError:
            yield None
            continue
        if msg.type != WSMsgType.TEXT:
            return
        yield orjson.loads(msg.data)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def query(cfg: Config, sql: str) -> list[tuple]:
    """Rows of `sql` ({db} is the test's database), on a connection of its own."""
    backend = connect(cfg.clickhouse.url)
    try:
        return backend.query(sql.format(db=backend.database))
    finally:
        backend.close()


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """A /metrics page read as Prometheus reads it: sample name → sorted labels → value ({} if down)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, {})
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def count(cfg: Config, sql: str) -> int:
    return int(query(cfg, sql)[0][0])


# Test tiers (markers registered in pyproject.toml; `make test-unit`, `make check`, …). Each test gets
# one, from where it lives and the services it asks for, first match wins: tests/faults/ → faults; the
# kafka, tansu or workers fixtures → e2e; clickhouse → integration; otherwise unit. Two cases the
# fixtures miss: a test marked `slow` (it runs a whole pipeline itself, e.g. `qunguard demo`) is e2e,
# and a test that starts a service itself (devservices.start_*) takes that service's tier.
_E2E_FIXTURES = frozenset({"kafka", "tansu", "workers"})
_STARTERS = {"start_kafka": "e2e", "start_tansu": "e2e", "start_clickhouse": "integration"}


def _tier(item: pytest.Item, faults_dir: Path) -> str:
    fixtures = set(getattr(item, "fixturenames", ()))
    code = getattr(getattr(item, "function", None), "__code__", None)
    started = {tier for name, tier in _STARTERS.items() if code is not None and name in code.co_names}
    if faults_dir in Path(str(item.path)).resolve().parents:
        return "faults"
    if fixtures & _E2E_FIXTURES or item.get_closest_marker("slow") or "e2e" in started:
        return "e2e"
    if "clickhouse" in fixtures or "integration" in started:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    faults_dir = Path(__file__).resolve().parent / "faults"
    for item in items:
        item.add_marker(getattr(pytest.mark, _tier(item, faults_dir)))
