"""Following one run for a client: collected into one reply, or streamed as SSE.

The agent API's SSE events are ``token``, ``tool_call``, ``tool_result``, ``done``
(output and usage) and ``error``; each frame is ``event: <type>`` and ``data:`` the
JSON of the matching model in ``models``.

A worker that dies mid-run leaves its turn uncommitted and another worker runs it
again under the same run id: a collected reply (invoke) is the re-run's, once; a
stream has already sent the first attempt's tokens, and the re-run's follow them
(its ``done`` carries the whole, final output).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.channels.http.sse import HEARTBEAT, SSE_HEADERS
from gateway.core.events import RunCompleted, RunFailed, StreamEvent

from .models import (
    InvokeResponse,
    StreamDone,
    StreamError,
    StreamEventBody,
    StreamToken,
    StreamToolCall,
    StreamToolResult,
    Usage,
)
from .runs import RunRef, run_events

log = logging.getLogger(__name__)


async def final_event(redis: Redis, ref: RunRef, *, wait_s: float) -> RunCompleted:
    """The run's ``run.completed``; 500 with its error when it failed, 504 past ``wait_s``."""
    try:
        async with asyncio.timeout(wait_s):
            async for event in run_events(redis, ref):
                if isinstance(event, RunCompleted):
                    return event
                if isinstance(event, RunFailed):
                    raise ApiError(500, "internal_error", f"the run failed: {event.error}")
    except TimeoutError:
        raise ApiError(504, "internal_error", _late(ref, wait_s)) from None
    raise ApiError(500, "internal_error", "the run ended without a final event")


def invoke_response(event: RunCompleted, ref: RunRef, session_id: str) -> InvokeResponse:
    return InvokeResponse(
        output=event.content or event.result.content,
        usage=usage_of(event),
        session_id=session_id,
        run_id=ref.run_id,
    )


def usage_of(event: RunCompleted) -> Usage:
    raw = event.usage or event.result.usage
    return Usage(
        prompt_tokens=raw.get("prompt_tokens", 0),
        completion_tokens=raw.get("completion_tokens", 0),
        total_tokens=raw.get("total_tokens", 0),
    )


def api_event(event: StreamEvent, ref: RunRef, session_id: str) -> StreamEventBody | None:
    """The client-facing event for a bus event (None: not shown to API clients)."""
    match event.type:
        case "text.delta":
            return StreamToken(content=event.delta)
        case "tool.started":
            return StreamToolCall(name=event.name, id=event.tool_call_id, arguments=event.arguments)
        case "tool.completed":
            return StreamToolResult(name=event.name, id=event.tool_call_id, output=event.content)
        case "tool.failed":
            return StreamToolResult(
                name=event.name, id=event.tool_call_id, output=event.error, is_error=True
            )
        case "run.completed":
            output = event.content or event.result.content
            usage = usage_of(event)
            return StreamDone(output=output, usage=usage, session_id=session_id, run_id=ref.run_id)
        case "run.failed":
            return StreamError(code="internal_error", message=f"the run failed: {event.error}")
    return None


def sse_frame(body: StreamEventBody) -> bytes:
    return f"event: {body.type}\ndata: {body.model_dump_json()}\n\n".encode()


async def stream_run(
    request: web.Request, redis: Redis, ref: RunRef, session_id: str, *, wait_s: float
) -> web.StreamResponse:
    """Stream the run as SSE; a failure after the headers is an ``error`` event."""
    response = web.StreamResponse(headers={**SSE_HEADERS, "X-Run-Id": ref.run_id})
    await response.prepare(request)
    try:
        async with asyncio.timeout(wait_s):
            async for event in run_events(redis, ref):
                if event is None:
                    await response.write(HEARTBEAT)
                elif (body := api_event(event, ref, session_id)) is not None:
                    await response.write(sse_frame(body))
    except TimeoutError:
        await response.write(
            sse_frame(StreamError(code="internal_error", message=_late(ref, wait_s)))
        )
    except ConnectionResetError:
        log.debug("stream client of run %s went away", ref.run_id)
        return response
    except Exception:  # the status line is sent: tell the client in the stream
        log.exception("stream of run %s failed", ref.run_id)
        error = StreamError(
            code="internal_error", message="the stream failed; see the run's events"
        )
        with contextlib.suppress(ConnectionResetError):
            await response.write(sse_frame(error))
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _late(ref: RunRef, wait_s: float) -> str:
    return f"run {ref.run_id} did not finish within {wait_s:.0f}s; it may still complete"
