"""Typed responses of the gateway API (pydantic; unknown fields are ignored so a newer
server does not break an older client)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Agent(_Model):
    name: str
    model: str
    status: str
    description: str = ""


class InvokeResponse(_Model):
    output: str
    usage: Usage
    session_id: str
    run_id: str


class SessionContinueResponse(InvokeResponse):
    """The reply to one more turn of a session."""


class Session(_Model):
    session_id: str
    agent: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    last_active_at: float
    turns: int = 0


class HistoryMessage(_Model):
    role: str
    content: str


class SessionDetail(Session):
    messages: list[HistoryMessage] = Field(default_factory=list)


class PipelineStep(_Model):
    name: str
    agent: str = ""
    status: str
    duration_ms: int | None = None
    run_id: str | None = None


class PipelineRunResponse(_Model):
    run_id: str
    pipeline: str
    status: str
    output: str | None = None
    error: str | None = None
    steps: list[PipelineStep] = Field(default_factory=list)
    started_at: float = 0.0
    elapsed_ms: int = 0


class PipelineStatus(_Model):
    pipeline: str
    run_id: str | None = None
    status: str
    elapsed_ms: int | None = None


class TokenEvent(_Model):
    type: Literal["token"]
    content: str


class ToolCallEvent(_Model):
    type: Literal["tool_call"]
    name: str
    id: str | None = None
    arguments: dict[str, Any] | None = None


class ToolResultEvent(_Model):
    type: Literal["tool_result"]
    name: str
    id: str | None = None
    output: str
    is_error: bool = False


class DoneEvent(_Model):
    type: Literal["done"]
    output: str
    usage: Usage
    session_id: str
    run_id: str


class ErrorEvent(_Model):
    type: Literal["error"]
    code: str
    message: str


StreamEvent: TypeAlias = Annotated[
    TokenEvent | ToolCallEvent | ToolResultEvent | DoneEvent | ErrorEvent,
    Field(discriminator="type"),
]
"""One event of a streamed run; narrow it by ``event.type``."""

__all__ = [
    "Agent",
    "DoneEvent",
    "ErrorEvent",
    "HistoryMessage",
    "InvokeResponse",
    "PipelineRunResponse",
    "PipelineStatus",
    "PipelineStep",
    "Session",
    "SessionContinueResponse",
    "SessionDetail",
    "StreamEvent",
    "TokenEvent",
    "ToolCallEvent",
    "ToolResultEvent",
    "Usage",
]
