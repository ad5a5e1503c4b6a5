"""A lean OpenAI-compatible chat completions server for the benchmarks, in its own process.

``python -m bench.model_server [--port N]`` prints ``ready <port>`` once it listens.
Every request is answered at once, in one write on a bare ``asyncio.Protocol`` (no web
framework: the benchmark's helpers should take little of the cores they share with the
measured processes), with ``echo: <last user text>`` streamed in a few
``chat.completion.chunk`` frames, a usage chunk when ``stream_options.include_usage``,
then ``[DONE]``: the same wire format as ``tests/fakes/openai_server.py``, without
recording requests (a 1,000-turn session would make that the benchmark's cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, cast

from pydantic_core import from_json

from gateway.core.process import run

CHUNK_CHARS = 8


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _frame(model: str, created: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _frames(model: str, text: str, prompt_tokens: int, include_usage: bool) -> bytes:
    created = int(time.time())
    frames = [_frame(model, created, {"role": "assistant", "content": ""})]
    for start in range(0, len(text), CHUNK_CHARS):
        frames.append(_frame(model, created, {"content": text[start : start + CHUNK_CHARS]}))
    frames.append(_frame(model, created, {}, "stop"))
    if include_usage:
        completion = max(1, len(text) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        frames.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return b"".join(frames)


def answer(raw: bytes) -> tuple[int, bytes]:
    """The status and body for one chat completions request body."""
    try:
        body: dict[str, Any] = from_json(raw)
    except ValueError:
        return 400, b'{"error": {"message": "the body is not JSON"}}'
    if not body.get("stream"):
        return 400, b'{"error": {"message": "bench server streams only"}}'
    messages = body.get("messages") or []
    text = f"echo: {_last_user_text(messages)}"
    model = str(body.get("model", "fake-model"))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return 200, _frames(model, text, max(1, len(raw) // 4), include_usage)


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}


class ChatProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, enough for the ``openai`` client and ``aiohttp``:
    requests with a ``Content-Length`` body, each answered in one write. Written on
    the bare protocol (no web framework) so that the fake model takes as little of
    the two cores as it can from the processes the benchmark measures."""

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (request := self._next_request()) is not None:
            target, raw = request
            status, payload = answer(raw) if target == CHAT_PATH else (404, b"{}")
            kind = b"text/event-stream" if status == 200 else b"application/json"
            assert self._transport is not None
            self._transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (status, _REASONS[status], kind, len(payload), payload)
            )

    def _next_request(self) -> tuple[bytes, bytes] | None:
        """(target, body) of the first whole request in the buffer, taken out of it."""
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self._buffer[:head_end].split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("bench model server: chunked request bodies are not supported")
        body_start = head_end + 4
        if len(self._buffer) < body_start + length:
            return None
        raw = self._buffer[body_start : body_start + length]
        self._buffer = self._buffer[body_start + length :]
        return head[0].split(b" ")[1], raw


CHAT_PATH = b"/v1/chat/completions"


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ChatProtocol, "127.0.0.1", port)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        run(serve(args.port))  # on uvloop when installed, as the gateway and the worker
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
