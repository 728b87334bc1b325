"""Sanctions carried out through OneBot actions: what is planned per policy, and how the enforcer
retries, gives up and never repeats what the platform did (on chDB, an injected clock)."""

from __future__ import annotations

import asyncio

from pipeline.adapters.enforce import Enforcer, plan
from pipeline.config import load_config
from pipeline.policy import Policy
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate

POLICY = Policy({"groups": {"4242": {"enforcement": {"enabled": True}}}})


def sanction(rule: str, group: str = "4242", **evidence) -> dict:
    strikes = [{"finding_id": "f1", "rule": "content.gambling", "msg_id": "1001", "status": "open"},
               {"finding_id": "f2", "rule": "deadline.overdue", "msg_id": "1002", "status": "confirmed"},
               {"finding_id": "f3", "rule": "flood.repeat", "msg_id": "1003", "status": "false_positive"}]
    return {"finding_id": f"s-{rule}-{group}", "rule": rule, "org_id": "o", "group_id": group, "user_id": "777",
            "msg_id": "1001", "ts": 1, "evidence": {"strikes": strikes, **evidence}}


def test_only_enforcing_groups_get_actions_and_each_sanction_its_own():
    assert plan(sanction("sanction.mute", group="99", mute_hours=24), POLICY) == []  # proposed to the owner
    assert plan(sanction("sanction.warn"), POLICY) == []  # a warning is the alert itself
    mute = plan(sanction("sanction.mute", mute_hours=2), POLICY)
    assert [(a.action, a.params) for a in mute] == [
        ("set_group_ban", {"group_id": 4242, "user_id": 777, "duration": 7200}),
        ("delete_msg", {"message_id": 1001})]  # the content strike's message; not a deadline's, nor a withdrawn one
    remove = plan(sanction("sanction.remove"), POLICY)
    assert remove[0].action == "set_group_kick" and remove[0].params["reject_add_request"] is False
    assert len({a.action_id for a in mute + remove}) == 4
    keep = Policy({"groups": {"4242": {"enforcement": {"enabled": True, "delete_messages": False}}}})
    assert [a.action for a in plan(sanction("sanction.mute"), keep)] == ["set_group_ban"]
    assert not Policy().enforcing() and POLICY.enforcing()


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.t += s


def test_refused_actions_are_retried_stored_and_never_carried_out_twice(tmp_path):
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    clock = Clock()
    answers = [{"status": "failed", "retcode": 102, "wording": "操作过于频繁"}, {"status": "failed", "retcode": 102}]
    calls = []

    async def call(action):
        calls.append(action.action)
        if action.action == "set_group_ban" and answers:
            return answers.pop(0)
        return {"status": "ok", "retcode": 0, "data": None}

    cfg = load_config(env={})
    enforcer = Enforcer(cfg, POLICY, call, backend, clock=clock, sleep=clock.sleep)
    finding = sanction("sanction.mute", mute_hours=1)
    try:
        asyncio.run(enforcer.carry_out(finding))
        rows = backend.query(f"SELECT action, attempt, status, retcode, error FROM {backend.database}.sanction_actions "
                             "ORDER BY action, attempt")
        assert [r[:4] for r in rows] == [("delete_msg", 1, "ok", 0), ("set_group_ban", 1, "retry", 102),
                                         ("set_group_ban", 2, "retry", 102), ("set_group_ban", 3, "ok", 0)]
        assert "操作过于频繁" in rows[1][4]
        # read again after a restart: what the platform did is not done again
        calls.clear()
        asyncio.run(enforcer.carry_out(finding))
        assert calls == []
        # an implementation that never accepts: given up after retry_seconds, and said so
        async def refuse(action):
            raise TimeoutError("no answer")

        stubborn = Enforcer(cfg, POLICY, refuse, backend, clock=clock, sleep=clock.sleep)
        asyncio.run(stubborn.carry_out(sanction("sanction.remove")))
        kick = backend.query(f"SELECT status FROM {backend.database}.sanction_actions WHERE action = 'set_group_kick' "
                             "ORDER BY attempt")
        assert kick[-1][0] == "failed" and all(r[0] == "retry" for r in kick[:-1]) and len(kick) > 3
        assert stubborn.counts["failed"] == 2  # the kick and its message's recall
    finally:
        backend.close()
