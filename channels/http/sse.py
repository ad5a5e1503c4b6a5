"""``GET /v1/sessions/{key}/events``: a session's outbound events as Server-Sent Events.

Each event is one SSE frame: ``id:`` the stream entry id (so ``Last-Event-ID`` or
``?after=`` resumes exactly after it), ``event:`` the event type, ``data:`` the
event JSON. Without ``?follow=1`` the stream ends after the first final event
(``run.completed``/``run.failed``) that answers ``?message=`` (lists it in
``message_ids``; the 202 of ``POST /v1/messages`` gives the URL), or, with
``?run_after=``, of a run whose id is above it. Without ``after`` it starts at the
end of the stream (only new events). A comment line is sent every
``heartbeat_s`` so proxies keep the connection and a gone client is noticed.

``HEAD`` checks the same (parameters, session) and answers the headers at once. If
Redis goes away, a stream not yet started answers 503; a started one ends (the
client resumes with ``Last-Event-ID``), logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiohttp import web
from prometheus_client import Counter
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.channels.http.outage import UNAVAILABLE_ERRORS, report_unavailable
from gateway.channels.http.parsing import session_key_param, stream_id_param
from gateway.core.bus import keys
from gateway.core.bus.codec import parse_stream_id
from gateway.core.bus.outbound import read_events
from gateway.core.errors import PayloadError
from gateway.core.events import RunCompleted, RunFailed, StreamEvent

log = logging.getLogger(__name__)

HEARTBEAT = b": keepalive\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class StreamMetrics(Protocol):
    @property
    def messages_out(self) -> Counter: ...


def sse_frame(entry_id: str, event: StreamEvent) -> bytes:
    return f"id: {entry_id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()


def answers(event: RunCompleted | RunFailed, message: str | None) -> bool:
    """True when the final ``event`` answers the bus message ``message``."""
    if message is None or message in event.message_ids:
        return True
    if event.message_ids or _interrupted(event):
        return False
    # A run published before events named their messages: runs answer in order.
    try:
        return parse_stream_id(event.run_id) >= parse_stream_id(message)
    except PayloadError:
        return False


def _interrupted(event: RunCompleted | RunFailed) -> bool:
    return isinstance(event, RunFailed) and (
        event.result is not None and event.result.stop_reason == "interrupted"
    )


def _run_covers(run_id: str, run_after: str | None) -> bool:
    if run_after is None:
        return True
    try:
        return parse_stream_id(run_id) > parse_stream_id(run_after)
    except PayloadError:
        return True  # not a bus run id: nothing to compare, take it


class EventStream:
    """The SSE handler; ``close()`` ends every open stream (server shutdown)."""

    def __init__(
        self, redis: Redis, *, heartbeat_s: float = 15.0, metrics: StreamMetrics | None = None
    ) -> None:
        self._redis = redis
        self._heartbeat_ms = max(1, int(heartbeat_s * 1000))
        # The labelled child once: ``labels()`` is a lock and a dict lookup per call.
        self._answered = metrics.messages_out.labels(channel="http") if metrics else None
        self._open: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        # Any character but "/" (which the 202's events_url sends as %2F): aiohttp's
        # default pattern also refuses "{" and "}", which chat ids may hold.
        return [web.get("/v1/sessions/{key:[^/]+}/events", self.stream_events)]

    async def close(self) -> None:
        tasks = list(self._open)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        session_key = session_key_param(request.match_info["key"])
        resume = request.headers.get("Last-Event-ID") or request.query.get("after")
        after = stream_id_param(resume, "after") if resume else None
        run_after_param = request.query.get("run_after")
        run_after = stream_id_param(run_after_param, "run_after") if run_after_param else None
        message_param = request.query.get("message")
        message = stream_id_param(message_param, "message") if message_param else None
        follow = request.query.get("follow", "0").lower() in {"1", "true", "yes"}
        if after is None:
            after = await self._tail_or_missing(session_key)
        if request.method == "HEAD":
            # Headers only, at once: a streaming body would hold the connection (for ever
            # with follow=1) although HEAD never sends one.
            return web.Response(headers=SSE_HEADERS)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        # The pump runs apart so that close() can stop it and still end the response
        # properly: a client then sees a finished stream and reconnects with Last-Event-ID.
        pump = asyncio.create_task(
            self._pump(response, session_key, after, (run_after, message), follow)
        )
        self._open.add(pump)
        try:
            await asyncio.wait([pump])
        finally:
            self._open.discard(pump)
            pump.cancel()
        error = None if pump.cancelled() else pump.exception()
        if isinstance(error, ConnectionResetError):
            log.debug("SSE client of %s went away", session_key)
            return response
        if isinstance(error, UNAVAILABLE_ERRORS):
            report_unavailable(request, error)
        elif error is not None:
            # The status line is sent already: end the stream; the client resumes later.
            log.error("event stream of %s failed", session_key, exc_info=error)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _tail_or_missing(self, session_key: str) -> str:
        """The last outbound id (start after it); 404 for a session nobody wrote to."""
        s = session_key
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.outbound(s), keys.inbound(s), *keys.stored_session(s))
            pipe.xrevrange(keys.outbound(s), count=1)
            found, last = await pipe.execute()
        if not found:
            raise ApiError(404, "not_found", "no such session")
        return str(last[0][0]) if last else "0-0"

    async def _pump(
        self,
        response: web.StreamResponse,
        session_key: str,
        after: str,
        ends_on: tuple[str | None, str | None],
        follow: bool,
    ) -> None:
        run_after, message = ends_on
        while True:
            batch = await read_events(
                self._redis, session_key, after=after, block_ms=self._heartbeat_ms
            )
            if not batch:
                await response.write(HEARTBEAT)
                continue
            # One write per batch, not per event: a write is a send() each, and a batch
            # holds a turn's coalesced deltas.
            frames: list[bytes] = []
            ended = False
            for entry_id, event in batch:
                frames.append(sse_frame(entry_id, event))
                after = entry_id
                if (
                    isinstance(event, RunCompleted | RunFailed)
                    and _run_covers(event.run_id, run_after)
                    and answers(event, message)
                ):
                    if self._answered is not None:
                        self._answered.inc()
                    if not follow:
                        ended = True
                        break
            await response.write(b"".join(frames))
            if ended:
                return
