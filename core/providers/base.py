"""The provider contract: one streaming call to a chat model.

A provider turns a ``ModelRequest`` into an async stream of typed chunks. Tool-call
argument deltas are assembled by the provider: the loop only ever sees whole
``ToolCallChunk``s, after the text of the same response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.messages import Message


class ModelSpec(BaseModel):
    """A resolved model: which provider, which model id there, and sampling settings."""

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


class ModelRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: ModelSpec
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """OpenAI ``tools`` entries: ``{"type": "function", "function": {...}}``."""


class TextChunk(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["text"] = "text"
    delta: str


class ReasoningChunk(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["reasoning"] = "reasoning"
    delta: str


class ToolCallChunk(BaseModel):
    """One complete tool call; ``arguments`` is the raw JSON text the model produced."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: str = "{}"


class UsageChunk(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["usage"] = "usage"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class FinishChunk(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["finish"] = "finish"
    reason: str = "stop"


ProviderChunk: TypeAlias = TextChunk | ReasoningChunk | ToolCallChunk | UsageChunk | FinishChunk


@runtime_checkable
class Provider(Protocol):
    """A chat model endpoint. Implementations hold no per-run mutable state."""

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ProviderChunk]:
        """Stream one completion. Raises ``RetryableProviderError`` for transient failures
        (before any chunk was yielded, where the caller may fail over) and
        ``ProviderError`` for the rest."""
        ...

    async def aclose(self) -> None: ...
