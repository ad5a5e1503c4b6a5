"""Offline token estimates (no tokenizer download at run time).

The estimate follows the usual BPE ratios: about four bytes of English per token,
one token per CJK character, plus a fixed overhead per chat message. It is used for
budgets (compaction) and for usage when a provider reports none, never for billing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from core.messages import Message

MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    narrow_bytes = len(text.encode("utf-8")) - 3 * wide
    return wide + max(1, (narrow_bytes + 3) // 4)


def _content_text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    else:
        text = ""
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"], separators=(",", ":"))
    return text


def estimate_message_tokens(messages: Iterable[Message]) -> int:
    return sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(_content_text(m)) for m in messages)
