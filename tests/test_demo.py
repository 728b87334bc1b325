"""`qunguard demo` on the embedded defaults (Tansu, chDB), the way a new user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_on_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", "from pipeline.cli import run; run()", "demo", "--seconds", "6",
                        "--rate", "1000"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    out = r.stdout
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.count("│") == 3}
    assert rows["raw_events"] == "6,000"  # every simulated event, stored once
    assert int(rows["messages"].replace(",", "")) > 3000
    assert rows["deadletter"] == "6"  # the malformed records mixed in
    assert "top tokens" in out
    # Both governance stages had their say: the group stage at once, the member stage at its timer.
    assert "member.unauthorized_invite" in rows and "member.departed" in rows
    assert "Membership audit" in out
    # Members collected strikes and the ladder proposed sanctions; reviewers' verdicts took effect.
    assert "sanction.warn" in rows and "Latest sanctions proposed" in out
    assert "confirmed" in rows
    # and a weekly report of each org from the demo's data (issue "console and reports")
    assert "weekly report org1 2026-W44" in out
    from openpyxl import load_workbook
    book = load_workbook(tmp_path / ".qunguard/demo/report-org1-2026-W44.xlsx")
    assert "findings by rule" in book.sheetnames and book["findings by rule"].max_row > 5
    assert "Exception" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    # the demo's data is where the embedded default reads: the commands after it find it
    audit = subprocess.run([sys.executable, "-m", "pipeline.cli", "audit", "members"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert audit.returncode == 0 and "groups audited" in audit.stdout, audit.stderr[-2000:]
    # a bad policy stops the next demo before it replaces this one's data
    (tmp_path / "bad.yaml").write_text("content:\n  max_chars: -3\n")
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--seconds", "1"], cwd=tmp_path,
                           env=env | {"QG_POLICY_FILE": str(tmp_path / "bad.yaml")}, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and again.stderr.startswith("qunguard: policy: content.max_chars")
    assert (tmp_path / ".qunguard/chdb/.qunguard-demo").exists()


@pytest.mark.slow
def test_demo_leaves_a_console_a_newcomer_signs_in_to(tmp_path):
    """`make demo` runs `qunguard demo --console`: the summary, then a console on the demo's data
    with one admin per org, whose password the demo prints; SIGTERM stops all of it."""
    import http.cookiejar
    import re
    import signal
    import time
    import urllib.parse
    import urllib.request

    from pipeline.devtools.devservices import free_port, wait_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env.update(PYTHONPATH=str(ROOT), QG_CONSOLE_LISTEN=f"127.0.0.1:{port}", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "demo", "--console", "--seconds", "5",
                             "--rate", "800"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "qunguard console on" in line:
                break
        text = "".join(out)
        assert "qunguard console on" in text, text[-3000:]
        wait_port(port, 10, proc, "the demo's console")
        password = re.search(r"│ org1\s+│ org1-admin\s+│ (\S+)\s+│ admin", text).group(1)
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        base = f"http://127.0.0.1:{port}"
        login = browser.open(base + "/login").read().decode()
        token = re.search(r'name="csrf" value="([^"]+)"', login).group(1)
        form = urllib.parse.urlencode({"name": "org1-admin", "password": password, "csrf": token}).encode()
        page = browser.open(base + "/login", data=form).read().decode()
        assert "<h1>org1 ·" in page and "findings that stand" in page
        queue = browser.open(base + "/queue?days=92").read().decode()
        assert "false-positive" in queue, "an admin reviews too"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, rest[-2000:]


@pytest.mark.slow
def test_demo_runs_from_qq_traffic_through_the_onebot_bridge(tmp_path):
    """`demo --onebot`: the same summary, reached through OneBot v11 frames and `bridge onebot`;
    every stored event carries QQ's numbers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--onebot", "--seconds", "4", "--rate", "1000"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    out = r.stdout
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.count("│") == 3}
    assert int(rows["messages"].replace(",", "")) > 2000
    assert "flood.repeat" in rows and "member.departed" in rows and "sanction.warn" in rows
    from pipeline.sink.backends import connect

    db = connect(f"chdb:{tmp_path / '.qunguard/chdb'}")
    platforms = db.query("SELECT platform, count(), countIf(NOT match(group_id, '^[0-9]+$')) "
                         "FROM qunguard.messages GROUP BY platform")
    db.close()
    assert len(platforms) == 1 and platforms[0][0] == "qq" and platforms[0][2] == 0, platforms
    assert "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
def test_demo_plays_a_capture_of_onebot_frames(tmp_path):
    """`demo --onebot CAPTURE`: frames as an implementation sent them (the captured payloads, one a
    line), through the bridge to ClickHouse; a line that is no frame is a dead letter."""
    import json

    payloads = ROOT / "tests/data/payloads"
    frames = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(payloads.glob("onebot_*capture*.json"))]
    frames += [json.loads((payloads / "onebot_group_message_napcat_doc.json").read_text(encoding="utf-8"))]
    assert len(frames) >= 4 and all(f.get("post_type") in ("message", "notice") for f in frames)
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join([json.dumps(f, ensure_ascii=False) for f in frames] + ["{not a frame"]) + "\n",
                       encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env["PYTHONPATH"] = str(ROOT)
    missing = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--onebot", str(tmp_path / "nosuch")],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--onebot", str(capture), "--seconds", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    from pipeline.adapters.onebot import map_payload
    from pipeline.sink.backends import connect

    expected = {e["event_id"] for f in frames for e in map_payload(f, "org1")}
    db = connect(f"chdb:{tmp_path / '.qunguard/chdb'}")
    stored = {row[0] for row in db.query("SELECT event_id FROM qunguard.raw_events")}
    dead = db.query("SELECT error FROM qunguard.deadletter")
    db.close()
    # the one bad line, and nothing else (the group's own findings, group.idle, were dead letters once)
    assert stored == expected and len(dead) == 1 and "invalid JSON" in dead[0][0], (stored, dead)
