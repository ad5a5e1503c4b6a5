"""Busy policies, observed in what the model received (fake OpenAI server) and on the bus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gateway.core.bus.inbound import read_cursor
from gateway.core.events import RunCompleted, RunFailed, TextDelta
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import AgentSettings
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
)


def user_texts(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


async def test_followup_runs_one_turn_per_message_in_order(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, policy="followup")
    key = session_key("f")
    for text in ("a", "b", "c"):
        await send(redis, settings, "f", text)
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.runs_ended(3)
    assert [user_texts(r) for r in fake_model.requests] == [["a"], ["a", "b"], ["a", "b", "c"]]
    assert transcript.replies(key) == ["echo: a", "echo: b", "echo: c"]


async def test_collect_runs_everything_pending_in_one_turn(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, policy="collect")
    key = session_key("c")
    ids = [await send(redis, settings, "c", text) for text in ("a", "b", "c")]
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.runs_ended(1)
    assert len(fake_model.requests) == 1
    assert user_texts(fake_model.requests[0]) == ["a", "b", "c"]
    assert transcript.terminals(key)[0].run_id == ids[-1]
    assert await read_cursor(redis, key) == ids[-1]


async def test_steer_injects_a_message_between_model_calls(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, policy="steer")
    key = session_key("s")
    # The first answer calls a tool (unknown here: an error result), so a second model
    # call follows; it is slow enough for the second message to arrive meanwhile.
    fake_model.script(
        Reply(text="looking", tool_calls=[("lookup", {})], chunk_delay_s=0.05, chunk_size=1),
        Reply(text="done with both"),
    )
    first = await send(redis, settings, "s", "first")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.until(lambda t: any(isinstance(e, TextDelta) for e in t.events[key]))
        second = await send(redis, settings, "s", "second")
        await transcript.runs_ended(1)
    assert len(fake_model.requests) == 2
    assert user_texts(fake_model.requests[0]) == ["first"]
    assert user_texts(fake_model.requests[1]) == ["first", "second"]
    assert [e.run_id for e in transcript.terminals(key)] == [first]
    assert transcript.replies(key) == ["done with both"]
    assert await read_cursor(redis, key) == second  # the steered message is committed too
    session = await RedisSessionStore(redis).load(key)
    assert session is not None
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["first", "second"]


async def test_interrupt_cancels_the_running_turn_and_starts_over(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, policy="interrupt")
    key = session_key("i")
    fake_model.script(Reply(text="a long answer " * 20, chunk_delay_s=0.05, chunk_size=4))
    first = await send(redis, settings, "i", "first")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.until(lambda t: any(isinstance(e, TextDelta) for e in t.events[key]))
        second = await send(redis, settings, "i", "second")
        await transcript.runs_ended(2)
    ends = transcript.terminals(key)
    assert isinstance(ends[0], RunFailed) and ends[0].run_id == first
    assert ends[0].result is not None and ends[0].result.stop_reason == "interrupted"
    assert isinstance(ends[1], RunCompleted) and ends[1].run_id == second
    assert user_texts(fake_model.requests[-1]) == ["first", "second"]
    assert ends[1].content == "echo: second"
    session = await RedisSessionStore(redis).load(key)
    assert session is not None
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["first", "second"]


async def test_backlog_cap_drops_the_oldest_and_tells_the_chat(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model, policy="collect", max_backlog=2)
    key = session_key("b")
    ids = [await send(redis, settings, "b", f"m{i}") for i in range(5)]
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.runs_ended(2)
    notice, turn = transcript.terminals(key)
    assert isinstance(notice, RunCompleted) and notice.run_id == ids[2]
    assert notice.metadata["notice"] == "backlog_dropped"
    assert notice.metadata["dropped_ids"] == ids[:3]
    assert "3 earlier messages were not processed" in notice.content
    assert "“m2”" in notice.content
    assert len(fake_model.requests) == 1
    assert user_texts(fake_model.requests[0]) == ["m3", "m4"]
    assert turn.run_id == ids[4]
    assert await read_cursor(redis, key) == ids[4]


async def test_interrupt_ignores_messages_already_pending_for_another_agent(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    coder = AgentSettings(system_prompt="code", tools=[], busy_policy="interrupt")
    settings = bus_settings(
        tmp_path, fake=fake_model, policy="interrupt", extra_agents={"coder": coder}
    )
    key = session_key("two")
    first = await send(redis, settings, "two", "for the assistant")
    second = await send(redis, settings, "two", "for the coder", agent="coder")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.runs_ended(2)
    ends = transcript.terminals(key)
    assert [type(e) for e in ends] == [RunCompleted, RunCompleted]
    assert [e.run_id for e in ends] == [first, second]
    assert [r["messages"][0]["content"] for r in fake_model.requests] == ["sys", "code"]


async def test_a_message_for_another_agent_does_not_interrupt_the_running_turn(
    redis: Redis, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    """Interrupting would only re-run the same batch (the other agent's message cannot
    join it), and the run would end twice under one run id."""
    coder = AgentSettings(system_prompt="code", tools=[], busy_policy="interrupt")
    settings = bus_settings(
        tmp_path, fake=fake_model, policy="interrupt", extra_agents={"coder": coder}
    )
    key = session_key("other")
    fake_model.script(Reply(text="a long answer " * 10, chunk_delay_s=0.05, chunk_size=4))
    first = await send(redis, settings, "other", "for the assistant")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        await transcript.until(lambda t: any(isinstance(e, TextDelta) for e in t.events[key]))
        second = await send(redis, settings, "other", "for the coder", agent="coder")
        await transcript.runs_ended(2)
    ends = transcript.terminals(key)
    assert [(type(e), e.run_id) for e in ends] == [(RunCompleted, first), (RunCompleted, second)]
