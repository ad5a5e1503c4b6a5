"""Normalized messages: what a channel publishes inbound, and the chat history format.

History entries are plain OpenAI-format dicts (``role``, ``content``, ``tool_calls``,
``tool_call_id``, ``name``) plus optional ``timestamp`` and ``metadata``; they go to
the provider as they are, so they are not wrapped in a model on the hot path.
``ChatMessage`` validates them at the boundaries (ingest, bus payloads).
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ulid import ULID

Message: TypeAlias = dict[str, Any]
"""One history entry in OpenAI chat format."""

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]

MAX_TEXT_CHARS = 32_000
"""Largest inbound text accepted from any channel; larger is a PayloadError / 413."""


def new_id() -> str:
    """A new ULID as text: sortable by creation time, unique across processes."""
    return str(ULID())


class ChatMessage(BaseModel):
    """Validation model for one history entry; extra keys are kept as message metadata."""

    model_config = ConfigDict(extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def to_message(self) -> Message:
        return self.model_dump(exclude_none=True)


OPENAI_MESSAGE_KEYS: frozenset[str] = frozenset(ChatMessage.model_fields)
"""The keys of a history entry the chat API accepts; entries may carry more (timestamp,
metadata, attachments…), which are stripped before a request and kept in the session."""


def content_text(content: object, *, placeholders: bool = False) -> str:
    """The text of a message's ``content``: a string as it is; of a list of parts, the
    text parts joined by spaces (with ``placeholders``, the others as ``[image]`` and the
    like, where a reader should know something was there); '' for anything else."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    pieces: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        text = part.get("text")
        if isinstance(text, str) and text:
            pieces.append(text)
        elif placeholders and part.get("type") != "text":
            pieces.append(f"[{part.get('type', 'attachment')}]")
    return " ".join(pieces)


class Attachment(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["image", "file", "audio", "video"] = "file"
    url: str = ""
    path: str = ""
    name: str = ""
    mime_type: str = ""

    @model_validator(mode="after")
    def _has_location(self) -> Attachment:
        if not self.url and not self.path:
            raise ValueError("an attachment needs a url or a path")
        return self


def _escape_part(part: str) -> str:
    """``%`` and ``:`` percent-encoded, so ``:`` only ever separates parts."""
    if "%" not in part and ":" not in part:
        return part
    return part.replace("%", "%25").replace(":", "%3A")


def _unescape_part(part: str) -> str:
    return part.replace("%3A", ":").replace("%25", "%") if "%" in part else part


def default_session_key(channel: str, chat_id: str, thread_id: str | None = None) -> str:
    """``channel:chat_id``, or ``channel:chat_id:thread`` for threads.

    A ``:`` or ``%`` inside a part is percent-encoded (``%3A``, ``%25``), so every key
    names one chat: chat ``x:t`` is ``http:x%3At``, chat ``x`` in thread ``t`` is
    ``http:x:t``. Plain ids read as they are.
    """
    base = f"{_escape_part(channel)}:{_escape_part(chat_id)}"
    return f"{base}:{_escape_part(thread_id)}" if thread_id else base


def parse_session_key(session_key: str) -> tuple[str, str, str | None] | None:
    """``(channel, chat_id, thread_id)`` of a default session key; None for another shape."""
    parts = session_key.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        return None
    thread = _unescape_part(parts[2]) if len(parts) == 3 else None
    return _unescape_part(parts[0]), _unescape_part(parts[1]), thread


class RunOptions(BaseModel):
    """Per-run settings a request carries onto the bus with its message (HTTP API).

    ``history`` replaces the stored history for this turn (the OpenAI-compatible
    endpoint sends the whole conversation); the turn's result is saved after it as
    usual. ``system`` is appended to the agent's system prompt.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    system: str | None = None
    history: list[Message] | None = None


class InboundMessage(BaseModel):
    """A platform message normalized by a channel adapter (DESIGN.md §3)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=new_id)
    channel: str = Field(min_length=1, max_length=64)
    chat_id: str = Field(min_length=1, max_length=256)
    thread_id: str | None = None
    sender_id: str = Field(min_length=1, max_length=256)
    sender_name: str = ""
    text: str = Field(max_length=MAX_TEXT_CHARS)
    attachments: list[Attachment] = Field(default_factory=list, max_length=16)
    reply_to: str | None = None
    platform_event_id: str | None = None
    quote_id: str | None = None
    """The platform's id of this message when its reply should quote it (groups)."""
    received_at: float = Field(default_factory=time.time)
    session_key: str = ""
    agent: str | None = None
    options: RunOptions | None = None

    @model_validator(mode="after")
    def _fill_session_key(self) -> InboundMessage:
        if not self.session_key:
            key = default_session_key(self.channel, self.chat_id, self.thread_id)
            object.__setattr__(self, "session_key", key)
        return self

    def to_user_message(self) -> Message:
        """The history entry this message becomes."""
        msg: Message = {"role": "user", "content": self.text, "timestamp": self.received_at}
        if self.attachments:
            msg["attachments"] = [a.model_dump(exclude_defaults=True) for a in self.attachments]
        return msg
