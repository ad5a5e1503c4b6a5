"""``bot.sessions`` and ``bot.runtime``: the SDK's session and runtime helpers (seed 000)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.core.messages import OPENAI_MESSAGE_KEYS, ChatMessage, Message
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.base import Session, SessionInfo, SessionSnapshot
from gateway.core.sessions.file import FileSessionStore


def _ingested(raw: Mapping[str, Any], index: int, source: str | None) -> Message:
    """Validate one transcript entry; fields beyond the chat format become its metadata."""
    try:
        message = ChatMessage.model_validate(raw).to_message()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ValueError(f"messages[{index}].{where}: {first['msg']}") from exc
    extra = {k: message.pop(k) for k in list(message) if k not in OPENAI_MESSAGE_KEYS}
    if source is not None:
        extra.setdefault("source", source)
    if extra:
        message["metadata"] = extra
    return message


class SessionsAPI:
    """Sessions on disk: one JSONL file per session under ``<workspace>/sessions``."""

    def __init__(self, store: FileSessionStore, runtime: AgentRuntime) -> None:
        self._store = store
        self._runtime = runtime

    async def ingest(
        self,
        session_key: str,
        messages: Iterable[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        save: bool = True,
    ) -> SessionSnapshot:
        """Append an existing transcript to a session without calling the model."""
        converted = [_ingested(m, i, source) for i, m in enumerate(messages)]
        async with self._runtime.locks.hold(session_key):
            session = self._store.load_sync(session_key) or Session(key=session_key)
            session.messages.extend(converted)
            session.metadata.update(metadata or {})
            if source is not None:
                session.metadata.setdefault("sources", [])
                if source not in session.metadata["sources"]:
                    session.metadata["sources"].append(source)
            if save:
                self._store.save_sync(session)
            return SessionSnapshot.of(session)

    def get(self, session_key: str) -> SessionSnapshot | None:
        session = self._store.load_sync(session_key)
        return SessionSnapshot.of(session) if session else None

    def list(self) -> list[SessionInfo]:
        return self._store.list_sync()

    def export(self, session_key: str) -> SessionSnapshot:
        """The full session; ``KeyError`` if there is none."""
        snapshot = self.get(session_key)
        if snapshot is None:
            raise KeyError(f"no session {session_key!r}")
        return snapshot

    def clear(self, session_key: str) -> None:
        """Forget a session's history and summary now (the session itself stays).

        It does not wait for a turn running on this key: that turn finishes, but its
        exchange is not saved (it belongs to the history cleared). ``aclear`` waits.
        """
        self._runtime.locks.invalidate(session_key)
        self._clear(session_key)

    async def aclear(self, session_key: str) -> None:
        """Clear the session after the turns already running or queued on it."""
        async with self._runtime.locks.hold(session_key):
            self._clear(session_key)

    def _clear(self, session_key: str) -> None:
        session = self._store.load_sync(session_key) or Session(key=session_key)
        session.messages.clear()
        session.summary = ""
        self._store.save_sync(session)

    def delete(self, session_key: str) -> bool:
        """Delete a session from disk and cache now; a turn running on it is not saved."""
        self._runtime.locks.invalidate(session_key)
        return self._store.delete_sync(session_key)

    async def adelete(self, session_key: str) -> bool:
        """Delete the session after the turns already running or queued on it."""
        async with self._runtime.locks.hold(session_key):
            return self._store.delete_sync(session_key)

    def flush(self) -> None:
        self._store.flush_sync()


class RuntimeAPI:
    """The runtime the SDK drives: its model, workspace and compaction."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime

    @property
    def model(self) -> str:
        return self._runtime.model

    @property
    def workspace(self) -> Path:
        return self._runtime.workspace

    async def compact_session(self, session_key: str) -> str:
        """Consolidate the session when its history passes the token budget."""
        return await self._runtime.compact_session(session_key, only_over_budget=True)

    async def compact_idle_session(self, session_key: str, max_suffix: int = 8) -> str:
        """Summarize all but the last ``max_suffix`` messages; returns the summary."""
        return await self._runtime.compact_session(session_key, keep_last=max_suffix)
