"""The provider posts the chat request without the SDK's ``create()`` transform.

These tests guard that shortcut: the body must stay what ``create()`` sends (an SDK
upgrade that starts to need its transform fails here), and the SDK must keep doing
auth, retries and error mapping for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolUnionParam

from gateway.core.errors import ProviderError, RetryableProviderError
from gateway.core.messages import Message
from gateway.core.providers.base import ModelRequest, ModelSpec, ProviderChunk, TextChunk
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.settings import ProviderSettings
from tests.fakes.openai_server import FakeModelServer, Reply, fake_model  # noqa: F401

pytestmark = pytest.mark.integration

KEY = "sk-request-body-test-key"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["word"],
            },
        },
    }
]
HISTORY: list[Message] = [
    {"role": "system", "content": "You are helpful. ünïcödé ✓ 日本語"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg", "detail": "low"}},
        ],
        "timestamp": 1.5,
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"word": "cat", "limit": 2}'},
            }
        ],
        "metadata": {"run_id": "r1"},
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": "a small feline"},
    {"role": "assistant", "content": "It is a cat.", "name": "helper"},
    {"role": "user", "content": 'Thanks! Line\nbreaks "quotes" and \\ backslashes'},
]


def api_messages(messages: list[Message]) -> list[Message]:
    """The history as the API takes it: the extra keys (timestamp, metadata) dropped."""
    keys = {"role", "content", "name", "tool_call_id", "tool_calls"}
    return [{k: v for k, v in m.items() if k in keys} for m in messages]


def settings(server: FakeModelServer, retries: int = 0) -> ProviderSettings:
    return ProviderSettings(base_url=server.base_url, api_key=KEY, max_retries=retries)


@pytest.fixture
async def provider(fake_model: FakeModelServer) -> AsyncIterator[OpenAICompatProvider]:
    created = OpenAICompatProvider("local", settings(fake_model))
    yield created
    await created.aclose()


async def collect(provider: OpenAICompatProvider, spec: ModelSpec) -> list[ProviderChunk]:
    request = ModelRequest(spec=spec, messages=HISTORY, tools=TOOLS)
    return [chunk async for chunk in provider.stream(request)]


async def sent_by_create(server: FakeModelServer, spec: ModelSpec) -> None:
    """What the SDK's own ``chat.completions.create`` sends for the same request."""
    client = openai.AsyncOpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model=spec.model,
            messages=cast(list[ChatCompletionMessageParam], api_messages(HISTORY)),
            stream=True,
            stream_options={"include_usage": True},
            tools=cast(list[ChatCompletionToolUnionParam], TOOLS),
            temperature=spec.temperature if spec.temperature is not None else openai.omit,
            max_tokens=spec.max_tokens if spec.max_tokens is not None else openai.omit,
        )
        async with stream:
            async for _chunk in stream:
                pass
    finally:
        await client.close()


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(provider="local", model="fake-model"),
        ModelSpec(provider="local", model="m2", temperature=0.25, max_tokens=64),
    ],
    ids=["defaults", "tuned"],
)
async def test_the_body_is_what_create_sends(
    fake_model: FakeModelServer, provider: OpenAICompatProvider, spec: ModelSpec
) -> None:
    await sent_by_create(fake_model, spec)
    await collect(provider, spec)
    expected, ours = fake_model.requests
    assert ours == expected
    assert fake_model.authorizations == [f"Bearer {KEY}", f"Bearer {KEY}"]


async def test_a_server_error_is_retried_with_the_same_body(fake_model: FakeModelServer) -> None:
    retrying = OpenAICompatProvider("local", settings(fake_model, retries=1))
    fake_model.script(Reply(status=500, error_message="boom"), Reply(text="fine"))
    try:
        chunks = await collect(retrying, ModelSpec(provider="local", model="fake-model"))
    finally:
        await retrying.aclose()
    assert "".join(c.delta for c in chunks if isinstance(c, TextChunk)) == "fine"
    first, second = fake_model.requests
    assert first == second


async def test_unauthorized_is_one_line_without_the_key(
    fake_model: FakeModelServer, provider: OpenAICompatProvider
) -> None:
    fake_model.script(Reply(status=401, error_message=f"Incorrect API key provided: {KEY}"))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, ModelSpec(provider="local", model="fake-model"))
    assert not isinstance(caught.value, RetryableProviderError)
    message = str(caught.value)
    assert "HTTP 401" in message and KEY not in message and "***" in message


async def test_an_unserialisable_message_is_a_provider_error(
    provider: OpenAICompatProvider,
) -> None:
    request = ModelRequest(
        spec=ModelSpec(provider="local", model="fake-model"),
        messages=[{"role": "user", "content": "hi", "name": object()}],
    )
    with pytest.raises(ProviderError, match="not JSON-serialisable"):
        async for _chunk in provider.stream(request):
            pass


@pytest.mark.parametrize(
    "frame",
    [
        b"[1, 2]",
        b'{"choices": [1]}',
        b'{"choices": [{"delta": 1}]}',
        b'{"choices": [{"delta": {"tool_calls": ["x"]}}]}',
        b'{"choices": [{"delta": {"tool_calls": "x"}}]}',
    ],
    ids=["chunk", "choice", "delta", "tool-call-delta", "tool-calls"],
)
async def test_a_malformed_stream_chunk_is_one_clear_error(frame: bytes) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + frame + b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    odd = OpenAICompatProvider(
        "odd", ProviderSettings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    )
    try:
        with pytest.raises(
            ProviderError, match=r"odd: malformed stream: .* (is not an object|are not a list)$"
        ):
            await collect(odd, ModelSpec(provider="odd", model="m"))
    finally:
        await odd.aclose()
        await runner.cleanup()
