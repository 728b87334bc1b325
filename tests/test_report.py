"""`qunguard report` (issue "console and reports"): one org's week from ClickHouse, as HTML with its
chart, an Excel workbook with one sheet per table, and CSV; its figures are ClickHouse's own."""

from __future__ import annotations

import csv
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from pipeline.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.devtools.simulate import START_TS, Simulator
from pipeline.report import build, week_bounds
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.stored import store

WEEK = "2026-W44"  # the simulator starts on its Sunday, 2026-11-01 10:00; the deadlines fall in W45


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The simulator's traffic through the worker's steps into chDB (forwards read back as Kafka would)."""
    db = tmp_path_factory.mktemp("report") / "db"
    backend = connect(f"chdb:{db}")
    migrate(backend)
    cfg = load_config(env={"QG_CLICKHOUSE_URL": f"chdb:{db}", "QG_KAFKA_TOPIC_PREFIX": "t."})
    records = [r.value for r in Simulator(orgs=2, groups=12, members=8, seed=5).records(6000)]
    store(cfg, backend, records, START_TS + 14 * 86_400_000)
    yield backend, db
    backend.close()


def test_the_weeks_figures_are_clickhouses_own(stored):
    backend, _ = stored
    db = backend.database
    report = build(backend, "org1", WEEK)
    start, end = week_bounds(WEEK, ZoneInfo("Asia/Shanghai"))
    assert start == datetime(2026, 10, 26, tzinfo=ZoneInfo("Asia/Shanghai")) and (end - start).days == 7
    s, e = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    direct = dict(backend.query(f"SELECT rule, count() FROM {db}.findings_current WHERE org_id = 'org1' "
                                f"AND ts >= {s} AND ts < {e} AND status != 'false_positive' GROUP BY rule"))
    by_rule = {r[0]: r[2] for r in report.table("findings by rule").rows}
    assert by_rule == direct and sum(direct.values()) > 50
    daily = report.table("findings per day")
    assert [r[0] for r in daily.rows][0] == "2026-10-26" and sum(r[-1] for r in daily.rows) == sum(direct.values())
    assert daily.rows[-1][-1] == sum(direct.values()), "all on the Sunday, in the org's calendar"
    top = report.table("groups with most findings").rows
    assert top and all(g.startswith("org1-") for g, *_ in top), "another org's rows never appear"
    assert [r[2] for r in top] == sorted((r[2] for r in top), reverse=True)
    answers = report.table("answer rates to notices").rows
    assert answers and all(0 <= r[4] <= r[3] for r in answers)
    assert build(backend, "org1", "2026-W30").table("findings by rule").rows == []  # a week with nothing
    after = {r[0]: r[3] for r in build(backend, "org1", "2026-W45").table("findings by rule").rows if r[3]}
    assert after == direct, "the next week's 'week before' column is this week"


def test_the_demos_busiest_groups_count_messages_not_tokens(stored):
    from pipeline.sink import queries

    backend, _ = stored
    db = backend.database
    messages = dict(backend.query(f"SELECT group_id, count() FROM {db}.messages GROUP BY group_id"))
    busiest = backend.query(queries.busiest_groups(db))
    assert busiest and all(int(n) == int(messages[g]) for g, n, _, _ in busiest)
    assert all(len(top.split()) == 5 for *_, top in busiest)


def test_html_xlsx_and_csv_hold_the_same_tables(stored, tmp_path, capsys):
    backend, db = stored
    report = build(backend, "org1", WEEK)
    config = tmp_path / "qunguard.yaml"
    config.write_text(f"clickhouse: {{url: 'chdb:{db}'}}\n", encoding="utf-8")
    backend.close()  # the CLI opens the database itself
    for name in ("week.html", "week.xlsx", "week.csv"):
        assert main(["--config", str(config), "report", "--org", "org1", "--week", WEEK,
                     "--out", str(tmp_path / name)]) == 0
    page = (tmp_path / "week.html").read_text(encoding="utf-8")
    assert "<svg" in page and "org1" in page and "<script" not in page
    assert all(t.name in page for t in report.tables)
    book = load_workbook(tmp_path / "week.xlsx")
    assert book.sheetnames == [t.name[:31] for t in report.tables]
    rules = book["findings by rule"]
    assert [c.value for c in rules[1]] == report.table("findings by rule").headers
    assert rules.max_row == len(report.table("findings by rule").rows) + 1
    with (tmp_path / "week.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows if len(r) == 1] == [t.name for t in report.tables]
    # the report's calendar is the console's (console.timezone): the same week in UTC starts 8 hours later
    config.write_text(f"clickhouse: {{url: 'chdb:{db}'}}\nconsole: {{timezone: UTC}}\n", encoding="utf-8")
    assert main(["--config", str(config), "report", "--org", "org1", "--week", WEEK,
                 "--out", str(tmp_path / "utc.html")]) == 0
    assert "(UTC)" in (tmp_path / "utc.html").read_text(encoding="utf-8") and "(CST)" in page
    assert main(["--config", str(config), "report", "--org", "org1", "--week", "2026-47",
                 "--out", str(tmp_path / "x.html")]) == 2
    assert "ISO week" in capsys.readouterr().err


def test_a_bad_week_or_format_names_the_option():
    with pytest.raises(ConfigError, match="--week"):
        week_bounds("2026-W54", ZoneInfo("Asia/Shanghai"))
    assert main(["report", "--org", "o", "--week", "2026-W45", "--out", "x.pdf"]) == 2


def test_the_report_is_mailed_through_an_alert_channels_smtp(stored, tmp_path):
    """A real SMTP server (aiosmtpd, STARTTLS and a login) receives it, the workbook attached."""
    import yaml

    from tests.robots import Mail

    backend, db = stored
    backend.close()
    server = Mail(tmp_path)
    try:
        config = tmp_path / "qunguard.yaml"
        config.write_text(yaml.safe_dump({"clickhouse": {"url": f"chdb:{db}"},
                                          "notifier": {"channels": {"mail": server.channel()}}}), encoding="utf-8")
        out = tmp_path / "week.xlsx"
        assert main(["--config", str(config), "report", "--org", "org1", "--week", WEEK, "--out", str(out),
                     "--mail", "mail"]) == 0
        [msg] = server.messages
        assert "周报" in msg["Subject"] and "org1" in msg["Subject"] and msg["To"] == "security@qg.test"
        assert "<svg" in msg.get_body(("html",)).get_content()
        [attached] = list(msg.iter_attachments())
        assert attached.get_filename() == "week.xlsx" and attached.get_content() == out.read_bytes()
        assert main(["--config", str(config), "report", "--org", "org1", "--week", WEEK, "--out", str(out),
                     "--mail", "nope"]) == 2
    finally:
        server.close()

