"""`qunguard bridge onebot`: OneBot v11 events in by HTTP POST and by reverse WebSocket (aiohttp).

- HTTP POST (OneBot http-post.md) on `/` (any path): with `bridge.onebot_secret` set, the body's
  `X-Signature: sha1=<hex HMAC-SHA1(secret, body)>` must match, or the answer is 401 and nothing is
  produced. The answer is 204 once Kafka has acknowledged the events (503 if it could not).
- Reverse WebSocket (the implementation connects to us, "Universal" role) on `/onebot/v11/ws`
  (also `/ws`, `/onebot/v11/ws/event`): with `bridge.onebot_access_token` set, the handshake needs
  `Authorization: Bearer <token>` (or `?access_token=`), else 401. Each text frame is one event;
  a frame that is not JSON, or not mappable, is a dead letter with the reason and the connection
  goes on. Frames with an `echo` are answers to our own API calls, not events.

Sanctions are carried out here too, where the policy enables enforcement (pipeline/adapters/
enforce.py): the actions go to the bot's own WebSocket (answers matched by `echo`), or to
`bridge.onebot_api_url` when it is not connected.

A payload that cannot be mapped is acknowledged too (204): it is stored as a dead letter, and an
implementation retrying it would only store it again.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import signal
from hashlib import sha1
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from pipeline.adapters.bridge import Batcher, Sender, error_record, need_org
from pipeline.adapters.enforce import Action, ActionFailed, Enforcer
from pipeline.adapters.onebot import Unmappable, map_payload
from pipeline.config import Config
from pipeline.kafka import bootstrap
from pipeline.metrics import CONTENT_TYPE, counts_renderer
from pipeline.policy import load_policy
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate

log = logging.getLogger("qunguard.bridge.onebot")
WS_PATHS = ("/onebot/v11/ws", "/onebot/v11/ws/event", "/ws")
ACTION_TIMEOUT = 10.0  # seconds an implementation has to answer an action
ENFORCE_RESUME_SECONDS = 5.0  # pause before the enforcer's consumer starts again after a failure


class OneBotBridge:
    def __init__(self, cfg: Config, batcher: Batcher) -> None:
        self.cfg = cfg
        self.org = cfg.bridge.org_id
        self.batcher = batcher
        self.counts: dict[str, Any] = {"received": 0, "events": 0, "dead": 0, "refused": 0,
                                       "unacknowledged": 0}
        self.connections: dict[str, web.WebSocketResponse] = {}  # X-Self-ID → its reverse WebSocket
        self.group_bot: dict[str, str] = {}  # group → the bot account its traffic came through
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}  # echo → the answer to our action
        self._render = counts_renderer("qunguard_bridge", lambda: {  # /metrics (pipeline/metrics.py)
            **self.counts, "connections": len(self.connections)}, gauges=("unacknowledged", "connections"))
        self._echo = itertools.count(1)

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
        for e in events:
            if e.get("self_id"):
                self.group_bot[e["group_id"]] = e["self_id"]
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
            await self._put(self.records(body))
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
        self_id = request.headers.get("X-Self-ID", "")
        log.info("OneBot connected: self_id %s (%s)", self_id or "?", request.headers.get("X-Client-Role", "Universal"))
        self.connections[self_id] = ws
        pending: set[asyncio.Future[None]] = set()
        try:
            await self._read(ws, pending)
        finally:
            if self.connections.get(self_id) is ws:
                del self.connections[self_id]
        if pending:  # what the connection sent before it closed is still produced
            await asyncio.gather(*pending, return_exceptions=True)
        return ws

    async def _read(self, ws: web.WebSocketResponse, pending: set[asyncio.Future[None]]) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                body = msg.data.encode()
            elif msg.type == WSMsgType.BINARY:
                body = msg.data
            else:
                continue
            if b'"echo"' in body and b'"post_type"' not in body and self._answer(body):
                continue  # an answer to an action of ours
            fut = asyncio.ensure_future(self._put(self.records(body)))
            pending.add(fut)
            fut.add_done_callback(pending.discard)

    async def _put(self, records: list[dict[str, Any]]) -> None:
        """Into Kafka; `unacknowledged` in /healthz lets a sender see when all it sent is stored."""
        self.counts["unacknowledged"] += len(records)
        try:
            await self.batcher.put(records)
        finally:
            self.counts["unacknowledged"] -= len(records)

    def _answer(self, body: bytes) -> bool:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        waiter = self.waiting.pop(str(reply.get("echo")), None) if isinstance(reply, dict) else None
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
        return waiter is not None

    async def call(self, action: Action) -> dict[str, Any]:
        """One OneBot action: through the bot's WebSocket when it is connected, else the HTTP API."""
        group = str(action.params.get("group_id", action.finding.get("group_id", "")))
        bot = self.group_bot.get(group)
        ws = self.connections.get(bot) if bot is not None else None
        if ws is None and len(self.connections) == 1 and not self.cfg.bridge.onebot_api_url:
            ws = next(iter(self.connections.values()))
        if ws is not None and not ws.closed:
            echo = f"qg-{next(self._echo)}"
            waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.waiting[echo] = waiter
            try:
                await ws.send_json({"action": action.action, "params": action.params, "echo": echo})
                return await asyncio.wait_for(waiter, ACTION_TIMEOUT)
            finally:
                self.waiting.pop(echo, None)
        if self.cfg.bridge.onebot_api_url:
            from aiohttp import ClientSession, ClientTimeout

            headers = {"Authorization": f"Bearer {self.cfg.bridge.onebot_access_token}"} \
                if self.cfg.bridge.onebot_access_token else {}
            async with ClientSession(timeout=ClientTimeout(total=ACTION_TIMEOUT)) as http, http.post(
                    f"{self.cfg.bridge.onebot_api_url.rstrip('/')}/{action.action}", json=action.params,
                    headers=headers) as r:
                return dict(await r.json(content_type=None))
        raise ActionFailed(f"no OneBot connection carries group {group} (none connected, no bridge.onebot_api_url)")

    async def enforce(self, enforcer: Enforcer) -> None:
        """Sanctions from qg.findings carried out, each stored before its record is committed. A
        failure outside the actions (ClickHouse or the broker away) stops nothing for good: the
        consumer starts again from its last commit, and what ClickHouse holds as done is skipped."""
        while True:
            try:
                await self._enforce(enforcer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- logged, and enforcement goes on after a pause
                log.error("enforcement interrupted (%s: %s); resuming from the last committed finding in %d s",
                          type(exc).__name__, exc, ENFORCE_RESUME_SECONDS)
                enforcer.counts["interruptions"] += 1
                await asyncio.sleep(ENFORCE_RESUME_SECONDS)

    async def _enforce(self, enforcer: Enforcer) -> None:
        from kafka import KafkaConsumer

        # With no commit of its own yet (the first start), the enforcer begins at the topic's end:
        # sanctions made before enforcement was switched on stay proposals, as they were.
        consumer = await asyncio.to_thread(
            KafkaConsumer, self.cfg.topic("findings"), bootstrap_servers=bootstrap(self.cfg.kafka.url),
            group_id=f"{self.cfg.worker.app_id}-enforcer", enable_auto_commit=False,
            auto_offset_reset="latest", client_id="qunguard-enforcer")
        self.counts["enforcement"] = enforcer.counts
        try:
            while True:
                polled = await asyncio.to_thread(consumer.poll, 1000, 100)
                findings = []
                for records in polled.values():
                    for r in records:
                        try:
                            findings.append(orjson.loads(r.value))
                        except orjson.JSONDecodeError:
                            continue  # not the worker's: nothing to carry out
                await enforcer.carry_out_all(findings)
                # after every poll, an empty one too: the first pins where a new enforcer starts, so
                # that a sanction polled and then interrupted is read again, not skipped to the end
                await asyncio.to_thread(consumer.commit)
        finally:
            await asyncio.to_thread(consumer.close)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._render(), headers={"Content-Type": CONTENT_TYPE})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.kafka.max_message_bytes)
        for path in WS_PATHS:
            app.router.add_get(path, self.websocket)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/metrics", self.metrics)
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
        policy = load_policy(cfg.policy.file)
        enforcing = None
        if policy.enforcing():
            backend = connect(cfg.clickhouse.url)
            migrate(backend)
            enforcing = asyncio.ensure_future(bridge.enforce(Enforcer(cfg, policy, bridge.call, backend)))
            print("enforcement: on for the groups whose policy enables it", flush=True)
        await stop.wait()
        if enforcing is not None:
            enforcing.cancel()
        await runner.cleanup()  # connections closed, what they sent produced
        await batcher.drain()
        await batcher.close()
        log.info("stopped: %s", bridge.counts)

    asyncio.run(main())
    return 0
