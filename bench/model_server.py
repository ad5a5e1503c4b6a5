"""A lean OpenAI-compatible chat completions server for the benchmarks, in its own process.

``python -m bench.model_server [--port N]`` prints ``ready <port>`` once it listens.
Every request is answered at once with ``echo: <last user text>`` streamed in a few
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
from typing import Any

from aiohttp import web
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


async def chat_completions(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    body: dict[str, Any] = from_json(raw)
    messages = body.get("messages") or []
    text = f"echo: {_last_user_text(messages)}"
    model = str(body.get("model", "fake-model"))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    payload = _frames(model, text, max(1, len(raw) // 4), include_usage)
    if not body.get("stream"):
        return web.json_response({"error": {"message": "bench server streams only"}}, status=400)
    # The whole stream in one response body: one write, so the fake model's CPU per
    # request stays small next to the processes the benchmark measures.
    return web.Response(body=payload, headers={"Content-Type": "text/event-stream"})


async def serve(port: int) -> None:
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat_completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"ready {runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


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
