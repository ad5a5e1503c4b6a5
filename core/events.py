"""Typed run events: what the agent loop yields, the SDK streams and the bus carries.

Every event is a frozen pydantic model with a ``type`` discriminator whose value is
one of the ten stable v1 names (seed 000). ``StreamEvent`` is the discriminated
union; ``parse_event`` turns bus JSON back into the right class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

STREAM_EVENT_RUN_STARTED: Final = "run.started"
STREAM_EVENT_TEXT_DELTA: Final = "text.delta"
STREAM_EVENT_TEXT_COMPLETED: Final = "text.completed"
STREAM_EVENT_REASONING_DELTA: Final = "reasoning.delta"
STREAM_EVENT_REASONING_COMPLETED: Final = "reasoning.completed"
STREAM_EVENT_TOOL_STARTED: Final = "tool.started"
STREAM_EVENT_TOOL_COMPLETED: Final = "tool.completed"
STREAM_EVENT_TOOL_FAILED: Final = "tool.failed"
STREAM_EVENT_RUN_COMPLETED: Final = "run.completed"
STREAM_EVENT_RUN_FAILED: Final = "run.failed"

StreamEventType: TypeAlias = Literal[
    "run.started",
    "text.delta",
    "text.completed",
    "reasoning.delta",
    "reasoning.completed",
    "tool.started",
    "tool.completed",
    "tool.failed",
    "run.completed",
    "run.failed",
]

STREAM_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        STREAM_EVENT_RUN_STARTED,
        STREAM_EVENT_TEXT_DELTA,
        STREAM_EVENT_TEXT_COMPLETED,
        STREAM_EVENT_REASONING_DELTA,
        STREAM_EVENT_REASONING_COMPLETED,
        STREAM_EVENT_TOOL_STARTED,
        STREAM_EVENT_TOOL_COMPLETED,
        STREAM_EVENT_TOOL_FAILED,
        STREAM_EVENT_RUN_COMPLETED,
        STREAM_EVENT_RUN_FAILED,
    }
)

Usage: TypeAlias = dict[str, int]
"""Token usage: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``."""

StopReason: TypeAlias = Literal[
    "completed", "max_iterations", "timeout", "cancelled", "error", "interrupted"
]


class RunResult(BaseModel):
    """What one run produced (seed 000's ``RunResult``)."""

    model_config = ConfigDict(frozen=True)

    content: str = ""
    tools_used: list[str] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    usage: Usage = Field(default_factory=dict)
    stop_reason: StopReason | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class _Event(BaseModel):
    """Fields every event carries: which run, its position in that run, the loop iteration."""

    model_config = ConfigDict(frozen=True)

    run_id: str = ""
    seq: int = 0
    iteration: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChatAddress(BaseModel):
    """Where a session's replies go on its channel (set by the worker from the inbound
    message, so deliverers never parse it out of a session key)."""

    model_config = ConfigDict(frozen=True)

    channel: str
    chat_id: str
    thread_id: str | None = None
    quote_id: str | None = None
    """The platform message a reply quotes (adapters set it in groups; Telegram)."""

    @classmethod
    def of(cls, message: Addressed) -> ChatAddress:
        """The address of an inbound message (anything with its three fields)."""
        return cls(
            channel=message.channel,
            chat_id=message.chat_id,
            thread_id=message.thread_id,
            quote_id=getattr(message, "quote_id", None),
        )


class Addressed(Protocol):
    @property
    def channel(self) -> str: ...
    @property
    def chat_id(self) -> str: ...
    @property
    def thread_id(self) -> str | None: ...


class RunStarted(_Event):
    type: Literal["run.started"] = "run.started"
    session_key: str = ""
    model: str = ""
    message_ids: list[str] = Field(default_factory=list)
    """Bus mode: the inbound entry ids the run starts with (more may be steered in)."""
    address: ChatAddress | None = None


class TextDelta(_Event):
    type: Literal["text.delta"] = "text.delta"
    delta: str


class TextCompleted(_Event):
    """A finished text segment; ``resuming`` is true when more tool work follows it."""

    type: Literal["text.completed"] = "text.completed"
    content: str
    resuming: bool = False


class ReasoningDelta(_Event):
    type: Literal["reasoning.delta"] = "reasoning.delta"
    delta: str


class ReasoningCompleted(_Event):
    type: Literal["reasoning.completed"] = "reasoning.completed"
    content: str


class ToolStarted(_Event):
    type: Literal["tool.started"] = "tool.started"
    name: str
    tool_call_id: str | None = None
    arguments: dict[str, Any] | None = None


class ToolCompleted(_Event):
    type: Literal["tool.completed"] = "tool.completed"
    name: str
    tool_call_id: str | None = None
    content: str = ""


class ToolFailed(_Event):
    type: Literal["tool.failed"] = "tool.failed"
    name: str
    tool_call_id: str | None = None
    error: str


class RunCompleted(_Event):
    type: Literal["run.completed"] = "run.completed"
    result: RunResult
    content: str = ""
    usage: Usage = Field(default_factory=dict)
    message_ids: list[str] = Field(default_factory=list)
    """Bus mode: every inbound entry id this run answers (``POST /v1/messages``'s
    ``message_id``); empty outside the bus."""


class RunFailed(_Event):
    type: Literal["run.failed"] = "run.failed"
    error: str
    result: RunResult | None = None
    permanent: bool = False
    """The same request would fail the same way (bad key, unknown model): not retried."""
    message_ids: list[str] = Field(default_factory=list)
    """Bus mode: every inbound entry id this run answers; empty when it answers none
    (an interrupted run: its messages are answered by the next one)."""


StreamEvent: TypeAlias = Annotated[
    RunStarted
    | TextDelta
    | TextCompleted
    | ReasoningDelta
    | ReasoningCompleted
    | ToolStarted
    | ToolCompleted
    | ToolFailed
    | RunCompleted
    | RunFailed,
    Field(discriminator="type"),
]
"""Any run event; narrow it by ``event.type``."""

TERMINAL_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {STREAM_EVENT_RUN_COMPLETED, STREAM_EVENT_RUN_FAILED}
)

_EVENT_ADAPTER: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


class RunEmitter:
    """Numbers the events of one run: stamps ``run_id``, the next ``seq`` and the current
    ``iteration`` on each. The loop emits through one, and so does every run built by
    hand (a backlog notice, a dead letter), so no ``seq`` is counted by hand.

    ``emit = RunEmitter(run_id); emit(RunStarted, session_key=key)`` is event ``seq`` 1;
    ``after_seq`` continues a run whose events up to that ``seq`` are already out.
    """

    __slots__ = ("iteration", "run_id", "seq")

    def __init__(self, run_id: str, *, after_seq: int = 0) -> None:
        self.run_id = run_id
        self.seq = after_seq
        self.iteration: int | None = None

    def __call__(self, cls: Callable[..., StreamEvent], **fields: Any) -> StreamEvent:
        self.seq += 1
        return cls(run_id=self.run_id, seq=self.seq, iteration=self.iteration, **fields)


def addressed(events: list[StreamEvent], address: ChatAddress) -> list[StreamEvent]:
    """``events`` with ``address`` set on each ``run.started`` that has none."""
    return [
        e.model_copy(update={"address": address})
        if isinstance(e, RunStarted) and e.address is None
        else e
        for e in events
    ]


def parse_event(data: str | bytes | dict[str, Any]) -> StreamEvent:
    """Parse one event from JSON text or a dict (bus entries, SSE payloads)."""
    if isinstance(data, dict):
        return _EVENT_ADAPTER.validate_python(data)
    return _EVENT_ADAPTER.validate_json(data)


def is_terminal(event: StreamEvent) -> bool:
    return event.type in TERMINAL_EVENT_TYPES
