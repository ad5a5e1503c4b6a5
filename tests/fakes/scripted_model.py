"""An in-process model for loop unit tests: each call plays the next scripted step."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

from gateway.core.messages import Message
from gateway.core.providers.base import (
    FinishChunk,
    ModelSpec,
    ProviderChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)


class ScriptedModel:
    """``steps`` are lists of chunks; a step of ``None`` waits forever (for timeouts/cancel)."""

    def __init__(self, *steps: list[ProviderChunk] | None) -> None:
        self.steps: deque[list[ProviderChunk] | None] = deque(steps)
        self.calls: list[list[Message]] = []
        self.closed = 0

    async def stream(
        self, chain: list[ModelSpec], messages: list[Message], tools: list[dict[str, Any]]
    ) -> AsyncGenerator[ProviderChunk, None]:
        self.calls.append([dict(m) for m in messages])
        step = self.steps.popleft() if self.steps else [TextChunk(delta="done")]
        try:
            if step is None:
                await asyncio.Event().wait()
                return
            for chunk in step:
                yield chunk
            yield UsageChunk(prompt_tokens=10, completion_tokens=5, total_tokens=15)
            yield FinishChunk()
        finally:
            self.closed += 1


def text(value: str) -> list[ProviderChunk]:
    return [TextChunk(delta=value)]


def call(name: str, arguments: str = "{}", call_id: str = "c1") -> list[ProviderChunk]:
    return [ToolCallChunk(id=call_id, name=name, arguments=arguments)]
