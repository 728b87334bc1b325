r"""Policies: the groups' rules as settings, from a YAML file; defaults from the policy texts (SPEC §4).

```yaml
content:                       # org-wide defaults for content rules
  disabled: [content.too_long]
  max_chars: 200
  allowed_domains: [example.com]
  quiet_hours: {start: "23:00", end: "06:30", tz: Asia/Shanghai}
  lexicon:
    files: [lexicon/acme.tsv]  # more terms, same format as pipeline/data/lexicon/*.tsv
    add: {ad: [代理加盟], gambling: [菠菜]}
    remove: [黄色]             # terms the org does not want flagged
    allow: [黄色预警]          # harmless contexts that suppress a match inside them
  patterns: {ad: ['加[vV微][:：]?\w{5,}']}   # regular expressions per category
  mask_stored: [id_card, bank_card]   # personal data stored masked (the default); [] keeps it as sent
orgs:   {org1: {content: {...}}}           # per org; the same keys
flood:                         # 刷屏: repeats and rates (pipeline/detectors/flood.py)
  repeat_count: 3              # the same text this many times in a row is an episode
  rate_limit: 10               # one sender's posts per rate_window_seconds
membership:                    # real names, departed staff, invites, group governance
  nickname: ["{department}-{name}", "{department}{name}"]
  name_pattern: '^XX集团'
groups: {g42: {content: {quiet_hours: null}, flood: {rate_limit: 20}}}   # per group; null switches a setting off
sanctions: {window_days: 30, steps: [{strikes: 1, action: warn}, …]}   # the ladder (pipeline/review/)
severity: {deadline.overdue: low}    # per rule or glob, the last match wins
```
Resolution for a message: group, then org, then the file's top level, then the defaults, merged
key by key (`merge`): a mapping merges with the wider scope's, a value or a list replaces it. Errors
stop with one message naming the key: `policy: content.lexicon.add.gamblin: unknown category …`.
`Policy.version(org, group)` is the short hash of a group's effective policy that findings carry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from datetime import time
from fnmatch import fnmatchcase
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.config import ConfigError, read_yaml_mapping
from schemas.records import SEVERITIES, SEVERITY_RANK

CATEGORIES = (
    "politics", "porn", "gambling", "violence", "drugs", "fraud", "cult", "insult",
    "ad", "solicit", "red_packet", "confidential", "rumor",
)
CONTENT_RULES = tuple(f"content.{c}" for c in CATEGORIES) + (
    "content.link", "content.pii", "content.too_long")
FLOOD_RULES = ("flood.repeat", "flood.rate")
DEADLINE_RULES = ("deadline.overdue", "deadline.escalated")
MEMBERSHIP_RULES = ("member.nickname", "member.departed", "member.unauthorized_invite", "member.external",
                    "member.impersonation", "group.unregistered", "group.name_format", "group.expired", "group.idle")
SANCTION_RULES = ("sanction.warn", "sanction.mute", "sanction.remove")
RULES = CONTENT_RULES + ("conduct.quiet_hours",)
ALL_RULES = RULES + FLOOD_RULES + DEADLINE_RULES + MEMBERSHIP_RULES + SANCTION_RULES


def _known_rules(v: tuple[str, ...], known: tuple[str, ...]) -> tuple[str, ...]:
    for rule in v:
        if rule not in known:
            raise ValueError(f"{rule}: unknown rule (one of {', '.join(known)})")
    return v


def _zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{v!r} is not a time zone like Asia/Shanghai") from None
    return v


def _weekdays(v: tuple[int, ...]) -> tuple[int, ...]:
    if not v or any(d not in range(1, 8) for d in v):
        raise ValueError("days are ISO weekdays 1 (Monday) to 7 (Sunday), at least one")
    return v


def _regex(pattern: str, where: str = "") -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}bad regular expression {pattern!r}: {exc}") from None
    return pattern


def _clock(v: Any, example: str = "09:00") -> str:
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 24 * 60:
        v = f"{v // 60:02d}:{v % 60:02d}"  # YAML 1.1 reads an unquoted 21:30 as 1290 (base 60)
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not a time of day like {example} (quote it: \"{example}\")")
    try:
        time.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a time of day like {example}") from None
    return v


@lru_cache(maxsize=4096)
def matches_any(rule: str, globs: tuple[str, ...]) -> bool:
    """Whether a rule name matches one of the globs (the ladder asks this for every strike of a
    member at every evaluation: remembered, as rule names and policies are few)."""
    return any(fnmatchcase(rule, g) for g in globs)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Model):
    start: str = "23:00"
    end: str = "06:30"
    tz: str = "Asia/Shanghai"

    _times = field_validator("start", "end", mode="before")(classmethod(lambda cls, v: _clock(v, "23:00")))
    _tz = field_validator("tz")(classmethod(lambda cls, v: _zone(v)))


class Lexicon(_Model):
    files: tuple[str, ...] = ()
    add: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    @field_validator("add")
    @classmethod
    def _categories(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for cat in v:
            if cat not in CATEGORIES:
                raise ValueError(f"{cat}: unknown category (one of {', '.join(CATEGORIES)})")
        return v


# Chosen on the held-out corpora (README, "Detection"): fraud at 0.9 flags none of 5,000 ordinary
# work-chat messages; insults are harder to tell from rude talk, so a lower bar with lower recall.
DEFAULT_THRESHOLDS: dict[str, float | None] = {"fraud": 0.9, "insult": 0.8}


class Classifier(_Model):
    """The statistical content classifier (pipeline/detectors/content/classifier.py): per class, the
    score at or above which it is a finding of `content.<class>`; null switches a class off."""

    model: str | None = None  # a model file (`qunguard learn --out`); None: the shipped weights
    thresholds: dict[str, float | None] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        for label, t in v.items():
            if f"content.{label}" not in RULES:
                raise ValueError(f"{label}: no rule content.{label}")
            if t is not None and not 0 < t <= 1:
                raise ValueError(f"{label}: a threshold is a score above 0 and at most 1")
        return v


class Content(_Model):
    disabled: tuple[str, ...] = ()
    max_chars: int = Field(200, ge=1)
    allowed_domains: tuple[str, ...] = (
        # The groups' own platforms: their documents, forms and mini programs are work links.
        "weixin.qq.com", "work.weixin.qq.com", "docs.qq.com", "dingtalk.com", "feishu.cn", "larksuite.com")
    quiet_hours: QuietHours | None = QuietHours()
    lexicon: Lexicon = Lexicon()
    patterns: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    split_window_seconds: int = Field(60, ge=0)
    classifier: Classifier | None = Classifier()
    # Personal data stored masked in messages.text, raw_events.payload and the tokens (detection
    # sees the clear text first); [] stores what was sent. The kinds of content.pii.
    mask_stored: tuple[Literal["id_card", "bank_card", "mobile", "email", "address"], ...] = ("id_card", "bank_card")

    _rules = field_validator("disabled")(classmethod(lambda cls, v: _known_rules(v, RULES)))

    @field_validator("patterns")
    @classmethod
    def _regexes(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for cat, pats in v.items():
            if cat not in CATEGORIES:
                raise ValueError(f"{cat}: unknown category (one of {', '.join(CATEGORIES)})")
            for i, p in enumerate(pats):
                _regex(p, f"{cat}[{i}]: ")
        return v

    @cached_property
    def quiet(self) -> tuple[time, time, ZoneInfo] | None:
        q = self.quiet_hours
        return None if q is None else (time.fromisoformat(q.start), time.fromisoformat(q.end), ZoneInfo(q.tz))

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled


class Flood(_Model):
    """刷屏 (SPEC §4): defaults from 相同的文字连续出现3次及以上视为刷屏 and 严禁刷屏."""

    disabled: tuple[str, ...] = ()
    repeat_count: int = Field(3, ge=2)
    # A pause longer than this ends an episode: the same 已打卡 once a day is not a flood.
    repeat_gap_seconds: int = Field(300, ge=1)
    rate_limit: int = Field(10, ge=1)
    rate_window_seconds: int = Field(60, ge=1)
    # Stickers flood sooner than words; images count only towards rate_limit, since a work report
    # with a handful of site photos is what the policies ask for (工作汇报要配现场图片).
    sticker_limit: int | None = Field(5, ge=1)
    # How far behind a group's latest message an event may arrive and still take its place in order.
    late_seconds: int = Field(30, ge=0)
    # For how long after a notice that asks for a reply its acknowledgements are exempt.
    notice_open_hours: float = Field(24, gt=0)

    _rules = field_validator("disabled")(classmethod(lambda cls, v: _known_rules(v, FLOOD_RULES)))

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled

    # The windows in ms, worked out once: the flood detector asks for them with every message.
    @cached_property
    def horizon_ms(self) -> int:
        """How long a quiet group's flood state can still matter."""
        return (max(self.repeat_gap_seconds, self.rate_window_seconds) + self.late_seconds) * 1000

    @cached_property
    def keep_ms(self) -> int:
        """How long a quiet sender's posts can still matter."""
        return (self.rate_window_seconds + self.late_seconds) * 1000

    @cached_property
    def late_ms(self) -> int:
        return self.late_seconds * 1000

    @cached_property
    def gap_ms(self) -> int:
        return self.repeat_gap_seconds * 1000

    @cached_property
    def window_ms(self) -> int:
        return self.rate_window_seconds * 1000


class WorkingHours(_Model):
    start: str = "08:30"
    end: str = "17:30"
    days: tuple[int, ...] = (1, 2, 3, 4, 5)  # ISO weekdays, Monday = 1

    _times = field_validator("start", "end", mode="before")(classmethod(lambda cls, v: _clock(v)))

    _days = field_validator("days")(classmethod(lambda cls, v: _weekdays(v)))


class Deadline(_Model):
    """Answers to notices (SPEC §4): 接受工作的人应在…5小时内回复; 经提醒后仍不回复的应最迟在第二天…作情况说明."""

    disabled: tuple[str, ...] = ()
    reply_hours: float = Field(5, gt=0)
    urgent_minutes: int = Field(30, ge=1)
    escalate_at: str = "09:00"  # the next day, local time
    workday_end: str = "18:00"  # what 下班前 means
    tz: str = "Asia/Shanghai"
    # When set, default and urgent deadlines count only working time (explicit ones are clock times).
    working_hours: WorkingHours | None = None
    keep_days: int = Field(3, ge=1)  # a notice is kept this long after escalation, for late answers

    _times = field_validator("escalate_at", "workday_end", mode="before")(classmethod(lambda cls, v: _clock(v)))

    _tz = field_validator("tz")(classmethod(lambda cls, v: _zone(v)))

    _rules = field_validator("disabled")(classmethod(lambda cls, v: _known_rules(v, DEADLINE_RULES)))

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


class Membership(_Model):
    """Who is in a group and what the group is (SPEC §4): 群成员一律实名制, 到岗即入,离职即删,
    群成员不得擅自邀请其他人加入, 临时群须在该项工作结束后3个工作日之内予以注销."""

    disabled: tuple[str, ...] = ()
    # The group's real-name formats; a nickname matching any of them conforms. Fields: {name} and
    # {department} from the roster; any other {field} is free text (a subject, a student's name);
    # a/b is either; - stands for any separator. Empty: the nickname must contain the roster name.
    nickname: tuple[str, ...] = ()
    # A regular expression group names must match (re.search), e.g. '^XX集团'; unset: not checked.
    name_pattern: str | None = None
    expire_working_days: int = Field(3, ge=0)  # a temporary group lives this long after ends_at
    working_days: tuple[int, ...] = (1, 2, 3, 4, 5)  # ISO weekdays that count as working days
    idle_days: int = Field(90, ge=1)
    tz: str = "Asia/Shanghai"

    _rules = field_validator("disabled")(classmethod(lambda cls, v: _known_rules(v, MEMBERSHIP_RULES)))
    _days = field_validator("working_days")(classmethod(lambda cls, v: _weekdays(v)))

    @field_validator("nickname", mode="before")
    @classmethod
    def _templates(cls, v: Any) -> Any:
        from pipeline.detectors.governance.nickname import compile_template

        v = (v,) if isinstance(v, str) else v
        for t in v or ():
            compile_template(t)  # raises ValueError naming what is wrong
        return v

    _pattern = field_validator("name_pattern")(classmethod(lambda cls, v: v if v is None else _regex(v)))

    _tz = field_validator("tz")(classmethod(lambda cls, v: _zone(v)))

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @cached_property
    def name_re(self) -> re.Pattern[str] | None:
        return re.compile(self.name_pattern) if self.name_pattern else None


def _severity(v: str) -> str:
    if v not in SEVERITIES:
        raise ValueError(f"{v!r} is not a severity (one of {', '.join(SEVERITIES)})")
    return v


def _globs(v: tuple[str, ...]) -> tuple[str, ...]:
    known = ALL_RULES
    for pattern in v:
        if not any(fnmatchcase(rule, pattern) for rule in known):
            families = sorted({r.split(".")[0] + ".*" for r in known})
            raise ValueError(f"{pattern!r} matches no rule (rules are named like {', '.join(families)})")
    return v


class Route(_Model):
    to: tuple[str, ...] = Field(min_length=1)  # channel names, from the configuration's `channels`
    rules: tuple[str, ...] = ("*",)  # globs over rule names: content.*, flood.*, member.departed
    min_severity: str = "low"

    _sev = field_validator("min_severity")(classmethod(lambda cls, v: _severity(v)))
    _rules = field_validator("rules")(classmethod(lambda cls, v: _globs(v)))

    def matches(self, rule: str, severity: str) -> bool:
        return (SEVERITY_RANK[severity] >= SEVERITY_RANK[self.min_severity]
                and matches_any(rule, self.rules))


class Alerts(_Model):
    """Who hears of which findings, and when (SPEC §8; pipeline/alerting/). One line starts an org:
    `alerts: {to: [security]}` sends every finding of `min_severity` and up to that channel."""

    to: tuple[str, ...] = ()
    min_severity: str = "medium"
    routes: tuple[Route, ...] = ()  # more, each on its own: every route that matches alerts
    urgent_severity: str = "high"  # at and above: at once, one alert per finding (group_wait 0)
    # Alertmanager's grouping, for the rest, per channel, group and rule, in event time:
    group_wait_seconds: int = Field(30, ge=0)  # after a group's first finding, before its first alert
    group_interval_seconds: int = Field(300, ge=0)  # between two alerts of one group
    repeat_interval_seconds: int = Field(4 * 3600, ge=0)  # the same rule and member again: counted, not listed
    quiet_hours: QuietHours | None = None  # non-urgent alerts wait for its end and go as one digest
    tz: str = "Asia/Shanghai"  # the time zone alerts show times in

    _sev = field_validator("min_severity", "urgent_severity")(classmethod(lambda cls, v: _severity(v)))
    _tz = field_validator("tz")(classmethod(lambda cls, v: _zone(v)))

    @cached_property
    def all_routes(self) -> tuple[Route, ...]:
        first = (Route(to=self.to, min_severity=self.min_severity),) if self.to else ()
        return first + self.routes

    def channels(self, rule: str, severity: str) -> tuple[str, ...]:
        """The channels a finding goes to, each once, in the order the routes name them."""
        out: dict[str, None] = {}
        for route in self.all_routes:
            if route.matches(rule, severity):
                out.update(dict.fromkeys(route.to))
        return tuple(out)

    def urgent(self, severity: str) -> bool:
        return SEVERITY_RANK[severity] >= SEVERITY_RANK[self.urgent_severity]

    @cached_property
    def quiet(self) -> tuple[time, time, ZoneInfo] | None:
        q = self.quiet_hours
        return None if q is None else (time.fromisoformat(q.start), time.fromisoformat(q.end), ZoneInfo(q.tz))


class Step(_Model):
    strikes: int = Field(ge=1)  # this many strikes within the window …
    action: Literal["warn", "mute", "remove"]  # … and this is what the owner is asked to do
    mute_hours: float = Field(24, gt=0)  # for mute


def _steps(v: tuple[Step, ...]) -> tuple[Step, ...]:
    counts = [s.strikes for s in v]
    if counts != sorted(set(counts)):
        raise ValueError("steps must ask for more strikes each, e.g. 1 warn, 3 mute, 5 remove")
    return v


class Sanctions(_Model):
    """The ladder (SPEC §4, pipeline/review/ladder.py): 警告 → 禁言 → 移出群聊. Every finding not
    withdrawn is a strike against its member in that group, within a rolling window."""

    window_days: float = Field(30, gt=0)
    steps: tuple[Step, ...] = (Step(strikes=1, action="warn"), Step(strikes=3, action="mute", mute_hours=24),
                               Step(strikes=5, action="remove"))
    # Globs: the rules whose findings are strikes against their member. Not by default: a departed
    # or external person's presence and a group's governance are the owner's to fix, not conduct.
    rules: tuple[str, ...] = ("content.*", "conduct.*", "flood.*", "deadline.*", "member.nickname",
                              "member.unauthorized_invite", "member.impersonation")
    # Findings of these rules, or below this severity, are strikes only once a reviewer confirms them.
    confirmed_only: tuple[str, ...] = ("deadline.*",)
    confirmed_below: str = "medium"
    verdict_wait_seconds: int = Field(3600, ge=0)  # a verdict for a finding not seen yet waits this long
    keep_days: float = Field(90, gt=0)  # a finding can be reviewed this long after it was made

    _rules = field_validator("rules", "confirmed_only")(classmethod(lambda cls, v: _globs(v)))
    _sev = field_validator("confirmed_below")(classmethod(lambda cls, v: _severity(v)))
    _steps = field_validator("steps")(classmethod(lambda cls, v: _steps(v)))

    @model_validator(mode="after")
    def _keep_the_window(self) -> Sanctions:
        if self.keep_days < self.window_days:
            raise ValueError(f"keep_days ({self.keep_days:g}) must be at least window_days ({self.window_days:g}): "
                             "a strike is kept as long as it counts")
        return self

    def counts(self, rule: str) -> bool:
        return matches_any(rule, self.rules)

    def needs_confirmation(self, rule: str, severity: str) -> bool:
        return (SEVERITY_RANK[severity] < SEVERITY_RANK[self.confirmed_below]
                or matches_any(rule, self.confirmed_only))


class Severity(_Model):
    """Per rule (or glob: `deadline.*`), the severity findings get instead of the rule's own. The
    entries are read in order, the group's after the org's after the file's top level; the last one
    that matches a rule wins, so a group's `content.*: low` beats a `content.gambling` above it."""

    rules: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        return {"rules": v} if isinstance(v, dict) and "rules" not in v else v

    @field_validator("rules")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        _globs(tuple(v))
        for sev in v.values():
            _severity(sev)
        return v

    def of(self, rule: str, default: str) -> str:
        found = default
        for pattern, severity in self.rules.items():
            if fnmatchcase(rule, pattern):
                found = severity
        return found


class Enforcement(_Model):
    """Sanctions carried out on the platform (QQ through the OneBot bridge, pipeline/adapters/
    enforce.py). Off by default: a sanction is then a proposal to the group's owner (its alert).
    On for a group: a mute is `set_group_ban` for the step's hours, a removal `set_group_kick`,
    and with `delete_messages` the strikes' messages are recalled (`delete_msg`). A warning is
    the alert itself."""

    enabled: bool = False
    delete_messages: bool = True
    retry_seconds: int = Field(120, ge=0)  # a refused or unanswered action is tried again this long


SECTIONS: dict[str, type[_Model]] = {"content": Content, "flood": Flood, "deadline": Deadline,
                                     "membership": Membership, "alerts": Alerts, "sanctions": Sanctions,
                                     "severity": Severity, "enforcement": Enforcement}


class Scope(_Model):
    content: dict[str, Any] = Field(default_factory=dict)
    flood: dict[str, Any] = Field(default_factory=dict)
    deadline: dict[str, Any] = Field(default_factory=dict)
    membership: dict[str, Any] = Field(default_factory=dict)
    alerts: dict[str, Any] = Field(default_factory=dict)
    sanctions: dict[str, Any] = Field(default_factory=dict)
    severity: dict[str, Any] = Field(default_factory=dict)
    enforcement: dict[str, Any] = Field(default_factory=dict)


class PolicyFile(Scope):
    orgs: dict[str, Scope] = Field(default_factory=dict)
    groups: dict[str, Scope] = Field(default_factory=dict)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A narrower scope over a wider one, key by key: mappings merge, anything else (a value, a list,
    null) replaces. So a group's `quiet_hours: {start: "21:00"}` keeps the org's `end`."""
    out = dict(base)
    for k, v in over.items():
        b = out.pop(k, None)  # re-inserted: the narrower scope's keys come last (Severity reads in order)
        out[k] = merge(b, v) if isinstance(v, dict) and isinstance(b, dict) else v
    return out


class Policy:
    """The resolved policy: `content_for(org, group)`, `flood_for(org, group)` give the settings that
    apply to a group; each section resolves group, then org, then the file's top level."""

    def __init__(self, data: dict[str, Any] | None = None, base_dir: Path | None = None) -> None:
        data = data or {}
        self.base_dir = base_dir or Path.cwd()
        try:
            parsed = PolicyFile.model_validate(data)
        except ValidationError as exc:
            raise _policy_error(exc) from None
        self._top = {s: getattr(parsed, s) for s in SECTIONS}
        self._orgs = {s: {k: getattr(v, s) for k, v in parsed.orgs.items()} for s in SECTIONS}
        self._groups = {s: {k: getattr(v, s) for k, v in parsed.groups.items()} for s in SECTIONS}
        self._cache: dict[tuple[str, str, str], Any] = {}
        self.defaults = {s: self._build(s, self._top[s], s) for s in SECTIONS}
        self.default: Content = self.defaults["content"]
        self.flood_default: Flood = self.defaults["flood"]
        for s in SECTIONS:
            self._scopes(s)  # every org's and group's settings are validated at load

    def _scopes(self, section: str) -> list[tuple[str, Any]]:
        """(key prefix, built settings) of the file's top level and of every org and group."""
        top = self._top[section]
        scopes = [(f"orgs.{k}.{section}", v) for k, v in self._orgs[section].items()]
        scopes += [(f"groups.{k}.{section}", v) for k, v in self._groups[section].items()]
        return [(section, self.defaults[section])] + [
            (where, self._build(section, merge(top, over), where)) for where, over in scopes]

    def _build(self, section: str, values: dict[str, Any], where: str) -> Any:
        """Validate one scope's settings, and that its lexicon files exist."""
        try:
            settings = SECTIONS[section].model_validate(values)
        except ValidationError as exc:
            raise _policy_error(exc, where) from None
        if isinstance(settings, Content):
            for i, f in enumerate(settings.lexicon.files):
                path = resolve(self.base_dir, f)
                if not path.is_file():
                    raise ConfigError(f"policy: {where}.lexicon.files[{i}]: cannot read {path}")
        return settings

    def section_for(self, section: str, org_id: str, group_id: str) -> Any:
        if org_id not in self._orgs[section] and group_id not in self._groups[section]:
            return self.defaults[section]  # most groups: nothing to merge, nothing to remember
        key = (section, org_id, group_id)
        found = self._cache.get(key)
        if found is None:
            top = self._top[section]
            merged = merge(merge(top, self._orgs[section].get(org_id, {})), self._groups[section].get(group_id, {}))
            found = (self.defaults[section] if merged == top
                     else self._build(section, merged, f"groups.{group_id}.{section}"))
            self._cache[key] = found
        return found

    def content_for(self, org_id: str, group_id: str) -> Content:
        return cast(Content, self.section_for("content", org_id, group_id))

    def flood_for(self, org_id: str, group_id: str) -> Flood:
        return cast(Flood, self.section_for("flood", org_id, group_id))

    def deadline_for(self, org_id: str, group_id: str) -> Deadline:
        return cast(Deadline, self.section_for("deadline", org_id, group_id))

    def membership_for(self, org_id: str, group_id: str) -> Membership:
        return cast(Membership, self.section_for("membership", org_id, group_id))

    def alerts_for(self, org_id: str, group_id: str) -> Alerts:
        return cast(Alerts, self.section_for("alerts", org_id, group_id))

    def sanctions_for(self, org_id: str, group_id: str) -> Sanctions:
        return cast(Sanctions, self.section_for("sanctions", org_id, group_id))

    def enforcing(self) -> bool:
        """Whether any org or group has enforcement on (the bridge then carries sanctions out)."""
        return any(cast(Enforcement, settings).enabled for _, settings in self._scopes("enforcement"))

    def enforcement_for(self, org_id: str, group_id: str) -> Enforcement:
        return cast(Enforcement, self.section_for("enforcement", org_id, group_id))

    def severity_for(self, org_id: str, group_id: str) -> Severity:
        return cast(Severity, self.section_for("severity", org_id, group_id))

    def effective(self, org_id: str, group_id: str) -> dict[str, Any]:
        """Every setting that applies to a group, defaults included, as plain data."""
        out = {s: self.section_for(s, org_id, group_id).model_dump(mode="json") for s in SECTIONS}
        out["severity"] = out["severity"]["rules"]
        return out

    def version(self, org_id: str, group_id: str) -> str:
        """A short hash of the effective policy and of the lexicon files it names: findings carry it,
        so a reviewer can tell which rules were in force."""
        key = ("version", org_id, group_id)
        found = self._cache.get(key)
        if found is None:
            h = hashlib.blake2b(orjson.dumps(self.effective(org_id, group_id), option=orjson.OPT_SORT_KEYS),
                                digest_size=4)
            for f in self.content_for(org_id, group_id).lexicon.files:
                h.update(resolve(self.base_dir, f).read_bytes())
            found = self._cache[key] = h.hexdigest()
        return cast(str, found)

    def check_channels(self, configured: Collection[str]) -> None:
        """Every channel a route names must be configured; else stop, naming the key."""
        for where, settings in self._scopes("alerts"):
            named = [(f"{where}.to", settings.to)]
            named += [(f"{where}.routes[{i}].to", route.to) for i, route in enumerate(settings.routes)]
            for key, names in named:
                for name in names:
                    if name not in configured:
                        raise ConfigError(f"policy: {key}: unknown channel {name!r} (configured: "
                                          f"{', '.join(sorted(configured)) or 'none; see channels in the config'})")


def resolve(base_dir: Path, name: str) -> Path:
    """A file named in a policy: relative to the policy file's folder."""
    p = Path(name)
    return p if p.is_absolute() else base_dir / p


def _policy_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    key = ".".join(p for p in (prefix, loc) if p)
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"policy: {key}: {msg}")


def load_policy(path: str | Path | None) -> Policy:
    if not path:
        return Policy()
    data = read_yaml_mapping(path, "policy")
    return Policy(data, base_dir=Path(path).resolve().parent)
