"""Configuration: defaults, then a YAML file, then QG_* environment variables; validated once.

Keys are `section.name` (e.g. `sink.batch_rows`); the environment variable for a key is
`QG_SECTION_NAME` (e.g. `QG_SINK_BATCH_ROWS`), and `QG_CONFIG` names the YAML file. A bad value
stops the program with one message that names the key and where the value came from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """Bad configuration; the message names the key."""


class _Section(BaseModel):
    # strict booleans: `yes`, `on` or `1` for a flag is refused, not guessed (true or false)
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _strict_bool(cls, v: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name)
        if field is not None and field.annotation is bool and isinstance(v, str):
            if v.strip().lower() not in ("true", "false"):
                raise ValueError(f"{v!r} is not true or false")
            return v.strip().lower() == "true"
        return v


def redact(url: str) -> str:
    """A URL with its password replaced by ***, for messages and logs."""
    return re.sub(r"^([a-z+]+://[^:/@]*):[^@]*@", r"\1:***@", url)


class KafkaConfig(_Section):
    url: str = Field("", description="kafka://host:port[,host:port]; empty = embedded Tansu broker (demo only)")

    @field_validator("url")
    @classmethod
    def _kafka_url(cls, v: str) -> str:
        if v and not v.startswith("kafka://"):
            raise ValueError(f"{redact(v)!r} is not kafka://host:port[,host:port]")
        if v and not all(re.fullmatch(r"[^\s:/,]+:\d{1,5}", h.strip()) for h in v[len("kafka://"):].split(",")):
            raise ValueError(f"{redact(v)!r} is not kafka://host:port[,host:port]")
        return v
    topic_prefix: str = "qg."
    partitions: int = Field(8, ge=1, le=1024)
    session_timeout_seconds: float = Field(10.0, ge=1)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)


class ClickHouseConfig(_Section):
    url: str = "chdb:.qunguard/chdb"

    @field_validator("url")
    @classmethod
    def _clickhouse_url(cls, v: str) -> str:
        if v.startswith(("http://", "https://")):
            raise ValueError(f"{redact(v)!r} is the HTTP interface; qunguard speaks the native protocol: "
                             "clickhouse://user:password@host:9000/db")
        if not v.startswith(("clickhouse://", "clickhouse+native://", "chdb:")):
            raise ValueError(f"{redact(v)!r} is neither clickhouse://user:password@host:9000/db nor chdb:PATH")
        return v


class SinkConfig(_Section):
    batch_rows: int = Field(10_000, ge=1)
    batch_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(30.0, gt=0)
    dedupe_cache: int = Field(200_000, ge=0)  # per table; about 20 full batches of recent keys


class IngestConfig(_Section):
    max_text_chars: int = Field(100_000, ge=1)


class TokenizerConfig(_Section):
    backend: Literal["auto", "jieba", "jieba_fast"] = "auto"  # auto = jieba; jieba_fast: faster (text/tokenize.py)
    hmm: bool = False
    user_dict: str | None = None
    cache_size: int = Field(200_000, ge=0)


class PolicyConfig(_Section):
    file: str | None = Field(None, description="policy YAML (pipeline/policy.py); none = the defaults")


class WorkerConfig(_Section):
    app_id: str = "qunguard"
    data_dir: str = ".qunguard/worker"
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    # Timers (deadlines, releasing quiet state) run on the wall clock every `timer_seconds`, once the
    # worker has caught up; `timer_grace_seconds` waits for answers still in flight at a deadline.
    timer_seconds: float = Field(5.0, gt=0)
    timer_grace_seconds: float = Field(10.0, ge=0)
    # /metrics (Prometheus) and /healthz; empty: not served. A second worker on one host needs its own.
    metrics_listen: str = "127.0.0.1:9108"

    _metrics_listen = field_validator("metrics_listen")(classmethod(lambda cls, v: host_port(v) if v else v))


ChannelType = Literal["wecom", "dingtalk", "feishu", "webhook", "smtp"]
# Each platform's published budget for one robot (SPEC §8): messages per minute, per second.
BUDGETS: dict[str, tuple[int, int | None]] = {"wecom": (20, None), "dingtalk": (20, None), "feishu": (100, 5),
                                              "webhook": (600, None), "smtp": (60, None)}
ENDPOINTS = {"wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send", "dingtalk": "https://oapi.dingtalk.com/robot/send",
             "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook"}


class Channel(_Section):
    """One destination of alerts (pipeline/alerting/channels.py). Secrets are never printed."""

    type: ChannelType
    url: str | None = None  # the endpoint; robots default to the platform's, a webhook must name one
    key: str | None = Field(None, repr=False)  # WeCom robot: the webhook key
    access_token: str | None = Field(None, repr=False)  # DingTalk robot
    hook: str | None = Field(None, repr=False)  # Feishu bot: the hook id at the end of its URL
    secret: str | None = Field(None, repr=False)  # DingTalk/Feishu signing secret; webhook HMAC key
    per_minute: int | None = Field(None, ge=1)  # default: the platform's budget (BUDGETS)
    per_second: int | None = Field(None, ge=1)
    host: str | None = None  # SMTP
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    ca_file: str | None = None  # a CA bundle for the server's certificate (an internal CA); default: the system's
    user: str | None = None
    password: str | None = Field(None, repr=False)
    sender: str | None = None
    to: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _complete(self) -> Channel:
        need = {"wecom": ("key",), "dingtalk": ("access_token",), "feishu": ("hook",), "webhook": ("url",),
                "smtp": ("host", "sender", "to")}[self.type]
        for name in need:
            if not getattr(self, name):
                raise ValueError(f"a {self.type} channel needs {name}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url[:40]!r}")
        return self

    @property
    def budget(self) -> tuple[int, int | None]:
        minute, second = BUDGETS[self.type]
        return self.per_minute or minute, self.per_second or second

    def secrets(self) -> list[str]:
        return [v for v in (self.key, self.access_token, self.hook, self.secret, self.password) if v]


class NotifierConfig(_Section):
    base_url: str = ""  # links in alerts: {base_url}/findings/{finding_id} (the console)
    retry_seconds: float = Field(600.0, gt=0)  # how long an alert is retried before it is a dead letter
    timeout_seconds: float = Field(10.0, gt=0)  # one request to a channel
    channels: dict[str, Channel] = Field(default_factory=dict)
    metrics_listen: str = "127.0.0.1:9109"  # /metrics and /healthz of `qunguard notifier`; empty: not served

    _metrics_listen = field_validator("metrics_listen")(classmethod(lambda cls, v: host_port(v) if v else v))

    @field_validator("channels", mode="before")
    @classmethod
    def _json(cls, v: Any) -> Any:
        if isinstance(v, str):  # QG_NOTIFIER_CHANNELS='{"security": {"type": "wecom", "key": "…"}}'
            try:
                return json.loads(v)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        return v


def host_port(v: str) -> str:
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{v!r} is not host:port")
    return v


class ConsoleConfig(_Section):
    listen: str = "127.0.0.1:8088"  # host:port of `qunguard console`
    users: str = ".qunguard/console-users.json"  # the users file (`qunguard console-user`)
    timezone: str = "Asia/Shanghai"  # the orgs' calendar: days, weeks and the heatmap's hours
    session_hours: float = Field(12.0, gt=0)  # a sign-in lasts this long
    metrics_listen: str = "127.0.0.1:9110"  # /metrics of `qunguard console`, apart from its pages; empty: none

    _listen = field_validator("listen")(classmethod(lambda cls, v: host_port(v)))
    _metrics_listen = field_validator("metrics_listen")(classmethod(lambda cls, v: host_port(v) if v else v))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone") from None
        return v


class BridgeConfig(_Section):
    """`qunguard bridge onebot` and `qunguard bridge wecom-archive` (pipeline/adapters/)."""

    org_id: str = ""  # the organisation whose traffic the bridge carries (required by the bridges)
    onebot_listen: str = "127.0.0.1:8091"  # HTTP POST on /, reverse WebSocket on /onebot/v11/ws
    onebot_secret: str = Field("", repr=False)  # HTTP POST: X-Signature (HMAC-SHA1 of the body) checked when set
    onebot_access_token: str = Field("", repr=False)  # WebSocket: Authorization: Bearer <token> checked when set
    onebot_api_url: str = ""  # the implementation's HTTP API, for actions when no WebSocket is connected
    linger_ms: int = Field(20, ge=0, le=5000)  # how long events wait to share one batch envelope
    envelope: int = Field(100, ge=1, le=1000)  # events per envelope at most (one group per envelope)
    wecom_cursor: str = ".qunguard/wecom-archive.cursor"  # the last seq stored, so a restart resumes

    _listen = field_validator("onebot_listen")(classmethod(lambda cls, v: host_port(v)))


class RetentionConfig(_Section):
    """Days each table's rows are kept (`qunguard retention`); 0 = kept for ever. The defaults keep
    chat six months, the 网络安全法's floor for logs, and the findings and sanctions for ever."""

    events_days: int = Field(180, ge=0)  # raw_events, messages
    deadletter_days: int = Field(90, ge=0)
    deadline_days: int = Field(365, ge=0)  # notices, responses
    alerts_days: int = Field(365, ge=0)  # alerts, alert_deliveries
    findings_days: int = Field(0, ge=0)  # findings, sanction_actions


class Config(_Section):
    kafka: KafkaConfig = KafkaConfig()
    clickhouse: ClickHouseConfig = ClickHouseConfig()
    sink: SinkConfig = SinkConfig()
    ingest: IngestConfig = IngestConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    policy: PolicyConfig = PolicyConfig()
    worker: WorkerConfig = WorkerConfig()
    notifier: NotifierConfig = NotifierConfig()
    console: ConsoleConfig = ConsoleConfig()
    bridge: BridgeConfig = BridgeConfig()
    retention: RetentionConfig = RetentionConfig()

    def topic(self, name: str) -> str:
        return f"{self.kafka.topic_prefix}{name}"


SECTIONS = tuple(Config.model_fields)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; any problem is one ConfigError naming the file."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what}: {path} must be a mapping")
    return loaded


def _env_overrides(env: dict[str, str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    data: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}
    for var, value in env.items():
        if not var.startswith("QG_") or var in ("QG_CONFIG", "QG_CACHE_DIR"):
            continue
        rest = var[3:].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"config: {var} names no known section ({', '.join(SECTIONS)})")
        key = rest[len(section) + 1:]
        data.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = var
    return data, origin


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ if env is None else env)
    path = path or env.get("QG_CONFIG")
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if path:
        loaded = read_yaml_mapping(path, "config")
        data = loaded
        origin = {f"{s}.{k}": str(path) for s, v in loaded.items() if isinstance(v, dict) for k in v}
    overrides, env_origin = _env_overrides(env)
    for section, values in overrides.items():
        merged = dict(data.get(section) or {})
        merged.update(values)
        data[section] = merged
    origin.update(env_origin)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        source = origin.get(key)
        where = f" (from {source})" if source else ""
        raise ConfigError(f"config: {key}: {err['msg'].removeprefix('Value error, ')}{where}") from None


def config_env(cfg: Config, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process (a worker) exactly this configuration."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("QG_")}
    for section, model in cfg:
        for key, value in model:
            if isinstance(value, dict):
                env[f"QG_{section.upper()}_{key.upper()}"] = json.dumps(
                    {k: v.model_dump(exclude_none=True) for k, v in value.items()}, ensure_ascii=False)
            elif value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"QG_{section.upper()}_{key.upper()}"] = text
    return env
