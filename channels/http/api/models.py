"""Request and response bodies of the agent HTTP API (they also generate ``/openapi.json``).

Requests are strict: no type coercion, unknown fields rejected. Responses are what
the handlers serialize, so the document and the wire cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.core.messages import MAX_TEXT_CHARS

SESSION_ID_PATTERN = r"^[0-9A-HJKMNP-TV-Z]{26}$"
"""A session id is a ULID (what ``POST /v1/sessions`` hands out)."""

_ULID = re.compile(SESSION_ID_PATTERN)


def _encodable(value: str) -> str:
    """Refuse what cannot be stored as UTF-8 (a lone surrogate from a JSON ``\\ud800``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


def is_ulid(value: str) -> bool:
    return bool(_ULID.match(value))


Text = Annotated[str, AfterValidator(_encodable)]
"""A string that can be stored and sent on (every text field of a request)."""

MetadataValue = Text | int | float | bool | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class InvokeOptions(_Request):
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, le=1_000_000)


class InvokeRequest(_Request):
    """``POST /v1/agents/{name}/invoke`` and ``/stream``."""

    input: Text = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    options: InvokeOptions | None = None
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)


class CreateSessionRequest(_Request):
    agent: Text = Field(min_length=1, max_length=128)
    metadata: dict[Text, MetadataValue] = Field(default_factory=dict, max_length=64)


class SessionMessageRequest(_Request):
    """``POST /v1/sessions/{id}/messages`` (and ``/stream``); ``agent`` if given must
    be the session's own."""

    input: Text = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    options: InvokeOptions | None = None
    agent: Text | None = Field(default=None, min_length=1, max_length=128)


class PipelineRunRequest(_Request):
    input: Text = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


AgentStatus = Literal["ready", "unavailable"]


class Agent(_Response):
    """``unavailable``: the agent's model names a provider that is not configured."""

    name: str
    model: str
    status: AgentStatus
    description: str


class AgentList(_Response):
    data: list[Agent]


class InvokeResponse(_Response):
    output: str
    usage: Usage
    session_id: str
    run_id: str


class Session(_Response):
    session_id: str
    agent: str
    metadata: dict[str, MetadataValue]
    created_at: float
    last_active_at: float
    turns: int


class SessionList(_Response):
    data: list[Session]


class HistoryMessage(_Response):
    role: str
    content: str


class SessionDetail(Session):
    messages: list[HistoryMessage]


class PipelineStep(_Response):
    name: str
    agent: str
    status: Literal["pending", "running", "completed", "failed"]
    duration_ms: int | None = None
    run_id: str | None = None


class PipelineRun(_Response):
    run_id: str
    pipeline: str
    status: Literal["running", "completed", "failed"]
    output: str | None = None
    error: str | None = None
    steps: list[PipelineStep]
    started_at: float
    elapsed_ms: int


class PipelineStatus(_Response):
    pipeline: str
    run_id: str | None
    status: Literal["idle", "running", "completed", "failed"]
    elapsed_ms: int | None = None


class ErrorBody(_Response):
    code: Literal["invalid_request", "unauthorized", "not_found", "rate_limited", "internal_error"]
    message: str


class ErrorResponse(_Response):
    error: ErrorBody


class StreamToken(_Response):
    type: Literal["token"] = "token"
    content: str


class StreamToolCall(_Response):
    type: Literal["tool_call"] = "tool_call"
    name: str
    id: str | None = None
    arguments: dict[str, object] | None = None


class StreamToolResult(_Response):
    type: Literal["tool_result"] = "tool_result"
    name: str
    id: str | None = None
    output: str
    is_error: bool = False


class StreamDone(_Response):
    type: Literal["done"] = "done"
    output: str
    usage: Usage
    session_id: str
    run_id: str


class StreamError(_Response):
    type: Literal["error"] = "error"
    code: str
    message: str


StreamEventBody = StreamToken | StreamToolCall | StreamToolResult | StreamDone | StreamError
