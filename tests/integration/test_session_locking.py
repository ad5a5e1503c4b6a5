"""Session edits and turns on one key: no lost race, no deadlock (real files, fake model server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from gateway import Bot
from gateway.core.errors import SessionLockReentryError
from gateway.core.events import RunStarted, StreamEvent
from gateway.core.hooks import AgentHook, AgentHookContext
from gateway.core.runs import RunStream
from gateway.core.runtime import AgentRuntime, TurnRequest
from gateway.core.sessions.file import FileSessionStore
from gateway.core.settings import load_settings
from tests.fakes.openai_server import FakeModelServer, Reply

pytestmark = pytest.mark.integration

OLD = [{"role": "user", "content": "old question"}, {"role": "assistant", "content": "old answer"}]


class Gate(AgentHook):
    """Holds the run at its first model call until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def before_iteration(self, context: AgentHookContext) -> None:
        self.reached.set()
        await self.release.wait()


async def gated_run(bot: Bot, text: str, key: str = "k") -> tuple[RunStream, Gate]:
    """A run on ``key`` started and held at its first model call."""
    gate = Gate()
    run = await bot.run_streamed(text, session_key=key, hooks=[gate])
    await gate.reached.wait()
    return run, gate


def contents(bot: Bot, key: str) -> list[str]:
    snapshot = bot.sessions.get(key)
    assert snapshot is not None
    return [str(m["content"]) for m in snapshot.messages]


@pytest.fixture
async def runtime(sdk_config: Path, workspace: Path) -> AsyncIterator[AgentRuntime]:
    store = FileSessionStore(workspace.resolve() / "sessions")
    rt = AgentRuntime(load_settings(sdk_config, required=True), store=store, workspace=workspace)
    yield rt
    await rt.aclose()


def turn(text: str, key: str = "k", *hooks: AgentHook) -> TurnRequest:
    return TurnRequest(session_key=key, messages=[{"role": "user", "content": text}], hooks=hooks)


# -- bot.sessions.clear / delete during a turn -----------------------------------


async def test_clear_during_a_run_does_not_bring_the_old_history_back(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.sessions.ingest("k", OLD)
        run, gate = await gated_run(bot, "new question")
        bot.sessions.clear("k")
        assert contents(bot, "k") == []
        gate.release.set()
        assert (await run.wait()).content == "echo: new question"
        # The turn belonged to the history that was cleared: nothing of it comes back.
        assert contents(bot, "k") == []
        await bot.run("after", session_key="k")
        assert contents(bot, "k") == ["after", "echo: after"]


async def test_delete_during_a_run_does_not_recreate_the_session(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.sessions.ingest("k", OLD)
        run, gate = await gated_run(bot, "new question")
        assert bot.sessions.delete("k") is True
        gate.release.set()
        await run.wait()
        assert bot.sessions.get("k") is None


async def test_aclear_and_adelete_wait_for_the_running_turn(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.sessions.ingest("k", OLD)
        run, gate = await gated_run(bot, "new question")
        clearing = asyncio.create_task(bot.sessions.aclear("k"))
        await asyncio.sleep(0)
        assert not clearing.done()  # queued behind the turn, which holds the session
        gate.release.set()
        await clearing
        await run.wait()
        assert contents(bot, "k") == []

        run, gate = await gated_run(bot, "again")
        deleting = asyncio.create_task(bot.sessions.adelete("k"))
        await asyncio.sleep(0)
        assert not deleting.done()
        gate.release.set()
        assert await deleting is True
        await run.wait()
        assert bot.sessions.get("k") is None


# -- no lock across a yield --------------------------------------------------------


@pytest.mark.timeout(20)  # today's failure mode is a hang: fail instead of waiting 120 s
async def test_compact_session_inside_the_event_loop_of_a_turn(
    runtime: AgentRuntime, fake_model: FakeModelServer
) -> None:
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(10)
    ]
    await runtime.run(turn("seed"))  # creates the session
    session = await runtime.store.load("k")
    assert session is not None
    session.messages[:] = history
    await runtime.store.save(session)
    fake_model.script(Reply(text="the answer"), Reply(text="SUMMARY"))
    summaries: list[str] = []
    async with aclosing(runtime.stream(turn("question"))) as events:
        async for event in events:
            if isinstance(event, RunStarted):
                # Waits for the turn to end (it holds the session), not for this loop.
                summaries.append(await runtime.compact_session("k", keep_last=2))
    assert summaries == ["SUMMARY"]
    saved = await runtime.store.load("k")
    assert saved is not None and saved.summary == "SUMMARY"
    assert [m["content"] for m in saved.messages] == ["question", "the answer"]
    # The turn's request came first, then the summary of what came before the turn.
    asked, summarized = (r["messages"][-1]["content"] for r in fake_model.requests[1:])
    assert asked == "question" and summarized.endswith("[assistant] m9")


@pytest.mark.timeout(20)
async def test_a_hook_that_takes_its_own_sessions_lock_gets_an_error_not_a_hang(
    runtime: AgentRuntime,
) -> None:
    errors: list[BaseException] = []

    class Compacting(AgentHook):
        async def before_iteration(self, context: AgentHookContext) -> None:
            try:
                await runtime.compact_session(context.session_key)
            except SessionLockReentryError as exc:
                errors.append(exc)

    result = await runtime.run(turn("hi", "k", Compacting()))
    assert result.content == "echo: hi"
    assert len(errors) == 1 and "'k'" in str(errors[0])
    # Another key is not the turn's own: it is allowed from inside the turn.
    other = await runtime.run(turn("hi", "other", Compacting()))
    assert other.content == "echo: hi"


async def test_closing_the_stream_cancels_the_turn_and_frees_the_session(
    runtime: AgentRuntime, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(text="a long answer that never ends", hang=True))
    seen: list[StreamEvent] = []
    events = runtime.stream(turn("question"))
    async for event in events:
        seen.append(event)
        if event.type == "text.delta":
            break
    await events.aclose()
    # aclose returns once the turn has stopped: its lock is gone, its model stream closed.
    assert len(runtime.locks) == 0
    await fake_model.wait_streams_closed()
    assert await runtime.store.load("k") is None
    assert (await runtime.run(turn("next"))).content == "echo: next"


async def test_turns_on_one_key_keep_their_start_order(
    runtime: AgentRuntime, fake_model: FakeModelServer
) -> None:
    runs = [runtime.start(turn(f"q{i}")) for i in range(5)]
    results = [await run.wait() for run in reversed(runs)]
    assert [r.content for r in reversed(results)] == [f"echo: q{i}" for i in range(5)]
    saved = await runtime.store.load("k")
    assert saved is not None
    assert [m["content"] for m in saved.messages][::2] == [f"q{i}" for i in range(5)]


async def test_cancelling_the_caller_of_run_cancels_the_turn(
    runtime: AgentRuntime, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(text="never finished", hang=True))

    class FirstDelta(AgentHook):
        def __init__(self) -> None:
            super().__init__()
            self.seen = asyncio.Event()

        def wants_streaming(self) -> bool:
            return True

        async def on_stream(self, context: AgentHookContext, delta: str) -> None:
            self.seen.set()

    hook = FirstDelta()
    caller = asyncio.create_task(runtime.run(turn("question", "k", hook)))
    await hook.seen.wait()  # the model is streaming, and will not finish by itself
    caller.cancel()
    await asyncio.wait((caller,))
    assert caller.cancelled()
    assert len(runtime.locks) == 0  # the turn stopped before the caller's cancellation ended
    await fake_model.wait_streams_closed()
    assert (await runtime.run(turn("next"))).content == "echo: next"
