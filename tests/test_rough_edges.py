"""The rough edges an operator met (issue "deployable"), each the way it was met: the command, its
exit code and what it says. Errors of one kind are worded alike: `qunguard: <key or option>: …`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_config, redact
from pipeline.devtools.devservices import free_port
from pipeline.policy import load_policy
from tests.conftest import ROOT


def qunguard(*args: str, env: dict[str, str] | None = None, cwd=None, timeout: float = 60):
    base = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    base.update(PYTHONPATH=str(ROOT), COLUMNS="80", **(env or {}))
    return subprocess.run([sys.executable, "-c", "from pipeline.cli import run; run()", *args], env=base,
                          cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def test_config_is_accepted_after_the_subcommand_too(tmp_path, capsys):
    cfg = tmp_path / "qg.yaml"
    cfg.write_text("kafka: {url: 'broker:9092'}\n")
    for argv in (["--config", str(cfg), "worker"], ["worker", "--config", str(cfg)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("qunguard: config: kafka.url: 'broker:9092' is not kafka://host:port") and str(cfg) in err


@pytest.mark.parametrize("var, value, key", [
    ("QG_TOKENIZER_HMM", "yes", "tokenizer.hmm"),
    ("QG_KAFKA_URL", "localhost:9092", "kafka.url"),
    ("QG_CLICKHOUSE_URL", "http://reader:s3cret@ch:8123/qunguard", "clickhouse.url"),
])
def test_a_bad_value_is_one_line_naming_its_key(var, value, key):
    with pytest.raises(ConfigError) as err:
        load_config(env={var: value})
    text = str(err.value)
    assert text.startswith(f"config: {key}: ") and text.endswith(f"(from {var})") and "\n" not in text
    assert "s3cret" not in text and "Value error" not in text
    assert load_config(env={"QG_TOKENIZER_HMM": "true"}).tokenizer.hmm is True


def test_the_http_url_says_what_to_use_instead():
    with pytest.raises(ConfigError, match="HTTP interface.*native protocol: clickhouse://"):
        load_config(env={"QG_CLICKHOUSE_URL": "http://ch:8123/qunguard"})


def test_a_clickhouse_error_never_prints_the_password():
    r = qunguard("migrate", env={"QG_CLICKHOUSE_URL": f"clickhouse://writer:s3cret@127.0.0.1:{free_port()}/x"})
    assert r.returncode == 1 and "s3cret" not in r.stderr + r.stdout
    assert r.stderr.count("\n") == 1 and "clickhouse://writer:***@127.0.0.1" in r.stderr, r.stderr
    assert redact("kafka://a:b@h:1") == "kafka://a:***@h:1" and redact("chdb:x") == "chdb:x"


@pytest.mark.slow
def test_an_unreachable_kafka_is_one_line_after_ten_seconds():
    began = time.monotonic()
    r = qunguard("worker", env={"QG_KAFKA_URL": f"kafka://127.0.0.1:{free_port()}"})
    took = time.monotonic() - began
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert r.stderr.startswith("qunguard: Kafka (kafka://127.0.0.1:") and "no broker answered within 10 s" in r.stderr
    assert took < 25


def test_a_bad_policy_stops_the_worker_before_it_waits_for_kafka(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("content:\n  max_chars: -3\n")
    began = time.monotonic()
    r = qunguard("worker", env={"QG_KAFKA_URL": f"kafka://127.0.0.1:{free_port()}", "QG_POLICY_FILE": str(policy)})
    assert r.returncode == 2 and r.stderr.startswith("qunguard: policy: content.max_chars:"), r.stderr
    assert time.monotonic() - began < 8


def test_an_unquoted_time_of_day_in_a_policy_is_read_as_written(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("content:\n  quiet_hours: {start: 21:30, end: 06:00}\n")  # YAML 1.1: 1290 and 360
    quiet = load_policy(str(policy)).content_for("o", "g").quiet_hours
    assert (quiet.start, quiet.end) == ("21:30", "06:00")
    policy.write_text("content:\n  quiet_hours: {start: [21]}\n")
    with pytest.raises(ConfigError, match=r"content.quiet_hours.start: \[21\] is not a time of day like 23:00"):
        load_policy(str(policy))


@pytest.mark.parametrize("argv, says", [
    (["simulate", "--members", "0"], "--members: '0': must be 1 or more"),
    (["simulate", "--orgs", "0"], "--orgs: '0': must be 1 or more"),
    (["simulate", "--events", "-5"], "--events: '-5': must be 1 or more"),
    (["simulate", "--groups", "x"], "--groups: 'x' is not a whole number"),
    (["check", "你好", "--msg-type", "vidoe"], "--msg-type: invalid choice: 'vidoe'"),
])
def test_bad_options_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_check_at_names_its_own_option_and_is_not_a_finding(capsys):
    assert main(["check", "你好", "--at", "tomorrow"]) == 2
    assert capsys.readouterr().err == ("qunguard: check --at: 'tomorrow' is not an ISO 8601 date-time like "
                                       "2026-11-02T10:00\n")


def test_tables_keep_rule_names_whole_at_80_columns():
    r = qunguard("check", "加我微信 13812345678 澳门赌场线上开户，百家乐充值送彩金")
    assert r.returncode == 1
    assert "│ content.gambling │" in r.stdout and "│ content.pii " in r.stdout, r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 80


def test_audit_of_an_org_without_groups_says_so(tmp_path, capsys):
    from pipeline.sink.backends import connect
    from pipeline.sink.migrate import migrate

    url = f"chdb:{tmp_path / 'db'}"
    backend = connect(url)
    migrate(backend)
    backend.close()
    os.environ["QG_CLICKHOUSE_URL"] = url
    try:
        assert main(["audit", "members", "--org", "nosuch"]) == 2
    finally:
        del os.environ["QG_CLICKHOUSE_URL"]
    assert "no group of org 'nosuch' has membership events" in capsys.readouterr().err


def test_a_reader_that_leaves_the_pipe_early_gets_no_traceback():
    """`qunguard audit members --csv - | head` and the like: every command's stdout goes through main()."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")} | {"PYTHONPATH": str(ROOT)}
    r = subprocess.run(f"set -o pipefail; '{sys.executable}' -c 'from pipeline.cli import run; run()' simulate "
                       "--events 200000 --quiet | head -n 1", shell=True, executable="/bin/bash", env=env,
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("{")
    assert r.stderr == "" and r.returncode == 141, r.stderr[-2000:]
