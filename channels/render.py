"""Pure rendering helpers shared by every channel: no I/O, no clocks of their own.

- ``split_message``: cut a reply into platform-sized parts without breaking code
  fences (a fence open at a cut is closed at the end of the part and reopened,
  with its language tag, at the start of the next).
- ``ReplyText``: assembles a run's visible text from its text events.
- ``edit_delay``: the throttle decision for streaming edits.
- ``chat_address``: where a session's replies go, from its session key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.messages import parse_session_key

FENCE = "```"
_CLOSE = "\n" + FENCE
SEGMENT_SEPARATOR = "\n\n"
FAILED_TEXT = "Sorry, I could not finish this reply"
SUPERSEDED_TEXT = "(this reply was rewritten above)"
_MAX_ERROR_CHARS = 300


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` characters that, joined, read as ``text``.

    Cuts prefer a paragraph break, then a line break, then a space, in the second
    half of the window; otherwise the cut is hard. An empty text has no parts.
    """
    if limit < len(_CLOSE) + 8:
        raise ValueError(f"message limit {limit} is too small to split text into")
    parts: list[str] = []
    rest = text
    reopen = ""
    while rest:
        prefix = reopen + "\n" if reopen else ""
        if len(prefix) + len(rest) <= limit:
            parts.append(prefix + rest)
            break
        budget = limit - len(prefix) - len(_CLOSE)
        chunk, rest = _cut(rest, budget)
        body = prefix + chunk
        reopen = _open_fence_at_end(body)
        if reopen:
            body += _CLOSE
            # A very long info string would eat the next part's budget: reopen bare.
            if len(reopen) > limit // 4:
                reopen = FENCE
        parts.append(body)
    return parts


def _cut(text: str, budget: int) -> tuple[str, str]:
    """``(chunk, rest)`` with ``len(chunk) <= budget``; the separator cut at is dropped."""
    window = text[: budget + 1]
    floor = budget // 2
    for separator in (SEGMENT_SEPARATOR, "\n", " "):
        at = window.rfind(separator, floor, budget + 1)
        if at > 0:
            return text[:at], text[at + len(separator) :]
    return text[:budget], text[budget:]


def _open_fence_at_end(text: str) -> str:
    """The opening fence line still open at the end of ``text`` ('' when none)."""
    open_line = ""
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped.startswith(FENCE):
            continue
        open_line = "" if open_line else stripped
    return open_line


def edit_delay(now: float, last_edit_at: float | None, interval_s: float) -> float:
    """Seconds until the next streaming edit may go out (0.0: now)."""
    if last_edit_at is None:
        return 0.0
    return max(0.0, last_edit_at + interval_s - now)


def failure_text(shown: str, error: str) -> str:
    """What the user sees when a run fails: what was written so far, then the reason."""
    reason = " ".join(error.split())[:_MAX_ERROR_CHARS] or "unknown error"
    notice = f"\u26a0\ufe0f {FAILED_TEXT}: {reason}"
    return f"{shown}{SEGMENT_SEPARATOR}{notice}" if shown else notice


@dataclass(slots=True)
class ReplyText:
    """The visible text of one run: finished segments plus the one streaming now."""

    segments: list[str] = field(default_factory=list)
    current: str = ""

    def reset(self) -> None:
        """A re-run starts over: what it writes replaces the partial reply."""
        self.segments.clear()
        self.current = ""

    def add_delta(self, delta: str) -> None:
        self.current += delta

    def complete_segment(self, content: str) -> None:
        """``text.completed`` carries the authoritative text of the segment."""
        if content:
            self.segments.append(content)
        self.current = ""

    def text(self) -> str:
        if not self.current:
            return SEGMENT_SEPARATOR.join(self.segments)
        return SEGMENT_SEPARATOR.join([*self.segments, self.current])


@dataclass(frozen=True, slots=True)
class ChatAddress:
    chat_id: str
    thread_id: str | None = None


def chat_address(session_key: str, channel: str) -> ChatAddress:
    """Parse a default session key, ``channel:chat_id`` or ``channel:chat_id:thread``
    (``core.messages.default_session_key``). A key of another shape, or of another
    channel, is used whole as the chat id.
    """
    parsed = parse_session_key(session_key)
    if parsed is None or parsed[0] != channel:
        return ChatAddress(chat_id=session_key)
    return ChatAddress(chat_id=parsed[1], thread_id=parsed[2])
