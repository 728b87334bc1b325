"""`qunguard demo`: the whole path on the embedded defaults in one command.

Tansu broker when no Kafka is configured, chDB when no ClickHouse is configured, one Faust worker
and one notifier (child processes), a local webhook for the alerts (devtools/receiver.py),
simulated traffic for about half a minute, then a summary of what landed and what the webhook got.
Without a policy of its own the demo routes every finding from medium up to that webhook. chDB (in
.qunguard/chdb, where the embedded default reads, so `audit members` and `report` see the demo's
data after it) is one process at a time, so the notifier keeps its delivery records in a chDB of
its own. With `--console` (`make demo`), Debian's clickhouse-server instead, shared by the worker
and the console that is served at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from pipeline.audit import PROBLEMS, audit_members
from pipeline.config import Channel, Config, ConfigError, config_env
from pipeline.devtools.devservices import Service, start_clickhouse, start_tansu
from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.receiver import Receiver
from pipeline.devtools.simulate import Simulator
from pipeline.kafka import ensure_topics
from pipeline.policy import load_policy
from pipeline.sink import queries
from pipeline.sink.backends import connect
from schemas.rows import TABLES

DEFAULT_CHDB = "chdb:.qunguard/chdb"
DEMO_MARK = ".qunguard-demo"


def run_demo(cfg: Config, seconds: float = 30.0, rate: float = 1500.0, seed: int = 7,
             console: Console | None = None, web: bool = False, onebot: str | None = None) -> dict[str, int]:
    """The demo; with `web`, it then keeps the worker, the notifier and the services running and
    serves the console over the demo's data (on a ClickHouse server: chDB is one process at a time)
    until Ctrl-C."""
    console = console or Console()
    if cfg.policy.file:
        load_policy(cfg.policy.file)  # a bad policy stops here, before the last demo's data is replaced
    home = Path(".qunguard/demo")
    services: list[Service] = []
    worker: subprocess.Popen[bytes] | None = None
    notifier: subprocess.Popen[bytes] | None = None
    receiver = Receiver("demo-secret").start()
    try:
        if not cfg.kafka.url:
            console.print("[dim]no kafka.url configured: starting the embedded Tansu broker[/]")
            tansu = start_tansu(home / "tansu")
            services.append(tansu)
            # Tansu delays a new consumer group by about half its session timeout.
            cfg = cfg.model_copy(update={
                "kafka": cfg.kafka.model_copy(update={"url": tansu.url, "session_timeout_seconds": 6.0})})
        if cfg.clickhouse.url == DEFAULT_CHDB and web:
            console.print("[dim]no clickhouse.url configured: Debian's clickhouse-server, data in "
                          ".qunguard/demo/clickhouse (the console and the worker share it)[/]")
            shutil.rmtree(home / "clickhouse", ignore_errors=True)
            try:
                server = start_clickhouse(home / "clickhouse")
            except RuntimeError as exc:
                raise ConfigError(f"demo --console: {exc}; or set clickhouse.url") from None
            services.append(server)
            cfg = cfg.model_copy(update={"clickhouse": cfg.clickhouse.model_copy(update={"url": server.url})})
        elif cfg.clickhouse.url == DEFAULT_CHDB:
            # Where the embedded default reads, so `qunguard audit members` or `report` afterwards
            # see the demo's data; replaced only if a demo wrote it.
            path = Path(DEFAULT_CHDB[len("chdb:"):])
            if path.exists() and not (path / DEMO_MARK).exists():
                raise ConfigError(f"demo: {path} holds data the demo did not write; move it or set clickhouse.url")
            console.print(f"[dim]no clickhouse.url configured: embedded chDB in {path}[/]")
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            (path / DEMO_MARK).write_text("written by qunguard demo, which replaces it on its next run\n")
        cfg = _with_alerts(cfg, home, receiver)
        ensure_topics(cfg)
        worker = proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"], env=config_env(cfg))
        notifier_cfg = cfg
        if cfg.clickhouse.url.startswith("chdb:"):
            shutil.rmtree(home / "notifier-chdb", ignore_errors=True)
            notifier_cfg = cfg.model_copy(update={"clickhouse": cfg.clickhouse.model_copy(
                update={"url": f"chdb:{home / 'notifier-chdb'}"})})
        notifier = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "notifier"], env=config_env(notifier_cfg))
        n = int(seconds * rate)
        sim = Simulator(orgs=1 if onebot else 3, groups=30 if onebot else 90, members=15, seed=seed)
        if onebot:
            bridge = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "bridge", "onebot", "--org", "org1"],
                                      env=config_env(cfg))
            services.append(Service("bridge", "", bridge, home, {}))
            ends = play_onebot(cfg, sim, n, rate, console, None if onebot == "simulated" else Path(onebot))
        else:
            console.print(f"[bold]simulating[/] {n:,} events over ~{seconds:.0f}s into {cfg.topic('events')}")
            malformed = max(1, n // 1000)
            ends = produce(cfg, sim.records(n, malformed=malformed, envelope=20), rate=rate, total=n + malformed)
        console.print("[dim]waiting for the worker to store everything…[/]")
        if not wait_drained(cfg, ends, timeout=180, alive=lambda: proc.poll() is None):
            raise RuntimeError(f"the worker did not store everything (exit code {proc.poll()})")
        # The member rules, the ladder and the alert stages apply their queued facts at the worker's
        # timer once it has caught up, and what a tick decides (deadlines, sanctions) reaches the next
        # stage through Kafka: wait until the worker forwards and alerts nothing more.
        console.print("[dim]letting the worker's timers run…[/]")
        # Findings made at a tick (deadlines, sanctions) reach their alert stage through Kafka.
        time.sleep(6 * cfg.worker.timer_seconds + 5)  # a big first tick (the escalations) takes seconds
        if web:
            counts = summarize(cfg, console)
            counts["webhook_alerts"] = show_received(receiver, console)
            weekly_reports(cfg, home, console, sim.orgs)
            serve_console(cfg, home, console, sim.orgs)
            return counts
        _stop(worker, "worker", console)
        worker = None
        time.sleep(3)  # the notifier's last deliveries
        _stop(notifier, "notifier", console)
        notifier = None
        counts = summarize(cfg, console)
        counts["webhook_alerts"] = show_received(receiver, console)
        weekly_reports(cfg, home, console, sim.orgs)
        return counts
    finally:
        for p in (worker, notifier):
            if p is not None and p.poll() is None:
                p.kill()
        receiver.close()
        for s in services:
            s.stop()




def play_onebot(cfg: Config, sim: Simulator, n: int, rate: float, console: Console,
                capture: Path | None = None) -> dict[int, int]:
    """The simulator's traffic as a OneBot implementation sends it, over a reverse WebSocket to the
    bridge; the roster and group registrations (no OneBot form) produced directly, as their own
    feeds would be. Reviewers' simulated verdicts are left out: they name findings by the
    simulator's ids, which QQ numbers replace. Returns the events topic's end offsets once the
    bridge has acknowledged everything."""
    import asyncio

    from kafka import KafkaConsumer, TopicPartition

    from pipeline.devtools.devservices import wait_port
    from pipeline.devtools.onebot_traffic import to_onebot, until_stored
    from pipeline.devtools.simulate import Record
    from pipeline.kafka import bootstrap

    frames: list[bytes] = []
    direct: list[Record] = []
    if capture is not None:  # as captured: each line one frame, sent as it is (a bad one is a dead letter)
        frames = [line for line in capture.read_bytes().splitlines() if line.strip()]
    else:
        for kind, item in to_onebot(sim.events(n)):
            if kind == "frame":
                frames.append(orjson.dumps(item))
            elif item["kind"] != "feedback":
                direct.append(Record((item.get("group_id") or item.get("user_id") or "").encode(),
                                     orjson.dumps(item), []))
    host, _, port = cfg.bridge.onebot_listen.rpartition(":")
    console.print(f"[bold]OneBot[/]: {len(frames):,} QQ events over a reverse WebSocket to "
                  f"ws://{host}:{port}/onebot/v11/ws; {len(direct):,} roster and group records produced directly")
    produce(cfg, direct, show_progress=False)
    wait_port(int(port), 30, None, "bridge onebot")

    async def play() -> None:
        from aiohttp import ClientSession

        async with ClientSession() as http:
            ws = await http.ws_connect(f"http://{host}:{port}/onebot/v11/ws", headers={"X-Self-ID": "3889000001"})
            began = time.monotonic()
            for i, f in enumerate(frames):
                await ws.send_bytes(f)
                ahead = i / rate - (time.monotonic() - began) if rate > 0 else 0
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await until_stored(http, f"http://{host}:{port}", len(frames))
            await ws.close()

    asyncio.run(play())
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(cfg.kafka.url))
    try:
        tps = [TopicPartition(cfg.topic("events"), p) for p in range(cfg.kafka.partitions)]
        return {tp.partition: o for tp, o in consumer.end_offsets(tps).items() if o}
    finally:
        consumer.close()

def _stop(proc: subprocess.Popen[bytes], name: str, console: Console) -> None:
    """SIGTERM, as an operator stops it. Everything was stored before (wait_drained), so a process
    that does not end within a minute (measured once in CI, with another suite on both cores) is
    killed rather than failing the demo: a kill loses nothing, its restart reads from the commit."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        console.print(f"[yellow]the {name} did not stop within 60 s of SIGTERM: killed[/]")
        proc.kill()
        proc.wait(30)

def weekly_reports(cfg: Config, home: Path, console: Console, orgs: list[str]) -> list[Path]:
    """`qunguard report` for each org over the week the simulated traffic starts in, as HTML and Excel."""
    from datetime import datetime

    from pipeline.devtools.simulate import START_TS
    from pipeline.report import ORG_TZ, build, write

    year, week, _ = datetime.fromtimestamp(START_TS / 1000, ORG_TZ).isocalendar()
    name = f"{year}-W{week:02d}"
    backend = connect(cfg.clickhouse.url)
    written = []
    try:
        for org in orgs:
            report = build(backend, org, name)
            for suffix in (".html", ".xlsx"):
                out = home / f"report-{org}-{name}{suffix}"
                write(report, out)
                written.append(out)
            console.print(f"weekly report {org} {name}: {report.total} findings that stand → "
                          f"{home / f'report-{org}-{name}'}.html, .xlsx")
    finally:
        backend.close()
    return written


def serve_console(cfg: Config, home: Path, console: Console, orgs: list[str]) -> None:
    """The console over the demo's data, one admin per org with a new password, until Ctrl-C."""
    import secrets

    from pipeline.console.serve import serve
    from pipeline.console.users import Users

    path = home / "console-users.json"
    path.unlink(missing_ok=True)
    users = Users(path)
    t = Table(title="Console users (a new password each demo; `qunguard console-user` manages them)")
    for col in ("org", "name", "password", "role"):
        t.add_column(col)
    for org in orgs:
        password = secrets.token_urlsafe(9)
        users.put(f"{org}-admin", org, "admin", password)
        t.add_row(org, f"{org}-admin", password, "admin")
    console.print(t)
    cfg = cfg.model_copy(update={"console": cfg.console.model_copy(update={"users": str(path)})})
    console.print("[bold]Ctrl-C stops the console, the worker and the services.[/]")
    serve(cfg)


def _with_alerts(cfg: Config, home: Path, receiver: Receiver) -> Config:
    """Alerts to the demo's local webhook: the user's policy if one is configured, else one line."""
    channels = {**cfg.notifier.channels, "demo-webhook": Channel.model_validate(receiver.channel())}
    update: dict[str, object] = {"notifier": cfg.notifier.model_copy(update={"channels": channels})}
    if not cfg.policy.file:
        home.mkdir(parents=True, exist_ok=True)
        policy = home / "policy.yaml"
        policy.write_text("alerts: {to: [demo-webhook]}\n", encoding="utf-8")
        update["policy"] = cfg.policy.model_copy(update={"file": str(policy)})
    return cfg.model_copy(update=update)


def show_received(receiver: Receiver, console: Console) -> int:
    """What the security team's webhook received: per rule, and the first few messages."""
    from collections import Counter

    from pipeline.alerting import render
    from pipeline.alerting.labels import label

    got = [a for _, a in receiver.alerts]
    by_rule = Counter(a["rule"] for a in got)
    _table(console, f"Alerts the local webhook received ({len(got)}, signature checked)",
           ("rule", "alerts", "findings"),
           [(f"{rule} {label(rule)}", n, sum(a["count"] for a in got if a["rule"] == rule))
            for rule, n in sorted(by_rule.items())])
    for a in got[:3]:
        console.print(render.text([a], {}))
    return len(got)


def _table(console: Console, title: str, columns: tuple[str, ...], rows) -> None:
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="right" if i and i < 3 else "left", overflow="fold")
    for row in rows:
        t.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    console.print(t)


def summarize(cfg: Config, console: Console) -> dict[str, int]:
    backend = connect(cfg.clickhouse.url)
    db = backend.database
    counts = {t: int(backend.query(queries.count_rows(db, t))[0][0]) for t in TABLES}
    _table(console, "What landed in ClickHouse", ("table", "rows"), counts.items())
    _table(console, "Events by kind", ("kind", "events"),
           backend.query(queries.events_by_kind(db)))
    rules = backend.query(queries.findings_by_rule(db))
    _table(console, "Findings by rule", ("rule", "findings"), rules or [("(no rule families enabled yet)", 0)])
    _table(console, "Busiest groups", ("group", "messages", "senders", "top tokens"),
           backend.query(queries.busiest_groups(db)))
    _table(console, "Review status (findings_current; reviewers' verdicts are feedback events)",
           ("status", "findings"), backend.query(queries.findings_by_status(db)))
    _table(console, "Latest sanctions proposed to group owners (warn → mute → remove)",
           ("group", "member", "sanction", "strikes"), backend.query(queries.sanctions(db)))
    audits = audit_members(backend)
    _table(console, "Membership audit (qunguard audit members)", ("problem", "people", "groups"),
           [(label, sum(a.count(p) for a in audits), sum(1 for a in audits if a.count(p)))
            for p, label in zip(PROBLEMS, ("departed staff still in groups", "nicknames off the real-name format",
                                           "external members"), strict=True)])
    errors = backend.query(queries.deadletter_reasons(db))
    if errors:
        _table(console, "Dead letters (top reasons)", ("error", "count"), ((e[:90], c) for e, c in errors))
    backend.close()
    return counts
