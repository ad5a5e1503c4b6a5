"""``POST /v1/messages``: a backend pushes a message onto the bus.

The body is checked in full (size, JSON, required fields, types, known channel and
agent, text length) before anything is written, so a refused request enqueues
nothing. With an ``Idempotency-Key`` the 202 body is stored first with
``SET NX EX``: a retry or a concurrent duplicate gets the stored body and publishes
nothing; if publishing fails, the stored body is removed again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import quote

from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from channels.http.errors import ApiError
from channels.http.parsing import read_json_body
from core.bus import keys
from core.bus.codec import parse_stream_id
from core.bus.inbound import publish_inbound
from core.bus.scripts import LuaScript
from core.errors import PayloadError
from core.messages import MAX_TEXT_CHARS, Attachment, InboundMessage

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 86_400
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_CHANNEL_NAME = r"^[a-z0-9_-]+$"

_DELETE_IF_EQUAL = LuaScript(
    """
-- KEYS: key   ARGV: expected value   -> 1 deleted, 0 it held something else
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)


class IngressMetrics(Protocol):
    @property
    def messages_in(self) -> Counter: ...


class PostMessage(BaseModel):
    """The body of ``POST /v1/messages``; strict: no type coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    channel: str = Field(min_length=1, max_length=64, pattern=_CHANNEL_NAME)
    chat_id: str = Field(min_length=1, max_length=256)
    sender_id: str = Field(min_length=1, max_length=256)
    text: str = ""
    attachments: list[Attachment] = Field(default_factory=list, max_length=16)
    agent: str | None = Field(default=None, min_length=1, max_length=128)
    thread_id: str | None = Field(default=None, min_length=1, max_length=256)
    sender_name: str = Field(default="", max_length=256)


@dataclass(frozen=True, slots=True)
class IngressConfig:
    partitions: int
    stream_maxlen: int
    max_body_bytes: int
    channels: frozenset[str]
    """Channel names a message may name (the channel registry)."""
    agents: frozenset[str]
    """Agent names a message may route to."""
    body_timeout_s: float | None = None
    """The whole body must arrive within this (408 otherwise); None waits as long as it takes."""


class MessageIngress:
    """The handler of ``POST /v1/messages``."""

    def __init__(
        self, redis: Redis, config: IngressConfig, metrics: IngressMetrics | None = None
    ) -> None:
        self._redis = redis
        self._config = config
        self._metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.post_message)]

    async def post_message(self, request: web.Request) -> web.Response:
        idempotency_key = _idempotency_key(request)
        body = self._validate(
            await read_json_body(
                request, self._config.max_body_bytes, timeout_s=self._config.body_timeout_s
            )
        )
        msg = InboundMessage(
            channel=body.channel,
            chat_id=body.chat_id,
            thread_id=body.thread_id,
            sender_id=body.sender_id,
            sender_name=body.sender_name,
            text=body.text,
            attachments=body.attachments,
            agent=body.agent,
        )
        # Shielded: a client that hangs up (aiohttp then cancels this handler) must not
        # cut the idempotency claim and the publish apart: a claimed key without its
        # message, or a stored message whose key was released, breaks the client's retry.
        enqueue = asyncio.ensure_future(self._enqueue(msg, idempotency_key))
        try:
            reply = await asyncio.shield(enqueue)
        except asyncio.CancelledError:
            enqueue.add_done_callback(_log_failure)  # nobody else will see how it ends
            raise
        return web.json_response(reply, status=202)

    async def _enqueue(self, msg: InboundMessage, idempotency_key: str | None) -> object:
        """Claim the idempotency key (a repeat gets the first 202 body), then publish."""
        accepted = await self._accepted_body(msg)
        if idempotency_key is not None:
            stored = await self._claim_idempotency(idempotency_key, accepted)
            if stored is not None:
                return json.loads(stored)
        await self._publish(msg, idempotency_key, accepted)
        return accepted

    async def _publish(
        self, msg: InboundMessage, idempotency_key: str | None, accepted: dict[str, str]
    ) -> None:
        """Publish; when that fails, release the idempotency key so a retry can store it."""
        try:
            await publish_inbound(
                self._redis,
                msg,
                partitions=self._config.partitions,
                maxlen=self._config.stream_maxlen,
            )
        except BaseException as exc:
            if idempotency_key is not None:
                await _DELETE_IF_EQUAL.run(
                    self._redis, [keys.idempotency(idempotency_key)], [json.dumps(accepted)]
                )
            if isinstance(exc, PayloadError):
                raise ApiError(413, "payload_too_large", str(exc)) from exc
            raise
        if self._metrics is not None:
            self._metrics.messages_in.labels(channel=msg.channel).inc()

    def _validate(self, data: object) -> PostMessage:
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "the body must be a JSON object")
        text = data.get("text")
        if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
            raise ApiError(413, "payload_too_large", f"text is over {MAX_TEXT_CHARS} characters")
        try:
            body = PostMessage.model_validate(data)
        except ValidationError as exc:
            raise ApiError(400, "invalid_request", _describe(exc)) from None
        if not body.text.strip() and not body.attachments:
            raise ApiError(400, "invalid_request", "a message needs text or attachments")
        if body.channel not in self._config.channels:
            raise ApiError(400, "invalid_request", f"unknown channel {body.channel!r}")
        if body.agent is not None and body.agent not in self._config.agents:
            raise ApiError(404, "not_found", f"no agent named {body.agent!r}")
        return body

    async def _accepted_body(self, msg: InboundMessage) -> dict[str, str]:
        """The 202 body; its events URL starts after everything already in the session."""
        s = msg.session_key
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(keys.outbound(s), count=1)
            pipe.xrevrange(keys.inbound(s), count=1)
            pipe.get(keys.cursor(s))
            last_out, last_in, cursor = await pipe.execute()
        after = last_out[0][0] if last_out else "0-0"
        # Every run that covers this message has a run_id (an inbound id) above this.
        run_after = max((last_in[0][0] if last_in else "0-0", cursor or "0-0"), key=parse_stream_id)
        url = f"/v1/sessions/{quote(s, safe='')}/events?after={after}&run_after={run_after}"
        return {"id": msg.id, "session_key": s, "events_url": url}

    async def _claim_idempotency(self, key: str, accepted: dict[str, str]) -> str | None:
        """None if this request owns ``key`` now; else the body stored by the first one."""
        redis_key = keys.idempotency(key)
        claimed = await self._redis.set(
            redis_key, json.dumps(accepted), nx=True, ex=IDEMPOTENCY_TTL_S
        )
        if claimed:
            return None
        stored = cast(str | None, await self._redis.get(redis_key))
        if stored is None:
            # The first request failed and released the key between our two calls.
            raise ApiError(409, "invalid_request", "a request with this key just failed; retry")
        return stored


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise ApiError(400, "invalid_request", "Idempotency-Key must be 1-255 visible characters")
    return key


def _describe(exc: ValidationError) -> str:
    """``field 'chat_id': Input should be a valid string`` (+ how many more)."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {where!r}: {first['msg']}{more}"


def _log_failure(task: asyncio.Future[object]) -> None:
    """A publish whose client went away has nobody to raise to: log its failure."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("publishing an inbound message failed after its client left", exc_info=error)
