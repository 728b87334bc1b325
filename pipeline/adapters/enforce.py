"""Sanctions carried out on QQ through OneBot actions, where a group's policy enables enforcement.

`plan` is pure: a `sanction.*` finding and the policy in, the OneBot actions out (none for a group
that does not enforce: there the sanction stays a proposal to the owner, through its alert).
`Enforcer` is the edge: it reads `qg.findings` in a consumer group of its own, carries each action
out through a `call` (the bridge's WebSocket to the implementation, or its HTTP API), stores
every attempt and the platform's reply in `sanction_actions`, and commits only then. A refused or
unanswered action is tried again with growing pauses for `enforcement.retry_seconds`; then it is
`failed`, logged as an error, and counted on the bridge's /healthz. After a restart an action
ClickHouse holds as `ok` is not carried out again (a member is not banned twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.config import Config
from pipeline.policy import Policy
from schemas.rows import ACTION_COLUMNS

log = logging.getLogger("qunguard.enforce")
PAUSES = (1, 2, 5, 10, 20, 30)  # seconds between attempts, the last repeated until retry_seconds


@dataclass(frozen=True)
class Action:
    action_id: str
    finding: dict[str, Any]
    action: str
    params: dict[str, Any]


class ActionFailed(RuntimeError):
    def __init__(self, message: str, retcode: int = -1, reply: Any = None) -> None:
        super().__init__(message)
        self.retcode = retcode
        self.reply = reply


def _qq(value: str) -> int | str:
    return int(value) if value.isdigit() else value  # OneBot takes numbers; keep what is not one


def plan(finding: dict[str, Any], policy: Policy) -> list[Action]:
    rule = finding.get("rule", "")
    if not rule.startswith("sanction.") or not finding.get("group_id") or not finding.get("user_id"):
        return []
    cfg = policy.enforcement_for(finding["org_id"], finding["group_id"])
    if not cfg.enabled:
        return []
    evidence = finding.get("evidence") or {}
    if isinstance(evidence, str):
        evidence = orjson.loads(evidence)
    group, user = _qq(finding["group_id"]), _qq(finding["user_id"])
    out: list[tuple[str, dict[str, Any]]] = []
    if rule == "sanction.mute":
        hours = float(evidence.get("mute_hours") or 24)
        out.append(("set_group_ban", {"group_id": group, "user_id": user, "duration": int(hours * 3600)}))
    elif rule == "sanction.remove":
        out.append(("set_group_kick", {"group_id": group, "user_id": user, "reject_add_request": False}))
    if out and cfg.delete_messages:
        recalled: set[str] = set()
        for strike in evidence.get("strikes") or []:
            mid = str(strike.get("msg_id") or "")
            if mid.isdigit() and mid not in recalled and strike.get("status") != "false_positive" \
                    and str(strike.get("rule", "")).startswith(("content.", "flood.")):
                recalled.add(mid)  # one message can be the strike of two rules
                out.append(("delete_msg", {"message_id": int(mid)}))
    return [Action(_action_id(finding, a, p), finding, a, p) for a, p in out]


def _action_id(finding: dict[str, Any], action: str, params: dict[str, Any]) -> str:
    """A ban or kick is the sanction's own; a recall is the message's, whichever sanction asks for it:
    the removal after a mute names the same strikes, and a message recalled once is gone (the
    platform refuses a second recall, which would be retried and then reported as failed)."""
    owner = finding["group_id"] if action == "delete_msg" else finding["finding_id"]
    key = f"{owner}\x1f{action}\x1f{orjson.dumps(params, option=orjson.OPT_SORT_KEYS)!r}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


Call = Callable[[Action], Awaitable[dict[str, Any]]]


class Enforcer:
    def __init__(self, cfg: Config, policy: Policy, call: Call, backend: Any,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.cfg = cfg
        self.policy = policy
        self.call = call
        self.backend = backend
        self.clock = clock
        self.sleep = sleep
        self.counts = {"ok": 0, "failed": 0, "retries": 0, "interruptions": 0}

    def done(self, actions: list[Action]) -> set[str]:
        if not actions:
            return set()
        from pipeline.sink.queries import actions_done

        return {r[0] for r in self.backend.query(actions_done(self.backend.database, [a.action_id for a in actions]))}

    async def carry_out_all(self, findings: list[dict[str, Any]]) -> None:
        """The findings of one poll: in their order within a group (a mute before the removal that
        follows it), the groups side by side, so that a group whose actions are refused and retried
        for `retry_seconds` holds up no other group's."""
        by_group: dict[str, list[dict[str, Any]]] = {}
        for f in findings:
            by_group.setdefault(str(f.get("group_id") or ""), []).append(f)

        async def in_order(group: list[dict[str, Any]]) -> None:
            for f in group:
                await self.carry_out(f)

        tasks = [asyncio.ensure_future(in_order(g)) for g in by_group.values()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # one group's failure (ClickHouse away) ends the poll: the others stop too, rather than
            # go on beside the enforcer that starts again from the last commit
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def carry_out(self, finding: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every action of one finding, each to its end (ok or failed); the rows of every attempt."""
        actions = plan(finding, self.policy)
        already = await asyncio.to_thread(self.done, actions)
        rows: list[tuple[Any, ...]] = []
        for a in actions:
            if a.action_id in already:
                continue
            rows += await self._one(a)
        if rows:
            await asyncio.to_thread(self.backend.insert, "sanction_actions", ACTION_COLUMNS, rows)
        return rows

    async def _one(self, a: Action) -> list[tuple[Any, ...]]:
        cfg = self.policy.enforcement_for(a.finding["org_id"], a.finding["group_id"])
        rows = []
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            at = int(self.clock() * 1000)
            try:
                reply = await self.call(a)
                retcode = int(reply.get("retcode", 0) or 0)
                if reply.get("status") not in (None, "ok", "async") or retcode not in (0, 1):
                    raise ActionFailed(str(reply.get("wording") or reply.get("msg") or reply.get("message")
                                           or f"retcode {retcode}"), retcode, reply)
                rows.append(self._row(a, attempt, at, "ok", retcode, reply, ""))
                self.counts["ok"] += 1
                log.info("%s %s: ok", a.action, orjson.dumps(a.params).decode())
                return rows
            except Exception as exc:  # noqa: BLE001 -- every failure is stored, then retried or reported
                retcode = exc.retcode if isinstance(exc, ActionFailed) else -1
                answer = exc.reply if isinstance(exc, ActionFailed) else None
                pause = PAUSES[min(attempt - 1, len(PAUSES) - 1)]
                if self.clock() + pause - started > cfg.retry_seconds:
                    rows.append(self._row(a, attempt, at, "failed", retcode, answer, f"{type(exc).__name__}: {exc}"))
                    self.counts["failed"] += 1
                    log.error("%s %s for finding %s failed after %d attempts: %s", a.action,
                              orjson.dumps(a.params).decode(), a.finding["finding_id"], attempt, exc)
                    return rows
                rows.append(self._row(a, attempt, at, "retry", retcode, answer, f"{type(exc).__name__}: {exc}"))
                self.counts["retries"] += 1
                log.warning("%s %s: %s; trying again in %d s", a.action, orjson.dumps(a.params).decode(), exc, pause)
                await self.sleep(pause)

    def _row(self, a: Action, attempt: int, at: int, status: str, retcode: int, reply: Any, error: str) -> tuple:
        f = a.finding
        return (a.action_id, f["finding_id"], f["org_id"], f["group_id"], f["user_id"], a.action,
                orjson.dumps(a.params).decode(), attempt, at, status, retcode,
                orjson.dumps(reply).decode() if reply is not None else "", error)
