"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one."""

from pathlib import Path

import yaml

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_compose_services_and_worker_config_are_valid():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "clickhouse", "grafana", "worker", "migrate", "topics"} <= set(services)
    for name in ("worker", "migrate"):
        cfg = load_config(env=services[name]["environment"])  # raises on any unknown or bad key
        assert cfg.clickhouse.url.startswith("clickhouse://")
    assert load_config(env=services["worker"]["environment"]).kafka.url == "kafka://kafka:9092"
    for vol in services["grafana"]["volumes"] + services["topics"]["volumes"]:
        assert (ROOT / vol.split(":")[0]).exists(), vol
