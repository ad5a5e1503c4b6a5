"""The SDK beyond the seed examples: concurrency, ordering, persistence, corruption, helpers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway import Bot
from gateway.core.sessions.file import FileSessionStore
from tests.conftest import write_config
from tests.fakes.openai_server import FakeModelServer, Reply

pytestmark = pytest.mark.integration


async def test_concurrent_runs_on_many_sessions(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        results = await asyncio.gather(
            *(bot.run(f"hello {i}", session_key=f"user:{i}") for i in range(60))
        )
        assert [r.content for r in results] == [f"echo: hello {i}" for i in range(60)]
        assert len(bot.sessions.list()) == 60
        for i in (0, 31, 59):
            snapshot = bot.sessions.get(f"user:{i}")
            assert snapshot is not None
            assert [m["content"] for m in snapshot.messages] == [f"hello {i}", f"echo: hello {i}"]


async def test_runs_on_one_key_are_serialized_in_order(
    sdk_config: Path, fake_model: FakeModelServer
) -> None:
    fake_model.script(*(Reply(text=f"answer {i}", chunk_delay_s=0.002) for i in range(8)))
    async with Bot.from_config(sdk_config) as bot:
        await asyncio.gather(*(bot.run(f"q{i}", session_key="same") for i in range(8)))
        snapshot = bot.sessions.export("same")
    contents = [m["content"] for m in snapshot.messages]
    assert contents == [x for i in range(8) for x in (f"q{i}", f"answer {i}")]
    # Each request saw the full history of the turns before it.
    assert [len(r["messages"]) for r in fake_model.requests] == [2 + 2 * i for i in range(8)]


async def test_ephemeral_runs_are_not_persisted(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.run("remember me", session_key="k")
        result = await bot.run("forget me", session_key="k", ephemeral=True)
        assert result.content == "echo: forget me"
        snapshot = bot.sessions.export("k")
    assert [m["content"] for m in snapshot.messages] == ["remember me", "echo: remember me"]


async def test_workspace_escape_is_refused_to_the_model(
    sdk_config: Path, fake_model: FakeModelServer, tmp_path: Path
) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("top secret")
    fake_model.script(
        Reply(tool_calls=[("read_file", {"path": "../outside.txt"})]),
        Reply(tool_calls=[("read_file", {"path": str(secret)})]),
        Reply(text="I may not read that."),
    )
    async with Bot.from_config(sdk_config) as bot:
        result = await bot.run("read the secret")
    assert result.content == "I may not read that."
    tool_answers = [r["messages"][-1]["content"] for r in fake_model.requests[1:]]
    assert all(a.startswith("Error:") and "top secret" not in a for a in tool_answers)
    assert all("workspace" in a for a in tool_answers)


async def test_corrupt_session_file_is_recovered(sdk_config: Path, workspace: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.run("first", session_key="broken")
        await bot.run("other", session_key="healthy")
    store = FileSessionStore(workspace.resolve() / "sessions")
    path = store.path_for("broken")
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{this is not json\n")
    async with Bot.from_config(sdk_config) as bot:
        result = await bot.run("second", session_key="broken")
        assert result.content == "echo: second"
        snapshot = bot.sessions.export("broken")
        assert [m["content"] for m in snapshot.messages][-2:] == ["second", "echo: second"]
        assert bot.sessions.export("healthy").messages[0]["content"] == "other"
    assert list(path.parent.glob("*.corrupt-*"))


async def test_session_helpers(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.run("a", session_key="x")
        await bot.run("b", session_key="y")
        assert sorted(i.key for i in bot.sessions.list()) == ["x", "y"]
        exported = bot.sessions.export("x")
        json.loads(exported.model_dump_json())
        bot.sessions.clear("x")
        assert bot.sessions.export("x").messages == []
        assert bot.sessions.delete("y") is True
        assert bot.sessions.get("y") is None
        assert bot.sessions.delete("y") is False
        with pytest.raises(KeyError):
            bot.sessions.export("y")
        bot.sessions.flush()
        with pytest.raises(ValueError, match=r"messages\[0\].role"):
            await bot.sessions.ingest("z", [{"role": "robot", "content": "beep"}])


async def test_memory_helpers_and_prompt(sdk_config: Path, fake_model: FakeModelServer) -> None:
    async with Bot.from_config(sdk_config) as bot:
        bot.memory.write("The user prefers metric units.")
        assert bot.memory.read() == "The user prefers metric units."
        first = bot.memory.append_history("met Alice", session_key="a")
        second = bot.memory.append_history("met Bob")
        assert second == first + 1
        assert [h["text"] for h in bot.memory.read_history("a")] == ["met Alice"]
        assert len(bot.memory.read_history()) == 2
        await bot.run("how far?")
    system = fake_model.requests[0]["messages"][0]
    assert system["role"] == "system" and "metric units" in system["content"]


async def test_idle_compaction_summarizes_with_the_model(
    sdk_config: Path, fake_model: FakeModelServer
) -> None:
    async with Bot.from_config(sdk_config) as bot:
        for i in range(6):
            await bot.run(f"fact {i}", session_key="long")
        fake_model.script(Reply(text="SUMMARY: facts 0-3"))
        summary = await bot.runtime.compact_idle_session("long", max_suffix=4)
        assert summary == "SUMMARY: facts 0-3"
        snapshot = bot.sessions.export("long")
        assert len(snapshot.messages) == 4 and snapshot.summary == summary
        await bot.run("next", session_key="long")
    assert "SUMMARY: facts 0-3" in fake_model.requests[-1]["messages"][0]["content"]


async def test_compact_session_only_over_budget(
    sdk_config: Path, fake_model: FakeModelServer
) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await bot.run("short", session_key="tiny")
        assert await bot.runtime.compact_session("tiny") == ""
        long_text = "word " * 40_000  # ~50k estimated tokens, over the 32k default budget
        await bot.sessions.ingest(
            "big",
            [{"role": "user", "content": long_text}] * 3
            + [{"role": "assistant", "content": "ok"}] * 9,
        )
        fake_model.script(Reply(text="SUMMARY: big"))
        assert await bot.runtime.compact_session("big") == "SUMMARY: big"
        assert len(bot.sessions.export("big").messages) == 8


async def test_failed_compaction_still_saves_the_completed_turn(
    tmp_path: Path, fake_model: FakeModelServer, workspace: Path
) -> None:
    agent = {"system_prompt": "You are helpful.", "history_token_budget": 256}
    config = write_config(
        tmp_path / "small-budget.yaml", fake_model, workspace, agents={"assistant": agent}
    )
    fake_model.script(
        Reply(text="the answer"), Reply(status=400, error_message="context length exceeded")
    )
    async with Bot.from_config(config) as bot:
        await bot.sessions.ingest("full", [{"role": "user", "content": "word " * 100}] * 10)
        result = await bot.run("question", session_key="full")
        assert result.content == "the answer" and result.error is None
        snapshot = bot.sessions.export("full")
    assert len(fake_model.requests) == 2  # the turn, then the summary request that failed
    assert [m["content"] for m in snapshot.messages][-2:] == ["question", "the answer"]
    assert len(snapshot.messages) == 12 and snapshot.summary == ""


async def test_per_run_overrides_are_safe_concurrently(
    sdk_config: Path, fake_model: FakeModelServer
) -> None:
    async with Bot.from_config(sdk_config) as bot:
        await asyncio.gather(
            *(
                bot.run(f"m{i}", session_key=f"s{i}", model=f"local/model-{i % 3}")
                for i in range(12)
            )
        )
        assert bot.runtime.model == "local/fake-model"
    by_text = {r["messages"][-1]["content"]: r["model"] for r in fake_model.requests}
    assert by_text == {f"m{i}": f"model-{i % 3}" for i in range(12)}


async def test_run_options_are_keywords_and_typos_are_refused(sdk_config: Path) -> None:
    async with Bot.from_config(sdk_config) as bot:
        result = await bot.run("positional key", "user:p", sender_id="alice")
        assert result.content == "echo: positional key"
        assert bot.sessions.get("user:p") is not None
        with pytest.raises(TypeError, match="sesion_key"):
            await bot.run("typo", sesion_key="user:q")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="chanel"):
            await bot.run_streamed("typo", chanel="web")  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="mutually exclusive"):
            async for _ in bot.stream("both", model="local/fake-model", model_preset="fast"):
                pass
        assert bot.sessions.get("sdk:default") is None
