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


def test_compose_keeps_secrets_out_of_the_repository_and_ports_on_loopback():
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    users = (ROOT / "deploy/clickhouse/users.d/qunguard.xml").read_text()
    assert "<password>" not in users and users.count('from_env="') == 2
    assert "<readonly>2</readonly>" in users, "readonly=1 breaks the Grafana plugin (#325)"
    assert "password: dashboard" not in (ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text()
    assert "qunguard:qunguard@" not in text and "${QUNGUARD_CLICKHOUSE_PASSWORD:?" in text
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert services["clickhouse"]["environment"]["CLICKHOUSE_SKIP_USER_SETUP"] == "1"
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    example = dict(line.split("=", 1) for line in (ROOT / "deploy/env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    import re
    assert set(re.findall(r"\$\{(\w+):\?", text)) <= set(example)


def test_compose_kafka_keeps_its_log_on_the_volume_and_the_worker_gets_a_policy():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    kafka = services["kafka"]
    data = kafka["volumes"][0].split(":")[1]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == data
    assert "EXTERNAL://localhost:9094" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    worker = services["worker"]
    mounted = worker["volumes"][0].rsplit(":", 2)
    assert worker["environment"]["QG_POLICY_FILE"] == mounted[1]
    from pipeline.policy import load_policy
    load_policy(str(ROOT / "deploy/policy.yaml"))  # the default policy mounted is valid


def test_the_image_builds_the_wheel_in_a_build_stage_and_runs_unprivileged():
    lines = [line.split("#")[0].strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert any(line.startswith("RUN pip wheel") for line in lines)
    assert any(line.startswith("COPY --from=build") for line in lines)
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] != "USER root" and lines.index(user[-1]) > lines.index(stages[1])
    # what the build stage copies is what the wheel is built from (scripts/wheel-check.sh builds the same)
    copied = {line.split()[1] for line in lines[:lines.index(stages[1])] if line.startswith("COPY ")}
    assert {"pipeline", "agents", "schemas"} <= copied


def test_the_worker_is_health_checked_and_scraped_where_it_serves():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker = services["worker"]
    listen = load_config(env=worker["environment"]).worker.metrics_listen
    port = listen.rpartition(":")[2]
    assert listen.startswith("0.0.0.0:"), "reachable from Prometheus's container"
    assert f"127.0.0.1:{port}/healthz" in " ".join(worker["healthcheck"]["test"])
    assert "ports" not in worker, "the metrics stay inside compose's network"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]
    sd = scrape[0]["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and str(sd["port"]) == port
    prom = services["prometheus"]
    assert prom["volumes"][0].split(":")[1] == "/etc/prometheus/prometheus.yml"
    assert services["prometheus"]["image"].split(":")[1][0] == "v"  # a pinned release, not latest
    plugin = services["grafana"]["environment"]["GF_INSTALL_PLUGINS"].split()
    assert plugin[0] == "grafana-clickhouse-datasource" and len(plugin) == 2, "the plugin's version pinned"
    # the plugin's documentation: v4.15+ needs Grafana 11.6+, v4.0-4.14 runs on 9.x-11.5
    grafana = tuple(int(x) for x in services["grafana"]["image"].split(":")[1].split(".")[:2])
    minor = int(plugin[1].split(".")[1])
    assert (grafana >= (11, 6)) == (minor >= 15)


def test_the_pipeline_health_dashboard_asks_for_what_the_worker_serves():
    """Every metric a panel's PromQL names is one the worker's /metrics really has (a name that
    drifted would be an empty panel), and the data source it names is provisioned."""
    import json
    import re

    from pipeline.config import load_config as cfg_of
    from pipeline.devtools.simulate import Simulator
    from pipeline.metrics import WorkerMetrics
    from pipeline.processor import Processor
    from schemas.rows import Source

    records = list(Simulator(orgs=1, groups=3, members=6, seed=1).records(500, malformed=2))
    batch = Processor(cfg_of(env={})).process((r.value, Source("qg.events", 0, i)) for i, r in enumerate(records))
    m = WorkerMetrics(sink_retries=lambda: 0)
    m.admitted(batch, len(records))
    m.written(0.1, {"raw_events": 500})
    m.set_lag({("qg.events", 0): 10}, lambda tp: 5)
    served = set(re.findall(r"^(\w+)", m.render().decode(), re.M))
    dash = json.loads((ROOT / "deploy/grafana/dashboards/pipeline-health.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs.append(dash["templating"]["list"][0]["query"]["query"])
    names = {n for e in exprs for n in re.findall(r"\b(qunguard_\w+)", e)}
    assert len(dash["panels"]) >= 6 and names and names <= served, names - served
    for kind in ("events", "consumer_lag", "deadletters", "sink_batch_seconds", "sink_errors"):
        assert any(kind in n for n in names), kind
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {sources["datasources"][0]["uid"]}


def test_compose_is_valid_against_the_compose_specification():
    """The schema `docker compose config` checks against (tests/data/compose-spec.SOURCE.md)."""
    import copy
    import json

    import jsonschema

    schema = json.loads((ROOT / "tests/data/compose-spec.json").read_text(encoding="utf-8"))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    wrong = copy.deepcopy(compose)
    wrong["services"]["worker"]["depends_onn"] = wrong["services"]["worker"].pop("depends_on")
    assert any("depends_onn" in e.message for e in validator.iter_errors(wrong))  # the schema is strict
