"""A local webhook that receives qunguard's alerts as a security team's system would: it checks the
X-Qunguard-Signature (pipeline/alerting/channels.py, webhook_signature) and keeps what it got, with
the moment each arrived. Used by `qunguard demo` and bench/bench_alerts.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from typing import Any

import orjson
from aiohttp import web


class Receiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.alerts: list[tuple[float, dict[str, Any]]] = []  # (arrived at, alert)
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Qunguard-Timestamp", "")
        mac = hmac.new(self.secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Qunguard-Signature", ""), f"sha256={mac}"):
            self.refused += 1
            return web.Response(status=401)
        now = time.time()
        self.alerts.extend((now, a) for a in orjson.loads(raw)["alerts"])
        return web.json_response({"ok": True})

    def start(self) -> Receiver:
        async def go() -> int:
            app = web.Application(client_max_size=64 << 20)
            app.router.add_post("/alerts", self._hook)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            server: Any = site._server  # noqa: SLF001 -- the port the OS chose
            return int(server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def channel(self) -> dict[str, Any]:
        return {"type": "webhook", "url": self.url, "secret": self.secret}

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
