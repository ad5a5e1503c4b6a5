"""A chat's conversation as the web page and ``gateway chat`` show it after a reload.

``chat_history`` returns the committed history (from the session store), the
messages still waiting for their turn, and ``after``: the outbound entry to
resume the event stream from, so that runs not committed yet (still running, or
committed between the reads) are replayed by the stream instead of being lost.

Consistency: the session and the cursor are committed together by one script
(``Lease.commit``), so the cursor is read before and after the session and the
read is repeated if a commit landed in between. Every run with an id at or below
the cursor is in the history; the stream resumes after the newest final event of
such a run.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_event, decode_inbound, parse_stream_id
from gateway.core.errors import PayloadError
from gateway.core.events import is_terminal
from gateway.core.messages import Message
from gateway.core.sessions.base import Session, SessionStore

log = logging.getLogger(__name__)

CONSISTENT_READ_TRIES = 5
OUTBOUND_SCAN = 1_000
"""Outbound entries read back (newest first) to find where the history ends."""
PENDING_SHOWN = 100


async def chat_history(redis: Redis, sessions: SessionStore, session_key: str) -> dict[str, Any]:
    cursor, session = await _consistent_read(redis, sessions, session_key)
    return {
        "session_key": session_key,
        "messages": shown_messages(session.messages if session else []),
        "pending": await _pending(redis, session_key, cursor),
        "after": await _resume_after(redis, session_key, cursor),
    }


async def _consistent_read(
    redis: Redis, sessions: SessionStore, session_key: str
) -> tuple[str | None, Session | None]:
    before = cast(str | None, await redis.get(keys.cursor(session_key)))
    for _ in range(CONSISTENT_READ_TRIES):
        session = await sessions.load(session_key)
        after = cast(str | None, await redis.get(keys.cursor(session_key)))
        if after == before:
            return after, session
        before = after
    # Commits faster than we can read: the stream replays what the history lacks.
    return before, await sessions.load(session_key)


async def _pending(redis: Redis, session_key: str, cursor: str | None) -> list[dict[str, str]]:
    start = f"({cursor}" if cursor else "-"
    raw = await redis.xrange(keys.inbound(session_key), min=start, count=PENDING_SHOWN)
    pending: list[dict[str, str]] = []
    for entry_id, fields in raw:
        try:
            message = decode_inbound(fields)
        except PayloadError:
            continue  # the worker dead-letters and logs malformed entries
        pending.append({"id": str(entry_id), "text": message.text})
    return pending


async def _resume_after(redis: Redis, session_key: str, cursor: str | None) -> str:
    """The outbound id after which every event belongs to a run not in the history."""
    if cursor is None:
        return "0-0"
    committed = parse_stream_id(cursor)
    raw = await redis.xrevrange(keys.outbound(session_key), count=OUTBOUND_SCAN)
    for entry_id, fields in raw:
        try:
            event = decode_event(fields)
            covered = is_terminal(event) and parse_stream_id(event.run_id) <= committed
        except PayloadError:
            continue  # not a bus run (or malformed): not a boundary of the history
        if covered:
            return str(entry_id)
    # Nothing committed in the scanned tail: the tail's start replays at most the scan.
    return str(raw[-1][0]) if raw else "0-0"


def shown_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """History entries as the chat shows them: user and assistant text, tool names."""
    shown: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role not in ("user", "assistant"):
            continue
        entry: dict[str, Any] = {"role": role, "content": _text(message.get("content"))}
        calls = message.get("tool_calls") or []
        tools = [str(call.get("function", {}).get("name", "?")) for call in calls]
        if tools:
            entry["tools"] = tools
        metadata = message.get("metadata")
        if isinstance(metadata, dict) and metadata.get("stopped"):
            entry["stopped"] = True
        if entry["content"] or tools:
            shown.append(entry)
    return shown


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(str(part) for part in parts if part)
    return ""
