"""Sending one message to one channel, and what the platform's reply means (shared/payloads/ has
the real replies). Each send returns a `Reply`: sent, too fast (back off, retry), a configuration
error (bad key or signature: reported once, not retried), failed (this message will never be
taken: dead letter), or down (the network or the server: retry). Secrets never leave this module
in a message: errors name the channel, never its URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import smtplib
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

import aiohttp
import orjson

from pipeline.alerting import render
from pipeline.config import ENDPOINTS, Channel

Outcome = Literal["sent", "too_fast", "config", "failed", "down"]

# The platforms' codes (SPEC §8, shared/payloads/): too fast, and a bad key, token or signature.
TOO_FAST = {"wecom": {45009}, "dingtalk": {130101}, "feishu": {9499, 11232}}
CONFIG = {"wecom": {93000, 40013, 40014, 41001}, "dingtalk": {310000, 300001, 300005, 400101, 400102},
          "feishu": {19021, 19022, 19024, 19002, 19001}}


@dataclass(frozen=True)
class Reply:
    outcome: Outcome
    error: str = ""
    wait: float | None = None  # how long the platform asked us to wait


def dingtalk_sign(secret: str, ts_ms: int) -> str:
    """DingTalk: base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")), URL-encoded."""
    mac = hmac.new(secret.encode(), f"{ts_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(mac))


def feishu_sign(secret: str, ts_s: int) -> str:
    """Feishu: base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))."""
    return base64.b64encode(hmac.new(f"{ts_s}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()


def webhook_signature(secret: str, ts_ms: int, body: bytes) -> str:
    """The generic webhook's X-Qunguard-Signature: sha256=hex(HMAC-SHA256(secret, f"{ts}.{body}"))."""
    return "sha256=" + hmac.new(secret.encode(), f"{ts_ms}.".encode() + body, hashlib.sha256).hexdigest()


def request(ch: Channel, alerts: list[dict[str, Any]], names: dict[str, str], base_url: str,
            now: float | None = None) -> tuple[str, bytes, dict[str, str]]:
    """(url, body, headers) of the message that carries these alerts."""
    now = time.time() if now is None else now
    payload = render.body(ch.type, alerts, names, base_url)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if ch.type == "wecom":
        url = f"{ch.url or ENDPOINTS['wecom']}?key={urllib.parse.quote(ch.key or '')}"
    elif ch.type == "dingtalk":
        url = f"{ch.url or ENDPOINTS['dingtalk']}?access_token={urllib.parse.quote(ch.access_token or '')}"
        if ch.secret:
            ts = int(now * 1000)
            url += f"&timestamp={ts}&sign={dingtalk_sign(ch.secret, ts)}"
    elif ch.type == "feishu":
        url = f"{(ch.url or ENDPOINTS['feishu']).rstrip('/')}/{ch.hook}"
        if ch.secret:
            ts = int(now)
            payload = {"timestamp": str(ts), "sign": feishu_sign(ch.secret, ts), **payload}
    else:
        url = ch.url or ""
    body = orjson.dumps(payload)
    if ch.type == "webhook" and ch.secret:
        ts = int(now * 1000)
        headers["X-Qunguard-Timestamp"] = str(ts)
        headers["X-Qunguard-Signature"] = webhook_signature(ch.secret, ts, body)
    return url, body, headers


def classify(kind: str, status: int, body: bytes, retry_after: str | None = None) -> Reply:
    """What a robot's or webhook's HTTP reply means."""
    if kind == "webhook":
        if 200 <= status < 300:
            return Reply("sent")
        if status == 429:
            return Reply("too_fast", f"HTTP {status}", _seconds(retry_after))
        if status in (401, 403):
            return Reply("config", f"HTTP {status}: the receiver refused the signature")
        if status >= 500:
            return Reply("down", f"HTTP {status}")
        return Reply("failed", f"HTTP {status}")
    if status >= 500:
        return Reply("down", f"HTTP {status}")
    try:
        reply = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Reply("down" if status != 200 else "failed", f"HTTP {status}: not JSON")
    code = reply.get("errcode", reply.get("code", reply.get("StatusCode")))
    msg = str(reply.get("errmsg") or reply.get("msg") or "")[:200]
    if code == 0:
        return Reply("sent")
    if code in TOO_FAST.get(kind, ()):
        return Reply("too_fast", f"{code}: {msg}", _seconds(reply.get("wait")))
    if code in CONFIG.get(kind, ()):
        return Reply("config", f"{code}: {msg}")
    return Reply("failed", f"{code}: {msg}")


def _seconds(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


async def send_http(session: aiohttp.ClientSession, ch: Channel, alerts: list[dict[str, Any]],
                    names: dict[str, str], base_url: str, timeout: float) -> Reply:
    url, body, headers = request(ch, alerts, names, base_url)
    try:
        async with session.post(url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return classify(ch.type, resp.status, await resp.read(), resp.headers.get("Retry-After"))
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Reply("down", type(exc).__name__)  # the exception's text can hold the URL: not shown


def send_mail(ch: Channel, alerts: list[dict[str, Any]], names: dict[str, str], base_url: str,
              timeout: float) -> Reply:
    """Blocking (smtplib): run it in a thread."""
    msg = EmailMessage()
    msg["Subject"] = render.subject(alerts, names)
    msg["From"] = ch.sender or ""
    msg["To"] = ", ".join(ch.to)
    msg["X-Qunguard-Alerts"] = ",".join(a["alert_id"] for a in alerts)
    msg.set_content(render.text(alerts, names, base_url))
    return deliver_mail(ch, msg, timeout)


def deliver_mail(ch: Channel, msg: EmailMessage, timeout: float) -> Reply:
    """One message through the channel's SMTP server, with the server's reply as a `Reply`
    (blocking). Also the weekly report's way out (`qunguard report --mail`)."""
    port = ch.port or (465 if ch.security == "ssl" else 587 if ch.security == "starttls" else 25)
    context = ssl.create_default_context(cafile=ch.ca_file)
    try:
        if ch.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(ch.host or "", port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(ch.host or "", port, timeout=timeout)
        with smtp:
            if ch.security == "starttls":
                smtp.starttls(context=context)
            if ch.user:
                smtp.login(ch.user, ch.password or "")
            smtp.send_message(msg)
        return Reply("sent")
    except smtplib.SMTPAuthenticationError as exc:
        return Reply("config", f"SMTP {exc.smtp_code}: authentication failed")
    except smtplib.SMTPNotSupportedError:
        return Reply("config", "the server does not offer STARTTLS (channel security)")
    except smtplib.SMTPRecipientsRefused:
        return Reply("failed", "every recipient was refused")
    except smtplib.SMTPResponseException as exc:
        return Reply("down" if 400 <= exc.smtp_code < 500 else "failed", f"SMTP {exc.smtp_code}")
    except (smtplib.SMTPException, OSError) as exc:
        return Reply("down", type(exc).__name__)
