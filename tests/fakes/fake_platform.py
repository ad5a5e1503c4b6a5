"""A tiny chat platform over HTTP on loopback, and the channel adapter that talks to it.

``FakePlatform`` is the "platform": tests ``push`` user messages, the adapter
long-polls them like Telegram's ``getUpdates`` (``GET /updates?offset=&conn=``, a
second concurrent poller gets 409 as Telegram answers it), and the adapter's renderer
posts and edits messages (``POST /send``, ``POST /edit``), which the platform records.
Being HTTP, one platform serves adapters in other processes too (the lease test).

``FakeChannel`` is a complete adapter on ``BaseChannel``: client glue only (poll,
normalize, render), everything else comes from the toolkit. ``config.api_base`` is
the platform's URL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from gateway.channels.base import BaseChannel, ChannelContext, Renderer
from gateway.channels.toolkit.access import PlatformMessage
from gateway.core.errors import ConfigError

POLL_TIMEOUT_S = 0.5


@dataclass
class Posted:
    message_id: str
    chat_id: str
    text: str
    thread_id: str | None = None
    edits: int = 0


@dataclass
class FakePlatform:
    updates: list[dict[str, Any]] = field(default_factory=list)
    posted: dict[str, Posted] = field(default_factory=dict)
    receivers: dict[int, list[str]] = field(default_factory=dict)
    """update id -> the connections that received it."""
    pollers: dict[str, int] = field(default_factory=dict)
    """Connections with a poll in progress."""
    conflicts: int = 0
    """Polls refused because another connection was polling (two inbound connections)."""
    confirmed: int = 0
    webhooks: list[str] = field(default_factory=list)
    failing_sends: int = 0
    """How many of the next sends to refuse with a 502 (the platform briefly down)."""
    """Paths adapters registered for webhook delivery (Telegram's ``setWebhook``)."""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> FakePlatform:
        app = web.Application()
        app.router.add_get("/updates", self._get_updates)
        app.router.add_post("/send", self._send)
        app.router.add_post("/edit", self._edit)
        app.router.add_post("/setWebhook", self._set_webhook)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the test's side ---------------------------------------------------------------

    async def push(
        self, text: str, *, chat_id: str = "c1", sender_id: str = "u1", **extra: Any
    ) -> int:
        """A user sends ``text``; ``extra``: username, direct, mentioned, reply_to_bot…"""
        update_id = len(self.updates) + 1
        update = {"update_id": update_id, "chat_id": chat_id, "sender_id": sender_id, "text": text}
        self.updates.append({**update, **extra})
        await self._notify()
        return update_id

    def texts(self, chat_id: str | None = None) -> list[str]:
        return [p.text for p in self.posted.values() if chat_id is None or p.chat_id == chat_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the adapter's side ------------------------------------------------------------

    async def _get_updates(self, request: web.Request) -> web.Response:
        conn = request.query["conn"]
        if any(other != conn for other in self.pollers):
            self.conflicts += 1
            return web.json_response({"error": "terminated by other getUpdates"}, status=409)
        self.pollers[conn] = self.pollers.get(conn, 0) + 1
        await self._notify()
        try:
            self.confirmed = max(self.confirmed, int(request.query.get("offset", "0")))
            try:
                await self.wait_for(self._has_new, POLL_TIMEOUT_S)
            except TimeoutError:
                return web.json_response([])
            batch = self.updates[max(self.confirmed - 1, 0) :]
            for update in batch:
                self.receivers.setdefault(update["update_id"], []).append(conn)
            return web.json_response(batch)
        finally:
            self.pollers[conn] -= 1
            if not self.pollers[conn]:
                del self.pollers[conn]

    def _has_new(self) -> bool:
        return len(self.updates) >= max(self.confirmed, 1)  # ids start at 1

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.failing_sends > 0:
            self.failing_sends -= 1
            return web.json_response({"error": "unavailable"}, status=502)
        message_id = f"m{len(self.posted) + 1}"
        self.posted[message_id] = Posted(
            message_id, body["chat_id"], body["text"], body.get("thread_id")
        )
        await self._notify()
        return web.json_response({"message_id": message_id})

    async def _set_webhook(self, request: web.Request) -> web.Response:
        self.webhooks.append(str((await request.json())["path"]))
        await self._notify()
        return web.json_response({})

    async def _edit(self, request: web.Request) -> web.Response:
        body = await request.json()
        posted = self.posted.get(body["message_id"])
        if posted is None or posted.chat_id != body["chat_id"]:
            return web.json_response({"error": "message not found"}, status=400)
        posted.text = body["text"]
        posted.edits += 1
        await self._notify()
        return web.json_response({})


class FakeRenderer:
    """Posts and edits through the platform's HTTP API."""

    max_message_chars = 4096

    def __init__(self, base_url: str, edit_interval_s: float) -> None:
        self.base_url = base_url
        self.edit_interval_s = edit_interval_s
        self._http: aiohttp.ClientSession | None = None

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.post(f"{self.base_url}{path}", json=body) as response:
            response.raise_for_status()
            reply: dict[str, Any] = await response.json()
            return reply

    async def send(self, chat_id: str, text: str, *, thread_id: str | None = None) -> str:
        reply = await self.post("/send", {"chat_id": chat_id, "text": text, "thread_id": thread_id})
        return str(reply["message_id"])

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        await self.post("/edit", {"chat_id": chat_id, "message_id": message_id, "text": text})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


_connections = itertools.count(1)


class FakeChannel(BaseChannel):
    bot_username = "fakebot"
    connection_ttl_ms: ClassVar[int] = 2_000
    acquire_poll_s: ClassVar[float] = 0.2
    restart_backoff_s: ClassVar[tuple[float, float]] = (0.1, 1.0)

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        if not ctx.config.api_base:
            raise ConfigError(f"channels.{ctx.name}.api_base: the fake platform's URL is needed")
        self.base_url = ctx.config.api_base.rstrip("/")
        self.connection_id = f"{os.getpid()}:{next(_connections)}"
        self._renderer = FakeRenderer(self.base_url, ctx.config.edit_interval)

    def renderer(self) -> Renderer:
        return self._renderer

    async def run_connection(self) -> None:
        offset = 0
        async with aiohttp.ClientSession() as http:
            while True:
                params = {"offset": str(offset), "conn": self.connection_id}
                async with http.get(f"{self.base_url}/updates", params=params) as response:
                    response.raise_for_status()
                    updates: list[dict[str, Any]] = await response.json()
                for update in updates:
                    await self.handle(normalize(update))
                    offset = int(update["update_id"]) + 1

    async def stop(self) -> None:
        await super().stop()
        await self._renderer.close()


class ShortCodeFakeChannel(FakeChannel):
    """Pairing codes expire after 3 s (the expiry test; long enough for the cap check
    before it to finish on a loaded machine)."""

    pairing_ttl_s: ClassVar[int] = 3


class FakeWebhookChannel(FakeChannel):
    """The platform posts updates to a route on the gateway's server: no lease, no poll."""

    needs_connection_lease: ClassVar[bool] = False
    WEBHOOK_PATH = "/hooks/fake"

    async def run_connection(self) -> None:
        await self._renderer.post("/setWebhook", {"path": self.WEBHOOK_PATH})

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.WEBHOOK_PATH, self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        handled = await self.handle(normalize(await request.json()))
        return web.json_response({"handled": handled.value})


def normalize(update: dict[str, Any]) -> PlatformMessage:
    return PlatformMessage(
        chat_id=str(update["chat_id"]),
        sender_id=str(update["sender_id"]),
        text=str(update["text"]),
        username=str(update.get("username", "")),
        thread_id=update.get("thread_id"),
        direct=bool(update.get("direct", True)),
        mentioned=bool(update.get("mentioned", False)),
        reply_to_bot=bool(update.get("reply_to_bot", False)),
        event_id=str(update["update_id"]),
    )
