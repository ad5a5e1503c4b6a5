"""``POST /v1/messages``: a backend pushes a message onto the bus.

The body is checked in full (size, JSON, required fields, types, known channel and
agent, text length) before anything is written, so a refused request enqueues
nothing. The message is then published by one script (``publish_inbound``) that
also claims the ``Idempotency-Key``: both happen or neither does, so a retry after
a lost reply, a crash or a Redis restart either finds the key (and gets the first
request's 202 body, naming the same message) or publishes afresh.

The 202 body: ``id`` (the message's ULID), ``session_key``, ``message_id`` (the
message's id on the bus: its inbound stream entry id, assigned by that script) and
``events_url``. Which run answers a message is decided later by the worker's busy
policy (one run may answer several queued messages, see ``workers.busy``), so the
202 names the message, and the run that answers it names it back: its terminal
event (``run.completed``/``run.failed``) lists the ids it answers in
``message_ids`` (``run.started`` lists those it starts with). ``events_url`` starts
after the outbound tail read by the same script (``after=``) and ends on the
terminal event that lists ``message_id`` (``message=``); under the default
``followup`` policy that run's ``run_id`` equals ``message_id``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.channels.http.parsing import read_json_body
from gateway.core.bus.inbound import Published, publish_inbound
from gateway.core.errors import PayloadError
from gateway.core.messages import MAX_TEXT_CHARS, Attachment, InboundMessage

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_S = 86_400
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_CHANNEL_NAME = r"^[a-z0-9_-]+$"


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
        # Shielded: a client that hangs up (aiohttp then cancels this handler) does not
        # stop a publish already sent, so its outcome is logged (and counted) here.
        enqueue = asyncio.ensure_future(self._enqueue(msg, idempotency_key))
        try:
            reply = await asyncio.shield(enqueue)
        except asyncio.CancelledError:
            enqueue.add_done_callback(_log_failure)  # nobody else will see how it ends
            raise
        return web.json_response(reply, status=202)

    async def _enqueue(self, msg: InboundMessage, idempotency_key: str | None) -> object:
        """Publish and claim the idempotency key in one script; a repeat of the key gets
        the first request's 202 body and publishes nothing."""
        try:
            published = await publish_inbound(
                self._redis,
                msg,
                partitions=self._config.partitions,
                maxlen=self._config.stream_maxlen,
                dedupe_ttl_s=IDEMPOTENCY_TTL_S,
                idempotency_key=idempotency_key,
                accepted=self._metrics.messages_in if self._metrics is not None else None,
            )
        except PayloadError as exc:
            raise ApiError(413, "payload_too_large", str(exc)) from exc
        return accepted_body(published)

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


def accepted_body(published: Published) -> dict[str, str]:
    """The 202 body of a published message (the first request's, for a repeated key)."""
    message = published.accepted_id
    if message is None:
        raise ApiError(
            409,
            "invalid_request",
            "this Idempotency-Key was used by an older gateway version; send a new key",
        )
    s = published.session_key
    after = published.events_after
    url = f"/v1/sessions/{quote(s, safe='')}/events?after={after}&message={message}"
    return {
        "id": published.message_id,
        "session_key": s,
        "message_id": message,
        "events_url": url,
    }


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
