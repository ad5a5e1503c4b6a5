"""Compaction: fold the oldest turns of a session into its running summary.

The model does the summarizing through a ``Summarize`` callable the runtime builds on
its model router; this module decides what to fold, builds the prompt, and applies
the result to the session (and to the memory history, when given one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from gateway.core.memory import MemoryStore
from gateway.core.messages import Message, content_text
from gateway.core.sessions.base import Session
from gateway.core.tokens import HISTORY_TOKENS, MESSAGE_OVERHEAD_TOKENS, estimate_tokens

log = logging.getLogger(__name__)

Summarize = Callable[[list[Message]], Awaitable[str]]
"""Sends the given messages to a model and returns its reply text."""

TOOL_RESULT_PREVIEW_CHARS = 2000
"""Tool output is cut to this many characters in the transcript: the gist is enough."""

SUMMARY_INSTRUCTION = (
    "You maintain the running summary of a conversation between a user and an "
    "assistant. Merge the previous summary (if any) with the transcript below into one "
    "updated summary. Keep what later turns may need: facts about the user and their "
    "preferences, names, decisions, results of tool calls, files touched, commitments "
    "and open tasks. Drop greetings and small talk. Write it in the conversation's "
    "language, as concise plain text, and reply with the summary only."
)


def split_for_compaction(
    messages: list[Message], keep_last: int
) -> tuple[list[Message], list[Message]]:
    """``(older, kept)``: about the last ``keep_last`` messages are kept.

    The boundary moves back (keeping more) so that an assistant message with
    ``tool_calls`` stays with its tool results and ``kept`` never starts with a
    ``tool`` message. Only tool messages with no caller before them (a broken
    history) make it move forward instead.
    """
    boundary = max(0, len(messages) - max(0, keep_last))
    back = boundary
    while 0 < back < len(messages) and _is_tool_result(messages[back]):
        back -= 1
    if back < len(messages) and _is_tool_result(messages[back]):
        forward = boundary
        while forward < len(messages) and _is_tool_result(messages[forward]):
            forward += 1
        back = forward
    return messages[:back], messages[back:]


def _is_tool_result(message: Message) -> bool:
    return message.get("role") == "tool"


def needs_compaction(session: Session, token_budget: int) -> bool:
    """Whether the history plus its summary is estimated above ``token_budget`` tokens.

    The history is counted incrementally (``HISTORY_TOKENS``): this runs every turn.
    """
    summary_tokens = (
        MESSAGE_OVERHEAD_TOKENS + estimate_tokens(session.summary) if session.summary else 0
    )
    history = HISTORY_TOKENS.history_tokens(session.key, session.messages)
    return history + summary_tokens > token_budget


def summary_prompt(older: list[Message], previous_summary: str) -> list[Message]:
    """The model input: the instruction, then the previous summary and the transcript."""
    parts = []
    if previous_summary:
        parts.append(f"Previous summary:\n{previous_summary}")
    transcript = "\n".join(_render(message) for message in older)
    parts.append(f"Transcript:\n{transcript}")
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTION},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


async def compact(
    session: Session,
    summarize: Summarize,
    *,
    keep_last: int = 8,
    memory: MemoryStore | None = None,
) -> str:
    """Fold all but the last ``keep_last`` messages into ``session.summary``.

    Returns the new summary, or "" (and leaves the session alone) when there is
    nothing to fold or the model returned no text. The caller saves the session.
    """
    older, kept = split_for_compaction(session.messages, keep_last)
    if not older:
        return ""
    summary = (await summarize(summary_prompt(older, session.summary))).strip()
    if not summary:
        log.warning(
            "compaction of session %r: the model returned an empty summary; kept all %d messages",
            session.key,
            len(session.messages),
        )
        return ""
    session.summary = summary
    session.messages = kept
    if memory is not None:
        memory.append_history(summary, session_key=session.key)
    return summary


def _render(message: Message) -> str:
    role = str(message.get("role", "?"))
    text = content_text(message.get("content"), placeholders=True)
    if role == "tool":
        name = message.get("name") or message.get("tool_call_id") or "tool"
        if len(text) > TOOL_RESULT_PREVIEW_CHARS:
            text = text[:TOOL_RESULT_PREVIEW_CHARS] + " …[cut]"
        return f"[tool {name} result] {text}"
    calls = [_render_call(call) for call in message.get("tool_calls") or []]
    lines = [f"[{role}] {text}"] if text else []
    lines.extend(f"[{role} calls] {call}" for call in calls)
    return "\n".join(lines) if lines else f"[{role}]"


def _render_call(call: object) -> str:
    if not isinstance(call, dict):
        return json.dumps(call, ensure_ascii=False, default=str)
    function = call.get("function")
    if isinstance(function, dict):
        return f"{function.get('name', '?')}({function.get('arguments', '')})"
    return json.dumps(call, ensure_ascii=False, default=str)
