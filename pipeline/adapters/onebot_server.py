"""`qunguard bridge onebot`: OneBot v11 events in by HTTP POST and by reverse WebSocket (aiohttp).

- HTTP POST (OneBot http-post.md) on `/` (any path): with `bridge.onebot_secret` set, the body's
  `X-Signature: sha1=<hex HMAC-SHA1(secret, body)>` must match, or the answer is 401 and nothing is
  produced. The answer is 204 once Kafka has acknowledged the events (503 if it could not).
- Reverse WebSocket (the implementation connects to us, "Universal" role) on `/onebot/v11/ws`
  (also `/ws`, `/onebot/v11/ws/event`): with `bridge.onebot_access_token` set, the handshake needs
  `Authorization: Bearer <token>` (or `?access_token=`), else 401. Each text frame is one event;
  a frame that is not JSON, or not mappable, is a dead letter with the reason and the connection
  goes on. Frames with an `echo` are answers to our own API calls, not events.

A payload that cannot be mapped is acknowledged too (204): it is stored as a dead letter, and an
implementation retrying it would only store it again.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from hashlib import sha1
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from pipeline.adapters.bridge import Batcher, Sender, error_record, need_org
from pipeline.adapters.onebot import Unmappable, map_payload
from pipeline.config import Config

log = logging.getLogger("qunguard.bridge.onebot")
WS_PATHS = ("/onebot/v11/ws", "/onebot/v11/ws/event", "/ws")


class OneBotBridge:
    def __init__(self, cfg: Config, batcher: Batcher) -> None:
        self.cfg = cfg
        self.org = cfg.bridge.org_id
        self.batcher = batcher
        self.counts = {"received": 0, "events": 0, "dead": 0, "refused": 0}

    def records(self, body: bytes) -> list[dict[str, Any]]:
        """The events of one payload, or its dead letter."""
        self.counts["received"] += 1
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self.counts["dead"] += 1
            return [error_record("onebot", f"onebot: invalid JSON: {exc}", body, self.org)]
        try:
            events = map_payload(payload, self.org)
        except Unmappable as exc:
            self.counts["dead"] += 1
            return [error_record("onebot", str(exc), payload, self.org)]
        self.counts["events"] += len(events)
        return events

    def signed(self, request: web.Request, body: bytes) -> bool:
        secret = self.cfg.bridge.onebot_secret
        if not secret:
            return True
        want = "sha1=" + hmac.new(secret.encode(), body, sha1).hexdigest()
        return hmac.compare_digest(request.headers.get("X-Signature", ""), want)

    def authorised(self, request: web.Request) -> bool:
        token = self.cfg.bridge.onebot_access_token
        if not token:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").removeprefix("Token ").strip()
        given = given or request.query.get("access_token", "")
        return hmac.compare_digest(given, token)

    async def http_post(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.signed(request, body):
            self.counts["refused"] += 1
            log.warning("refused a POST from %s: X-Signature does not match bridge.onebot_secret", request.remote)
            return web.Response(status=401, text="X-Signature does not match")
        try:
            await self.batcher.put(self.records(body))
        except Exception as exc:  # noqa: BLE001 -- the sender hears it and may send again
            return web.Response(status=503, text=f"not stored: {type(exc).__name__}")
        return web.Response(status=204)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            self.counts["refused"] += 1
            log.warning("refused a WebSocket from %s: the access token does not match", request.remote)
            return web.Response(status=401, text="access token does not match")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=self.cfg.kafka.max_message_bytes)
        await ws.prepare(request)
        log.info("OneBot connected: self_id %s (%s)", request.headers.get("X-Self-ID", "?"),
                 request.headers.get("X-Client-Role", "Universal"))
        pending: set[asyncio.Future[None]] = set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                body = msg.data.encode()
            elif msg.type == WSMsgType.BINARY:
                body = msg.data
            else:
                continue
            if b'"echo"' in body and b'"post_type"' not in body:
                continue  # an answer to an action of ours
            fut = asyncio.ensure_future(self.batcher.put(self.records(body)))
            pending.add(fut)
            fut.add_done_callback(pending.discard)
        if pending:  # what the connection sent before it closed is still produced
            await asyncio.gather(*pending, return_exceptions=True)
        return ws

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.kafka.max_message_bytes)
        for path in WS_PATHS:
            app.router.add_get(path, self.websocket)
        app.router.add_get("/healthz", self.health)
        app.router.add_post("/{tail:.*}", self.http_post)
        return app


def serve(cfg: Config, listen: str | None = None, org: str | None = None) -> int:
    if org:
        cfg = cfg.model_copy(update={"bridge": cfg.bridge.model_copy(update={"org_id": org})})
    host, _, port = (listen or cfg.bridge.onebot_listen).rpartition(":")
    from pipeline.kafka import ensure_topics

    need_org(cfg, "QQ groups")
    ensure_topics(cfg)

    async def main() -> None:
        batcher = Batcher(Sender(cfg), cfg.bridge.linger_ms)
        bridge = OneBotBridge(cfg, batcher)
        runner = web.AppRunner(bridge.app(), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, int(port))
        await site.start()
        print(f"qunguard bridge onebot: http://{host}:{port}/ (POST) and ws://{host}:{port}/onebot/v11/ws "
              f"for org {cfg.bridge.org_id}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()  # connections closed, what they sent produced
        await batcher.drain()
        await batcher.close()
        log.info("stopped: %s", bridge.counts)

    asyncio.run(main())
    return 0
