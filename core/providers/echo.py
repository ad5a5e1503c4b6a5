"""The built-in offline model: answers with the last user message, word by word.

It lets the whole pipeline run with no model configured, and it is the model of the
benchmarks, so it does no I/O and never sleeps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from gateway.core.messages import Message, content_text
from gateway.core.providers.base import (
    FinishChunk,
    ModelRequest,
    ProviderChunk,
    TextChunk,
    UsageChunk,
)
from gateway.core.tokens import estimate_message_tokens, estimate_tokens

EMPTY_REPLY = "(empty message)"

_WORD = re.compile(r"\s*\S+\s*")
"""A word with the whitespace around it, so the deltas join back to the exact text."""


def last_user_text(messages: list[Message]) -> str:
    """The text of the last user message (text parts joined), or '' when there is none."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        return content_text(message.get("content"))
    return ""


class EchoProvider:
    """Replies with the user's text; never calls tools."""

    name = "echo"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderChunk]:
        text = last_user_text(request.messages)
        if not text.strip():
            text = EMPTY_REPLY
        for word in _WORD.findall(text):
            yield TextChunk(delta=word)
        prompt_tokens = estimate_message_tokens(request.messages)
        completion_tokens = estimate_tokens(text)
        yield UsageChunk(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        yield FinishChunk(reason="stop")

    async def aclose(self) -> None:
        """Nothing to release: the echo model holds no connections."""
