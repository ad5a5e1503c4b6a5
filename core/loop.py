"""The one agent loop: an async generator of typed events.

Streaming is the primitive; ``AgentRuntime.run`` and the SDK's ``Bot.run`` collect
this stream, and the bus worker publishes it. There is no second copy of the loop.

Limits: ``max_iterations`` ends the run with stop_reason ``max_iterations``; a
wall-clock deadline ends it with ``timeout`` (checked around every model chunk and
tool batch, never across a ``yield`` so the consumer is never cancelled by it);
closing the generator or cancelling its task stops the model stream and running
tools at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.errors import PermanentProviderError, ProviderError, ToolError
from gateway.core.events import (
    ReasoningCompleted,
    ReasoningDelta,
    RunCompleted,
    RunEmitter,
    RunFailed,
    RunResult,
    RunStarted,
    StopReason,
    StreamEvent,
    TextCompleted,
    TextDelta,
    ToolCompleted,
    ToolFailed,
    ToolStarted,
)
from gateway.core.hooks import AgentHookContext, CompositeHook
from gateway.core.messages import Message
from gateway.core.providers.base import ModelSpec, ProviderChunk, ToolCallChunk
from gateway.core.tokens import estimate_message_tokens, estimate_tokens
from gateway.core.tools.base import ToolContext, ToolRegistry, truncate_result


class SteeringInbox(Protocol):
    """Messages that arrive while a turn runs (busy policy ``steer``)."""

    def drain(self) -> list[Message]:
        """Non-blocking: what arrived since the last call, in order."""
        ...


class ModelStreamer(Protocol):
    def stream(
        self, chain: list[ModelSpec], messages: list[Message], tools: list[dict[str, Any]]
    ) -> AsyncGenerator[ProviderChunk, None]: ...


@dataclass(slots=True)
class LoopSpec:
    """Everything one run needs besides the prompt."""

    run_id: str
    session_key: str
    models: list[ModelSpec]
    """The failover chain; the first is the run's model."""
    tools: ToolRegistry
    tool_context: ToolContext
    max_iterations: int = 20
    timeout_s: float = 300.0
    max_result_chars: int = 32_000
    hooks: CompositeHook = field(default_factory=lambda: CompositeHook(()))
    steering: SteeringInbox | None = None


@dataclass(slots=True)
class _Turn:
    """Mutable state of one run."""

    new_messages: list[Message]
    tools_used: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    content: str = ""

    def add_usage(self, prompt: int, completion: int) -> None:
        self.usage["prompt_tokens"] = self.usage.get("prompt_tokens", 0) + prompt
        self.usage["completion_tokens"] = self.usage.get("completion_tokens", 0) + completion
        self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


async def run_loop(
    models: ModelStreamer, prompt: list[Message], new_messages: list[Message], spec: LoopSpec
) -> AsyncGenerator[StreamEvent, None]:
    """Run one turn. ``prompt`` is the full model input (system, history, then
    ``new_messages``); it is extended in place as the run goes on."""
    emit = RunEmitter(spec.run_id)
    turn = _Turn(new_messages=list(new_messages))
    ctx = AgentHookContext(session_key=spec.session_key, run_id=spec.run_id, messages=prompt)
    started = time.monotonic()
    deadline = started + spec.timeout_s
    stop: StopReason = "max_iterations"
    error: str | None = None
    permanent = False
    yield emit(RunStarted, session_key=spec.session_key, model=spec.models[0].name)
    try:
        for iteration in range(1, spec.max_iterations + 1):
            emit.iteration = ctx.iteration = iteration
            _take_steering(spec, prompt, turn)
            await spec.hooks.before_iteration(ctx)
            calls: list[ToolCallChunk] = []
            async for event in _model_step(models, prompt, spec, ctx, turn, calls, deadline, emit):
                yield event
            if not calls:
                stop = "completed"
                await spec.hooks.after_iteration(ctx)
                break
            async for event in _tool_step(calls, prompt, spec, ctx, turn, deadline, emit):
                yield event
            await spec.hooks.after_iteration(ctx)
    except TimeoutError:
        stop, error = "timeout", f"run timed out after {spec.timeout_s:g}s"
    except ProviderError as exc:
        stop, error = "error", str(exc)
        permanent = isinstance(exc, PermanentProviderError)
    ctx.stop_reason, ctx.error = stop, error
    content = spec.hooks.finalize_content(ctx, turn.content) or ""
    ctx.final_content = content
    if not turn.usage:
        turn.add_usage(estimate_message_tokens(prompt), estimate_tokens(content))
    result = RunResult(
        content=content,
        tools_used=turn.tools_used,
        messages=turn.new_messages,
        usage=turn.usage,
        stop_reason=stop,
        error=error,
        metadata={
            "latency_ms": round((time.monotonic() - started) * 1000, 3),
            "model": spec.models[0].name,
            "run_id": spec.run_id,
        },
    )
    if error is None:
        yield emit(RunCompleted, result=result, content=content, usage=turn.usage)
    else:
        yield emit(RunFailed, error=error, result=result, permanent=permanent)


def _take_steering(spec: LoopSpec, prompt: list[Message], turn: _Turn) -> None:
    if spec.steering is None:
        return
    for message in spec.steering.drain():
        prompt.append(message)
        turn.new_messages.append(message)


async def _model_step(
    models: ModelStreamer,
    prompt: list[Message],
    spec: LoopSpec,
    ctx: AgentHookContext,
    turn: _Turn,
    calls: list[ToolCallChunk],
    deadline: float,
    emit: RunEmitter,
) -> AsyncIterator[StreamEvent]:
    """One model call: stream text and reasoning out, collect tool calls into ``calls``."""
    text: list[str] = []
    reasoning: list[str] = []
    streaming_hooks = spec.hooks.wants_streaming()
    chunks = models.stream(spec.models, prompt, spec.tools.schemas() if len(spec.tools) else [])
    try:
        while True:
            async with asyncio.timeout(_remaining(deadline)):
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
            if chunk.kind == "text":
                text.append(chunk.delta)
                if streaming_hooks:
                    await spec.hooks.on_stream(ctx, chunk.delta)
                yield emit(TextDelta, delta=chunk.delta)
            elif chunk.kind == "reasoning":
                reasoning.append(chunk.delta)
                yield emit(ReasoningDelta, delta=chunk.delta)
            elif chunk.kind == "tool_call":
                calls.append(chunk)
            elif chunk.kind == "usage":
                turn.add_usage(chunk.prompt_tokens, chunk.completion_tokens)
    finally:
        await chunks.aclose()
    if reasoning:
        yield emit(ReasoningCompleted, content="".join(reasoning))
    content = "".join(text)
    ctx.response, ctx.usage, ctx.tool_calls = content, turn.usage, calls
    if content:
        turn.content = content
        yield emit(TextCompleted, content=content, resuming=bool(calls))
    if streaming_hooks:
        await spec.hooks.on_stream_end(ctx, resuming=bool(calls))
    message: Message = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    prompt.append(message)
    turn.new_messages.append(message)


async def _tool_step(
    calls: list[ToolCallChunk],
    prompt: list[Message],
    spec: LoopSpec,
    ctx: AgentHookContext,
    turn: _Turn,
    deadline: float,
    emit: RunEmitter,
) -> AsyncIterator[StreamEvent]:
    """Run one response's tool calls concurrently; errors become error results."""
    await spec.hooks.before_execute_tools(ctx)
    parsed = [(call, _parse_arguments(call)) for call in calls]
    for call, args in parsed:
        turn.tools_used.append(call.name)
        shown = args if isinstance(args, dict) else None
        yield emit(ToolStarted, name=call.name, tool_call_id=call.id, arguments=shown)
    async with asyncio.timeout(_remaining(deadline)):
        outcomes = await asyncio.gather(*(_invoke(spec, call, args) for call, args in parsed))
    ctx.tool_results = []
    for (call, _), (ok, text) in zip(parsed, outcomes, strict=True):
        result: Message = {
            "role": "tool",
            "tool_call_id": call.id,
            "name": call.name,
            "content": text if ok else f"Error: {text}",
        }
        prompt.append(result)
        turn.new_messages.append(result)
        ctx.tool_results.append(result)
        ctx.tool_events.append({"name": call.name, "ok": ok, "tool_call_id": call.id})
        if ok:
            yield emit(ToolCompleted, name=call.name, tool_call_id=call.id, content=text)
        else:
            yield emit(ToolFailed, name=call.name, tool_call_id=call.id, error=text)


def _parse_arguments(call: ToolCallChunk) -> dict[str, Any] | ToolError:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        return ToolError(f"arguments of {call.name} are not valid JSON: {exc}")
    if not isinstance(value, dict):
        return ToolError(f"arguments of {call.name} must be a JSON object")
    return value


async def _invoke(
    spec: LoopSpec, call: ToolCallChunk, args: dict[str, Any] | ToolError
) -> tuple[bool, str]:
    if isinstance(args, ToolError):
        return False, str(args)
    tool = spec.tools.get(call.name)
    if tool is None:
        return False, f"unknown tool {call.name!r}; available: {', '.join(spec.tools.names())}"
    try:
        return True, truncate_result(
            await tool.invoke(args, spec.tool_context), spec.max_result_chars
        )
    except ToolError as exc:
        return False, str(exc)
