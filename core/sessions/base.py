"""The session contract: a conversation's history, and where it is kept.

Backends: ``FileSessionStore`` (one JSONL file per session under the workspace; the
SDK) and ``RedisSessionStore`` (bus mode). Callers serialize turns on one key
themselves (the runtime's per-session lock, or the bus lease), so a store only has
to be safe across *different* keys at once.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.messages import Message


class Session(BaseModel):
    """A conversation. ``messages`` are OpenAI-format dicts (see ``core.messages``)."""

    key: str
    messages: list[Message] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    summary: str = ""
    """Summary of turns compacted away; the runtime prepends it to the prompt."""


class SessionInfo(BaseModel):
    """A compact row for listings."""

    model_config = ConfigDict(frozen=True)

    key: str
    message_count: int
    created_at: float
    updated_at: float


class SessionSnapshot(BaseModel):
    """A full, JSON-serializable copy of one session (``bot.sessions.get/export``)."""

    model_config = ConfigDict(frozen=True)

    key: str
    messages: list[Message]
    metadata: dict[str, Any]
    summary: str
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, session: Session) -> SessionSnapshot:
        return cls(
            key=session.key,
            messages=[dict(m) for m in session.messages],
            metadata=dict(session.metadata),
            summary=session.summary,
            created_at=session.created_at,
            updated_at=session.updated_at,
        )


@runtime_checkable
class SessionStore(Protocol):
    async def load(self, key: str) -> Session | None:
        """The stored session, or None.

        A corrupt record is recovered as far as possible (logged, the raw copy kept
        aside); raises ``SessionError`` when the storage itself fails.
        """
        ...

    async def save(self, session: Session) -> None:
        """Persist the whole session atomically (readers see the old or the new, never half)."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def list(self) -> list[SessionInfo]: ...

    async def flush(self) -> None:
        """Make every save so far durable."""
        ...

    async def aclose(self) -> None: ...
