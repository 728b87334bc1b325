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
    assert len({a.action_id for a in mute + remove}) == 3  # the recall of 1001 is the message's, asked once
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
        assert stubborn.counts["failed"] == 1  # the kick; its message was recalled with the mute
    finally:
        backend.close()


def test_a_message_is_recalled_once_whichever_sanctions_name_it(tmp_path):
    """The removal after a mute names the mute's strikes again; a message that is the strike of two
    rules is named twice. The platform refuses a second recall of a message, so none is asked for."""
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    calls = []

    async def call(action):
        calls.append((action.action, action.params.get("message_id")))
        return {"status": "ok", "retcode": 0, "data": None}

    twice = sanction("sanction.mute", mute_hours=1)
    twice["evidence"]["strikes"].append({"finding_id": "f4", "rule": "flood.repeat", "msg_id": "1001",
                                         "status": "open"})
    assert [a.params.get("message_id") for a in plan(twice, POLICY)] == [None, 1001]
    enforcer = Enforcer(load_config(env={}), POLICY, call, backend)
    try:
        asyncio.run(enforcer.carry_out(twice))
        removal = sanction("sanction.remove")
        removal["evidence"]["strikes"].append({"finding_id": "f5", "rule": "content.ads", "msg_id": "1004",
                                               "status": "open"})
        asyncio.run(enforcer.carry_out(removal))
        assert calls == [("set_group_ban", None), ("delete_msg", 1001), ("set_group_kick", None),
                         ("delete_msg", 1004)]
    finally:
        backend.close()


def test_a_group_whose_actions_are_retried_holds_up_no_other_group(tmp_path):
    """Two groups' sanctions in one poll: the first group's implementation answers only once the
    second group's ban is done (were they one after the other, its first attempt would time out);
    within a group the mute still comes before the removal."""
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    two = Policy({"groups": {g: {"enforcement": {"enabled": True, "delete_messages": False}}
                             for g in ("4242", "5353")}})
    calls = []

    async def main():
        other_banned = asyncio.Event()

        async def call(action):
            calls.append((action.params["group_id"], action.action))
            if action.params["group_id"] == 5353:
                other_banned.set()
            else:
                await asyncio.wait_for(other_banned.wait(), 5)
            return {"status": "ok", "retcode": 0, "data": None}

        enforcer = Enforcer(load_config(env={}), two, call, backend)
        await enforcer.carry_out_all([sanction("sanction.mute"), sanction("sanction.remove"),
                                      sanction("sanction.mute", group="5353")])
        return enforcer

    try:
        enforcer = asyncio.run(main())
        assert enforcer.counts == {"ok": 3, "failed": 0, "retries": 0, "interruptions": 0}
        assert [a for g, a in calls if g == 4242] == ["set_group_ban", "set_group_kick"]
        stored = backend.query(f"SELECT action, attempt, status FROM {backend.database}.sanction_actions")
        assert sorted(stored) == [("set_group_ban", 1, "ok"), ("set_group_ban", 1, "ok"), ("set_group_kick", 1, "ok")]
    finally:
        backend.close()


def test_a_failure_in_one_group_stops_the_others_of_the_poll(tmp_path):
    """ClickHouse lost while one group's actions are stored: the poll ends there, and the other
    group's retries stop with it (the enforcer reads the poll again from its last commit)."""
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    two = Policy({"groups": {g: {"enforcement": {"enabled": True, "delete_messages": False}}
                             for g in ("4242", "5353")}})
    calls = []

    async def main():
        async def call(action):
            calls.append(action.params["group_id"])
            if action.params["group_id"] == 5353:
                raise ConnectionResetError("lost")  # and retried after a pause
            backend.close()  # ClickHouse away before the ok is stored
            return {"status": "ok", "retcode": 0, "data": None}

        enforcer = Enforcer(load_config(env={}), two, call, backend)
        work = [sanction("sanction.mute", group="5353"), sanction("sanction.mute")]
        try:
            await enforcer.carry_out_all(work)
        except Exception as exc:  # noqa: BLE001
            await asyncio.sleep(1.5)  # past 5353's first pause: it would have been tried again
            return exc, enforcer
        return None, enforcer

    failure, enforcer = asyncio.run(main())
    assert failure is not None, "the lost store ends the poll"
    assert calls == [5353, 4242] and enforcer.counts["retries"] == 1  # 5353's retry was stopped
