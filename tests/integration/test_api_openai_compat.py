"""The OpenAI-compatible endpoint, driven by the official ``openai`` client, unchanged."""

from __future__ import annotations

import time

import openai
import pytest
from redis import Redis as SyncRedis

from gateway.core.bus import keys
from tests.fakes.live_gateway import API_KEY, LiveGateway, live_gateway  # noqa: F401
from tests.fakes.openai_server import Reply
from tests.fakes.redis_server import redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def client(live_gateway: LiveGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key=API_KEY, max_retries=0)


def test_models_lists_the_agents(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {
        "assistant",
        "offline",
        "researcher",
        "summarizer",
    }


def test_completion_json(client: openai.OpenAI, live_gateway: LiveGateway) -> None:
    live_gateway.fake.script(Reply(text="Paris."))
    completion = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "Capital of France?"}],
        temperature=0.3,
        max_tokens=50,
    )
    assert completion.choices[0].message.content == "Paris."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    sent = live_gateway.fake.requests[-1]
    assert (sent["temperature"], sent["max_tokens"]) == (0.3, 50)


def test_completion_streaming_with_usage(client: openai.OpenAI, live_gateway: LiveGateway) -> None:
    live_gateway.fake.script(Reply(text="Streaming works fine.", chunk_size=4, chunk_delay_s=0.02))
    stream = client.chat.completions.create(
        model="agent/assistant",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming works fine."
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    # Without include_usage no chunk carries usage.
    plain = list(
        client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "again"}], stream=True
        )
    )
    assert all(c.usage is None for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "echo: again"


def test_history_and_system_come_from_the_messages(
    client: openai.OpenAI, live_gateway: LiveGateway, redis_url: str
) -> None:
    completion = client.chat.completions.create(
        model="assistant",
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "My name is Alice."},
            {"role": "assistant", "content": "Nice to meet you, Alice."},
            {"role": "user", "content": "What is my name?"},
        ],
    )
    assert completion.choices[0].message.content == "echo: What is my name?"
    sent = live_gateway.fake.requests[-1]["messages"]
    assert sent[0]["role"] == "system"
    assert sent[0]["content"].startswith("You are helpful.")
    assert sent[0]["content"].endswith("Answer in French.")
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "My name is Alice."),
        ("assistant", "Nice to meet you, Alice."),
        ("user", "What is my name?"),
    ]
    # A one-off conversation leaves nothing behind once its turn is committed.
    with SyncRedis.from_url(redis_url, decode_responses=True) as sync:
        deadline = time.monotonic() + 10
        while sync.keys(keys.inbound("oneoff:*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sync.keys(keys.inbound("oneoff:*")) == []
        assert sync.keys(keys.session("oneoff:*")) == []


def test_user_binds_a_persistent_session(client: openai.OpenAI, live_gateway: LiveGateway) -> None:
    client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "I like tea."}], user="bob"
    )
    client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "What do I like?"}], user="bob"
    )
    contents = [m["content"] for m in live_gateway.fake.requests[-1]["messages"]]
    assert contents[1:] == ["I like tea.", "echo: I like tea.", "What do I like?"]
    # Another user starts from nothing.
    client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Hi"}], user="carol"
    )
    assert len(live_gateway.fake.requests[-1]["messages"]) == 2


def test_session_header_binds_an_api_session(
    client: openai.OpenAI, live_gateway: LiveGateway
) -> None:
    import httpx

    with httpx.Client(base_url=live_gateway.url, headers={"X-API-Key": API_KEY}) as http:
        session_id = http.post("/v1/sessions", json={"agent": "assistant"}).json()["session_id"]
        http.post(f"/v1/sessions/{session_id}/messages", json={"input": "Remember 42."})
        client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "What number?"}],
            extra_headers={"X-Session-Id": session_id},
        )
        contents = [m["content"] for m in live_gateway.fake.requests[-1]["messages"]]
        assert contents[1:] == ["Remember 42.", "echo: Remember 42.", "What number?"]
        turns = http.get(f"/v1/sessions/{session_id}").json()["turns"]
        assert turns == 2
        with pytest.raises(openai.BadRequestError, match="belongs to 'assistant'"):
            client.chat.completions.create(
                model="researcher",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"X-Session-Id": session_id},
            )


def test_openai_shaped_errors(live_gateway: LiveGateway, client: openai.OpenAI) -> None:
    bad = openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "gpt-9" in str(missing.value)
    with pytest.raises(openai.APIStatusError) as too_long:
        client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "x" * 32_001}]
        )
    assert too_long.value.status_code == 413
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="assistant", messages=[{"role": "assistant", "content": "no user turn"}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Session-Id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"},
        )


async def test_async_openai_client_streams(live_gateway: LiveGateway) -> None:
    client = openai.AsyncOpenAI(base_url=f"{live_gateway.url}/v1", api_key=API_KEY, max_retries=0)
    live_gateway.fake.script(Reply(text="async tokens", chunk_size=3, chunk_delay_s=0.02))
    stream = await client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "go"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "async tokens"
    await client.close()


def test_a_failed_run_is_an_openai_error(client: openai.OpenAI, live_gateway: LiveGateway) -> None:
    live_gateway.fake.script(Reply(status=400, error_message="refused"))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "x"}]
        )
    live_gateway.fake.script(Reply(status=400, error_message="refused"))
    stream = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="the run failed"):
        list(stream)
