"""Offline token estimates (no tokenizer download at run time).

The estimate follows the usual BPE ratios: about four bytes of English per token,
one token per CJK character, plus a fixed overhead per chat message. It is used for
budgets (compaction) and for usage when a provider reports none, never for billing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from core.messages import Message, content_text

MESSAGE_OVERHEAD_TOKENS = 4


_WIDE = re.compile("[\u2e80-\U0010ffff]")
"""CJK and everything after it in Unicode: about one token per character."""


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    # Budgets re-estimate whole histories every turn: ASCII (most text) needs no char scan.
    if text.isascii():
        return max(1, (len(text) + 3) // 4)
    wide = len(_WIDE.findall(text))
    narrow_bytes = len(text.encode("utf-8")) - 3 * wide
    return wide + max(1, (narrow_bytes + 3) // 4)


def _content_text(message: Message) -> str:
    text = content_text(message.get("content"))
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"], separators=(",", ":"))
    return text


def estimate_message_tokens(messages: Iterable[Message]) -> int:
    return sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(_content_text(m)) for m in messages)
