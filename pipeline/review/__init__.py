"""The review loop (SPEC §4, §9): verdicts on findings, strikes and the sanctions ladder."""
