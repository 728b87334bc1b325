"""Realistic synthetic traffic: orgs, rosters, groups and members, then a day of work chatter with
notices and their acknowledgements, floods, violations and member changes. Seeded: the same
arguments give byte-identical output.

`malformed` adds records that must end in the dead letters (broken JSON, wrong types, missing
fields, invalid UTF-8, a 1 MB text, unknown kinds); `envelope` packs consecutive events of one
group into batch envelopes the way archive pulls deliver them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

VOCAB_FILE = Path(__file__).resolve().parents[1] / "data" / "simulate.yaml"
START_TS = 1_793_498_400_000  # 2026-11-01 10:00 Asia/Shanghai, a Sunday (ISO week 2026-W44)


@dataclass
class Record:
    """One Kafka record (or file line) and what it holds."""

    key: bytes
    value: bytes
    valid_ids: list[str] = field(default_factory=list)
    malformed: int = 0


@dataclass
class Member:
    user_id: str
    name: str
    department: str
    left: bool = False  # the roster marks them as departed


@dataclass
class Group:
    org_id: str
    group_id: str
    name: str
    platform: str
    members: list[Member]
    owner: Member
    troublemaker: Member | None = None  # posts a good share of the group's violations
    nicknames: dict[str, str] = field(default_factory=dict)  # user_id → group nickname

    def nickname(self, m: Member) -> str:
        return self.nicknames.get(m.user_id) or f"{m.department}-{m.name}"


class Simulator:
    def __init__(self, orgs: int = 2, groups: int = 20, members: int = 12, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.vocab = yaml.safe_load(VOCAB_FILE.read_text(encoding="utf-8"))
        self.orgs = [f"org{o + 1}" for o in range(orgs)]
        self.groups_per_org = max(1, groups // max(orgs, 1))
        self.members_per_group = members
        self.ts = START_TS
        self.seq = 0
        self.groups: list[Group] = []
        self.roster: dict[str, list[Member]] = {}
        self.reviews: list[tuple[int, dict[str, Any]]] = []  # (events from now, the feedback) waiting

    # --- helpers ------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}{self.seed}-{self.seq:08d}"

    def _tick(self, mean_ms: int = 1500) -> int:
        self.ts += int(self.rng.expovariate(1 / mean_ms)) + 1
        # Groups follow the working day: after 22:00 (Asia/Shanghai) the clock jumps to the next
        # morning, except for the odd late post that quiet-hours rules exist for.
        local_ms = (self.ts + 8 * 3_600_000) % 86_400_000
        if local_ms >= 22 * 3_600_000 and self.rng.random() > 0.002:
            self.ts += 86_400_000 - local_ms + 7 * 3_600_000 + self.rng.randint(0, 3_600_000)
        return self.ts

    def _person(self, org: str, i: int) -> Member:
        v = self.vocab
        name = self.rng.choice(v["surnames"]) + self.rng.choice(v["given_names"])
        return Member(f"{org}-u{i:05d}", name, self.rng.choice(v["departments"]))

    def _message(self, g: Group, sender: Member, text: str, gap_ms: int = 1500, **extra: Any) -> dict[str, Any]:
        ev = {
            "kind": "message", "event_id": self._id("e"), "org_id": g.org_id, "ts": self._tick(gap_ms),
            "platform": g.platform, "group_id": g.group_id, "msg_id": self._id("m"),
            "sender_id": sender.user_id, "sender_name": g.nickname(sender),
            "sender_role": "owner" if sender is g.owner else "member",
            "msg_type": "text", "text": text, "reply_to": None, "mentions": [],
        }
        ev.update(extra)
        return ev

    # --- the world ----------------------------------------------------------------------------

    def setup(self) -> Iterator[dict[str, Any]]:
        v = self.vocab
        for org in self.orgs:
            people = [self._person(org, i) for i in range(self.groups_per_org * self.members_per_group // 2 + 10)]
            self.roster[org] = people
            for p in people:
                yield {"kind": "roster", "event_id": self._id("e"), "org_id": org, "ts": self._tick(50),
                       "user_id": p.user_id, "name": p.name, "department": p.department, "status": "active"}
            for gi in range(self.groups_per_org):
                members = self.rng.sample(people, min(self.members_per_group, len(people)))
                owner = members[0]
                dept = owner.department
                g = Group(org, f"{org}-g{gi:05d}", f"{dept}{self.rng.choice(v['group_kinds'])}",
                          self.rng.choice(v["platforms"]), members, owner)
                g.troublemaker = members[1] if len(members) > 1 else None
                self.groups.append(g)
                # A tenth are temporary project groups whose work ended on the first day.
                temporary = self.rng.random() < 0.1
                yield {"kind": "group", "event_id": self._id("e"), "org_id": org, "ts": self._tick(50),
                       "group_id": g.group_id, "action": "create", "name": g.name, "owner_id": owner.user_id,
                       "registered": self.rng.random() < 0.9, "temporary": temporary,
                       "ends_at": START_TS + 8 * 3_600_000 if temporary else None}
                for m in members:
                    yield {"kind": "member", "event_id": self._id("e"), "org_id": org, "ts": self._tick(50),
                           "group_id": g.group_id, "user_id": m.user_id, "action": "join",
                           "actor_id": owner.user_id, "nickname": f"{m.department}-{m.name}",
                           "role": "owner" if m is owner else "member"}

    def traffic(self) -> Iterator[dict[str, Any]]:
        """Endless chatter; the caller decides how much to take."""
        v, rng = self.vocab, self.rng
        while True:
            if self.reviews and self.reviews[0][0] <= self.seq:
                _, feedback = self.reviews.pop(0)
                yield {**feedback, "event_id": self._id("e"), "ts": self._tick()}
                continue
            g = rng.choice(self.groups)
            roll = rng.random()
            if roll < 0.72:
                yield self._message(g, rng.choice(g.members), self._chatter(g))
            elif roll < 0.78:
                notice = self._message(g, g.owner, rng.choice(v["notices"]), mentions=["@all"])
                yield notice
                for m in rng.sample(g.members[1:], k=max(1, int(len(g.members[1:]) * rng.uniform(0.5, 1.0)))):
                    quote = rng.random() < 0.2
                    yield self._message(g, m, rng.choice(v["acks"]), reply_to=notice["msg_id"] if quote else None)
            elif roll < 0.795:
                sender, text = rng.choice(g.members), rng.choice(v["floods"])
                for _ in range(rng.randint(3, 6)):
                    yield self._message(g, sender, text + "!" * rng.randint(0, 2))
            elif roll < 0.80:
                # One member posting in a burst: chatter, or a row of stickers.
                sender = rng.choice(g.members)
                if rng.random() < 0.5:
                    for _ in range(rng.randint(8, 16)):
                        yield self._message(g, sender, self._chatter(g), gap_ms=3000)
                else:
                    for _ in range(rng.randint(4, 9)):
                        yield self._message(g, sender, rng.choice(v["stickers"]), gap_ms=2000, msg_type="sticker")
            elif roll < 0.84:
                bad = g.troublemaker if g.troublemaker in g.members and rng.random() < 0.4 else rng.choice(g.members)
                msg = self._message(g, bad, rng.choice(v["violations"]))
                yield msg
                self._review(g, msg)
            elif roll < 0.88:
                kind = rng.choice(["image", "sticker", "file", "red_packet", "link"])
                extra: dict[str, Any] = {"msg_type": kind, "text": ""}
                if kind == "file":
                    extra["file_name"] = rng.choice(v["file_names"])
                if kind == "link":
                    extra["text"] = "看看这个 https://mp.weixin.qq.com/s/abc"
                    extra["urls"] = ["https://mp.weixin.qq.com/s/abc"]
                yield self._message(g, rng.choice(g.members), extra.pop("text"), **extra)
            elif roll < 0.93:
                m = rng.choice(g.members)
                yield self._message(g, m, f"@{g.owner.name} {self._chatter(g)}", mentions=[g.owner.user_id])
            else:
                yield from self._membership(g)

    def _review(self, g: Group, msg: dict[str, Any]) -> None:
        """Half the violations the reviewers have a rule for get their verdict a little later; an
        insult's sender sometimes appeals, and the reviewer confirms again."""
        from schemas.records import finding_id

        rule_verdict = self.vocab["reviews"].get(msg["text"])
        if rule_verdict is None or self.rng.random() < 0.5:
            return
        rule, verdict = rule_verdict
        fid = finding_id(rule, g.group_id, msg["msg_id"], msg["sender_id"])
        base = {"kind": "feedback", "org_id": g.org_id, "finding_id": fid}
        later = self.seq + self.rng.randint(50, 400)
        self.reviews.append((later, {**base, "verdict": verdict, "actor_id": g.owner.user_id, "note": "复核"}))
        if rule == "content.insult" and self.rng.random() < 0.5:
            self.reviews.append((later + 40, {**base, "verdict": "appeal", "actor_id": msg["sender_id"],
                                              "note": "只是开玩笑"}))
            self.reviews.append((later + 120, {**base, "verdict": "confirmed", "actor_id": g.owner.user_id,
                                               "note": "维持"}))
        self.reviews.sort(key=lambda r: r[0])

    def _chatter(self, g: Group) -> str:
        v, rng = self.vocab, self.rng
        fill = {"name": rng.choice(g.members).name, "dept": rng.choice(v["departments"]),
                "time": rng.choice(v["times"]), "room": rng.choice(v["rooms"]),
                "n": rng.randint(2, 60), "code": f"{rng.randint(2026, 2027)}-{rng.randint(1, 999):03d}"}
        text = rng.choice(v["openers"]) + rng.choice(v["chatter"]) + rng.choice(v["closers"])
        return text.format(**fill)

    def _membership(self, g: Group) -> Iterator[dict[str, Any]]:
        """Joins (mostly by the owner), departures, nickname changes (some breaking the real-name
        rule), outsiders coming in, and staff leaving the company (half of them stay in their groups)."""
        rng, v = self.rng, self.vocab
        base = {"kind": "member", "org_id": g.org_id, "group_id": g.group_id}
        action = rng.choices(["join", "leave", "nickname", "external", "depart"], weights=[30, 25, 30, 8, 7])[0]
        if action in ("join", "external"):
            if action == "join":
                p = rng.choice([m for m in self.roster[g.org_id] if not m.left] or self.roster[g.org_id])
            else:
                p = Member(self._id("ext-"), rng.choice(v["surnames"]) + rng.choice(v["given_names"]), "")
            inviter = g.owner if rng.random() < 0.7 else rng.choice(g.members)
            if p not in g.members:
                g.members.append(p)
            roll = rng.random()
            nickname = (p.name if roll < 0.3 else rng.choice(v["bad_nicknames"]) if roll < 0.4
                        else f"{p.department}-{p.name}")
            g.nicknames[p.user_id] = nickname
            yield {**base, "event_id": self._id("e"), "ts": self._tick(), "user_id": p.user_id, "action": "join",
                   "actor_id": inviter.user_id, "nickname": nickname, "role": "member"}
        elif action == "leave" and len(g.members) > 3:
            m = rng.choice(g.members[1:])
            yield from self._leave(g, m)
        elif action == "depart":
            people = [m for m in g.members[1:] if not m.left and not m.user_id.startswith("ext-")]
            if not people:
                return
            m = rng.choice(people)
            m.left = True
            yield {"kind": "roster", "event_id": self._id("e"), "org_id": g.org_id, "ts": self._tick(),
                   "user_id": m.user_id, "name": m.name, "department": m.department, "status": "left"}
            if rng.random() < 0.5:  # removed from every group, as 离职即删 asks; or forgotten
                for other in self.groups:
                    if m in other.members:
                        yield from self._leave(other, m)
        else:
            m = rng.choice(g.members)
            nickname = m.name if rng.random() < 0.8 else rng.choice(v["bad_nicknames"])
            g.nicknames[m.user_id] = nickname
            yield {**base, "event_id": self._id("e"), "ts": self._tick(), "user_id": m.user_id,
                   "action": "nickname", "actor_id": m.user_id, "nickname": nickname, "role": None}

    def _leave(self, g: Group, m: Member) -> Iterator[dict[str, Any]]:
        if m is g.owner:
            return
        g.members.remove(m)
        g.nicknames.pop(m.user_id, None)
        yield {"kind": "member", "org_id": g.org_id, "group_id": g.group_id, "event_id": self._id("e"),
               "ts": self._tick(), "user_id": m.user_id, "action": "leave", "actor_id": m.user_id,
               "nickname": None, "role": None}

    def events(self, n: int) -> Iterator[dict[str, Any]]:
        """The setup events, then traffic, `n` events in all (at least the setup)."""
        count = 0
        for ev in self.setup():
            count += 1
            yield ev
        for ev in self.traffic():
            if count >= n:
                return
            count += 1
            yield ev

    # --- records ------------------------------------------------------------------------------

    def malformed(self, i: int) -> Record:
        """The i-th malformed record; cycles through every way input goes wrong."""
        g = self.groups[i % len(self.groups)] if self.groups else None
        gid = g.group_id if g else "g0"
        good = self._message(g, g.owner, "正常消息") if g else {}
        variants: list[Any] = [
            b'{"kind": "message", "event_id": "broken' + str(i).encode(),  # broken JSON
            {**good, "ts": "yesterday"},  # wrong type
            {**good, "mentions": "@all"},  # wrong type
            {k: v for k, v in good.items() if k != "group_id"},  # missing field
            {k: v for k, v in good.items() if k != "event_id"},  # missing field
            b'{"kind":"message","text":"\xff\xfe\xfd bad bytes"}',  # invalid UTF-8
            {**good, "kind": "telegram"},  # unknown kind
            {**good, "platform": "icq"},  # bad enum
            {**good, "ts": 1_700_000_000},  # seconds, not milliseconds
            42,  # not an object
            [{**good, "event_id": self._id("e"), "ts": True}],  # bad element in an envelope
            {**good, "text": "刷" * 350_000},  # a 1 MB text (UTF-8)
        ]
        v = variants[i % len(variants)]
        value = v if isinstance(v, bytes) else orjson.dumps(v)
        return Record(gid.encode(), value, [], 1)

    def records(self, n: int, malformed: int = 0, envelope: int = 1, linger_ms: int | None = None) -> Iterator[Record]:
        """`n` valid events as records (envelopes of up to `envelope` events of one group), with
        `malformed` bad records spread evenly among them. With `linger_ms`, an envelope also goes
        once its first event is that much older (event time) than the next event, as a bridge's
        linger sends it: events then reach Kafka less than `linger_ms` out of event-time order, the
        bounded lateness the worker's timers assume (delivery/clock.py). Without it, a quiet group's
        envelope waits until it is full, which only a run judged after it ends can tolerate."""
        spacing = max(1, n // malformed) if malformed else 0
        bad_made = 0
        pending: dict[str, list[dict[str, Any]]] = {}  # insertion order = order of their first event
        for i, ev in enumerate(self.events(n)):
            if spacing and i % spacing == spacing - 1 and bad_made < malformed:
                yield self.malformed(bad_made)
                bad_made += 1
            key = ev.get("group_id") or ev.get("user_id") or ev["org_id"]
            if linger_ms is not None:
                while pending:
                    first = next(iter(pending))
                    if ev["ts"] - pending[first][0]["ts"] < linger_ms:
                        break
                    buf = pending.pop(first)
                    yield Record(first.encode(), orjson.dumps(buf), [e["event_id"] for e in buf])
            if envelope <= 1:
                yield Record(key.encode(), orjson.dumps(ev), [ev["event_id"]])
                continue
            buf = pending.setdefault(key, [])
            buf.append(ev)
            if len(buf) >= envelope:
                yield Record(key.encode(), orjson.dumps(buf), [e["event_id"] for e in buf])
                del pending[key]
        while bad_made < malformed:
            yield self.malformed(bad_made)
            bad_made += 1
        for key, buf in pending.items():
            yield Record(key.encode(), orjson.dumps(buf), [e["event_id"] for e in buf])
