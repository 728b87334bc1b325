"""Notices that ask for a reply, who still owes one, and the deadlines (SPEC §4)."""
