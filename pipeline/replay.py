"""`qunguard replay`: every detector over a JSON Lines file in event-time order (SPEC §5).

The same Engine the worker runs, with dict state. Lines that fail to parse or validate are counted
and reported on stderr (they would be dead letters in the stream); they never stop the run. The
result holds every finding and the review history; `final()` leaves out the withdrawn ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from pipeline.config import TokenizerConfig
from pipeline.detectors import Outcome
from pipeline.engine import Engine
from pipeline.ingest import Decoded, decode_record
from pipeline.policy import Policy
from pipeline.text.tokenize import get_tokenizer
from schemas.rows import Source, dumps


@dataclass
class ReplayResult:
    findings: list[dict[str, Any]]
    events: int
    dead: list[dict[str, Any]]
    alerts: list[dict[str, Any]] = field(default_factory=list)  # what the stream sends, by (ts, alert_id)
    # Per finding id, its review history (the `finding_status` rows, in order): the last is current.
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def status(self, finding_id: str) -> str:
        history = self.statuses.get(finding_id)
        return history[-1]["status"] if history else "open"

    def final(self) -> list[dict[str, Any]]:
        """The findings not withdrawn: what `qunguard replay` prints (SPEC §3)."""
        return [f for f in self.findings if self.status(f["finding_id"]) != "false_positive"]


def replay(lines: Iterable[bytes], until: int | None = None, max_text_chars: int = 100_000,
           policy: Policy | None = None, source: str = "file", tokenizer_cfg: TokenizerConfig | None = None
           ) -> ReplayResult:
    decoded = Decoded()
    for n, line in enumerate(lines, 1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            decode_record(line, Source(source, 0, n), max_text_chars, decoded)
    engine = Engine(policy, loopback=True)
    t = tokenizer_cfg or TokenizerConfig()  # the worker's settings: the same tokens, the same findings
    tokenizer = get_tokenizer(hmm=t.hmm, user_dict=t.user_dict, cache_size=t.cache_size, backend=t.backend)
    # Stable sort: events with equal ts keep their file order, so output is deterministic.
    events = sorted((e for e, _ in decoded.events), key=lambda e: e["ts"])
    findings: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    statuses: dict[str, list[dict[str, Any]]] = {}
    dead = decoded.dead

    def collect(out: Outcome) -> None:
        findings.extend(out.findings)
        alerts.extend(out.alerts)
        for table, record in out.rows:
            if table == "finding_status":
                statuses.setdefault(record["finding_id"], []).append(record)
            elif table == "deadletter":
                dead.append({"src_offset": record["event"]["event_id"], "error": record["error"]})

    for event in events:
        try:
            tokens = tokenizer.tokens(event["text"]) if event["kind"] == "message" else []
            collect(engine.process(event, tokens))
        except Exception as exc:  # the worker dead-letters such an event; so does replay
            dead.append({"src_offset": event.get("event_id"), "error": f"detector error: {type(exc).__name__}: {exc}"})
    last = events[-1]["ts"] if events else 0
    collect(engine.tick(max(until, last) if until is not None else last))
    unique = {f["finding_id"]: f for f in findings}
    ordered = sorted(unique.values(), key=lambda f: (f["ts"], f["rule"], f["finding_id"]))
    sent = sorted({a["alert_id"]: a for a in alerts}.values(), key=lambda a: (a["ts"], a["alert_id"]))
    return ReplayResult(ordered, len(events), dead, sent, statuses)


def write_findings(findings: Iterable[dict[str, Any]], out: IO[str]) -> None:
    for f in findings:
        out.write(dumps(f))
        out.write("\n")
