"""How a session is stored in Redis: a small head hash and a log of messages.

``keys.session_head(s)`` holds ``created_at``, ``updated_at``, ``summary``,
``metadata`` (JSON), ``rev`` (writes so far) and ``stamp`` (unique per write: a
worker that cached the session knows from it whether its copy is current);
``keys.session_log(s)`` is a list with one JSON message per element, oldest first.
A turn appends the messages it added (and sets the head fields it changed), so the
bytes a commit writes do not grow with the history; a compaction, or any change
that is not an append, rewrites the log. Both happen inside one script
(``COMMIT_TURN`` under the lease, ``SAVE_SESSION`` outside a turn), so a reader
never sees half a write.

The old form, one JSON value at ``keys.session(s)``, is still read; the first write
of such a session rewrites it into the new form and deletes the old value.

``StoredSession`` is a session as it was read, with what the next write needs to
know to append; ``plan_write`` decides between append and rewrite.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic_core import from_json, to_json

from gateway.core.messages import Message
from gateway.core.sessions.base import Session

WriteMode = Literal["append", "rewrite"]


@dataclass(slots=True)
class StoredSession:
    """A session as read from (or last written to) Redis."""

    session: Session
    messages: list[Message]
    """The list handed out as ``session.messages``: a write appends only when the
    session still holds this very list (the runtime extends it; a compaction or a
    history given by the request replaces it)."""
    length: int
    """Messages in the stored log."""
    summary: str
    metadata_json: str
    created_at: float
    rewrite: bool = False
    """The stored form must be rewritten (the old single-JSON form, or corrupt)."""
    stamp: str = ""
    """The stamp of the write that stored it ('' unknown)."""

    @classmethod
    def of(
        cls, session: Session, *, length: int, rewrite: bool = False, stamp: str = ""
    ) -> StoredSession:
        return cls(
            session=session,
            messages=session.messages,
            length=length,
            summary=session.summary,
            metadata_json=_json(session.metadata),
            created_at=session.created_at,
            rewrite=rewrite,
            stamp=stamp,
        )

    def copy(self) -> StoredSession:
        """A copy whose session a turn may change (extend, compact) without touching this."""
        metadata = from_json(self.metadata_json) if self.session.metadata else {}
        session = self.session.model_copy(
            update={"messages": list(self.session.messages), "metadata": metadata}
        )
        copied = StoredSession.of(session, length=self.length, rewrite=self.rewrite)
        copied.stamp = self.stamp
        return copied


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """What one write stores: messages appended to (or replacing) the log, head fields."""

    mode: WriteMode
    expected_length: int
    """The log length the append continues (the script refuses another)."""
    expected_stamp: str
    """The head's stamp the append continues ('' none: a head written without one)."""
    updated_at: float
    head: tuple[str, ...]
    """Field, value, field, value…"""
    messages: tuple[str, ...]
    stamp: str

    @property
    def head_fields(self) -> int:
        return len(self.head) // 2


def plan_write(session: Session, base: StoredSession | None) -> SessionWrite:
    """Append what ``session`` added since ``base`` was read, else rewrite it whole."""
    messages = session.messages
    if base is None or base.rewrite or messages is not base.messages or len(messages) < base.length:
        return full_write(session)
    stamp = new_stamp()
    head = ["stamp", stamp, "updated_at", repr(session.updated_at)]
    if session.summary != base.summary:
        head += ["summary", session.summary]
    if (metadata := _json(session.metadata)) != base.metadata_json:
        head += ["metadata", metadata]
    if session.created_at != base.created_at:
        head += ["created_at", repr(session.created_at)]
    return SessionWrite(
        mode="append",
        expected_length=base.length,
        expected_stamp=base.stamp,
        updated_at=session.updated_at,
        head=tuple(head),
        messages=tuple(_json(m) for m in messages[base.length :]),
        stamp=stamp,
    )


def full_write(session: Session) -> SessionWrite:
    """The whole session: every head field and every message."""
    stamp = new_stamp()
    head = (
        "stamp",
        stamp,
        "created_at",
        repr(session.created_at),
        "updated_at",
        repr(session.updated_at),
        "summary",
        session.summary,
        "metadata",
        _json(session.metadata),
    )
    return SessionWrite(
        mode="rewrite",
        expected_length=0,
        expected_stamp="",
        updated_at=session.updated_at,
        head=head,
        messages=tuple(_json(m) for m in session.messages),
        stamp=stamp,
    )


def after_write(session: Session, stamp: str) -> StoredSession:
    """What is stored once ``session`` was written with ``stamp``: the base of the next
    write (an append continues it only while the head still has that stamp)."""
    return StoredSession.of(session, length=len(session.messages), stamp=stamp)


def new_stamp() -> str:
    return secrets.token_hex(8)


def parse_stored(
    key: str,
    head: Sequence[str | bytes],
    log: str | bytes,
    count: int,
    old: str | bytes | None,
) -> StoredSession | None:
    """The session from its head, its log's ``count`` messages joined by ``,`` and
    its old form (``LOAD_SESSION``'s reply); None when none is stored. ``ValueError``
    when what is stored does not parse."""
    if head:
        session = Session.model_validate_json(document(key, head, log))
        return StoredSession.of(session, length=count, stamp=_stamp(head))
    if old is not None:
        return StoredSession.of(Session.model_validate_json(old), length=0, rewrite=True)
    return None


def document(key: str, head: Sequence[str | bytes], log: str | bytes) -> str:
    """The session as one JSON document (what the old form stored), parsed in one call;
    ``log`` is the log's messages joined by ``,``."""
    flat = [_text(value) for value in head]
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return (
        f'{{"key":{_json(key)},"messages":[{_text(log)}],'
        f'"metadata":{fields.get("metadata") or "{}"},'
        f'"created_at":{fields.get("created_at") or "0"},'
        f'"updated_at":{fields.get("updated_at") or "0"},'
        f'"summary":{_json(fields.get("summary", ""))}}}'
    )


def _stamp(head: Sequence[str | bytes]) -> str:
    for i in range(0, len(head) - 1, 2):
        if _text(head[i]) == "stamp":
            return _text(head[i + 1])
    return ""


def _json(value: object) -> str:
    return to_json(value).decode("utf-8")


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
