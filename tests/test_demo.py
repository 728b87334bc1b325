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
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--seconds", "6", "--rate", "1000"],
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
