"""The console in a real browser (headless Debian Chromium, through chromedriver) against a real
`qunguard console`, Kafka, `qunguard worker` and ClickHouse: a reviewer signs in, opens the queue,
marks a finding a false positive, and sees it withdrawn in ClickHouse and in replay of what the
topic holds; a user of another org gets "not found" for it. Screenshots are kept in
.artifacts/console/ (one per step) to be looked at."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from pipeline.console.users import Users
from pipeline.devtools.devservices import free_port, wait_port
from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import START_TS, Record, Simulator
from pipeline.kafka import bootstrap, ensure_topics
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from schemas.records import finding_id
from tests.conftest import REPORT, ROOT, Worker, count, make_config, query, scrape, server_url, unique, wait_for

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / ".artifacts" / "console"
PASSWORD = "review-2026"
GAMBLING = "澳门赌场线上开户，百家乐充值送彩金"


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--lang=zh-CN"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def topic_records(cfg) -> list[bytes]:
    """Everything the events topic holds, partition by partition, as replay reads a dump of it."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap(cfg.kafka.url), enable_auto_commit=False)
    try:
        tps = [TopicPartition(cfg.topic("events"), p) for p in consumer.partitions_for_topic(cfg.topic("events"))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[bytes] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                out += [r.value for r in batch]
        return out
    finally:
        consumer.close()


def sign_in(driver, base: str, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    assert name in driver.find_element(By.CSS_SELECTOR, "header .who").text  # waits for the signed-in page


def test_a_reviewer_withdraws_a_finding_in_the_browser(tmp_path, kafka, clickhouse, workers, browser):
    port = free_port()
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("cb")), worker={"timer_seconds": 1.0},
                      console={"users": str(tmp_path / "users.json"), "listen": f"127.0.0.1:{port}"})
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    users = Users(tmp_path / "users.json")
    users.put("reviewer-li", "org1", "reviewer", PASSWORD)
    users.put("other-org", "org2", "admin", PASSWORD)

    post = {"kind": "message", "event_id": "cb-e1", "org_id": "org1", "ts": START_TS + 2 * 3_600_000,
            "platform": "wecom", "group_id": "g-console", "msg_id": "cb-m1", "sender_id": "gambler", "text": GAMBLING}
    wrong = finding_id("content.gambling", "g-console", "cb-m1", "gambler")
    traffic = list(Simulator(orgs=2, groups=8, members=6, seed=23).records(2000, envelope=10, linger_ms=1000))
    traffic.append(Record(b"g-console", orjson.dumps(post), ["cb-e1"]))
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    ends = produce(cfg, traffic, show_progress=False)
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None)
    wait_for(lambda: count(cfg, f"SELECT count() FROM {{db}}.findings WHERE finding_id = '{wrong}'") == 1, 60,
             "the gambling finding")

    console = Worker(cfg, tmp_path / "console.log", command="console")
    workers.append(console)
    wait_port(port, 30, console.proc, "qunguard console")
    base = f"http://127.0.0.1:{port}"

    browser.get(base + "/queue")
    assert "/login" in browser.current_url, "the queue needs a sign-in"
    shot(browser, "1-login")
    sign_in(browser, base, "reviewer-li")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("org1 ·")
    assert "total lag" in browser.page_source, "the worker group's lag, asked of Kafka"
    shot(browser, "2-overview")
    browser.get(base + "/queue?rule=content.gambling&group=g-console&days=92")
    row = browser.find_element(By.ID, f"f-{wrong}")
    assert "gambler" in row.text and "open" in row.text
    shot(browser, "3-queue")
    clicked = time.monotonic()
    row.find_element(By.CSS_SELECTOR, "button.false-positive").click()
    assert "verdict(s) “false_positive” sent" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    shot(browser, "4-sent")

    wait_for(lambda: query(cfg, f"SELECT status, decided_by FROM {{db}}.findings_current "
                                f"WHERE finding_id = '{wrong}'") == [("false_positive", "reviewer-li")],
             60, "the verdict in ClickHouse")
    applied = time.monotonic() - clicked
    browser.get(base + f"/findings/{wrong}")
    assert browser.find_element(By.ID, "status").text == "false_positive"
    assert "reviewer-li" in browser.find_element(By.ID, "history").text
    marked = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#message mark")]
    assert marked and all(m in GAMBLING for m in marked)
    shot(browser, "5-withdrawn")
    browser.get(base + "/queue?rule=content.gambling&group=g-console&days=92")
    assert not browser.find_elements(By.ID, f"f-{wrong}"), "no longer in the queue"

    records = topic_records(cfg)
    verdicts = [e for e in map(orjson.loads, records) if isinstance(e, dict) and e.get("kind") == "feedback"]
    assert [(e["finding_id"], e["verdict"], e["actor_id"]) for e in verdicts] == [(wrong, "false_positive",
                                                                                    "reviewer-li")]
    expected = replay(records, until=int(time.time() * 1000))
    assert expected.status(wrong) == "false_positive", "replay of the topic agrees"
    strikes = query(cfg, "SELECT count() FROM {db}.findings_current WHERE rule LIKE 'sanction.%' "
                         "AND user_id = 'gambler' AND status != 'false_positive'")
    assert strikes == [(sum(1 for f in expected.final() if f["rule"].startswith("sanction.")
                            and f["user_id"] == "gambler"),)]

    sign_in(browser, base, "other-org")
    browser.get(base + f"/findings/{wrong}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "404" and "gambler" not in browser.page_source
    shot(browser, "6-other-org")
    # the console's /metrics (console.metrics_listen, apart from its pages): both sign-ins, the one verdict
    m = scrape("http://127.0.0.1:9110/metrics")
    assert m["qunguard_console_sign_ins_ok_total"][()] == 2 and m["qunguard_console_verdicts_total"][()] == 1
    assert m["qunguard_console_requests_2xx_total"][()] > 5
    REPORT.append(f"console: a false positive clicked in Chromium was applied in ClickHouse {applied:.1f} s later "
                  f"(Kafka → worker → ClickHouse); screenshots in {ARTIFACTS.relative_to(ROOT)}")
