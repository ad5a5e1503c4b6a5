"""The web chat's routes on the gateway's HTTP server.

- ``GET /`` and ``GET /webchat/{file}``: the page (static files of this package; no
  CDN, no build step). Served without a key: the page asks for one when the API
  answers 401 (``http.api_keys`` set, always so off loopback).
- ``GET /v1/chats/{channel}/{chat_id}/history``: the conversation after a reload
  (``channels.webchat.history``) and where its event stream resumes.
- ``POST /v1/chats/{channel}/{chat_id}/stop``: cancel the chat's running turn
  through the bus (``core.bus.control``); 202 ``{"stopping": bool}``.

Messages go through ``POST /v1/messages`` (channel ``web`` or ``cli``) and replies
come from the session's SSE events, as for every backend: the page is a client of
the public API and the web channel has no deliverer of its own.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.channels.webchat.history import chat_history
from gateway.core.bus.control import request_stop
from gateway.core.messages import default_session_key
from gateway.core.sessions.base import SessionStore

STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The files the page is made of (anything else is 404)."""

PAGE_HEADERS = {
    # Defence in depth behind the escaping renderer: no inline script, no foreign origin.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_dir() -> Traversable:
    return resources.files("gateway.channels.webchat").joinpath("static")


class WebChat:
    """Routes of the web chat; ``channels`` bounds the channels a chat id may name."""

    def __init__(self, redis: Redis, sessions: SessionStore, channels: frozenset[str]) -> None:
        self._redis = redis
        self._sessions = sessions
        self._channels = channels
        self._static = static_dir()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get("/webchat/{name}", self.static),
            web.get("/v1/chats/{channel}/{chat_id}/history", self.history),
            web.post("/v1/chats/{channel}/{chat_id}/stop", self.stop),
        ]

    async def index(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    async def history(self, request: web.Request) -> web.Response:
        body = await chat_history(self._redis, self._sessions, self._session_key(request))
        return web.json_response(body)

    async def stop(self, request: web.Request) -> web.Response:
        upto = await request_stop(self._redis, self._session_key(request))
        return web.json_response({"stopping": upto is not None}, status=202)

    def _session_key(self, request: web.Request) -> str:
        channel, chat_id = request.match_info["channel"], request.match_info["chat_id"]
        if channel not in self._channels:
            raise ApiError(404, "not_found", f"unknown channel {channel!r}")
        if not 1 <= len(chat_id) <= 256:
            raise ApiError(400, "invalid_request", "chat_id must be 1-256 characters")
        return default_session_key(channel, chat_id)

    def _file(self, name: str) -> web.Response:
        content_type = STATIC_TYPES.get(name)
        if content_type is None:
            raise ApiError(404, "not_found", "no such file")
        body = self._static.joinpath(name).read_bytes()
        headers = {**PAGE_HEADERS, "Content-Type": content_type}
        return web.Response(body=body, headers=headers)
