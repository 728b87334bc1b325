"""The content rules: precision and recall on the labelled corpus, and each rule on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.detectors import Context
from pipeline.detectors.content.detector import ContentDetector
from pipeline.engine import Engine
from pipeline.policy import CONTENT_RULES, Policy, load_policy
from schemas.records import validate_event
from tests.conftest import REPORT

CORPUS = Path(__file__).parent / "data" / "content_corpus.tsv"
DAY = 1_793_498_400_000 + 3_600_000  # 2026-11-02 10:00 Asia/Shanghai: outside quiet hours


def message(text: str = "", ts: int = DAY, n: int = 1, **extra) -> dict:
    return validate_event({"kind": "message", "event_id": f"e{n}", "org_id": "o", "ts": ts, "platform": "wecom",
                           "group_id": "g", "msg_id": f"m{n}", "sender_id": extra.pop("sender", "u1"),
                           "text": text, **extra}, max_text_chars=10_000_000)


def rules(text: str = "", detector: ContentDetector | None = None, **extra) -> set[str]:
    findings = (detector or ContentDetector()).on_event(message(text, **extra), None, Context(0)).findings
    return {f["rule"] for f in findings}


def test_precision_and_recall_on_the_labelled_corpus():
    detector = ContentDetector()
    tp = fp = fn = 0
    misses = []
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    for line in lines:
        expected_text, text = line.split("\t", 1)
        expected = set() if expected_text == "-" else set(expected_text.split(","))
        got = rules(text, detector) & set(CONTENT_RULES)
        tp += len(got & expected)
        fp += len(got - expected)
        fn += len(expected - got)
        if got != expected:
            misses.append(f"{text[:40]!r}: expected {sorted(expected)} got {sorted(got)}")
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    REPORT.append(f"content corpus: {len(lines)} messages, precision={precision:.3f} recall={recall:.3f}")
    REPORT.extend(f"  differs: {m}" for m in misses)
    assert len(lines) >= 400
    assert precision >= 0.95 and recall >= 0.95


def test_every_rule_is_in_the_corpus():
    labelled = set()
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            labelled |= set(line.split("\t", 1)[0].split(","))
    assert set(CONTENT_RULES) <= labelled


def test_evidence_has_span_in_original_and_normalised_form():
    text = "兄弟们 賭 * 博 网站注册送钱"
    [f] = ContentDetector().on_event(message(text), None, Context(0)).findings
    m = next(m for m in f["evidence"]["matches"] if m["term"] == "赌博")
    assert f["rule"] == "content.gambling" and f["severity"] == "high"
    assert text[m["span"][0]:m["span"][1]] == m["text"] == "賭 * 博" and m["normalized"] == "赌博"


def test_red_packet_message_type_and_confidential_file_name():
    assert rules(msg_type="red_packet") == {"content.red_packet"}
    assert rules(msg_type="file", file_name="红头文件-关于人事调整的通知.pdf") == {"content.confidential"}


def test_personal_data_is_masked_in_the_evidence():
    [f] = ContentDetector().on_event(message("身份证110101199003074258"), None, Context(0)).findings
    [p] = f["evidence"]["personal"]
    assert p["kind"] == "id_card" and "199003" not in p["masked"]
    assert rules("身份证110101199003074257") == set()  # wrong check digit: not an ID number
    assert rules("卡号6222020200000000005") == set()  # fails Luhn


def test_links_outside_allowed_domains():
    assert rules("http://evil.top/x") == {"content.link"}
    assert rules("文档 https://docs.qq.com/doc/1") == set()
    assert rules("", urls=["https://x.example.org/a"]) == {"content.link"}
    det = ContentDetector(Policy({"content": {"allowed_domains": ["example.org"]}}))
    assert rules("", detector=det, urls=["https://x.example.org/a"]) == set()


def test_too_long_uses_the_policy_limit():
    assert rules("好" * 201) == {"content.too_long"} and rules("好" * 200) == set()
    det = ContentDetector(Policy({"groups": {"g": {"content": {"max_chars": 10}}}}))
    assert rules("请大家今天下班前提交周报", detector=det) == {"content.too_long"}


def test_quiet_hours_over_midnight_and_per_group():
    night = DAY + 13 * 3_600_000 + 30 * 60_000  # 23:30 local
    early = DAY + 19 * 3_600_000  # 05:00 next day
    morning = DAY - 3 * 3_600_000 + 60 * 60_000  # 08:00
    assert rules("明天见", ts=night) == {"conduct.quiet_hours"}
    assert rules("明天见", ts=early) == {"conduct.quiet_hours"}
    assert rules("明天见", ts=morning) == set()
    det = ContentDetector(Policy({"groups": {"g": {"content": {"quiet_hours": {"start": "12:00", "end": "13:30"}}}}}))
    assert rules("明天见", ts=night, detector=det) == set()
    assert rules("明天见", ts=DAY + 2 * 3_600_000 + 60_000, detector=det) == {"conduct.quiet_hours"}
    off = ContentDetector(Policy({"content": {"quiet_hours": None}}))
    assert rules("明天见", ts=night, detector=off) == set()
    assert rules("", ts=night, msg_type="system") == set()


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe"])
def test_quiet_hours_agree_with_the_local_clock_across_offset_changes(zone):
    """The quick test (the zone's offset per hour) against the local time of day as datetime gives
    it, minute by minute over two days around each of the zone's 2026 offset changes (half-hour
    zones and a half-hour change among them) and one ordinary day."""
    from datetime import datetime, time, timedelta
    from zoneinfo import ZoneInfo

    from pipeline.detectors.content.quiet_hours import in_quiet_hours

    tz = ZoneInfo(zone)
    days = [datetime(2026, m, d, tzinfo=tz) for m, d in ((3, 27), (4, 4), (10, 3), (10, 24), (11, 1), (6, 1))]
    for start, end in ((time(22), time(8)), (time(1, 30), time(3)), (time(2, 15), time(2, 45))):
        for day in days:
            for minute in range(0, 2 * 24 * 60, 7):
                ts = int((day + timedelta(minutes=minute)).timestamp() * 1000) + 13_000
                local = datetime.fromtimestamp(ts / 1000, tz)
                t = local.time()
                inside = (start <= t < end) if start < end else (t >= start or t < end)
                assert in_quiet_hours(ts, start, end, tz) == (local if inside else None), (zone, local)


def test_split_message_evasion_within_the_window():
    engine = Engine()
    assert engine.process(message("今晚一起去网上赌", n=1), []).findings == []
    [f] = engine.process(message("博吧，来钱快", ts=DAY + 5_000, n=2), []).findings
    assert f["rule"] == "content.gambling" and f["msg_id"] == "m2"
    assert f["evidence"]["matches"][0]["split"] and f["evidence"]["matches"][0]["previous_msg_id"] == "m1"
    # another sender's message does not complete it; nor does one past the window
    engine = Engine()
    engine.process(message("今晚一起去网上赌", n=1), [])
    assert engine.process(message("博吧", ts=DAY + 5_000, n=2, sender="u2"), []).findings == []
    engine.process(message("今晚一起去网上赌", n=3), [])
    assert engine.process(message("博吧", ts=DAY + 120_000, n=4), []).findings == []


def test_split_state_is_released_after_the_window():
    engine = Engine()
    engine.process(message("大家好", n=1), [])
    assert engine.stores["content"]
    engine.tick(DAY + 61_000)
    assert not engine.stores["content"]


def test_policy_adds_removes_and_allows_terms(tmp_path):
    extra = tmp_path / "acme.tsv"
    extra.write_text("ad\t扫楼推广\tmedium\n", encoding="utf-8")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "content:\n  lexicon:\n    files: [acme.tsv]\n    add: {gambling: [菠菜站]}\n"
        "    remove: [减肥茶]\n    allow: [赌球评论]\n  patterns: {ad: ['加[vV][:：]?\\w{5,}']}\n", encoding="utf-8")
    det = ContentDetector(load_policy(policy_file))
    assert rules("周末扫楼推广", detector=det) == {"content.ad"}
    assert rules("这个菠菜站不错", detector=det) == {"content.gambling"}
    assert rules("减肥茶", detector=det) == set() and rules("减肥茶") == {"content.ad"}
    assert rules("今天的赌球评论节目", detector=det) == set()
    assert rules("加v:abc12345", detector=det) == {"content.ad"}


@pytest.mark.parametrize("policy, message", [
    ({"content": {"lexicon": {"add": {"gamblin": ["x"]}}}}, "policy: content.lexicon.add: gamblin: unknown category"),
    ({"content": {"patterns": {"ad": ["(unclosed"]}}}, "policy: content.patterns: ad[0]: bad regular expression"),
    ({"content": {"lexicon": {"files": ["missing.tsv"]}}}, "policy: content.lexicon.files[0]: cannot read"),
    ({"content": {"disabled": ["content.ads"]}}, "policy: content.disabled: content.ads: unknown rule"),
    ({"groups": {"g1": {"content": {"quiet_hours": {"start": "25:00"}}}}},
     "policy: groups.g1.content.quiet_hours.start: '25:00' is not a time of day"),
    ({"content": {"max_chars": 0}}, "policy: content.max_chars: Input should be greater than or equal to 1"),
])
def test_policy_errors_name_the_key(tmp_path, policy, message):
    with pytest.raises(ConfigError) as exc:
        Policy(policy, base_dir=tmp_path)
    assert str(exc.value).startswith(message), str(exc.value)


def test_policy_error_stops_the_cli_with_one_line(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("content:\n  patterns: {ad: ['[']}\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", "文本", "--policy", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "policy: content.patterns: ad[0]: bad regular expression" in r.stderr


def test_unreadable_lexicon_file_stops_at_start_with_one_line(tmp_path):
    (tmp_path / "bad.tsv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read"):
        ContentDetector(Policy({"content": {"lexicon": {"files": ["bad.tsv"]}}}, base_dir=tmp_path))
    (tmp_path / "p.yaml").write_text("content:\n  lexicon:\n    files: [bad.tsv]\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(tmp_path / "p.yaml"),
                        "--policy", str(tmp_path / "p.yaml")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bad.tsv" in r.stderr


def test_huge_and_control_character_texts():
    det = ContentDetector()
    big = "正常工作消息" * 170_000  # about 1 MB of text
    assert rules(big, detector=det) == {"content.too_long"}
    junk = "".join(chr(c) for c in range(0, 32)) * 1000 + "赌博" + "\x00" * 1000
    assert "content.gambling" in rules(junk, detector=det)


def test_check_command_prints_rule_term_span_and_normalised_form():
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", "出售發票"], capture_output=True, text=True,
                       env={"COLUMNS": "200", "PATH": ""})
    assert r.returncode == 1
    row = next(line for line in r.stdout.splitlines() if "content.fraud" in line)
    assert "出售发票" in row and "0-4" in row and "出售發票" in row and "high" in row
    ok = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", "收到，谢谢"], capture_output=True, text=True)
    assert ok.returncode == 0


def test_a_missing_lexicon_file_in_a_group_scope_is_caught_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"policy: groups.g7.content.lexicon.files\[0\]: cannot read"):
        Policy({"groups": {"g7": {"content": {"lexicon": {"files": ["nope.tsv"]}}}}}, base_dir=tmp_path)


def test_the_timer_keeps_split_state_for_the_groups_own_window():
    # A group set to 300 s: a term split over two messages three minutes apart is found even when
    # the worker's timer ticks in between (it used to forget on the default 60 s window).
    engine = Engine(Policy({"groups": {"g": {"content": {"split_window_seconds": 300}}}}))
    engine.process(message("今晚一起去网上赌", n=1), [], (0, 1, 0))
    assert engine.tick(DAY + 90_000).findings == [] and engine.stores["content"]
    [f] = engine.process(message("博吧", ts=DAY + 180_000, n=2), [], (0, 2, 0)).findings
    assert f["rule"] == "content.gambling"
    engine.tick(DAY + 180_000 + 301_000)
    assert not engine.stores["content"]


def test_characters_split_into_their_parts_are_put_back_together():
    detector = ContentDetector()
    [cult] = [f for f in detector.on_event(message("大家来炼氵去轮工力吧"), None, Context(0)).findings
              if f["rule"] == "content.cult"]
    [match] = cult["evidence"]["matches"]
    assert match["term"] == "法轮功" and match["text"] == "氵去轮工力" and match["span"] == [4, 9]
    assert "content.gambling" in rules("晚上一起贝者十尃，带你上岸", detector)
    # the parts side by side in ordinary text are not a term (no term is one split character)
    assert rules("我女票说周末加班，木仓库那边的石马头要修", detector) == set()


def test_a_shops_number_is_its_contact_and_a_persons_number_is_personal_data():
    assert "content.pii" in rules("张三的手机号是13812345678，有事找他")
    assert "content.pii" in rules("有事打我手机138 1234 5678")
    assert "content.pii" not in rules("楼下饭店订餐电话：13812345678，中午可以送到公司")
    assert "content.pii" not in rules("酒店前台 138-1234-5678")
    # an introduction long before the number, or ended by a sentence, does not make it a shop's
    assert "content.pii" in rules("饭店订好了。王经理的手机13812345678")


def test_swearing_into_the_air_is_not_an_insult_aimed_at_a_member_is():
    assert "content.insult" not in rules("他妈的，又堵车了，今天要迟到")
    assert "content.insult" not in rules("卧槽，这个方案终于过了")
    assert "content.insult" in rules("你他妈的能不能闭嘴")
    assert "content.insult" in rules("@李四 神经病吧，天天发这些")
    assert "content.insult" in rules("傻逼，看什么看")  # an insult needs no addressee
