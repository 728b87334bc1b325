"""`qunguard console`: the security team's web console over ClickHouse (SPEC §9)."""
