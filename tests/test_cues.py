"""Cue combinations (issue "detection"): fraud and adverts written in ordinary words, measured per
family on the hand-labelled development set, and the false-alarm gate on ordinary work chat."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import main
from pipeline.detectors.content.cues import combinations, find_combinations
from pipeline.detectors.content.detector import ContentDetector
from pipeline.devtools.simulate import Simulator
from tests.conftest import REPORT
from tests.test_content import rules

CORPUS = Path(__file__).parent / "data" / "cues_corpus.tsv"
FAMILIES = {"fraud": "content.fraud", "ad": "content.ad"}


def _corpus() -> list[tuple[str, str]]:
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return [tuple(line.split("\t", 1)) for line in lines]  # type: ignore[misc]


def test_per_family_precision_recall_and_false_alarms_on_the_development_set():
    detector = ContentDetector()
    corpus = _corpus()
    found = [(label, text, rules(text, detector)) for label, text in corpus]
    ordinary = [f for f in found if f[0] == "-"]
    for family, rule in FAMILIES.items():
        positives = [f for f in found if f[0] == family]
        hits = [f for f in found if rule in f[2]]
        tp = sum(1 for f in hits if f[0] == family)
        alarms = [f[1] for f in ordinary if rule in f[2]]
        precision, recall = tp / max(1, len(hits)), tp / len(positives)
        alarm_rate = len(alarms) / len(ordinary)
        REPORT.append(f"cues ({family}): {len(positives)} {family} and {len(ordinary)} ordinary messages (development "
                      f"set): precision={precision:.3f} recall={recall:.3f} false alarms={alarm_rate:.3f}")
        REPORT.extend(f"  missed: {f[1][:40]}" for f in positives if rule not in f[2])
        REPORT.extend(f"  false alarm: {t[:40]}" for t in alarms)
        assert recall >= {"fraud": 0.8, "ad": 0.6}[family], family
        assert len(alarms) / len(ordinary) <= 0.05, (family, alarms)


def test_a_single_cue_is_not_enough_and_an_advisory_is_not_a_scam():
    assert find_combinations("我是王总，下午三点开会") == []  # an identity, no request
    assert find_combinations("财务已经转账了") == []  # identity and request, nobody pushed
    assert find_combinations("警惕冒充领导的人让你马上转账") == []  # an advisory
    [(rule, severity, item)] = find_combinations("我是王总，你先帮我转一笔款")
    assert (rule, severity) == ("content.fraud", "high")
    assert {g: c["text"] for g, c in item["combination"].items()} == {"identity": "我是王总", "request": "转一笔",
                                                                      "push": "你先"}


def test_every_pattern_is_written_as_the_normalised_text_reads():
    """The normaliser keeps one of a run of the same character: a pattern with `pp` never matches."""
    import re

    for combo in combinations():
        for pattern in [p for _, p in combo.groups] + ([combo.unless] if combo.unless else []):
            assert not re.search(r"([^\\\d\]\)\}])\1", pattern.pattern), (combo.rule, pattern.pattern)


def test_disguises_fold_away_before_the_cues_are_read():
    # full-width letters, spaces, zero-width characters and symbols between the characters
    text = "兼\u200b职 日-结，加 ｖｘ：abc12345"
    [(rule, _, item)] = find_combinations(text)
    assert rule == "content.ad"
    promo = item["combination"]["promo"]
    assert text[promo["span"][0]:promo["span"][1]] == promo["text"] == "兼\u200b职 日-结"[:len(promo["text"])]


def test_check_explains_a_combination_cue_by_cue(capsys):
    assert main(["check", "我是王总，你先帮我转一笔款给这个账户"]) == 1
    out = capsys.readouterr().out
    for cue in ("identity", "request", "push", "我是王总", "转一笔", "你先"):
        assert cue in out


def test_false_alarm_gate_on_five_thousand_ordinary_work_chat_messages():
    """The simulator's ordinary chatter, notices and answers (its violations left out): the share of
    messages any content rule flags, quiet hours and length aside."""
    sim = Simulator(orgs=2, groups=40, members=12, seed=17)
    # its floods are adverts and solicitations on purpose (posted with a few "!" more)
    violations = {t.rstrip("!") for t in sim.vocab["violations"] + sim.vocab["floods"]}
    texts = []
    for ev in sim.events(40_000):
        if ev["kind"] == "message" and ev["msg_type"] == "text" and ev["text"] and \
                ev["text"].rstrip("!") not in violations:
            texts.append(ev["text"])
        if len(texts) >= 5_000:
            break
    detector = ContentDetector()
    flagged = [t for t in texts if rules(t, detector) - {"conduct.quiet_hours", "content.too_long"}]
    rate = len(flagged) / len(texts)
    REPORT.append(f"false-alarm gate: {len(flagged)} of {len(texts)} ordinary simulated work-chat messages flagged "
                  f"({rate:.2%}; goal ≤ 0.30%)")
    assert len(texts) == 5_000 and rate <= 0.003, sorted(set(flagged))[:10]


def test_notices_are_recognised_in_the_ways_people_write_them():
    from pipeline.text.notice import asks_reply

    path = Path(__file__).parent / "data" / "notice_corpus.tsv"
    rows = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    wrong = [(label, text) for label, text in rows if asks_reply(text) != (label == "asks")]
    asks = sum(1 for label, _ in rows if label == "asks")
    REPORT.append(f"notices: {len(rows)} phrasings (development set), {asks - sum(1 for w in wrong if w[0] == 'asks')}"
                  f"/{asks} asking for a reply recognised, {sum(1 for w in wrong if w[0] == '-')} false")
    REPORT.extend(f"  differs: {label} {text}" for label, text in wrong)
    assert not wrong


def test_a_combination_spread_over_one_senders_messages_within_the_window():
    from pipeline.detectors import Context
    from pipeline.policy import Policy
    from tests.test_content import message

    cues_only = Policy({"content": {"classifier": None}})  # the ask alone is the classifier's to judge
    detector = ContentDetector(cues_only)
    claim = message("我是王总，在开会不方便说话", n=1)
    ask = message("你先帮我转一笔款到这个账户", ts=claim["ts"] + 20_000, n=2)
    state = detector.on_event(claim, None, Context(0)).state
    assert detector.on_event(claim, None, Context(0)).findings == []
    [found] = detector.on_event(ask, state, Context(0)).findings
    item = found["evidence"]["combinations"][0]
    assert found["rule"] == "content.fraud" and found["msg_id"] == "m2" and item["across_messages"]
    assert item["combination"]["identity"] == {"normalized": "我是王总", "msg_id": "m1"}
    # after the window (60 s) the claim no longer counts; another sender's claim never did
    late = message("你先帮我转一笔款到这个账户", ts=claim["ts"] + 61_000, n=3)
    assert detector.on_event(late, state, Context(0)).findings == []
    # through the engine, as the worker runs it: the cues are the sender's own, per group
    import orjson

    from pipeline.replay import replay

    def fraud(*events: dict) -> list[str]:
        return [f["msg_id"] for f in replay([orjson.dumps(e) for e in events], policy=cues_only).findings
                if f["rule"] == "content.fraud"]

    assert fraud(claim, ask) == ["m2"]
    assert fraud(claim, message("你先帮我转一笔款到这个账户", ts=claim["ts"] + 20_000, n=4, sender="u2")) == []
