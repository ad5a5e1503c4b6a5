"""Each per-request shortcut of ``core.providers.openai_sdk`` against the SDK's own path.

The provider builds the request options once, caches the merged URL and reads chunks
with ``cast_to=object``. These tests fail when an SDK upgrade makes any of them differ
from what ``AsyncOpenAI.post`` and its stream would do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion

from gateway.core.errors import ProviderError
from gateway.core.providers.base import ModelRequest, ModelSpec, TextChunk
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.providers.openai_sdk import (
    CHAT_PATH,
    OPTIONS,
    ChatClient,
    ChunkStream,
    chat_options,
    chat_options_template,
    post_chat,
)
from gateway.core.settings import ProviderSettings
from tests.fakes.openai_server import FakeModelServer, fake_model  # noqa: F401

pytestmark = pytest.mark.integration

BODY = b'{"model":"fake-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'


def _comparable(options: FinalRequestOptions) -> dict[str, Any]:
    """Every field; ``NotGiven`` instances compare by kind (each default is a copy)."""
    return {
        name: "NOT_GIVEN" if isinstance(value, openai.NotGiven) else value
        for name, value in options
    }


async def test_options_are_what_post_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    client = openai.AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    seen: list[FinalRequestOptions] = []

    async def capture(_cast_to: object, options: FinalRequestOptions, **_: object) -> None:
        seen.append(options)

    monkeypatch.setattr(client, "request", capture)
    await client.post(
        CHAT_PATH,
        cast_to=ChatCompletion,
        content=BODY,
        options=OPTIONS,
        stream=True,
        stream_cls=ChunkStream,
    )
    template = chat_options_template()
    ours = chat_options(template, BODY)
    assert _comparable(ours) == _comparable(seen[0])
    assert template.content is None  # the copy never writes into the shared template
    await client.close()


async def test_the_merged_url_is_the_sdks_and_follows_base_url() -> None:
    client = ChatClient(api_key="k", base_url="http://127.0.0.1:9/v1")
    sdk = openai.AsyncOpenAI._prepare_url
    first = client._prepare_url(CHAT_PATH)
    assert first == sdk(client, CHAT_PATH)
    assert client._prepare_url(CHAT_PATH) is first  # remembered
    client.base_url = "http://127.0.0.1:10/api/v2"
    moved = client._prepare_url(CHAT_PATH)
    assert moved == sdk(client, CHAT_PATH) != first
    await client.close()


async def test_chunks_are_the_decoded_json_of_each_event(fake_model: FakeModelServer) -> None:
    """``cast_to=object`` hands over the SDK's decoded chunk unchanged, as ``create()``'s
    stream would before building its model: same fields, same values."""
    client = ChatClient(api_key="k", base_url=fake_model.base_url, max_retries=0)
    try:
        raw = [c async for c in await post_chat(client, chat_options_template(), BODY)]
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        modelled = [c.model_dump(exclude_unset=True) async for c in stream]
    finally:
        await client.close()
    assert raw == modelled
    assert all(isinstance(c, dict) for c in raw)


@pytest.fixture
async def erroring_server() -> AsyncIterator[str]:
    """Streams one text chunk, then an error event, as OpenAI does when a stream fails."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = b'{"choices":[{"index":0,"delta":{"content":"par"}}]}'
        await response.write(b"data: " + delta + b"\n\n")
        await response.write(b'data: {"error": {"message": "the model is overloaded"}}\n\n')
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


async def test_an_error_event_in_the_stream_is_still_a_provider_error(
    erroring_server: str,
) -> None:
    provider = OpenAICompatProvider(
        "odd", ProviderSettings(base_url=erroring_server, api_key="k", max_retries=0)
    )
    request = ModelRequest(
        spec=ModelSpec(provider="odd", model="m"), messages=[{"role": "user", "content": "hi"}]
    )
    chunks = []
    try:
        with pytest.raises(ProviderError, match="the model is overloaded"):
            async for chunk in provider.stream(request):
                chunks.append(chunk)
    finally:
        await provider.aclose()
    assert chunks == [TextChunk(delta="par")]
