"""Local stand-ins for the platforms' robot endpoints and a mail server, on loopback: they check
what the platforms check (the key or token, DingTalk's and Feishu's signatures as the platforms'
published reference code computes them, shared/payloads/*_sign_reference.py, the webhook's HMAC),
enforce each robot's budget, and answer with the platforms' own reply bodies (shared/payloads/).
Written from the platforms' documentation, independently of pipeline/alerting/channels.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

# The platforms' replies, verbatim from shared/payloads/ (file names beside each).
OK_ERRCODE = {"errcode": 0, "errmsg": "ok"}  # dingtalk_success_response / wecom_robot_success_response
WECOM_TOO_FAST = {"errcode": 45009, "errmsg": "api freq out of limit, hint: [1651125626252370061579454], from ip: "
                  "122.14.234.1, more info at https://open.work.weixin.qq.com/devtool/query?e=45009"}
WECOM_BAD_KEY = {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1651125626252370061579455]"}
DING_TOO_FAST = {"status": 1111, "wait": 5, "source": "x5", "punish": "deny",
                 "uuid": "9ff0e7e2346aabb5a8bcbb7c93c71636", "errcode": 130101,
                 "errmsg": "send too fast, exceed 20 times per minute"}
DING_SIGN = {"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"}
DING_TOKEN = {"errcode": 300001, "errmsg": "token is not exist"}
FEISHU_OK = {"code": 0, "msg": "success", "data": {}, "Extra": None, "StatusCode": 0, "StatusMessage": "success"}
FEISHU_SIGN = {"code": 19021, "data": {},
               "msg": "sign match fail or timestamp is not within one hour from current time"}
FEISHU_TOO_FAST = {"code": 9499, "msg": "Bad Request", "data": {}}


@dataclass
class Received:
    kind: str
    at: float
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Robots:
    """WeCom, DingTalk and Feishu robots and a generic webhook receiver, one aiohttp server."""

    def __init__(self, wecom_key: str = "wk-3f9a", ding_token: str = "dt-77c1", ding_secret: str = "SECd1ng",
                 feishu_hook: str = "fh-5b2e", feishu_secret: str = "fsSecret", hook_secret: str = "whSecret",
                 per_minute: int = 20) -> None:
        self.wecom_key, self.ding_token, self.ding_secret = wecom_key, ding_token, ding_secret
        self.feishu_hook, self.feishu_secret, self.hook_secret = feishu_hook, feishu_secret, hook_secret
        self.per_minute = per_minute
        self.received: list[Received] = []
        self.refused: list[tuple[str, dict[str, Any]]] = []
        self._sent: dict[str, deque[float]] = {}
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    # --- life ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> Robots:
        async def go() -> int:
            app = web.Application()
            app.router.add_post("/cgi-bin/webhook/send", self._wecom)
            app.router.add_post("/robot/send", self._dingtalk)
            app.router.add_post("/open-apis/bot/v2/hook/{hook}", self._feishu)
            app.router.add_post("/webhook", self._webhook)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", port)
            await site.start()
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]  # noqa: SLF001

        self.port = asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """The endpoints go away (connections refused) until start(port) again."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]

    # --- the platforms ---------------------------------------------------------------------

    def _over_budget(self, kind: str, per_minute: int, per_second: int | None = None) -> bool:
        now = time.time()
        sent = self._sent.setdefault(kind, deque())
        while sent and sent[0] <= now - 60:
            sent.popleft()
        if len(sent) >= per_minute or (per_second and sum(1 for t in sent if t > now - 1) >= per_second):
            return True
        sent.append(now)
        return False

    def _answer(self, kind: str, request: web.Request, body: dict[str, Any], reply: dict[str, Any]) -> web.Response:
        if reply.get("errcode", reply.get("code")) == 0:
            self.received.append(Received(kind, time.time(), body, dict(request.headers)))
        else:
            self.refused.append((kind, reply))
        return web.json_response(reply)

    async def _wecom(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.query.get("key") != self.wecom_key:
            return self._answer("wecom", request, body, WECOM_BAD_KEY)
        if self._over_budget("wecom", self.per_minute):
            return self._answer("wecom", request, body, WECOM_TOO_FAST)
        return self._answer("wecom", request, body, OK_ERRCODE)

    async def _dingtalk(self, request: web.Request) -> web.Response:
        body = await request.json()
        q = request.query
        if q.get("access_token") != self.ding_token:
            return self._answer("dingtalk", request, body, DING_TOKEN)
        # dingtalk_sign_reference.py: sign = quote_plus(base64(hmac_sha256(secret, f"{timestamp}\n{secret}")))
        timestamp = q.get("timestamp", "")
        string_to_sign = f"{timestamp}\n{self.ding_secret}".encode()
        expected = base64.b64encode(hmac.new(self.ding_secret.encode(), string_to_sign, hashlib.sha256).digest())
        # the client URL-encodes the sign (quote_plus); aiohttp hands the query over decoded
        fresh = timestamp.isdigit() and abs(time.time() * 1000 - int(timestamp)) < 3_600_000
        if not fresh or q.get("sign") != expected.decode():
            return self._answer("dingtalk", request, body, DING_SIGN)
        if self._over_budget("dingtalk", self.per_minute):
            return self._answer("dingtalk", request, body, DING_TOO_FAST)
        return self._answer("dingtalk", request, body, OK_ERRCODE)

    async def _feishu(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.match_info["hook"] != self.feishu_hook:
            return self._answer("feishu", request, body, {"code": 19001, "msg": "param invalid: incoming webhook"
                                                          " access token invalid"})
        # feishu_sign_reference.py: sign = base64(hmac_sha256(key=f"{timestamp}\n{secret}", msg=b""))
        timestamp = str(body.get("timestamp", ""))
        key = f"{timestamp}\n{self.feishu_secret}".encode()
        expected = base64.b64encode(hmac.new(key, b"", digestmod=hashlib.sha256).digest()).decode()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 3600
        if not fresh or body.get("sign") != expected:
            return self._answer("feishu", request, body, FEISHU_SIGN)
        if self._over_budget("feishu", 100, 5):
            return self._answer("feishu", request, body, FEISHU_TOO_FAST)
        return self._answer("feishu", request, body, FEISHU_OK)

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Qunguard-Timestamp", "")
        mac = hmac.new(self.hook_secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        if request.headers.get("X-Qunguard-Signature") != f"sha256={mac}":
            self.refused.append(("webhook", {"status": 401}))
            return web.Response(status=401, text="bad signature")
        self.received.append(Received("webhook", time.time(), orjson.loads(raw), dict(request.headers)))
        return web.json_response({"ok": True})


def channels(robots: Robots, mail: Mail | None = None, **broken: str) -> dict[str, dict[str, Any]]:
    """notifier.channels for these robots (and the mail server); `broken` overrides a field."""
    out: dict[str, dict[str, Any]] = {
        "wecom": {"type": "wecom", "url": f"{robots.base}/cgi-bin/webhook/send", "key": robots.wecom_key},
        "ding": {"type": "dingtalk", "url": f"{robots.base}/robot/send", "access_token": robots.ding_token,
                 "secret": robots.ding_secret},
        "feishu": {"type": "feishu", "url": f"{robots.base}/open-apis/bot/v2/hook", "hook": robots.feishu_hook,
                   "secret": robots.feishu_secret},
        "hook": {"type": "webhook", "url": f"{robots.base}/webhook", "secret": robots.hook_secret},
    }
    if mail is not None:
        out["mail"] = mail.channel()
    for key, value in broken.items():
        name, fld = key.split("__")
        out[name][fld] = value
    return out


class Mail:
    """aiosmtpd with STARTTLS (a self-signed certificate made here) and AUTH PLAIN/LOGIN."""

    def __init__(self, tmp: Path, user: str = "alerts@qg.test", password: str = "mailPass9") -> None:
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.user, self.password = user, password
        self.messages: list[Any] = []
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        self.ca_file = str(cert)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 -- aiosmtpd's hook name
                from email import message_from_bytes
                from email.policy import default

                outer.messages.append(message_from_bytes(envelope.content, policy=default))
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == outer.user and auth_data.password.decode() == outer.password
            return AuthResult(success=ok)

        import socket

        with socket.socket() as s:  # aiosmtpd checks its server by connecting to the port it was given
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True, authenticator=authenticate, auth_require_tls=True)
        self.controller.start()

    def channel(self, **override: Any) -> dict[str, Any]:
        return {"type": "smtp", "host": "localhost", "port": self.port, "security": "starttls", "user": self.user,
                "password": self.password, "sender": "qunguard@qg.test", "to": ["security@qg.test"],
                "ca_file": self.ca_file, **override}

    def close(self) -> None:
        self.controller.stop()
