"""The console (issue "console and reports") over chDB holding the simulator's traffic: sign-in,
sessions, CSRF and roles; every page of one org; and org isolation, tried on every URL the console
has with every finding, group and member id of the other org."""

from __future__ import annotations

import re
import stat

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.console import pages
from pipeline.console.app import create_app
from pipeline.console.users import Users
from pipeline.devtools.simulate import START_TS, Simulator
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import server_url, unique
from tests.stored import store

PASSWORD = "correct horse"


def _stored(url: str):
    backend = connect(url)
    migrate(backend)
    cfg = load_config(env={"QG_CLICKHOUSE_URL": url, "QG_KAFKA_TOPIC_PREFIX": "t."})
    records = [r.value for r in Simulator(orgs=2, groups=10, members=8, seed=11).records(5000)]
    store(cfg, backend, records, START_TS + 14 * 86_400_000)
    return backend


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The simulator's traffic in chDB, the way the worker stores it."""
    backend = _stored(f"chdb:{tmp_path_factory.mktemp('console') / 'db'}")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def served(clickhouse):
    """The same in Debian's ClickHouse server: isolation is the server's queries' doing."""
    backend = _stored(server_url(clickhouse, unique("console")))
    yield backend
    backend.close()


class Console:
    """The app with its users and the feedback events it sent, and a browser-like client."""

    def __init__(self, backend, tmp_path, clock=None):
        self.users = Users(tmp_path / "users.json")
        for name, org, role in (("ann", "org1", "reviewer"), ("vic", "org1", "viewer"), ("ada", "org1", "admin"),
                                ("bob", "org2", "admin")):
            self.users.put(name, org, role, PASSWORD)
        self.sent: list[dict] = []
        self.now = [float(START_TS // 1000 + 86_400)]
        self.app = create_app(backend, self.users, self.sent.extend, clock=clock or (lambda: self.now[0]))

    def client(self, name: str | None = None, password: str = PASSWORD):
        c = self.app.test_client()
        if name:
            r = c.post("/login", data={"name": name, "password": password, "csrf": csrf(c.get("/login").text)})
            assert r.status_code == 302, r.text
        return c


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest.fixture
def console(stored, tmp_path):
    return Console(stored, tmp_path)


def ids(backend, org: str) -> dict[str, list[str]]:
    db = backend.database
    return {
        "finding_id": [r[0] for r in backend.query(f"SELECT finding_id FROM {db}.findings WHERE org_id = '{org}'")],
        "group_id": [r[0] for r in backend.query(f"SELECT DISTINCT group_id FROM {db}.raw_events "
                                                 f"WHERE org_id = '{org}' AND group_id != ''")],
        "user_id": [r[0] for r in backend.query(f"SELECT DISTINCT user_id FROM {db}.raw_events "
                                                f"WHERE org_id = '{org}' AND user_id != ''")],
    }


# --- users ---------------------------------------------------------------------------------------

def test_passwords_are_stored_as_argon2_hashes_in_a_file_only_its_owner_reads(tmp_path):
    users = Users(tmp_path / "u.json")
    users.put("ann", "org1", "reviewer", PASSWORD)
    text = (tmp_path / "u.json").read_text()
    assert PASSWORD not in text and "$argon2id$" in text
    assert stat.S_IMODE((tmp_path / "u.json").stat().st_mode) == 0o600
    again = Users(tmp_path / "u.json")
    assert again.verify("ann", PASSWORD).org == "org1"
    assert again.verify("ann", "wrong password") is None and again.verify("nobody", PASSWORD) is None
    with pytest.raises(ConfigError, match="role 'boss'"):
        users.put("x", "org1", "boss", PASSWORD)
    with pytest.raises(ConfigError, match="at least 8"):
        users.put("x", "org1", "viewer", "short")


# --- sign-in, sessions, CSRF, roles ---------------------------------------------------------------

def test_every_page_needs_a_sign_in_and_a_wrong_password_gets_none(console):
    c = console.client()
    for url in ("/", "/queue", "/users", "/findings/x", "/groups/x", "/members/x"):
        r = c.get(url)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login"), url
    r = c.post("/login", data={"name": "ann", "password": "guess", "csrf": csrf(c.get("/login").text)})
    assert r.status_code == 401 and "wrong name or password" in r.text
    assert c.get("/").status_code == 302


def test_a_post_without_this_sessions_csrf_token_is_refused(console, stored):
    fid = ids(stored, "org1")["finding_id"][0]
    ann = console.client("ann")
    other = console.client("ann")  # another browser of the same person: another token
    for token in ("", csrf(other.get("/queue").text)):
        r = ann.post("/verdicts", data={"csrf": token, "finding_id": fid, "verdict": "false_positive"})
        assert r.status_code == 400 and "CSRF" in r.text
    assert console.sent == []
    r = console.client().post("/login", data={"name": "ann", "password": PASSWORD})
    assert r.status_code == 400, "the sign-in form has its token too"


def test_a_reviewers_verdicts_are_feedback_events_and_a_viewer_gives_none(console, stored):
    fids = ids(stored, "org1")["finding_id"][:3]
    vic = console.client("vic")
    page = vic.get("/queue").text
    assert "false-positive" not in page, "a viewer sees no verdict buttons"
    r = vic.post("/verdicts", data={"csrf": csrf(page), "finding_id": fids[0], "verdict": "false_positive"})
    assert r.status_code == 403 and console.sent == []
    ann = console.client("ann")
    r = ann.post("/verdicts", data={"csrf": csrf(ann.get("/queue").text), "finding_id": fids, "note": "转发的新闻",
                                    "verdict": "false_positive", "next": "/queue?rule=content.ad"})
    assert r.status_code == 302 and r.headers["Location"] == "/queue?rule=content.ad"
    assert [(e["kind"], e["org_id"], e["finding_id"], e["verdict"], e["actor_id"], e["note"]) for e in console.sent] \
        == [("feedback", "org1", f, "false_positive", "ann", "转发的新闻") for f in fids]
    assert all(e["ts"] == int(console.now[0] * 1000) for e in console.sent)
    assert "3 verdict(s)" in ann.get("/queue").text
    r = ann.post("/verdicts", data={"csrf": csrf(ann.get("/queue").text), "finding_id": fids[0], "verdict": "maybe"})
    assert r.status_code == 400 and len(console.sent) == 3


def test_a_session_ends_after_its_hours_and_when_the_users_role_changes(console):
    ann = console.client("ann")
    assert ann.get("/").status_code == 200
    console.now[0] += 13 * 3600
    assert ann.get("/").status_code == 302, "12 h by default"
    ann = console.client("ann")
    console.users.put("ann", "org1", "viewer", None)
    assert ann.get("/").status_code == 302, "signed out when an admin changed the role"
    assert console.client("ann").get("/").status_code == 200


def test_a_changed_password_ends_the_sessions_signed_in_with_the_old_one(console, tmp_path):
    ann = console.client("ann")
    assert ann.get("/").status_code == 200
    Users(tmp_path / "users.json").put("ann", "org1", "reviewer", "a new password")  # as console-user does
    assert ann.get("/").status_code == 302
    c = console.client()
    r = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": csrf(c.get("/login").text)})
    assert r.status_code == 401, "the old password no longer signs in"
    assert console.client("ann", "a new password").get("/").status_code == 200


def test_redirects_after_sign_in_stay_on_the_console(console):
    c = console.client()
    r = c.post("/login?next=https://evil.example/", data={"name": "ann", "password": PASSWORD,
                                                          "csrf": csrf(c.get("/login").text)})
    assert r.headers["Location"] == "/"


# --- the pages ------------------------------------------------------------------------------------

def test_the_overview_shows_the_orgs_figures_from_clickhouse(console, stored):
    db = stored.database
    page = console.client("ann").get("/?days=14").text
    w = pages.window(stored, "org1", 14, pages.ZoneInfo("Asia/Shanghai"), 0)
    s, e = w.ms
    total = int(stored.query(f"SELECT count() FROM {db}.findings_current WHERE org_id = 'org1' AND ts >= {s} "
                             f"AND ts < {e} AND status != 'false_positive'")[0][0])
    assert total > 100 and f"{total} findings that stand" in page
    assert page.count("<svg") == 2 and 'aria-label="findings by weekday and hour"' in page
    top = stored.query(f"SELECT group_id FROM {db}.findings WHERE org_id = 'org1' GROUP BY group_id "
                       "ORDER BY count() DESC, group_id LIMIT 1")[0][0]
    assert f'href="/groups/{top}"' in page
    assert "Answer rates to notices" in page and "%</td>" in page


def test_the_queue_lists_open_findings_most_severe_first_and_filters(console, stored):
    ann = console.client("ann")
    page = ann.get("/queue?days=92").text
    severities = re.findall(r'<td class="sev-(\w+)">', page)
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    assert severities and [order[s] for s in severities] == sorted(order[s] for s in severities)
    only = ann.get("/queue?days=92&rule=content.ad").text
    rules = re.findall(r"<td>([a-z_]+\.[a-z_]+) ", only)
    assert rules and set(rules) == {"content.ad"}
    db = stored.database
    n = int(stored.query(f"SELECT count() FROM {db}.findings_current WHERE org_id = 'org1' AND rule = 'content.ad' "
                         "AND status IN ('open', 'appealed')")[0][0])
    assert len(rules) == min(n, 200)


def test_a_finding_shows_its_message_with_the_evidence_marked_and_its_history(console, stored):
    db = stored.database
    fid, text = stored.query(
        f"SELECT f.finding_id, m.text FROM {db}.findings AS f INNER JOIN {db}.messages AS m "
        f"USING (org_id, group_id, msg_id) WHERE f.org_id = 'org1' AND f.rule = 'content.gambling' LIMIT 1")[0]
    decided = stored.query(f"SELECT finding_id, actor_id FROM {db}.finding_status WHERE org_id = 'org1' LIMIT 1")
    page = console.client("vic").get(f"/findings/{fid}").text
    assert "content.gambling" in page and "赌博" in page
    assert re.search(r'<div class="msg this" id="message">.*<mark title="[^"]+">', page, re.S)
    marked = "".join(re.findall(r"<mark[^>]*>([^<]*)</mark>", page))
    assert marked and all(ch in text for ch in marked)
    assert page.count('class="msg"') >= 1, "the messages around it"
    history_fid, actor = decided[0]
    history = console.client("vic").get(f"/findings/{history_fid}").text
    assert f"<td>{actor}</td>" in history


def test_highlighting_escapes_the_message(tmp_path):
    html = pages.highlight("<b>加我微信</b>", {"matches": [{"span": [3, 7], "term": "加我微信", "field": "text"}]})
    assert str(html) == '&lt;b&gt;<mark title="加我微信">加我微信</mark>&lt;/b&gt;'


def test_group_and_member_pages(console, stored):
    db = stored.database
    group, problems = stored.query(
        f"SELECT group_id, countIf(departed OR nickname_bad OR external) AS p FROM {db}.memberships "
        f"WHERE org_id = 'org1' GROUP BY group_id ORDER BY p DESC LIMIT 1")[0]
    page = console.client("vic").get(f"/groups/{group}").text
    assert "Members against the roster" in page and int(problems) > 0 and 'class="bad">' in page
    sanctioned = stored.query(f"SELECT user_id, count() FROM {db}.findings WHERE org_id = 'org1' "
                              "AND rule LIKE 'sanction.%' GROUP BY user_id ORDER BY count() DESC LIMIT 1")[0][0]
    page = console.client("vic").get(f"/members/{sanctioned}").text
    assert "Strikes and sanctions per group" in page and "sanction." in page


# --- org isolation --------------------------------------------------------------------------------

def _urls_with(app, kind: str, value: str) -> list[str]:
    out = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and rule.arguments == {kind}:
            out.append(rule.rule.replace(f"<{kind}>", value))
    return out


def test_staff_of_one_org_never_see_a_row_of_another(served, tmp_path):
    console = Console(served, tmp_path)
    theirs, ours = ids(served, "org2"), ids(served, "org1")
    assert all(theirs.values()) and all(ours.values())
    for name in ("vic", "ann", "ada"):  # org1's viewer (every id of org2), reviewer and admin (some)
        c = console.client(name)
        tried = 0
        for kind, values in theirs.items():
            urls = [u for v in values[:None if name == "vic" else 25] for u in _urls_with(console.app, kind, v)]
            assert urls, f"the console has pages by {kind}"
            for url in urls:
                r = c.get(url)
                assert r.status_code == 404, url
                assert "org2" not in r.text, url
                tried += 1
        assert name != "vic" or tried >= sum(map(len, theirs.values()))
        # pages without ids, with every filter open: nothing of org2 anywhere
        plain = [r.rule for r in console.app.url_map.iter_rules() if "GET" in r.methods and not r.arguments]
        for url in plain:
            for q in ("", "?days=92", "?days=92&status=confirmed", "?days=92&status=false_positive"):
                r = c.get(url + q)
                assert r.status_code in (200, 302, 403), url
                assert "org2" not in r.text and "bob" not in r.text, url + q
        # a verdict on org2's finding is refused, alone or among org1's
        page = c.get("/queue").text
        for chosen in ([theirs["finding_id"][0]], [ours["finding_id"][0], theirs["finding_id"][0]]):
            r = c.post("/verdicts", data={"csrf": csrf(page), "finding_id": chosen, "verdict": "false_positive"})
            assert r.status_code in (403, 404)
    assert console.sent == []
    # and org1's own pages are there for org1 (the 404s above are not a console that shows nothing)
    c = console.client("vic")
    assert c.get(f"/findings/{ours['finding_id'][0]}").status_code == 200
    assert c.get(f"/groups/{ours['group_id'][0]}").status_code == 200


def test_an_admin_manages_the_users_of_their_org_only(console):
    ada = console.client("ada")
    page = ada.get("/users").text
    assert "ann" in page and "vic" in page and "bob" not in page
    r = ada.post("/users", data={"csrf": csrf(page), "name": "bob", "role": "viewer", "password": "x" * 10})
    assert console.users.get("bob").org == "org2" and console.users.get("bob").role == "admin"
    assert "the name is taken" in ada.get(r.headers["Location"]).text
    ada.post("/users", data={"csrf": csrf(page), "name": "cai", "role": "reviewer", "password": "x" * 10})
    assert console.users.get("cai").org == "org1", "a new user is in the admin's org"
    ada.post("/users", data={"csrf": csrf(page), "name": "bob", "remove": "1"})
    assert console.users.get("bob") is not None
    assert console.client("ann").get("/users").status_code == 403


def test_the_weekly_report_downloads_from_the_console(console, stored):
    from io import BytesIO

    from openpyxl import load_workbook

    from pipeline.report import build

    c = console.client("vic")
    overview = c.get("/").text
    week = re.search(r"Weekly report of (\d{4}-W\d{2})", overview).group(1)
    html = c.get(f"/report?week={week}")
    want = build(stored, "org1", week)
    assert html.status_code == 200 and "<svg" in html.text and want.total > 0
    by_rule = want.table("findings by rule").rows
    assert all(f"<td>{r[0]}</td><td>{r[1]}</td><td>{r[2]}</td>" in html.text for r in by_rule)
    xlsx = c.get(f"/report?week={week}&format=xlsx")
    assert "attachment" in xlsx.headers["Content-Disposition"]
    book = load_workbook(BytesIO(xlsx.data))
    assert book.sheetnames == [t.name[:31] for t in want.tables]
    rows = [[cell.value for cell in r] for r in book["findings by rule"].iter_rows(min_row=2)]
    assert rows == [list(r) for r in want.table("findings by rule").rows]
    assert c.get("/report?week=2026-47").status_code == 400
    assert c.get(f"/report?week={week}%0A&format=csv").status_code == 400
    assert c.get(f"/report?week={week}&format=HTML").status_code == 400
    assert "style-src 'unsafe-inline'" in html.headers["Content-Security-Policy"], "the report's own styles"


def test_guessing_passwords_is_refused_after_five_failures_for_fifteen_minutes(console):
    c = console.client()

    def attempt(name: str, password: str) -> int:
        return c.post("/login", data={"name": name, "password": password,
                                      "csrf": csrf(c.get("/login").text)}).status_code

    assert [attempt("ann", f"guess{i}") for i in range(5)] == [401] * 5
    r = c.post("/login", data={"name": "ann", "password": PASSWORD, "csrf": csrf(c.get("/login").text)})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 800  # even the right password
    assert "too many failed sign-ins" in r.text
    assert attempt("vic", PASSWORD) == 302  # another account is not locked by ann's guesser
    console.now[0] += 901
    assert attempt("ann", PASSWORD) == 302  # the window has passed
    from pipeline.metrics import counts_renderer

    text = counts_renderer("qunguard_console", lambda: console.app.extensions["qunguard_counts"])().decode()
    for line in ("qunguard_console_sign_ins_failed_total 5.0", "qunguard_console_sign_ins_throttled_total 1.0",
                 "qunguard_console_sign_ins_ok_total 2.0", "qunguard_console_requests_4xx_total 6.0"):
        assert line in text, (line, text)
