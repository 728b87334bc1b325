import subprocess
import sys

import pytest

from pipeline.config import ConfigError, load_config


def test_defaults():
    cfg = load_config(env={})
    assert cfg.sink.batch_rows == 10_000 and cfg.sink.batch_seconds == 1.0
    assert cfg.clickhouse.url.startswith("chdb:") and cfg.topic("events") == "qg.events"


def test_file_then_environment(tmp_path):
    f = tmp_path / "qg.yaml"
    f.write_text("sink:\n  batch_rows: 500\nkafka:\n  topic_prefix: acme.\n")
    cfg = load_config(f, env={"QG_SINK_BATCH_ROWS": "700"})
    assert cfg.sink.batch_rows == 700 and cfg.topic("deadletter") == "acme.deadletter"


def test_bad_value_names_key_and_source(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(env={"QG_SINK_BATCH_ROWS": "0"})
    assert str(exc.value).startswith("config: sink.batch_rows: Input should be greater than or equal to 1")
    assert "QG_SINK_BATCH_ROWS" in str(exc.value)
    f = tmp_path / "qg.yaml"
    f.write_text("sink:\n  batch_secs: 2\n")
    expected = r"config: sink.batch_secs: Extra inputs are not permitted \(from .*qg.yaml\)"
    with pytest.raises(ConfigError, match=expected):
        load_config(f, env={})


def test_unknown_section_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="QG_SINKS_BATCH_ROWS names no known section"):
        load_config(env={"QG_SINKS_BATCH_ROWS": "1"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})


def test_cli_stops_with_one_message_and_exit_code_2():
    env = {"QG_SINK_BATCH_SECONDS": "soon", "PATH": ""}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "migrate"], env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "qunguard: config: sink.batch_seconds: Input should be a valid number, unable to parse string as a number "
        "(from QG_SINK_BATCH_SECONDS)"]
