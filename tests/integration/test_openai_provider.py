"""OpenAICompatProvider and ModelRouter against the local fake server, via the real SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.core.errors import ProviderError, RetryableProviderError
from gateway.core.messages import Message
from gateway.core.providers.base import (
    FinishChunk,
    ModelRequest,
    ModelSpec,
    ProviderChunk,
    ReasoningChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.providers.router import ModelRouter
from gateway.core.settings import ProviderSettings, Settings
from tests.fakes.openai_server import FakeModelServer, Reply, fake_model  # noqa: F401

pytestmark = pytest.mark.integration

SECRET_KEY = "sk-very-secret-test-key"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GATEWAY_MODEL", "GATEWAY_MODEL_PRESET"):
        monkeypatch.delenv(name, raising=False)


def provider_settings(server: FakeModelServer, **values: Any) -> ProviderSettings:
    return ProviderSettings(base_url=server.base_url, max_retries=0, **values)


@pytest.fixture
async def provider(fake_model: FakeModelServer) -> AsyncIterator[OpenAICompatProvider]:
    created = OpenAICompatProvider("local", provider_settings(fake_model, api_key=SECRET_KEY))
    yield created
    await created.aclose()


async def collect(
    provider: OpenAICompatProvider,
    messages: list[Message],
    spec: ModelSpec | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> list[ProviderChunk]:
    spec = spec or ModelSpec(provider="local", model="fake-model")
    request = ModelRequest(spec=spec, messages=messages, tools=tools or [])
    return [chunk async for chunk in provider.stream(request)]


def text_of(chunks: list[ProviderChunk]) -> str:
    return "".join(c.delta for c in chunks if isinstance(c, TextChunk))


USER: list[Message] = [{"role": "user", "content": "hi"}]


async def test_text_streams_in_pieces_with_usage_then_finish(
    fake_model: FakeModelServer,
    provider: OpenAICompatProvider,
) -> None:
    fake_model.script(Reply(text="Hello there, world!", chunk_size=4))
    chunks = await collect(provider, USER)
    assert text_of(chunks) == "Hello there, world!"
    assert len([c for c in chunks if isinstance(c, TextChunk)]) == 5
    usage, finish = chunks[-2], chunks[-1]
    assert isinstance(usage, UsageChunk) and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert finish == FinishChunk(reason="stop")


async def test_request_carries_only_api_keys_and_set_options(
    fake_model: FakeModelServer,
    provider: OpenAICompatProvider,
) -> None:
    history: list[Message] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi", "timestamp": 1.5, "attachments": [{"url": "x"}]},
        {"role": "assistant", "content": "yo", "metadata": {"run_id": "r1"}},
        {"role": "user", "content": "again"},
    ]
    await collect(provider, history)
    spec = ModelSpec(provider="local", model="m2", temperature=0.3, max_tokens=50)
    await collect(provider, USER, spec=spec, tools=TOOLS)
    plain, tuned = fake_model.requests
    assert plain["messages"] == [
        {"role": "system", "content": "sys"},
        # Attachments are not dropped: a file is named in the text (core.attachments).
        {"role": "user", "content": [{"type": "text", "text": "hi\n[attached file 'x': x]"}]},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"},
    ]
    assert plain["stream"] is True and plain["stream_options"] == {"include_usage": True}
    assert not {"tools", "temperature", "max_tokens"} & plain.keys()
    assert (tuned["model"], tuned["temperature"], tuned["max_tokens"]) == ("m2", 0.3, 50)
    assert tuned["tools"] == TOOLS
    assert fake_model.authorizations[0] == f"Bearer {SECRET_KEY}"


async def test_tool_call_deltas_are_assembled_after_the_text(
    fake_model: FakeModelServer,
    provider: OpenAICompatProvider,
) -> None:
    first_args = {"query": "weather in Paris", "days": 3}
    fake_model.script(
        Reply(
            text="Let me check.", tool_calls=[("lookup", first_args), ("clock", {})], chunk_size=5
        )
    )
    chunks = await collect(provider, USER, tools=TOOLS)
    kinds = [c.kind for c in chunks]
    assert kinds.index("tool_call") > max(i for i, k in enumerate(kinds) if k == "text")
    calls = [c for c in chunks if isinstance(c, ToolCallChunk)]
    assert [(c.id, c.name) for c in calls] == [("call_0", "lookup"), ("call_1", "clock")]
    assert json.loads(calls[0].arguments) == first_args
    assert json.loads(calls[1].arguments) == {}
    assert chunks[-1] == FinishChunk(reason="tool_calls")


async def test_reasoning_deltas(
    fake_model: FakeModelServer,
    provider: OpenAICompatProvider,
) -> None:
    fake_model.script(Reply(text="42", reasoning="thinking about the question", chunk_size=6))
    chunks = await collect(provider, USER)
    reasoning = "".join(c.delta for c in chunks if isinstance(c, ReasoningChunk))
    assert reasoning == "thinking about the question"
    assert text_of(chunks) == "42"


async def test_rate_limit_is_retryable_and_the_message_is_one_clean_line(
    fake_model: FakeModelServer,
    provider: OpenAICompatProvider,
) -> None:
    fake_model.script(Reply(status=429, error_message=f"slow down\nkey {SECRET_KEY} over quota"))
    with pytest.raises(RetryableProviderError) as caught:
        await collect(provider, USER)
    message = str(caught.value)
    assert "429" in message and "local" in message and "slow down" in message
    assert "\n" not in message and SECRET_KEY not in message


async def test_bad_request_is_not_retryable(
    fake_model: FakeModelServer,
    provider: OpenAICompatProvider,
) -> None:
    fake_model.script(Reply(status=400, error_message="messages: invalid role"))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, USER)
    assert not isinstance(caught.value, RetryableProviderError)
    assert "HTTP 400" in str(caught.value) and "invalid role" in str(caught.value)


async def test_connection_refused_is_retryable(fake_model: FakeModelServer) -> None:
    await fake_model.stop()  # nothing listens on its port any more
    gone = OpenAICompatProvider("gone", provider_settings(fake_model))
    with pytest.raises(RetryableProviderError, match="gone"):
        await collect(gone, USER)
    await gone.aclose()


async def test_failover_to_the_next_provider_on_503(fake_model: FakeModelServer) -> None:
    async with FakeModelServer() as backup:
        fake_model.script(Reply(status=503, error_message="overloaded"))
        settings = Settings(
            providers={"main": provider_settings(fake_model), "backup": provider_settings(backup)},
            model="main/big",
            model_failover=["backup/small"],
        )
        router = ModelRouter(settings)
        chain = router.failover_chain(router.resolve())
        chunks = [c async for c in router.stream(chain, USER)]
        await router.aclose()
    assert text_of(chunks) == "echo: hi"
    assert [r["model"] for r in fake_model.requests] == ["big"]
    assert [r["model"] for r in backup.requests] == ["small"]


async def test_when_every_model_fails_the_last_error_is_raised(
    fake_model: FakeModelServer,
) -> None:
    fake_model.script(Reply(status=503, error_message="first down"), Reply(status=502))
    router = ModelRouter(Settings(providers={"main": provider_settings(fake_model)}))
    chain = [router.resolve(model="main/a"), router.resolve(model="main/b")]
    with pytest.raises(RetryableProviderError, match="502"):
        async for _ in router.stream(chain, USER):
            pass
    await router.aclose()


async def test_no_failover_once_the_answer_has_started(
    fake_model: FakeModelServer,
) -> None:
    fake_model.script(Reply(text="partial answer", hang=True))
    main = provider_settings(fake_model, timeout_s=0.3)
    router = ModelRouter(Settings(providers={"main": main}))
    chain = [router.resolve(model="main/a"), router.resolve(model="echo/echo")]
    received: list[ProviderChunk] = []
    with pytest.raises(RetryableProviderError, match="timed out"):
        async for chunk in router.stream(chain, USER):
            received.append(chunk)
    assert text_of(received) == "partial "  # the first 8-character piece
    assert len(fake_model.requests) == 1
    await router.aclose()


async def test_closing_the_stream_early_closes_the_http_stream(
    fake_model: FakeModelServer,
) -> None:
    fake_model.script(Reply(text="never ending", hang=True))
    router = ModelRouter(Settings(providers={"main": provider_settings(fake_model)}))
    stream = router.stream([router.resolve(model="main/a")], USER)
    first = await anext(stream)
    assert isinstance(first, TextChunk)
    assert fake_model.open_streams == 1
    await stream.aclose()
    await asyncio.wait_for(fake_model.wait_streams_closed(), timeout=5)
    await router.aclose()


async def test_openai_from_environment(
    fake_model: FakeModelServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_model.base_url)
    router = ModelRouter(Settings(model="gpt-test"))
    chunks = [c async for c in router.stream([router.resolve()], USER)]
    await router.aclose()
    assert text_of(chunks) == "echo: hi"
    assert fake_model.requests[0]["model"] == "gpt-test"
    assert fake_model.authorizations == [f"Bearer {SECRET_KEY}"]


async def test_keyless_local_provider_sends_a_placeholder_key(
    fake_model: FakeModelServer,
) -> None:
    keyless = OpenAICompatProvider("ollama", provider_settings(fake_model))
    assert text_of(await collect(keyless, USER)) == "echo: hi"
    await keyless.aclose()
    assert fake_model.authorizations == ["Bearer none"]


async def test_concurrent_streams_with_different_models_do_not_interfere(
    fake_model: FakeModelServer,
) -> None:
    async with FakeModelServer() as other:
        other.script(Reply(text="from the other server", chunk_delay_s=0.002, chunk_size=3))
        settings = Settings(
            providers={"a": provider_settings(fake_model), "b": provider_settings(other)}
        )
        router = ModelRouter(settings)

        async def answer(model: str, text: str) -> str:
            messages: list[Message] = [{"role": "user", "content": text}]
            chunks = [c async for c in router.stream([router.resolve(model=model)], messages)]
            return text_of(chunks)

        jobs = [answer(f"a/model-{i}", f"question {i}") for i in range(20)]
        jobs += [answer("b/slow", "ignored"), answer("echo/echo", "local echo")]
        answers = await asyncio.gather(*jobs)
        await router.aclose()
    assert answers[:20] == [f"echo: question {i}" for i in range(20)]
    assert answers[20:] == ["from the other server", "local echo"]
    by_question = {r["messages"][-1]["content"]: r["model"] for r in fake_model.requests}
    assert by_question == {f"question {i}": f"model-{i}" for i in range(20)}
    assert [r["model"] for r in other.requests] == ["slow"]


async def test_complete_collects_the_text(fake_model: FakeModelServer) -> None:
    fake_model.script(Reply(text="a short summary", tool_calls=[("lookup", {})]))
    router = ModelRouter(Settings(providers={"main": provider_settings(fake_model)}))
    assert await router.complete(router.resolve(model="main/sum"), USER) == "a short summary"
    await router.aclose()
