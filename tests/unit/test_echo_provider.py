"""The offline echo model."""

from __future__ import annotations

import time
from typing import Any

from gateway.core.messages import Message
from gateway.core.providers.base import (
    FinishChunk,
    ModelRequest,
    ModelSpec,
    Provider,
    ProviderChunk,
    TextChunk,
    UsageChunk,
)
from gateway.core.providers.echo import EchoProvider
from gateway.core.tokens import estimate_message_tokens, estimate_tokens

SPEC = ModelSpec(provider="echo", model="echo")
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
]


async def collect(
    messages: list[Message], tools: list[dict[str, Any]] | None = None
) -> list[ProviderChunk]:
    request = ModelRequest(spec=SPEC, messages=messages, tools=tools or [])
    return [chunk async for chunk in EchoProvider().stream(request)]


def text_of(chunks: list[ProviderChunk]) -> str:
    return "".join(c.delta for c in chunks if isinstance(c, TextChunk))


def test_echo_is_a_provider() -> None:
    assert isinstance(EchoProvider(), Provider)
    assert EchoProvider.name == "echo"


async def test_replies_with_the_last_user_message_word_by_word() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "  hello  big\nworld ", "timestamp": 1.0},
    ]
    chunks = await collect(messages, TOOLS)
    texts = [c.delta for c in chunks if isinstance(c, TextChunk)]
    assert "".join(texts) == "  hello  big\nworld "
    assert len(texts) == 3
    assert [c.kind for c in chunks[-2:]] == ["usage", "finish"]
    assert all(c.kind in ("text", "usage", "finish") for c in chunks)  # never a tool call


async def test_usage_is_estimated_offline() -> None:
    messages: list[Message] = [{"role": "user", "content": "count these tokens please"}]
    usage = next(c for c in await collect(messages) if isinstance(c, UsageChunk))
    assert usage.prompt_tokens == estimate_message_tokens(messages)
    assert usage.completion_tokens == estimate_tokens("count these tokens please")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_empty_or_missing_user_text() -> None:
    for messages in ([], [{"role": "system", "content": "x"}], [{"role": "user", "content": "  "}]):
        chunks = await collect(messages)
        assert text_of(chunks) == "(empty message)"
        assert isinstance(chunks[-1], FinishChunk) and chunks[-1].reason == "stop"


async def test_multipart_content_uses_the_text_parts() -> None:
    content = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "http://x"}},
        {"type": "text", "text": "this"},
    ]
    assert text_of(await collect([{"role": "user", "content": content}])) == "look at this"


async def test_fast_enough_for_benchmarks() -> None:
    provider = EchoProvider()
    request = ModelRequest(spec=SPEC, messages=[{"role": "user", "content": "one two three four"}])
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        async for _chunk in provider.stream(request):
            pass
    elapsed = time.perf_counter() - started
    assert runs / elapsed > 2000, f"{runs / elapsed:.0f} runs/s"
