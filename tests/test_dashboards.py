"""The Grafana dashboard (deploy/grafana/dashboards/overview.json): every panel's query, with the
ClickHouse data source's macros expanded as the plugin expands them (grafana/clickhouse-datasource,
pkg/macros) and the dashboard's variables filled in, run against the ClickHouse server over a time
range where the simulated traffic has data; the figures are the same as ClickHouse's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.devtools.simulate import START_TS, Simulator
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import server_url, unique
from tests.stored import store

DASHBOARD = Path(__file__).parents[1] / "deploy" / "grafana" / "dashboards" / "overview.json"
FROM, TO = START_TS - 86_400_000, START_TS + 14 * 86_400_000  # the dashboard's time picker, ms


def expand(sql: str, variables: dict[str, str], interval_s: int = 3600) -> str:
    """What the plugin sends: $__timeFilter(c) → c >= toDateTime(from) AND c <= toDateTime(to) …"""
    f, t = FROM // 1000, TO // 1000
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 >= toDateTime({f}) AND \1 <= toDateTime({t})", sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)",
                 rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({f})").replace("$__toTime", f"toDateTime({t})")
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in sql, f"an unexpanded macro or variable: {sql}"
    return sql


class Panels:
    """The data source's connection: the native protocol with `defaultDatabase` set, as provisioned."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlparse

        from clickhouse_driver import Client

        u = urlparse(url)
        self.database = u.path.lstrip("/")
        self.client = Client(host=u.hostname, port=u.port, user=u.username or "default", password=u.password or "",
                             database=self.database)

    def query(self, sql: str) -> list[tuple]:
        return self.client.execute(sql)


@pytest.fixture(scope="module")
def server(clickhouse):
    url = server_url(clickhouse, unique("dash"))
    backend = connect(url)
    migrate(backend)
    cfg = load_config(env={"QG_CLICKHOUSE_URL": url, "QG_KAFKA_TOPIC_PREFIX": "t."})
    records = [r.value for r in Simulator(orgs=2, groups=12, members=8, seed=5).records(6000)]
    store(cfg, backend, records, START_TS + 14 * 86_400_000)
    backend.close()
    panels = Panels(url)
    yield panels
    panels.client.disconnect()


def test_every_panel_runs_on_the_server_and_shows_the_simulated_weeks(server):
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    orgs = [r[0] for r in server.query(expand(variables["org"]["query"], {}))]
    assert orgs == ["org1", "org2"]
    groups = [r[0] for r in server.query(expand(variables["group"]["query"], {"org": "org1"}))]
    assert groups and all(g.startswith("org1-") for g in groups)
    everything = {"org": "org1", "group": variables["group"]["allValue"]}
    empty = []
    for panel in dash["panels"]:
        [target] = panel["targets"]
        rows = server.query(expand(target["rawSql"], everything))
        if not rows:
            empty.append(panel["title"])
    assert empty == ["Dead letters (pipeline health)"], "every other panel has data (no malformed input here)"


def test_the_panels_figures_are_clickhouses_own_and_a_group_filters(server):
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in dash["panels"]}
    db = server.database
    standing = server.query(f"SELECT count() FROM {db}.findings_current WHERE org_id = 'org1' "
                            f"AND status != 'false_positive' AND ts >= {FROM} AND ts <= {TO}")[0][0]
    per_day = server.query(expand(panels["Findings per day by rule family"], {"org": "org1", "group": "__all"}))
    assert sum(sum(r[1:]) for r in per_day) == standing > 50
    heat = server.query(expand(panels["When: weekday × hour (Asia/Shanghai)"], {"org": "org1", "group": "__all"}))
    assert sum(r[2] for r in heat) == standing and all(1 <= r[0] <= 7 and 0 <= r[1] <= 23 for r in heat)
    top = server.query(expand(panels["Groups with most findings"], {"org": "org1", "group": "__all"}))
    one = top[0][0]
    only = server.query(expand(panels["Groups with most findings"], {"org": "org1", "group": one}))
    assert [r[0] for r in only] == [one] and only[0][2] == top[0][2]
    other = server.query(expand(panels["Groups with most findings"], {"org": "org2", "group": "__all"}))
    assert not {r[0] for r in other} & {r[0] for r in top}, "org2's panel shows none of org1's groups"
