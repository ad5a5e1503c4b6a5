"""``POST /v1/chat/completions`` and ``GET /v1/models``: any agent behind the OpenAI API.

``model`` names an agent (``assistant`` or ``agent/assistant``). The request's
system (and developer) messages are added to the agent's system prompt; its last
message is the user's new input; every message before it becomes the run's
history (``RunOptions.history``), replacing the stored one. The session:

- ``X-Session-Id: <id>``: an agent-API session (``POST /v1/sessions``);
- else ``user``: a persistent session of that user (``openai:<user>``), so a client
  may send only the new message and the gateway keeps the history;
- else a one-off session, discarded once its turn is committed.

The run goes through the bus like every other (``runs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import web

from gateway.channels.http.errors import ApiError
from gateway.channels.http.sse import HEARTBEAT, SSE_HEADERS
from gateway.core.events import RunCompleted, RunFailed, TextDelta
from gateway.core.messages import MAX_TEXT_CHARS, InboundMessage, Message, RunOptions, new_id

from .context import ApiContext
from .json import json_response
from .openai_models import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageIn,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ModelCard,
    ModelList,
)
from .runs import RunRef, discard_when_committed, run_events
from .store import API_CHANNEL, get_record
from .stream import final_event, usage_of

log = logging.getLogger(__name__)

USER_CHANNEL = "openai"
ONE_OFF_CHANNEL = "oneoff"
AGENT_PREFIX = "agent/"
SYSTEM_ROLES = frozenset({"system", "developer"})


class OpenAIRoutes:
    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.get("/v1/models", self.models),
        ]

    async def models(self, request: web.Request) -> web.Response:
        cards = [ModelCard(id=name) for name in self._ctx.agent_names()]
        return json_response(ModelList(data=cards))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._ctx.body(request, ChatCompletionRequest)
        agent = self._agent(body.model)
        msg, one_off = await self._message(request, body, agent)
        ref = await self._ctx.publish(msg)
        wait_s = self._ctx.wait_s(agent)
        try:
            if body.stream:
                return await self._stream(request, body, ref, wait_s)
            event = await final_event(self._ctx.redis, ref, wait_s=wait_s)
            return json_response(_completion(body.model, ref, event))
        finally:
            if one_off:
                discard = discard_when_committed(self._ctx.redis, ref, within_s=wait_s)
                self._ctx.spawn(discard, f"discard {ref.session_key}")

    def _agent(self, model: str) -> str:
        name = model.removeprefix(AGENT_PREFIX)
        if name not in self._ctx.agent_names():
            raise ApiError(404, "not_found", f"the model {model!r} does not exist (no such agent)")
        return name

    async def _message(
        self, request: web.Request, body: ChatCompletionRequest, agent: str
    ) -> tuple[InboundMessage, bool]:
        """The inbound message for the request, and whether its session is one-off."""
        *earlier, last = body.messages
        if last.role != "user" or not last.text().strip():
            raise ApiError(422, "invalid_request", "the last message must be a non-empty user one")
        if len(last.text()) > MAX_TEXT_CHARS:
            raise ApiError(
                413, "invalid_request", f"the last message is over {MAX_TEXT_CHARS} characters"
            )
        system = "\n\n".join(m.text() for m in earlier if m.role in SYSTEM_ROLES)
        history = [_history_entry(m) for m in earlier if m.role not in SYSTEM_ROLES]
        session_id = request.headers.get("X-Session-Id")
        if session_id is not None:
            record = await get_record(self._ctx.redis, session_id)
            if record.agent != agent:
                raise ApiError(
                    400, "invalid_request", f"session {session_id} belongs to {record.agent!r}"
                )
            channel, chat_id = API_CHANNEL, record.session_id
        elif body.user is not None:
            channel, chat_id = USER_CHANNEL, body.user
        else:
            channel, chat_id = ONE_OFF_CHANNEL, new_id()
        options = RunOptions(
            temperature=body.temperature,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            system=system or None,
            # A bound session keeps its stored history unless the request brings one.
            history=history if history or channel == ONE_OFF_CHANNEL else None,
        )
        msg = InboundMessage(
            channel=channel,
            chat_id=chat_id,
            sender_id=body.user or "openai",
            text=last.text(),
            agent=agent,
            options=options,
        )
        return msg, channel == ONE_OFF_CHANNEL

    async def _stream(
        self, request: web.Request, body: ChatCompletionRequest, ref: RunRef, wait_s: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**SSE_HEADERS, "X-Run-Id": ref.run_id})
        await response.prepare(request)
        chunk = _Chunks(body.model, ref)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        try:
            await response.write(chunk.frame(ChunkDelta(role="assistant", content="")))
            async with asyncio.timeout(wait_s):
                async for event in run_events(self._ctx.redis, ref):
                    if event is None:  # an SSE comment: the client ignores it, proxies don't
                        await response.write(HEARTBEAT)
                    elif isinstance(event, TextDelta):
                        await response.write(chunk.frame(ChunkDelta(content=event.delta)))
                    elif isinstance(event, RunFailed):
                        await response.write(_error_frame(f"the run failed: {event.error}"))
                    elif isinstance(event, RunCompleted):
                        await response.write(chunk.frame(ChunkDelta(), finish=True))
                        if include_usage:
                            await response.write(chunk.usage_frame(event))
            await response.write(b"data: [DONE]\n\n")
        except TimeoutError:
            await response.write(_error_frame(f"run {ref.run_id} did not finish in {wait_s:.0f}s"))
        except ConnectionResetError:
            log.debug("chat completion stream of run %s: client went away", ref.run_id)
            return response
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


class _Chunks:
    def __init__(self, model: str, ref: RunRef) -> None:
        self._base: dict[str, Any] = {
            "id": f"chatcmpl-{ref.run_id}",
            "created": int(time.time()),
            "model": model,
        }

    def frame(self, delta: ChunkDelta, *, finish: bool = False) -> bytes:
        choice = ChunkChoice(delta=delta, finish_reason="stop" if finish else None)
        return _data(ChatCompletionChunk(**self._base, choices=[choice]).model_dump_json())

    def usage_frame(self, event: RunCompleted) -> bytes:
        chunk = ChatCompletionChunk(**self._base, choices=[], usage=usage_of(event))
        return _data(chunk.model_dump_json())


def _data(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


def _error_frame(message: str) -> bytes:
    """What the ``openai`` client raises as an ``APIError`` in the middle of a stream."""
    error = {"message": message, "type": "server_error", "code": "internal_error"}
    return _data(json.dumps({"error": error}))


def _completion(model: str, ref: RunRef, event: RunCompleted) -> ChatCompletion:
    content = event.content or event.result.content
    return ChatCompletion(
        id=f"chatcmpl-{ref.run_id}",
        created=int(time.time()),
        model=model,
        choices=[Choice(message=AssistantMessage(content=content))],
        usage=usage_of(event),
    )


def _history_entry(message: ChatMessageIn) -> Message:
    entry: Message = message.model_dump(exclude_none=True, exclude={"content"})
    entry["content"] = message.text() if message.content is not None else None
    return entry
