"""Content rules (SPEC §4 `content.*`, `conduct.quiet_hours`): one module per kind of evidence."""
