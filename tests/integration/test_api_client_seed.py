"""Every example of seed 001 (the Python SDK page), with our names, against a real gateway.

The gateway runs with a worker and the fake model server (``tests.fakes.live_gateway``);
each request goes through the bus. ``echo: <text>`` is the fake model's default reply.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.client import AsyncGatewayClient, GatewayClient
from gateway.client.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
)
from gateway.client.types import (
    Agent,
    InvokeResponse,
    PipelineRunResponse,
    PipelineStatus,
    Session,
    SessionContinueResponse,
    StreamEvent,
    Usage,
)
from tests.fakes.live_gateway import API_KEY, LiveGateway, live_gateway  # noqa: F401
from tests.fakes.openai_server import Reply
from tests.fakes.redis_server import redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def client(live_gateway: LiveGateway) -> GatewayClient:
    return GatewayClient(base_url=live_gateway.url, api_key=API_KEY, timeout=30.0)


def test_client_initialization_variants(
    live_gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Basic setup, bearer token, custom options.
    for made in (
        GatewayClient(base_url=live_gateway.url, api_key=API_KEY),
        GatewayClient(base_url=live_gateway.url, token=API_KEY),
        GatewayClient(
            base_url=live_gateway.url, api_key=API_KEY, timeout=30.0, max_retries=3, retry_delay=1.0
        ),
    ):
        with made:
            assert made.agents.list()[0].name == "assistant"
    # Environment variables when arguments are not given.
    monkeypatch.setenv("GATEWAY_BASE_URL", live_gateway.url)
    monkeypatch.setenv("GATEWAY_API_KEY", API_KEY)
    with GatewayClient() as from_env:
        assert {a.name for a in from_env.agents.list()} == {
            "assistant",
            "offline",
            "researcher",
            "summarizer",
        }


def test_listing_agents(client: GatewayClient) -> None:
    agents = client.agents.list()
    lines = [f"{agent.name} - {agent.model} - {agent.status}" for agent in agents]
    assert "assistant - local/fake-model - ready" in lines
    assert "offline - nowhere/model - unavailable" in lines
    assert [a.description for a in agents if a.name == "offline"] == ["No such provider."]


def test_invoking_an_agent(client: GatewayClient, live_gateway: LiveGateway) -> None:
    live_gateway.fake.script(Reply(text="The capital of France is Paris."))
    response = client.agents.invoke(name="assistant", input="What is the capital of France?")
    assert response.output == "The capital of France is Paris."
    assert response.usage.total_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert response.session_id and response.run_id


def test_invoking_with_options(client: GatewayClient, live_gateway: LiveGateway) -> None:
    response = client.agents.invoke(
        name="assistant",
        input="Write a haiku about programming.",
        options={"temperature": 0.9, "max_tokens": 100},
    )
    assert response.output == "echo: Write a haiku about programming."
    sent = live_gateway.fake.requests[-1]
    assert sent["temperature"] == 0.9 and sent["max_tokens"] == 100


async def test_async_invocation(live_gateway: LiveGateway) -> None:
    client = AsyncGatewayClient(base_url=live_gateway.url, api_key=API_KEY)
    response = await client.agents.invoke(
        name="assistant", input="Explain quantum computing in simple terms."
    )
    assert response.output == "echo: Explain quantum computing in simple terms."
    await client.close()


async def test_async_context_manager(live_gateway: LiveGateway) -> None:
    async with AsyncGatewayClient(base_url=live_gateway.url, api_key=API_KEY) as client:
        response = await client.agents.invoke(name="assistant", input="Hello!")
        assert response.output == "echo: Hello!"


def test_synchronous_streaming(
    client: GatewayClient, live_gateway: LiveGateway, tmp_path: Path
) -> None:
    (tmp_path / "workspace" / "story.txt").write_text("Once upon a time.", encoding="utf-8")
    live_gateway.fake.script(
        Reply(tool_calls=[("read_file", {"path": "story.txt"})]),
        Reply(text="A story about a time long ago.", chunk_size=4),
    )
    printed: list[str] = []
    for event in client.agents.stream(name="assistant", input="Tell me a story."):
        if event.type == "token":
            printed.append(event.content)
        elif event.type == "tool_call":
            printed.append(f"\n[Calling tool: {event.name}]")
        elif event.type == "tool_result":
            printed.append(f"\n[Tool result: {event.output}]")
        elif event.type == "done":
            printed.append(f"\n\nTokens used: {event.usage.total_tokens}")
        elif event.type == "error":
            printed.append(f"\nError: {event.message}")
    text = "".join(printed)
    assert "[Calling tool: read_file]" in text
    assert "[Tool result: Once upon a time.]" in text
    assert "A story about a time long ago." in text
    assert text.index("[Calling tool") < text.index("[Tool result") < text.index("A story")
    assert "Tokens used: " in text and "Error" not in text


async def test_async_streaming_and_collecting(live_gateway: LiveGateway) -> None:
    async with AsyncGatewayClient(base_url=live_gateway.url, api_key=API_KEY) as client:
        live_gateway.fake.script(
            Reply(text="Once there was a gateway.", chunk_size=3, chunk_delay_s=0.03)
        )
        tokens, total = [], 0
        async for event in client.agents.stream(name="assistant", input="Tell me a story."):
            if event.type == "token":
                tokens.append(event.content)
            elif event.type == "done":
                total = event.usage.total_tokens
        assert len(tokens) > 1 and "".join(tokens) == "Once there was a gateway."
        assert total > 0

        full_response = ""
        async for event in client.agents.stream(name="assistant", input="Hello"):
            if event.type == "token":
                full_response += event.content
        assert full_response == "echo: Hello"


def test_creating_and_using_a_session(client: GatewayClient, live_gateway: LiveGateway) -> None:
    session = client.sessions.create(agent="assistant")
    assert session.session_id
    response = client.sessions.continue_(
        agent="assistant",
        session_id=session.session_id,
        input="My name is Alice and I work on robotics.",
    )
    assert response.output == "echo: My name is Alice and I work on robotics."
    live_gateway.fake.script(Reply(text="You work on robotics."))
    response = client.sessions.continue_(
        agent="assistant", session_id=session.session_id, input="What do I work on?"
    )
    assert response.output == "You work on robotics."
    # The agent remembers: the model saw the first turn with the second.
    contents = [m.get("content") for m in live_gateway.fake.requests[-1]["messages"]]
    assert "My name is Alice and I work on robotics." in contents
    assert "echo: My name is Alice and I work on robotics." in contents


def test_session_with_metadata_and_listing(client: GatewayClient) -> None:
    session = client.sessions.create(
        agent="assistant", metadata={"user_id": "user-42", "channel": "web"}
    )
    assert session.metadata == {"user_id": "user-42", "channel": "web"}
    client.sessions.continue_(agent="assistant", session_id=session.session_id, input="hi")
    other = client.sessions.create(agent="researcher")
    sessions = client.sessions.list(agent="assistant", limit=10)
    rows = [f"{s.session_id} - {s.turns} turns - last active: {s.last_active_at}" for s in sessions]
    assert len(rows) == 1 and rows[0].startswith(f"{session.session_id} - 1 turns")
    assert sessions[0].metadata == {"user_id": "user-42", "channel": "web"}
    assert sessions[0].last_active_at >= session.created_at
    assert {s.session_id for s in client.sessions.list()} == {session.session_id, other.session_id}


def test_running_pipelines(client: GatewayClient, live_gateway: LiveGateway) -> None:
    live_gateway.fake.script(
        Reply(text="Solid-state cells doubled density."), Reply(text="Batteries got denser.")
    )
    result = client.pipelines.run(
        name="research-and-summarize", input="Summarize recent advances in battery technology."
    )
    assert result.status == "completed"
    assert result.output == "Batteries got denser."
    assert [(s.name, s.status) for s in result.steps] == [
        ("researcher", "completed"),
        ("summarizer", "completed"),
    ]
    assert all(s.duration_ms is not None and s.duration_ms >= 0 for s in result.steps)
    # Each step's output is the next one's input.
    assert live_gateway.fake.requests[-1]["messages"][-1]["content"] == (
        "Solid-state cells doubled density."
    )
    status = client.pipelines.status(name="research-and-summarize")
    assert (status.status, status.run_id) == ("completed", result.run_id)
    assert status.elapsed_ms is not None and status.elapsed_ms >= 0


def test_error_handling(live_gateway: LiveGateway) -> None:
    client = GatewayClient(base_url=live_gateway.url, api_key=API_KEY, max_retries=0)
    with pytest.raises(AuthenticationError) as auth:
        GatewayClient(base_url=live_gateway.url, api_key="wrong").agents.invoke(
            name="assistant", input="Hello"
        )
    assert (auth.value.code, auth.value.status) == ("unauthorized", 401)
    with pytest.raises(NotFoundError) as missing:
        client.agents.invoke(name="nobody", input="Hello")
    assert missing.value.code == "not_found"
    with pytest.raises(InvalidRequestError) as invalid:
        client.agents.invoke(name="assistant", input="")
    assert invalid.value.code == "invalid_request" and "input" in invalid.value.message
    # A run that fails every attempt (the model answers 400) ends as a server error.
    live_gateway.fake.script(Reply(status=400, error_message="bad prompt"))
    with pytest.raises(ServerError) as failed:
        client.agents.invoke(name="assistant", input="Hello")
    assert (failed.value.code, failed.value.status) == ("internal_error", 500)
    for error in (auth.value, missing.value, invalid.value, failed.value):
        assert isinstance(error, GatewayError) and error.message


def test_type_hints_example(client: GatewayClient) -> None:
    def process_response(response: InvokeResponse) -> str:
        return response.output

    def handle_stream(events: list[StreamEvent]) -> str:
        return "".join(event.content for event in events if event.type == "token")

    assert process_response(client.agents.invoke(name="assistant", input="a")) == "echo: a"
    assert handle_stream(list(client.agents.stream(name="assistant", input="b"))) == "echo: b"
    for name in (Agent, Session, SessionContinueResponse, PipelineRunResponse, PipelineStatus):
        assert name.model_fields
    assert Usage().total_tokens == 0


def test_complete_example(client: GatewayClient) -> None:
    agents = client.agents.list()
    assert agents
    agent_name = agents[0].name
    session = client.sessions.create(agent=agent_name)
    messages = [
        "Hi, I'm building a web scraper in Python.",
        "What library should I use for parsing HTML?",
        "Can you show me a quick example?",
    ]
    transcript = []
    for msg in messages:
        reply, tokens = "", 0
        for event in client.sessions.continue_stream(
            agent=agent_name, session_id=session.session_id, input=msg
        ):
            if event.type == "token":
                reply += event.content
            elif event.type == "done":
                tokens = event.usage.total_tokens
        transcript.append((reply, tokens))
    assert [reply for reply, _ in transcript] == [f"echo: {m}" for m in messages]
    # Each turn carries the growing history, so the prompt (and the total) grows.
    totals = [tokens for _, tokens in transcript]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    assert client.sessions.list(agent=agent_name)[0].turns == 3


def test_async_and_sync_share_a_session(live_gateway: LiveGateway, client: GatewayClient) -> None:
    session = client.sessions.create(agent="assistant")

    async def second_turn() -> str:
        async with AsyncGatewayClient(base_url=live_gateway.url, api_key=API_KEY) as aclient:
            reply = await aclient.sessions.continue_(session.session_id, "two")
            return reply.output

    client.sessions.continue_(session.session_id, "one")
    assert asyncio.run(second_turn()) == "echo: two"
    assert [m.content for m in client.sessions.get(session.session_id).messages] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
    ]
