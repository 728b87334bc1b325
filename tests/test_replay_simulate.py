import subprocess
import sys

import orjson

from pipeline.devtools.simulate import Simulator
from pipeline.replay import replay
from schemas.records import validate_event


def _lines(**kw) -> list[bytes]:
    return [r.value for r in Simulator(**kw).records(3000, malformed=24)]


def test_simulation_is_seeded_and_realistic():
    a, b = _lines(seed=1), _lines(seed=1)
    assert a == b and a != _lines(seed=2)
    valid = []
    for v in a:
        try:
            valid.append(validate_event(orjson.loads(v)))
        except ValueError:  # the malformed ones: broken JSON or a schema error
            pass
    kinds = {e["kind"] for e in valid}
    assert kinds == {"roster", "group", "member", "message", "feedback"}
    texts = [e["text"] for e in valid if e["kind"] == "message"]
    assert any("收到请回复" in t for t in texts) and any(t in ("收到", "好的", "已阅") for t in texts)
    assert sum(1 for e in valid if e["kind"] == "message" and e["reply_to"]) > 0
    assert len(valid) == 3000


def test_replay_is_byte_identical_and_skips_bad_lines(tmp_path):
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(_lines(seed=3)) + b"\n")
    result = replay(open(f, "rb"))
    assert result.events == 3000 and len(result.dead) == 24
    cmd = [sys.executable, "-m", "pipeline.cli", "replay", str(f), "--until", "2026-11-03T09:00:00"]
    one = subprocess.run(cmd, capture_output=True)
    two = subprocess.run(cmd + ["--out", str(tmp_path / "out.jsonl")], capture_output=True)
    assert one.returncode == two.returncode == 0
    assert one.stdout == (tmp_path / "out.jsonl").read_bytes()
    assert b"24 invalid lines skipped" in one.stderr


def test_replay_bad_until_and_missing_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(tmp_path / "nope.jsonl")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr
    f = tmp_path / "e.jsonl"
    f.write_text("")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "replay", str(f), "--until", "tomorrow"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--until" in r.stderr
