"""The agent loop on an in-process scripted model: events, tools, limits, cancellation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.core.events import RunCompleted, RunFailed, StreamEvent
from gateway.core.hooks import CompositeHook
from gateway.core.loop import LoopSpec, run_loop
from gateway.core.messages import Message
from gateway.core.providers.base import ModelSpec, TextChunk
from gateway.core.tools.base import ToolContext, ToolRegistry, tool
from tests.fakes.scripted_model import ScriptedModel, call, text


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def explode() -> str:
    """Always fails."""
    raise RuntimeError("kaboom")


@tool
async def slow() -> str:
    """Never finishes on its own."""
    await asyncio.sleep(3600)
    return "unreachable"


def spec(tmp_path: Path, **kw: object) -> LoopSpec:
    base: dict[str, object] = {
        "run_id": "r1",
        "session_key": "s",
        "models": [ModelSpec(provider="fake", model="m")],
        "tools": ToolRegistry([add, explode, slow]),
        "tool_context": ToolContext(session_key="s", run_id="r1", workspace=tmp_path),
    }
    base.update(kw)
    return LoopSpec(**base)  # type: ignore[arg-type]


async def collect(model: ScriptedModel, loop_spec: LoopSpec) -> list[StreamEvent]:
    user: list[Message] = [{"role": "user", "content": "hi"}]
    return [e async for e in run_loop(model, list(user), user, loop_spec)]


async def test_text_run_events_in_order(tmp_path: Path) -> None:
    model = ScriptedModel([TextChunk(delta="Hel"), TextChunk(delta="lo")])
    events = await collect(model, spec(tmp_path))
    assert [e.type for e in events] == [
        "run.started",
        "text.delta",
        "text.delta",
        "text.completed",
        "run.completed",
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert all(e.run_id == "r1" for e in events)
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.result.content == "Hello"
    assert final.result.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert [m["role"] for m in final.result.messages] == ["user", "assistant"]


async def test_tool_call_result_goes_back_to_model(tmp_path: Path) -> None:
    model = ScriptedModel(call("add", '{"a": 2, "b": 3}'), text("five"))
    events = await collect(model, spec(tmp_path))
    kinds = [e.type for e in events]
    assert kinds.index("tool.started") < kinds.index("tool.completed")
    assert model.calls[1][-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "name": "add",
        "content": "5",
    }
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.result.tools_used == ["add"]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (call("explode"), "kaboom"),
        (call("nope"), "unknown tool 'nope'"),
        (call("add", "{not json"), "not valid JSON"),
        (call("add", '{"a": "x", "b": 1}'), "a"),
    ],
)
async def test_tool_errors_become_error_results(
    tmp_path: Path, step: list[TextChunk], expected: str
) -> None:
    model = ScriptedModel(step, text("recovered"))  # type: ignore[arg-type]
    events = await collect(model, spec(tmp_path))
    failed = [e for e in events if e.type == "tool.failed"]
    assert len(failed) == 1 and expected in failed[0].error
    assert model.calls[1][-1]["content"].startswith("Error: ")
    assert isinstance(events[-1], RunCompleted)
    assert events[-1].result.content == "recovered"


async def test_max_iterations(tmp_path: Path) -> None:
    model = ScriptedModel(*[call("add", '{"a":1,"b":1}') for _ in range(5)])
    events = await collect(model, spec(tmp_path, max_iterations=3))
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert final.result.stop_reason == "max_iterations"
    assert len(model.calls) == 3


async def test_timeout_in_model_stream(tmp_path: Path) -> None:
    model = ScriptedModel(None)
    events = await collect(model, spec(tmp_path, timeout_s=0.05))
    final = events[-1]
    assert isinstance(final, RunFailed)
    assert final.result is not None and final.result.stop_reason == "timeout"
    assert model.closed == 1


async def test_timeout_in_tool(tmp_path: Path) -> None:
    model = ScriptedModel(call("slow"))
    events = await collect(model, spec(tmp_path, timeout_s=0.05))
    assert isinstance(events[-1], RunFailed)
    assert "timed out" in events[-1].error


async def test_cancel_stops_model_stream(tmp_path: Path) -> None:
    model = ScriptedModel(None)
    user: list[Message] = [{"role": "user", "content": "hi"}]
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in run_loop(model, list(user), user, spec(tmp_path)):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.closed == 1


async def test_steering_messages_join_between_model_calls(tmp_path: Path) -> None:
    class Inbox:
        def __init__(self) -> None:
            self.pending: list[Message] = []

        def drain(self) -> list[Message]:
            out, self.pending = self.pending, []
            return out

    inbox = Inbox()
    model = ScriptedModel(call("add", '{"a":1,"b":2}'), text("ok"))

    class Steer(CompositeHook):
        async def after_iteration(self, context: object) -> None:
            inbox.pending.append({"role": "user", "content": "also this"})

    events = await collect(model, spec(tmp_path, steering=inbox, hooks=Steer(())))
    assert model.calls[1][-1] == {"role": "user", "content": "also this"}
    final = events[-1]
    assert isinstance(final, RunCompleted)
    assert {"role": "user", "content": "also this"} in final.result.messages
