"""The console's web application (Flask): sign-in, sessions, CSRF, roles, and the pages.

Every page is for a signed-in user and reads only that user's org: the org comes from the session,
never from the URL or a form, and each query filters on it (pipeline/console/pages.py). A finding,
group or member of another org is "not found", the same answer as one that does not exist.
Every POST carries the session's CSRF token. Verdicts go to Kafka as feedback events."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse
from zoneinfo import ZoneInfo

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from markupsafe import Markup

from pipeline import charts
from pipeline.alerting.labels import LABELS, SEVERITY_LABELS
from pipeline.config import ConfigError
from pipeline.console import pages
from pipeline.console.throttle import Throttle
from pipeline.console.users import ROLES, User, Users
from pipeline.console.verdicts import NotSent, SchemaError, Send, feedback
from pipeline.sink.backends import Backend
from schemas.records import VERDICTS

Health = Callable[[], dict[str, Any]]
MAX_BULK = 500  # verdicts in one submission


def create_app(backend: Backend, users: Users, send: Send, tz: str = "Asia/Shanghai",
               health: Health | None = None, session_hours: float = 12.0,
               clock: Callable[[], float] = time.time) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=users.secret, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=session_hours), MAX_CONTENT_LENGTH=1 << 20)
    zone = ZoneInfo(tz)
    # what /metrics shows (console.metrics_listen, pipeline/console/serve.py)
    counts: dict[str, Any] = {"requests": {}, "sign_ins": {"ok": 0, "failed": 0, "throttled": 0}, "verdicts": 0}
    app.extensions["qunguard_counts"] = counts

    @app.after_request
    def _count(response: Any) -> Any:
        status = f"{response.status_code // 100}xx"
        counts["requests"][status] = counts["requests"].get(status, 0) + 1
        return response

    def now_ms() -> int:
        return int(clock() * 1000)

    # --- templates' helpers ------------------------------------------------------------------------
    @app.template_filter("when")
    def _when(ms: Any) -> str:
        return datetime.fromtimestamp(int(ms) / 1000, zone).strftime("%Y-%m-%d %H:%M:%S") if ms else ""

    @app.template_filter("pretty")
    def _pretty(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, indent=2)

    @app.template_filter("age")
    def _age(ms: Any) -> str:
        """How long a finding has waited for review: the wall clock, an edge's time."""
        minutes = (now_ms() - int(ms)) // 60_000
        if minutes < 60:
            return f"{max(0, minutes)} min"
        return f"{minutes // 60} h" if minutes < 48 * 60 else f"{minutes // 1440} d"

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        return {"csrf_token": _csrf_token, "label": lambda r: LABELS.get(r, ""), "severity_label": SEVERITY_LABELS,
                "user": g.get("user"), "verdicts": VERDICTS, "roles": ROLES, "statuses": pages.STATUSES}

    # --- sessions, CSRF, roles ---------------------------------------------------------------------
    def _csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return str(session["csrf"])

    @app.before_request
    def _load_user() -> Any:
        g.user = None
        name = session.get("user")
        if name:
            users.reload()
            user = users.get(name)
            # A user removed, moved to another org or given another role signs in again.
            if user is None or (user.org, user.role) != (session.get("org"), session.get("role")) \
                    or session.get("stamp") != users.stamp(name) or clock() > float(session.get("until", 0)):
                session.clear()
            else:
                g.user = user
        if request.method == "POST":
            sent = request.form.get("csrf", "")
            if not sent or not secrets.compare_digest(sent, str(session.get("csrf", ""))):
                abort(400, "the form's CSRF token is missing or not this session's: reload the page and try again")
        return None

    @app.after_request
    def _headers(resp: Any) -> Any:
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; script-src 'none'; "
                                "style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def requires(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(fn)
            def inner(*a: Any, **kw: Any) -> Any:
                if g.user is None:
                    return redirect(url_for("login", next=request.full_path if request.method == "GET" else None))
                if not g.user.can(role):
                    abort(403, f"this needs the {role} role")
                return fn(*a, **kw)
            return inner
        return wrap

    def _days() -> int:
        try:
            return min(max(int(request.args.get("days", 7)), 1), 92)
        except ValueError:
            return 7

    def _window() -> pages.Window:
        return pages.window(backend, g.user.org, _days(), zone, now_ms())

    # --- sign-in -----------------------------------------------------------------------------------
    # 5 failures for one account, or 30 from one address (an office behind one NAT), in 15 minutes
    by_name, by_addr = Throttle(clock, limit=5), Throttle(clock, limit=30)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            name, addr = request.form.get("name", ""), request.remote_addr or ""
            wait = max(by_name.retry_after(name), by_addr.retry_after(addr))
            if wait:
                counts["sign_ins"]["throttled"] += 1
                flash(f"too many failed sign-ins: try again in {(wait + 59) // 60} min")
                return render_template("login.html"), 429, {"Retry-After": str(wait)}
            user = users.verify(name, request.form.get("password", ""))
            if user is None:
                counts["sign_ins"]["failed"] += 1
                by_name.failed(name)
                by_addr.failed(addr)
                flash("wrong name or password")
                return render_template("login.html"), 401
            by_name.succeeded(name)
            counts["sign_ins"]["ok"] += 1
            session.clear()  # a new session on sign-in: no fixation
            session.permanent = True
            session.update(user=user.name, org=user.org, role=user.role, stamp=users.stamp(user.name),
                           until=clock() + session_hours * 3600)
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html")

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    # --- pages -------------------------------------------------------------------------------------
    @app.get("/")
    @requires("viewer")
    def overview() -> Any:
        w = _window()
        data = pages.overview(backend, g.user.org, w, zone)
        status = health() if health else {}
        dead = pages.deadletters(backend, g.user.org, int(clock()) - 7 * 86400)
        return render_template("overview.html", w=w, d=data, week=_iso_week(w.end - timedelta(days=1)),
                               bars=Markup(charts.bars(data["per_day"])),
                               heatmap=Markup(charts.heatmap(data["heatmap"])), health=status, dead=dead)

    @app.get("/queue")
    @requires("viewer")
    def queue() -> Any:
        w = _window()
        status = request.args.get("status", "")
        statuses = (status,) if status in pages.STATUSES else pages.OPEN
        rule, group_id = request.args.get("rule", ""), request.args.get("group", "")
        items = pages.queue(backend, g.user.org, w, statuses, rule, group_id)
        return render_template("queue.html", w=w, items=items, rules=pages.rules(backend, g.user.org),
                               names=pages.group_names(backend, g.user.org), status=status, rule=rule,
                               group_id=group_id, days=_days(), here=request.full_path)

    @app.get("/findings/<finding_id>")
    @requires("viewer")
    def finding(finding_id: str) -> Any:
        return render_template("finding.html", f=_found(pages.finding(backend, g.user.org, finding_id)),
                               here=request.full_path)

    @app.get("/groups/<group_id>")
    @requires("viewer")
    def group(group_id: str) -> Any:
        return render_template("group.html", d=_found(pages.group(backend, g.user.org, group_id)))

    @app.get("/members/<user_id>")
    @requires("viewer")
    def member(user_id: str) -> Any:
        return render_template("member.html", d=_found(pages.member(backend, g.user.org, user_id)))

    @app.post("/verdicts")
    @requires("reviewer")
    def verdicts() -> Any:
        ids = list(dict.fromkeys(request.form.getlist("finding_id")))
        verdict, note = request.form.get("verdict", ""), request.form.get("note", "").strip()[:500]
        back = _safe_next(request.form.get("next"))
        if verdict not in VERDICTS:
            abort(400, f"verdict must be one of {', '.join(VERDICTS)}")
        if not ids:
            flash("no finding was selected")
            return redirect(back)
        if len(ids) > MAX_BULK:
            abort(400, f"at most {MAX_BULK} findings at once")
        ours = set(pages.findings_of(backend, g.user.org, ids))
        if len(ours) != len(ids):
            abort(404)  # another org's finding, or none: the same answer
        try:
            events = [feedback(g.user.org, fid, verdict, g.user.name, note, now_ms()) for fid in ids]
            send(events)
            counts["verdicts"] += len(events)
        except SchemaError as exc:
            abort(400, str(exc))
        except NotSent as exc:
            return render_template("error.html", code=503, message=f"not sent: {exc}"), 503
        flash(f"{len(events)} verdict(s) “{verdict}” sent; the finding's status changes when the worker has applied "
              "them (seconds)")
        return redirect(back)

    @app.get("/report")
    @requires("viewer")
    def report() -> Any:
        """The weekly report (pipeline/report.py) of the user's org: HTML, or an .xlsx or .csv file."""
        import io

        from pipeline.report import FORMATS, build, check_format, render_html, write_csv, write_xlsx

        week = request.args.get("week") or _iso_week(_window().end - timedelta(days=1))
        suffix = "." + request.args.get("format", "html")
        if suffix not in (".html", ".xlsx", ".csv"):
            abort(400, "format: html, xlsx or csv")
        try:
            check_format(Path("report" + suffix))
            rep = build(backend, g.user.org, week, zone)
        except ConfigError as exc:
            abort(400, str(exc).split(": ", 1)[-1])
        if suffix in (".html", ".htm"):
            resp = app.make_response(render_html(rep))
            resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
            return resp
        buf: Any = io.BytesIO()
        if suffix == ".csv":
            text = io.StringIO()
            write_csv(rep, text)
            buf.write(text.getvalue().encode("utf-8-sig"))
        else:
            write_xlsx(rep, buf)
        maintype, subtype = FORMATS[suffix]
        resp = app.make_response(buf.getvalue())
        resp.headers["Content-Type"] = f"{maintype}/{subtype}"
        resp.headers["Content-Disposition"] = f'attachment; filename="qunguard-{g.user.org}-{week}{suffix}"'
        return resp

    # --- users (admins of the org) -----------------------------------------------------------------
    @app.route("/users", methods=["GET", "POST"])
    @requires("admin")
    def users_page() -> Any:
        if request.method == "POST":
            name, role = request.form.get("name", "").strip(), request.form.get("role", "")
            password = request.form.get("password") or None
            existing = users.get(name)
            if existing is not None and existing.org != g.user.org:
                flash(f"{name}: the name is taken")  # by another org's user, whom this org cannot change
            elif request.form.get("remove"):
                if name == g.user.name:
                    flash("you cannot remove yourself")
                elif existing is not None:
                    users.remove(name)
                    flash(f"{name} removed")
            else:
                try:
                    users.put(name, g.user.org, role, password)
                    flash(f"{name}: {role}")
                except ConfigError as exc:
                    flash(str(exc))
            return redirect(url_for("users_page"))
        return render_template("users.html", people=users.of_org(g.user.org))

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    def _error(exc: Any) -> Any:
        return render_template("error.html", code=exc.code, message=exc.description), exc.code

    def _safe_next(target: str | None) -> str:
        """Only a path of this site (no open redirect to another host)."""
        if target and target.startswith("/") and not target.startswith("//") and not urlparse(target).netloc:
            return target
        return url_for("overview")

    app.jinja_env.globals["query"] = lambda **kw: "?" + urlencode({k: v for k, v in kw.items() if v})
    return app


def _found(page: dict[str, Any] | None) -> dict[str, Any]:
    """A page's data, or 404: another org's id and an id that does not exist get the same answer."""
    if page is None:
        abort(404)
    return page


def _iso_week(day: datetime) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


__all__ = ["User", "create_app"]
