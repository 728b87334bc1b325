"""Membership and group governance (SPEC §4 `member.*`, `group.*`), in two stages.

The inputs live on different partitions: member, group and message events are keyed by group, the
HR roster by user. So the rules run where each input is whole:
- `group.GroupDetector`, keyed by group, sees who is in the group with which role, the group's
  registration, name, end date and last message. It decides `member.unauthorized_invite` and the
  `group.*` rules, and forwards each membership fact (join, leave, a new nickname) as an internal
  `membership` event keyed by the member's user_id.
- `member.MemberDetector`, keyed by org and user, sees that user's roster entry and every group
  they are in: it decides `member.nickname`, `member.departed` and `member.external`. A roster
  change that makes someone departed finds all their groups at once.
In the worker the forwarded events go through the events topic, to the partition of the user's
roster events; replay hands them over in process. The member stage applies its inputs in event-time
order at its timer, so facts that reach it along the two paths in either order give the findings
replay gives.
"""
