"""The content classifier (issue "detection"): measured on the held-out public corpora, thresholds
per org, its decisions explained, and retrained from the reviewers' verdicts (`qunguard learn`)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.detectors.content.classifier import default_model, load
from pipeline.detectors.content.detector import ContentDetector
from pipeline.policy import DEFAULT_THRESHOLDS, Policy
from pipeline.review.learn import Example, relearn, train
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from pipeline.text.normalize import fold
from schemas.records import finding_id
from tests.conftest import REPORT
from tests.stored import store
from tests.test_content import message, rules

HELDOUT = Path(__file__).parent / "data" / "classifier_heldout.tsv"
SCAM = "您好，我是某某投资公司的李经理，这个项目年化收益百分之二十，您先转五万到我们的账户就可以参与"


def _heldout() -> list[tuple[str, str, str]]:
    rows = []
    for line in HELDOUT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            source, label, text = line.split("\t")
            rows.append((source, label, text))
    return rows


def test_precision_recall_and_false_alarms_on_the_held_out_corpora():
    """Never trained on (scripts/build_classifier.py splits them off); the figures go in the README."""
    rows = _heldout()
    model = default_model()
    for label in ("fraud", "insult"):
        threshold = DEFAULT_THRESHOLDS[label]
        assert threshold is not None
        said = [(lab == label, s.probability >= threshold) for _, lab, text in rows
                for s in model.score(fold(text), [label])]
        tp = sum(1 for truth, yes in said if truth and yes)
        fp = sum(1 for truth, yes in said if yes and not truth)
        positives = sum(1 for truth, _ in said if truth)
        precision, recall = tp / max(1, tp + fp), tp / positives
        alarms = fp / (len(said) - positives)
        sources = sorted({s for s, lab, _ in rows if lab == label})
        REPORT.append(f"classifier ({label}, threshold {threshold}): {positives} {'/'.join(sources)} and "
                      f"{len(said) - positives} other held-out messages: precision={precision:.3f} "
                      f"recall={recall:.3f} false alarms={alarms:.3f}")
        assert precision >= 0.8, (label, precision)
        assert recall >= (0.8 if label == "fraud" else 0.2), (label, recall)
    # ordinary conversation (films, travel, hotels with their telephone numbers): every content rule
    ordinary = [text for source, _, text in rows if source in ("kdconv", "crosswoz")]
    flagged = {t: found for t in ordinary if (found := rules(t) - {"conduct.quiet_hours", "content.too_long"})}
    REPORT.append(f"content rules on {len(ordinary)} held-out ordinary conversation messages (KdConv, CrossWOZ): "
                  f"{len(flagged)} flagged ({len(flagged) / len(ordinary):.2%}): "
                  + "; ".join(f"{sorted(r)} {t[:24]}" for t, r in flagged.items()))
    assert len(flagged) / len(ordinary) <= 0.003, flagged


def test_a_decision_is_explained_by_the_ngrams_that_weighed_most(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table as a wide terminal shows it, unwrapped
    [finding] = [f for f in ContentDetector().on_event(message(SCAM), None, _ctx()).findings
                 if f["rule"] == "content.fraud"]
    [why] = finding["evidence"]["classifier"]
    assert why["class"] == "fraud" and why["score"] >= why["threshold"] == 0.9
    assert why["ngrams"] and all(g in fold(SCAM) and w > 0 for g, w in why["ngrams"])
    assert main(["check", SCAM]) == 1
    out = capsys.readouterr().out
    assert "classifier: fraud" in out and why["ngrams"][0][0] in out


def test_thresholds_are_per_org_and_a_class_can_be_switched_off():
    policy = Policy({"orgs": {"strict": {"content": {"classifier": {"thresholds": {"fraud": 0.5}}}},
                              "off": {"content": {"classifier": {"thresholds": {"fraud": None}}}}}})
    detector = ContentDetector(policy)
    text = "有空可以了解一下这个投资项目"
    score = default_model().score(fold(text), ["fraud"])[0].probability
    assert 0.5 <= score < 0.9, score  # between the strict org's threshold and the default

    def fraud(org: str, said: str) -> bool:
        ev = message(said, org_id=org)
        return any(f["rule"] == "content.fraud" for f in detector.on_event(ev, None, _ctx()).findings)

    assert fraud("strict", text) and not fraud("default", text)
    assert fraud("default", SCAM) and not fraud("off", SCAM)
    with pytest.raises(ValueError, match="threshold"):
        Policy({"content": {"classifier": {"thresholds": {"fraud": 1.5}}}})


def test_training_moves_the_weights_a_verdict_is_about_and_keeps_the_rest():
    corpus = [Example("请把验证码发给我", "fraud"), Example("明天下午开会", ""),
              Example("验证码已经发到你手机", "fraud"), Example("会议改到三点", "")]
    base = train(corpus * 5, ["fraud"], epochs=8)
    assert base.score(fold("请把验证码发给我"), ["fraud"])[0].probability > 0.5
    withdrawn = Example("系统验证码发给我看看", "", only="fraud")  # a reviewer's false positive
    before = base.score(fold(withdrawn.text), ["fraud"])[0].probability
    moved, changes = relearn(base, [withdrawn] * 3, epochs=30)
    after = moved.score(fold(withdrawn.text), ["fraud"])[0].probability
    assert after < before and changes[0][1:] == (pytest.approx(before), pytest.approx(after))
    assert abs(moved.weights["fraud"].get("开会", 0) - base.weights["fraud"].get("开会", 0)) < 1e-9
    again = train([Example("请把验证码发给我", "fraud"), Example("明天下午开会", "")] * 5, ["fraud"], epochs=8)
    assert again.weights == train([Example("请把验证码发给我", "fraud"), Example("明天下午开会", "")] * 5,
                                  ["fraud"], epochs=8).weights  # deterministic


def test_a_malformed_model_file_names_its_line(tmp_path):
    path = tmp_path / "model.tsv"
    path.write_text("# a model\nfraud\t<bias>\t-1.0\nfraud\t验证码 0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"model.tsv:3: expected class"):
        load(path)


def test_learn_retrains_from_verdicts_in_clickhouse_and_the_policy_uses_the_result(tmp_path, capsys):
    """`qunguard learn`: the reviewers withdrew a classifier finding on chDB; the new weights no
    longer flag that message, and the policy that points at them applies them."""
    db = tmp_path / "db"
    backend = connect(f"chdb:{db}")
    migrate(backend)
    text = "这个项目收益很好，您可以先了解一下"  # a colleague on the quarter's project
    cfg = load_config(env={"QG_CLICKHOUSE_URL": f"chdb:{db}", "QG_KAFKA_TOPIC_PREFIX": "t."})
    assert "content.fraud" in rules(text), "flagged by the shipped weights"
    post = {**message(text, org_id="org1", group_id="g1", sender_id="colleague"), "event_id": "e-post"}
    fid = finding_id("content.fraud", "g1", post["msg_id"], "colleague")
    verdict = {"kind": "feedback", "event_id": "e-fb", "org_id": "org1", "ts": post["ts"] + 60_000,
               "finding_id": fid, "verdict": "false_positive", "actor_id": "reviewer", "note": "说的是部门的项目"}
    store(cfg, backend, [orjson.dumps(post), orjson.dumps(verdict)], post["ts"] + 7_200_000)
    backend.close()
    out = tmp_path / "learned.tsv"
    config = tmp_path / "qunguard.yaml"
    config.write_text(f"clickhouse: {{url: 'chdb:{db}'}}\n", encoding="utf-8")
    assert main(["--config", str(config), "learn", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "content.fraud withdrawn" in said and str(out) in said
    learned = Policy({"content": {"classifier": {"model": str(out)}}})
    assert "content.fraud" not in rules(text, ContentDetector(learned))
    assert "content.fraud" in rules(SCAM, ContentDetector(learned)), "what it was not told about stays"
    moved, _ = relearn(default_model(), [Example(text, "", only="fraud")], epochs=2)
    scored = moved.probabilities(fold("你们这些外地人都是垃圾"))
    assert set(scored) == {"fraud", "insult"}, "a class no verdict named stays in the model"


def _ctx():
    from pipeline.detectors import Context

    return Context(0)
