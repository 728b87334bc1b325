"""The `qunguard` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.config import Config, ConfigError, load_config, redact
from schemas.records import MSG_TYPES

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _parse_until(text: str, option: str = "--until") -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not an ISO 8601 date-time like 2026-11-02T10:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=SHANGHAI)  # the policies' clock; say +00:00 for UTC
    return int(dt.timestamp() * 1000)


def cmd_migrate(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.sink.backends import connect
    from pipeline.sink.migrate import migrate

    backend = connect(cfg.clickhouse.url)
    applied = migrate(backend)
    print(f"{backend.database}: applied {', '.join(applied)}" if applied else f"{backend.database}: up to date")
    backend.close()
    return 0


def cmd_retention(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.retention import apply
    from pipeline.sink.backends import connect

    backend = connect(cfg.clickhouse.url)
    try:
        drops, ttls = apply(backend, cfg.retention, dry_run=args.dry_run)
    finally:
        backend.close()
    verb = "would drop" if args.dry_run else "dropped"
    for d in drops:
        print(f"{verb} {d.database}.{d.table} month {d.partition}: {d.rows:,} rows")
    for sql in ttls:
        print(f"{'would run' if args.dry_run else 'ran'}: {sql}")
    if not drops:
        print(f"{backend.database}: nothing past its retention")
    return 0


def cmd_org_reader(cfg: Config, args: argparse.Namespace) -> int:
    import secrets
    from pathlib import Path

    from pipeline.isolation import provision
    from pipeline.sink.backends import connect

    password = os.environ.get("QUNGUARD_ORG_READER_PASSWORD") or secrets.token_urlsafe(18)
    backend = connect(cfg.clickhouse.url)
    try:
        reader = provision(backend, args.org, password, dry_run=args.dry_run)
    except ValueError as exc:
        print(f"qunguard: org-reader: {exc}", file=sys.stderr)
        return 2
    finally:
        backend.close()
    if args.dry_run:
        print(";\n".join(reader.statements) + ";")
    print(f"{reader.user} reads {reader.database} ({len(reader.tables)} tables of org {reader.org} only)")
    if reader.users_xml is not None:  # ClickHouse 18.16: users live in users.xml
        if args.users_d:
            path = Path(args.users_d) / f"{reader.user}.xml"
            path.write_text(reader.users_xml, encoding="utf-8")
            path.chmod(0o600)
            print(f"wrote {path}: the server reads it within seconds")
        else:
            print(f"this server has no SQL users: save this as users.d/{reader.user}.xml\n{reader.users_xml}")
    if not os.environ.get("QUNGUARD_ORG_READER_PASSWORD"):
        print(f"password (shown once): {password}")
    return 0


def cmd_worker(cfg: Config, args: argparse.Namespace) -> int:
    """The worker lives in agents/ (the Faust edge), which depends on pipeline/, not the reverse:
    it is found through the `qunguard.commands` entry point the package declares."""
    if not cfg.kafka.url:
        raise ConfigError("config: kafka.url: required for a worker (set QG_KAFKA_URL); `qunguard demo` "
                          "starts an embedded broker")
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="qunguard.commands")}
    if "worker" not in found:
        raise ConfigError("config: worker: the qunguard.commands entry point `worker` is not installed "
                          "(install the qunguard package, e.g. pip install -e .)")
    run = found["worker"].load()
    return int(run(cfg))


def cmd_notifier(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.alerting.notifier import run

    return run(cfg)


def cmd_produce(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.devtools.produce import file_records, produce
    from pipeline.kafka import ensure_topics

    ensure_topics(cfg)
    with open(args.file, "rb") as fh:
        ends = produce(cfg, file_records(fh, args.envelope), rate=args.rate, show_progress=not args.quiet)
    print(f"sent to {cfg.topic('events')}: {sum(ends.values())} records over {len(ends)} partitions",
          file=sys.stderr)
    return 0


def cmd_simulate(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.devtools.simulate import Simulator

    sim = Simulator(orgs=args.orgs, groups=args.groups, members=args.members, seed=args.seed)
    records = sim.records(args.events, malformed=args.malformed, envelope=args.envelope)
    if args.kafka:
        from pipeline.devtools.produce import produce
        from pipeline.kafka import ensure_topics

        if not cfg.kafka.url:
            raise ConfigError("config: kafka.url: required for --kafka (set QG_KAFKA_URL)")
        ensure_topics(cfg)
        produce(cfg, records, rate=args.rate, total=args.events, show_progress=not args.quiet)
        return 0
    from pipeline.devtools.produce import progress_bar

    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    try:
        with progress_bar("writing", show=bool(args.out) and not args.quiet) as bar:
            task = bar.add_task("write", total=args.events)
            for rec in records:
                out.write(rec.value)
                out.write(b"\n")
                bar.advance(task, len(rec.valid_ids))
    finally:
        if args.out:
            out.close()
    return 0


def cmd_replay(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.policy import load_policy
    from pipeline.replay import replay, write_findings

    policy = load_policy(args.policy or cfg.policy.file)
    until = _parse_until(args.until) if args.until else None
    with open(args.events, "rb") as fh:
        result = replay(fh, until=until, max_text_chars=cfg.ingest.max_text_chars, policy=policy,
                            tokenizer_cfg=cfg.tokenizer)
    findings = result.findings if args.all else result.final()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            write_findings(findings, out)
    else:
        write_findings(findings, sys.stdout)
    if args.alerts:
        with open(args.alerts, "w", encoding="utf-8") as out:
            write_findings(result.alerts, out)
    if result.dead:
        print(f"qunguard replay: {len(result.dead)} invalid lines skipped (first: line "
              f"{result.dead[0]['src_offset']}: {result.dead[0]['error']})", file=sys.stderr)
    return 0


def cmd_policy(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.policy import load_policy

    file = args.policy or cfg.policy.file
    policy = load_policy(file)
    if args.action == "show":
        import yaml

        org, group = args.org or "", args.group or ""
        doc = {"org": org or None, "group": group or None, "policy_file": file or None,
               "policy_version": policy.version(org, group), **policy.effective(org, group)}
        sys.stdout.write(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
        return 0
    from pipeline.review.suggest import accept, suggest
    from pipeline.sink import queries
    from pipeline.sink.backends import connect
    from pipeline.text.tokenize import get_tokenizer

    backend = connect(cfg.clickhouse.url)
    try:
        reviewed = backend.query(queries.reviewed_content(backend.database, args.org))
    finally:
        backend.close()
    found = suggest(reviewed, get_tokenizer(), min_count=args.min)
    if not found:
        print(f"qunguard policy suggest: nothing to suggest ({len(reviewed)} reviewed content findings; a context "
              f"needs {args.min} false positives and no confirmation)")
        return 0
    for s in found:
        what = f"allow {s.context!r}" if s.allow else f"(the term itself; lexicon.remove is yours to decide) {s.term!r}"
        print(f"{s.org_id}\t{s.rule}\t{what}\t{s.false_positives} false positives, 0 confirmed\te.g. {s.example[:60]}")
    if args.accept:
        if not file:
            raise ConfigError("policy suggest --accept: no policy file (give --policy or policy.file)")
        n = accept(file, found)
        print(f"qunguard policy suggest: added {n} allow entries to {file}; workers read it at their next start")
    return 0


def _check_row(item: dict) -> tuple[str, str, str, str]:
    """term or kind, span, the original text (masked for personal data), the normalised form."""
    what = item.get("term") or item.get("kind") or item.get("domain") or item.get("pattern") or ""
    span = item.get("span")
    original = item.get("text") or item.get("masked") or item.get("url") or ""
    detail = item.get("normalized") or ", ".join(f"{k}={v}" for k, v in item.items() if k != "span")
    return str(what), f"{span[0]}-{span[1]}" if span else "", str(original), str(detail)


def cmd_learn(cfg: Config, args: argparse.Namespace) -> int:
    """Retrain the content classifier from the reviewers' verdicts (pipeline/review/learn.py)."""
    from pathlib import Path

    from pipeline.detectors.content.classifier import default_model, load
    from pipeline.review.learn import relearn, verdict_examples
    from pipeline.sink import queries
    from pipeline.sink.backends import connect

    prior = load(Path(args.model)) if args.model else default_model()
    backend = connect(cfg.clickhouse.url)
    try:
        reviewed = backend.query(queries.reviewed_content(backend.database, args.org))
    finally:
        backend.close()
    examples = verdict_examples(reviewed, prior.labels)
    if not examples:
        print(f"qunguard learn: nothing to learn ({len(reviewed)} reviewed content findings, none of the classes "
              f"{', '.join(prior.labels)})")
        return 0
    model, changes = relearn(prior, examples, epochs=args.epochs)
    for e, before, after in changes:
        verdict = f"content.{e.only} " + ("confirmed" if e.label else "withdrawn")
        print(f"{verdict}\t{before:.2f} → {after:.2f}\t{e.text[:60]}")
    out = Path(args.out)
    model.dump(out, header=[f"qunguard learn: {prior.source or 'the shipped weights'}",
                            f"moved by {len(examples)} verdicts" + (f" of org {args.org}" if args.org else "")])
    print(f"qunguard learn: {len(examples)} verdicts; wrote {out}. To use it: content.classifier.model: {out} "
          "in the policy (remove the key to go back)")
    return 0


def cmd_report(cfg: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.report import build, check_format, write
    from pipeline.sink.backends import connect

    out = Path(args.out)
    check_format(out)  # before ClickHouse is asked anything
    backend = connect(cfg.clickhouse.url)
    try:
        report = build(backend, args.org, args.week, ZoneInfo(cfg.console.timezone))  # the console's calendar
    finally:
        backend.close()
    write(report, out)
    print(f"qunguard report: {args.org} {args.week}: {report.total} findings that stand; wrote {out}")
    if args.mail:
        from pipeline.report import mail

        channel = cfg.notifier.channels.get(args.mail)
        if channel is None or channel.type != "smtp":
            raise ConfigError(f"report --mail: {args.mail!r} is not an smtp channel of notifier.channels")
        reply = mail(report, channel, out)
        if reply.outcome != "sent":
            print(f"qunguard report: mail through {args.mail}: {reply.outcome}: {reply.error}", file=sys.stderr)
            return 1
        print(f"qunguard report: mailed to {', '.join(channel.to)} through {args.mail}")
    return 0


def cmd_console(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.console.serve import serve

    return serve(cfg, args.listen)


def cmd_bridge(cfg: Config, args: argparse.Namespace) -> int:
    if args.source == "onebot":
        if args.paths:
            raise SystemExit("qunguard bridge onebot: takes no paths (it listens on --listen)")
        from pipeline.adapters.onebot_server import serve as serve_onebot

        return serve_onebot(cfg, args.listen, args.org)
    from pipeline.adapters.archive import run_archive

    return run_archive(cfg, args.paths, args.org)


def cmd_console_user(cfg: Config, args: argparse.Namespace) -> int:
    from pipeline.console.serve import manage_users

    return manage_users(cfg, args.action, args.name, args.org, args.role, args.password_stdin)


def cmd_check(cfg: Config, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pipeline.detectors import Context
    from pipeline.detectors.content.detector import ContentDetector
    from pipeline.policy import load_policy
    from schemas.records import validate_event

    at = _parse_until(args.at, "check --at") if args.at else _parse_until("2026-11-02T10:00:00")
    event = validate_event({
        "kind": "message", "event_id": "check", "org_id": args.org, "ts": at, "platform": "wecom",
        "group_id": args.group, "msg_id": "check", "sender_id": "check", "msg_type": args.msg_type,
        "text": args.text, "file_name": args.file_name}, max_text_chars=len(args.text) + 1)
    findings = ContentDetector(load_policy(args.policy or cfg.policy.file)).on_event(event, None, Context(at)).findings
    table = Table(title=f"{len(findings)} finding(s)")
    # At 80 columns the rule and severity keep their width and the texts wrap: nothing is cut.
    table.add_column("rule", no_wrap=True, min_width=max((len(f["rule"]) for f in findings), default=4))
    table.add_column("severity", no_wrap=True, min_width=8)
    for col in ("term / kind", "span", "original", "normalised"):
        table.add_column(col, overflow="fold")
    for f in findings:
        ev = f["evidence"]
        # a combination is one row per cue: every one of them had to be there
        cues = [{**cue, "term": f"{group} (all of {'+'.join(c['combination'])})"}
                for c in ev.get("combinations", []) for group, cue in c["combination"].items()]
        # a classifier decision: its score against the threshold, and the n-grams that weighed most
        scored = [{"term": f"classifier: {c['class']} {c['score']:.2f} ≥ {c['threshold']}",
                   "normalized": "  ".join(f"{g} {w:+.2f}" for g, w in c["ngrams"])}
                  for c in ev.get("classifier", [])]
        for item in ev.get("matches", []) + cues + scored + ev.get("personal", []) + ev.get("links", []) or [ev]:
            table.add_row(f["rule"], f["severity"], *_check_row(item))
    Console().print(table)
    return 1 if findings else 0


def cmd_audit(cfg: Config, args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipeline.audit import audit_members, print_table, write_csv
    from pipeline.sink.backends import connect

    backend = connect(cfg.clickhouse.url)
    try:
        audits = audit_members(backend, org=args.org, group=args.group)
    finally:
        backend.close()
    if not audits:
        what = " ".join(f"{k} {v!r}" for k, v in (("org", args.org), ("group", args.group)) if v)
        print(f"qunguard audit members: no group {('of ' + what) if what else ''} has membership events in "
              f"ClickHouse ({redact(cfg.clickhouse.url)}): nothing was audited", file=sys.stderr)
        return 2
    if args.csv == "-":
        write_csv(audits, sys.stdout)
    else:
        if args.csv:
            with open(args.csv, "w", encoding="utf-8", newline="") as out:
                write_csv(audits, out)
        print_table(audits, Console())
    return 0


def cmd_demo(cfg: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.devtools.demo import run_demo

    if args.onebot not in (None, "simulated") and not Path(args.onebot).is_file():
        print(f"qunguard: demo --onebot: cannot read {args.onebot}", file=sys.stderr)
        return 2
    run_demo(cfg, seconds=args.seconds, rate=args.rate, seed=args.seed, web=args.console, onebot=args.onebot)
    return 0


def cmd_services(cfg: Config, args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from pipeline.devtools import devservices

    start = {"kafka": devservices.start_kafka, "clickhouse": devservices.start_clickhouse,
             "tansu": devservices.start_tansu}[args.service]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix=f"qg-{args.service}-"))
    svc = start(root, port=args.port)
    var = "QG_CLICKHOUSE_URL" if args.service == "clickhouse" else "QG_KAFKA_URL"
    print(f"{args.service} running, data in {root}\nexport {var}={svc.url}", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # sigwait only sees signals that are blocked
    try:
        signal.sigwait(stop)
    finally:
        svc.stop()
    return 0


def _positive(text: str) -> int:
    n = _int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return n


def _not_negative(text: str) -> int:
    n = _int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return n


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qunguard", description=__doc__)
    p.add_argument("--config", help="YAML configuration file (default: $QG_CONFIG)")
    # `qunguard worker --config f` as well as `qunguard --config f worker` (SUPPRESS: the subcommand's
    # absent --config does not overwrite the one given before it)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="YAML configuration file (default: $QG_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    command("migrate", help="apply the ClickHouse migrations (idempotent)").set_defaults(fn=cmd_migrate)
    s = command("org-reader", help="a ClickHouse user that reads one org's rows and nothing else")
    s.add_argument("--org", required=True)
    s.add_argument("--users-d", help="on servers without SQL users (18.16), write the user's file into this users.d")
    s.add_argument("--dry-run", action="store_true", help="print the statements, change nothing")
    s.set_defaults(fn=cmd_org_reader)
    s = command("retention", help="drop the months past each table's retention (config `retention`); "
                                  "TTL where the server has it")
    s.add_argument("--dry-run", action="store_true", help="print what would be dropped and run, change nothing")
    s.set_defaults(fn=cmd_retention)
    command("worker", help="run a Faust worker (several can share a consumer group)").set_defaults(
        fn=cmd_worker)
    command("notifier", help="deliver qg.alerts to the configured channels (robots, webhook, e-mail)"
                   ).set_defaults(fn=cmd_notifier)

    s = command("produce", help="send a JSON Lines file to the events topic")
    s.add_argument("file")
    s.add_argument("--envelope", type=int, default=1, help="pack up to N events of a group into one record")
    s.add_argument("--rate", type=float, default=0.0, help="events per second (0 = as fast as possible)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_produce)

    s = command("simulate", help="synthetic traffic to a file, stdout or Kafka")
    s.add_argument("--events", type=_positive, default=10_000)
    s.add_argument("--orgs", type=_positive, default=2)
    s.add_argument("--groups", type=_positive, default=40, help="groups in all")
    s.add_argument("--members", type=_positive, default=12, help="members per group")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--malformed", type=_not_negative, default=0, help="bad records to mix in (they go to dead letters)")
    s.add_argument("--envelope", type=_positive, default=1, help="batch envelopes of up to N events of one group")
    s.add_argument("--rate", type=float, default=0.0, help="events per second to Kafka (0 = unthrottled)")
    s.add_argument("--out", help="JSON Lines file (default: stdout)")
    s.add_argument("--kafka", action="store_true", help="send to the events topic instead of a file")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_simulate)

    s = command("replay", help="run every detector over a JSON Lines file (docs/contract.md#replay)")
    s.add_argument("events")
    s.add_argument("--policy")
    s.add_argument("--until", help="advance the clock to this ISO 8601 moment after the last event")
    s.add_argument("--out")
    s.add_argument("--alerts", help="also write the alerts the stream would send (JSON Lines) to this file")
    s.add_argument("--all", action="store_true", help="also the findings a reviewer withdrew (false_positive)")
    s.set_defaults(fn=cmd_replay)

    s = command("policy", help="the effective policy of a group, or allow-list entries learnt from verdicts")
    s.add_argument("action", choices=["show", "suggest"])
    s.add_argument("--policy", help="policy file (default: policy.file of the configuration)")
    s.add_argument("--org", help="show: the group's org; suggest: only this org")
    s.add_argument("--group", help="show: the group")
    s.add_argument("--min", type=int, default=2, help="suggest: false positives a context needs")
    s.add_argument("--accept", action="store_true", help="suggest: write the suggestions into the policy file")
    s.set_defaults(fn=cmd_policy)

    s = command("report", help="one org's week for the security team: .html, .xlsx or .csv")
    s.add_argument("--org", required=True)
    s.add_argument("--week", required=True, help="ISO week in the org's calendar, e.g. 2026-W47")
    s.add_argument("--out", required=True, help="F.html, F.xlsx or F.csv")
    s.add_argument("--mail", help="also send it through this smtp channel of notifier.channels")
    s.set_defaults(fn=cmd_report)

    s = command("console", help="the security team's web console (review queue, findings, groups, members)")
    s.add_argument("--listen", help="host:port (default: console.listen, 127.0.0.1:8088)")
    s.set_defaults(fn=cmd_console)

    s = command("bridge", help="QQ (OneBot v11) or WeCom chat-archive traffic, as the platforms send it, "
                               "into qg.events")
    s.add_argument("source", choices=["onebot", "wecom-archive"])
    s.add_argument("paths", nargs="*", help="wecom-archive: JSON-lines files or directories (default: stdin)")
    s.add_argument("--org", help="the organisation the traffic belongs to (default: bridge.org_id)")
    s.add_argument("--listen", help="onebot: host:port (default: bridge.onebot_listen, 127.0.0.1:8091)")
    s.set_defaults(fn=cmd_bridge)

    s = command("console-user", help="add, change, remove or list the console's users")
    s.add_argument("action", choices=["add", "remove", "list"])
    s.add_argument("name", nargs="?")
    s.add_argument("--org", help="the org whose data the user sees (add: needed for a new user)")
    s.add_argument("--role", default="viewer", help="viewer, reviewer or admin (default viewer)")
    s.add_argument("--password-stdin", action="store_true", help="read the password from stdin, not a prompt")
    s.set_defaults(fn=cmd_console_user)

    s = command("learn", help="retrain the content classifier from the reviewers' verdicts")
    s.add_argument("--out", required=True, help="the model file to write (point content.classifier.model at it)")
    s.add_argument("--org", help="only this org's verdicts")
    s.add_argument("--model", help="the model to start from (default: the shipped weights)")
    s.add_argument("--epochs", type=int, default=20)
    s.set_defaults(fn=cmd_learn)

    s = command("check", help="run the content rules on one text; exit 1 when anything is found")
    s.add_argument("text")
    s.add_argument("--policy")
    s.add_argument("--at", help="when it was posted, ISO 8601 (default: a Monday 10:00, outside quiet hours)")
    s.add_argument("--msg-type", default="text", choices=MSG_TYPES, metavar="TYPE",
                   help=f"one of {', '.join(MSG_TYPES)} (default text)")
    s.add_argument("--file-name")
    s.add_argument("--org", default="org")
    s.add_argument("--group", default="group")
    s.set_defaults(fn=cmd_check)

    s = command("audit", help="the weekly membership check from ClickHouse: departed staff still in "
                                     "groups, nicknames off the real-name format, external members")
    s.add_argument("what", choices=["members"])
    s.add_argument("--org")
    s.add_argument("--group")
    s.add_argument("--csv", help="also write the report as CSV to this file ('-': CSV to stdout, no table)")
    s.set_defaults(fn=cmd_audit)

    s = command("services", help="run Kafka (jars), ClickHouse (Debian) or Tansu here, without Docker")
    s.add_argument("service", choices=["kafka", "clickhouse", "tansu"])
    s.add_argument("--dir", help="data directory (kept between runs; default: a new temporary one)")
    s.add_argument("--port", type=int, help="port (default: a free one)")
    s.set_defaults(fn=cmd_services)

    s = command("demo", help="embedded broker + chDB + a worker + 30 s of simulated traffic")
    s.add_argument("--seconds", type=float, default=30.0)
    s.add_argument("--rate", type=float, default=1500.0, help="events per second")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--console", action="store_true",
                   help="then serve the console over the demo's data until Ctrl-C (needs clickhouse-server)")
    s.add_argument("--onebot", nargs="?", const="simulated", metavar="CAPTURE",
                   help="the traffic as QQ's OneBot v11 sends it, through `qunguard bridge onebot` (one org): "
                        "the simulator's, or the frames of CAPTURE (JSON lines, as an implementation sent them)")
    s.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline.kafka import KafkaUnreachable
    from pipeline.sink.backends import BackendError

    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        return args.fn(cfg, args)
    except ConfigError as exc:
        print(f"qunguard: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"qunguard: ClickHouse ({redact(cfg.clickhouse.url)}): {exc}", file=sys.stderr)
        return 1
    except KafkaUnreachable as exc:
        print(f"qunguard: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `qunguard audit members --csv - | head`: the reader left; say nothing more, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except FileNotFoundError as exc:
        print(f"qunguard: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """The console script: main(), then quiet exit. chDB's C++ runtime reports a harmless error
    about its thread pool while the interpreter exits after a session was closed; nothing is lost by
    then, so stderr is closed before it can print (everything qunguard says was said and flushed)."""
    try:
        code: Any = main()
    except SystemExit as exc:  # argparse's usage errors, a Faust worker's stop
        code = exc.code
    if "chdb" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
    sys.exit(code)


if __name__ == "__main__":
    run()
