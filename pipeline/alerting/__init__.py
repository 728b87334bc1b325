"""Alerts (SPEC §8): findings routed to the channels the policy names, grouped in event time, and
sent by `qunguard notifier`.

- route.py: which channels a finding goes to; urgent findings become alerts at once, the rest are
  forwarded to the alert stage of their group.
- stage.py: the alert stage, a detector keyed by group: Alertmanager's group_wait, group_interval
  and repeat_interval, and quiet-hours digests, in event time, so replay and the stream agree.
- render.py: an alert as each platform's message, in Chinese; labels.py: the rules' names.
- notifier.py, channels.py, budget.py: delivery (the edge, wall clock).
"""
