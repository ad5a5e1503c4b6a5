"""A local OpenAI-compatible chat completions server, driven by the real ``openai`` client.

Tests queue ``Reply`` objects with ``FakeModelServer.script``; each request consumes
one. With nothing queued the reply is ``"echo: <last user text>"`` so multi-turn tests
need no script. Streaming follows the real API: ``chat.completion.chunk`` objects as
SSE, tool-call deltas split (id and name first, then the arguments in pieces), a final
usage chunk with ``choices: []`` when ``stream_options.include_usage``, ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web

from gateway.core.tokens import estimate_message_tokens, estimate_tokens

FAKE_MODEL_ID = "fake-model"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``status`` other than 200 answers with an OpenAI error body."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reasoning: str = ""
    status: int = 200
    error_message: str = ""
    chunk_delay_s: float = 0.0
    chunk_size: int = 8
    hang: bool = False
    """Stream one chunk, then nothing more until the server stops (cancellation tests)."""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content or "")
    return ""


def echo_reply(messages: list[dict[str, Any]]) -> Reply:
    return Reply(text=f"echo: {last_user_text(messages)}")


def _pieces(text: str, size: int) -> Iterator[str]:
    step = max(1, size)
    for start in range(0, len(text), step):
        yield text[start : start + step]


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class FakeModelServer:
    """An aiohttp app on 127.0.0.1 with a free port; ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        models: tuple[str, ...] = (FAKE_MODEL_ID,),
        *,
        required_key: str | None = None,
        default_reply: Callable[[list[dict[str, Any]]], Reply] | None = None,
    ) -> None:
        self.models = models
        self.required_key = required_key
        """When set, ``GET /v1/models`` answers 401 to any other bearer key."""
        self.default_reply = default_reply or echo_reply
        """The reply when nothing is scripted, from the request's messages."""
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str] = []
        self._script: deque[Reply] = deque()
        self._closed = asyncio.Event()
        self._open_streams = 0
        self._no_open_streams = asyncio.Event()
        self._no_open_streams.set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one."""
        self._script.extend(replies)

    @property
    def open_streams(self) -> int:
        """Streaming responses still being written (a cancelled client closes its own)."""
        return self._open_streams

    async def wait_streams_closed(self) -> None:
        """Return once no streaming response is in progress."""
        await self._no_open_streams.wait()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._list_models)
        # handler_cancellation: a client that disconnects cancels its hanging handler.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._closed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _list_models(self, request: web.Request) -> web.Response:
        if self.required_key and request.headers.get("Authorization") != (
            f"Bearer {self.required_key}"
        ):
            body = {"error": {"message": "Incorrect API key provided", "type": "auth"}}
            return web.json_response(body, status=401)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization", ""))
        messages = body.get("messages") or []
        reply = self._script.popleft() if self._script else self.default_reply(messages)
        if reply.status != 200:
            return _error_response(reply)
        model = str(body.get("model", FAKE_MODEL_ID))
        usage = _usage(messages, reply)
        if not body.get("stream"):
            return web.json_response(_completion(model, reply, usage))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, model, reply, usage if include_usage else None)

    async def _stream(
        self, request: web.Request, model: str, reply: Reply, usage: dict[str, int] | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self._open_streams += 1
        self._no_open_streams.clear()
        try:
            frames = [_sse(chunk) for chunk in _stream_chunks(model, reply, usage)]
            if reply.hang:
                # The role chunk, plus the first piece of text so the client sees an answer start.
                head = 2 if reply.text or reply.reasoning else 1
                await response.write(b"".join(frames[:head]))
                await self._closed.wait()
                return response
            if reply.chunk_delay_s <= 0:
                await response.write(b"".join(frames) + b"data: [DONE]\n\n")
            else:
                for frame in frames:
                    await response.write(frame)
                    await asyncio.sleep(reply.chunk_delay_s)
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            self._open_streams -= 1
            if self._open_streams == 0:
                self._no_open_streams.set()


def _error_response(reply: Reply) -> web.Response:
    kind = "rate_limit_error" if reply.status == 429 else "invalid_request_error"
    if reply.status >= 500:
        kind = "server_error"
    message = reply.error_message or f"fake error {reply.status}"
    error = {"message": message, "type": kind, "param": None, "code": None}
    return web.json_response({"error": error}, status=reply.status)


def _usage(messages: list[dict[str, Any]], reply: Reply) -> dict[str, int]:
    prompt = estimate_message_tokens(messages)
    produced = reply.text + reply.reasoning + "".join(json.dumps(a) for _, a in reply.tool_calls)
    completion = estimate_tokens(produced)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _completion(model: str, reply: Reply, usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": n, "arguments": json.dumps(a)},
            }
            for i, (n, a) in enumerate(reply.tool_calls)
        ]
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(reply)}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def _stream_chunks(
    model: str, reply: Reply, usage: dict[str, int] | None
) -> Iterator[dict[str, Any]]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created}
        return {**base, "model": model, "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.reasoning, reply.chunk_size):
        yield chunk({"reasoning_content": piece})
    for piece in _pieces(reply.text, reply.chunk_size):
        yield chunk({"content": piece})
    for index, (name, args) in enumerate(reply.tool_calls):
        head = {"index": index, "id": f"call_{index}", "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        for piece in _pieces(json.dumps(args), reply.chunk_size):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(reply))
    if usage is not None:
        yield {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }


@pytest_asyncio.fixture
async def fake_model() -> AsyncIterator[FakeModelServer]:
    """A started ``FakeModelServer``, stopped after the test."""
    async with FakeModelServer() as server:
        yield server
