"""Every example of seed 000 (the SDK surface), with our names, against the fake model server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway import (
    STREAM_EVENT_RUN_COMPLETED,
    STREAM_EVENT_RUN_FAILED,
    STREAM_EVENT_TEXT_DELTA,
    STREAM_EVENT_TOOL_STARTED,
    Bot,
)
from gateway.agent import AgentHook, AgentHookContext
from tests.fakes.openai_server import FakeModelServer, Reply

pytestmark = pytest.mark.integration


async def test_ask_one_question(gateway_home: Path) -> None:
    async with Bot.from_config() as bot:
        result = await bot.run("What time is it in Tokyo?")
        assert result.content == "echo: What time is it in Tokyo?"


async def test_inspect_what_happened(gateway_home: Path) -> None:
    async with Bot.from_config() as bot:
        result = await bot.run("Review this repository")
    assert result.content
    assert result.tools_used == []
    assert (
        result.usage["total_tokens"]
        == result.usage["prompt_tokens"] + result.usage["completion_tokens"]
    )
    assert result.stop_reason == "completed"


async def test_continue_a_conversation(gateway_home: Path, fake_model: FakeModelServer) -> None:
    async with Bot.from_config() as bot:
        await bot.run("My name is Alice.", session_key="user:alice")
        fake_model.script(Reply(text="Your name is Alice."))
        result = await bot.run("What is my name?", session_key="user:alice")
        await bot.run("hi", session_key="user:bob")
    assert result.content == "Your name is Alice."
    sent = [m["content"] for m in fake_model.requests[1]["messages"]]
    assert "My name is Alice." in sent and "echo: My name is Alice." in sent
    bob_sent = [m["content"] for m in fake_model.requests[2]["messages"]]
    assert "My name is Alice." not in bob_sent


async def test_stream_a_long_answer(gateway_home: Path, fake_model: FakeModelServer) -> None:
    fake_model.script(Reply(text="Step one. Step two. Step three.", chunk_size=5))
    deltas = []
    async with Bot.from_config() as bot:
        async for event in bot.stream("Write a migration plan"):
            if event.type == STREAM_EVENT_TEXT_DELTA:
                deltas.append(event.delta)
    assert len(deltas) > 1
    assert "".join(deltas) == "Step one. Step two. Step three."


async def test_complete_starter_script(
    gateway_home: Path, fake_model: FakeModelServer, workspace: Path
) -> None:
    (workspace / "README.md").write_text("hello")
    fake_model.script(
        Reply(tool_calls=[("list_dir", {"path": "."})]),
        Reply(text="Here are the top-level files I found: README.md"),
    )
    seen_tools: list[str] = []
    final_result = None
    async with Bot.from_config() as bot:
        assert bot.runtime.model == "local/fake-model"
        assert bot.runtime.workspace == workspace.resolve()
        async for event in bot.stream("List the top-level files", session_key="sdk:demo"):
            if event.type == STREAM_EVENT_TOOL_STARTED:
                seen_tools.append(event.name)
            elif event.type == STREAM_EVENT_RUN_COMPLETED:
                final_result = event.result
            elif event.type == STREAM_EVENT_RUN_FAILED:
                raise RuntimeError(event.error or "run failed")
    assert seen_tools == ["list_dir"]
    assert final_result is not None
    assert final_result.stop_reason == "completed"
    assert final_result.tools_used == ["list_dir"]
    tool_result = fake_model.requests[1]["messages"][-1]
    assert tool_result["role"] == "tool" and "README.md" in tool_result["content"]


async def test_specific_config_and_workspace(
    sdk_config: Path, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    other = tmp_path / "bot-a" / "workspace"
    async with Bot.from_config(config_path=sdk_config, workspace=other) as bot:
        result = await bot.run("Hello from bot A")
        assert bot.runtime.workspace == other.resolve()
    assert result.content == "echo: Hello from bot A"
    assert (other / "sessions").is_dir()


async def test_default_and_per_run_model(sdk_config: Path, fake_model: FakeModelServer) -> None:
    bot = Bot.from_config(sdk_config, model="openai/gpt-4.1")
    try:
        await bot.run("Summarize this file", model="openai/gpt-4.1-mini")
        assert bot.runtime.model == "openai/gpt-4.1"
        await bot.run("again")
    finally:
        await bot.aclose()
    assert [r["model"] for r in fake_model.requests] == ["gpt-4.1-mini", "gpt-4.1"]
    async with Bot.from_config(sdk_config, model_preset="fast") as bot:
        await bot.run("Think deeply about this bug", model_preset="reasoning")
        await bot.run("and now fast")
    assert fake_model.requests[2]["model"] == "reasoner"
    assert fake_model.requests[3]["model"] == "fake-model"
    assert fake_model.requests[3]["temperature"] == 0.2
    assert fake_model.requests[3]["max_tokens"] == 512


async def test_model_and_preset_are_exclusive(sdk_config: Path) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        Bot.from_config(sdk_config, model="a/b", model_preset="fast")
    async with Bot.from_config(sdk_config) as bot:
        with pytest.raises(ValueError, match="mutually exclusive"):
            await bot.run("x", model="a/b", model_preset="fast")


async def test_missing_explicit_config_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Bot.from_config(tmp_path / "nope.yaml")


async def test_handle_failures(gateway_home: Path, fake_model: FakeModelServer) -> None:
    fake_model.script(Reply(status=400, error_message="bad model"))
    async with Bot.from_config() as bot:
        result = await bot.run("Review this repo", session_key="project:demo")
    assert result.error and "bad model" in result.error
    assert result.stop_reason == "error"


async def test_run_streamed_and_cancel(gateway_home: Path, fake_model: FakeModelServer) -> None:
    fake_model.script(Reply(text="a long answer that never ends", hang=True))
    async with Bot.from_config() as bot:
        run = await bot.run_streamed("Write a long answer", session_key="task:123")
        try:
            async for event in run.stream_events():
                if event.type == STREAM_EVENT_TEXT_DELTA:
                    break
        finally:
            if not run.done:
                await run.aclose()
        assert run.done
        result = await run.wait()
        assert result.stop_reason == "cancelled"
        await fake_model.wait_streams_closed()
        assert bot.sessions.get("task:123") is None  # a cancelled turn is not persisted


async def test_run_streamed_wait(gateway_home: Path) -> None:
    async with Bot.from_config() as bot:
        run = await bot.run_streamed("Write a detailed migration plan")
        deltas = [e.delta async for e in run.stream_events() if e.type == STREAM_EVENT_TEXT_DELTA]
        result = await run.wait()
        assert "".join(deltas) == result.content == "echo: Write a detailed migration plan"
        run2 = await bot.run_streamed("just wait")
        assert await run2.text() == "echo: just wait"


async def test_import_an_existing_transcript(
    gateway_home: Path, fake_model: FakeModelServer
) -> None:
    async with Bot.from_config() as bot:
        await bot.sessions.ingest(
            "eval:case-1",
            [
                {
                    "role": "user",
                    "content": "I graduated with a degree in Business Administration.",
                    "timestamp": "2023/05/30 (Tue) 17:27",
                    "source_session_id": "answer_280352e9",
                },
                {
                    "role": "assistant",
                    "content": "Congratulations on your degree.",
                    "timestamp": "2023/05/30 (Tue) 17:27",
                },
            ],
            source="longmemeval",
        )
        assert fake_model.requests == []  # ingest never calls the model
        await bot.runtime.compact_session("eval:case-1")
        await bot.run(
            "Current Date: 2023/05/30 (Tue) 23:40\nQuestion: What degree did I graduate with?",
            session_key="eval:case-1",
        )
        snapshot = bot.sessions.export("eval:case-1")
    sent = fake_model.requests[-1]["messages"]
    assert any("Business Administration" in str(m.get("content")) for m in sent)
    assert all(set(m) <= {"role", "content", "name", "tool_call_id", "tool_calls"} for m in sent)
    first = snapshot.messages[0]
    assert first["metadata"]["source_session_id"] == "answer_280352e9"
    assert first["metadata"]["source"] == "longmemeval"


class AuditHook(AgentHook):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def before_execute_tools(self, context: AgentHookContext) -> None:
        for tc in context.tool_calls:
            self.calls.append(tc.name)
            print(f"[audit] {tc.name}({tc.arguments})")


class StreamingHook(AgentHook):
    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.ends: list[bool] = []

    def wants_streaming(self) -> bool:
        return True

    async def on_stream(self, context: AgentHookContext, delta: str) -> None:
        self.deltas.append(delta)

    async def on_stream_end(self, context: AgentHookContext, *, resuming: bool) -> None:
        self.ends.append(resuming)


class Censor(AgentHook):
    def finalize_content(self, context, content):  # type: ignore[no-untyped-def]
        return content.replace("secret", "***") if content else content


class TimingHook(AgentHook):
    def __init__(self) -> None:
        super().__init__()
        self._started_at = 0.0
        self.timings: list[float] = []

    async def before_iteration(self, context: AgentHookContext) -> None:
        self._started_at = time.perf_counter()

    async def after_iteration(self, context: AgentHookContext) -> None:
        self.timings.append((time.perf_counter() - self._started_at) * 1000)


class BrokenHook(AgentHook):
    async def before_iteration(self, context: AgentHookContext) -> None:
        raise RuntimeError("this hook is broken")


async def test_hooks(gateway_home: Path, fake_model: FakeModelServer, workspace: Path) -> None:
    fake_model.script(
        Reply(text="Let me look.", tool_calls=[("list_dir", {"path": "."})]),
        Reply(text="the secret is out"),
    )
    audit, streaming, timing = AuditHook(), StreamingHook(), TimingHook()
    async with Bot.from_config(workspace=workspace) as bot:
        result = await bot.run(
            "List files in the workspace",
            hooks=[BrokenHook(), audit, streaming, Censor(), timing],
        )
    assert audit.calls == ["list_dir"]
    assert "".join(streaming.deltas) == "Let me look.the secret is out"
    assert streaming.ends == [True, False]
    assert result.content == "the *** is out"
    assert len(timing.timings) == 2


async def test_full_example(sdk_config: Path, tmp_path: Path) -> None:
    hook = TimingHook()
    async with Bot.from_config(sdk_config, workspace=tmp_path / "project") as bot:
        result = await bot.run("Explain the main function", session_key="sdk:demo", hooks=[hook])
    assert result.content == "echo: Explain the main function"
    assert len(hook.timings) == 1
