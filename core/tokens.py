"""Offline token estimates (no tokenizer download at run time).

The estimate follows the usual BPE ratios: about four bytes of English per token,
one token per CJK character, plus a fixed overhead per chat message. It is used for
budgets (compaction) and for usage when a provider reports none, never for billing.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from gateway.core.messages import Message, content_text

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


class RunningTokenCount:
    """Token estimates of session histories, each message counted once.

    A history usually only grows between turns, and the file store hands out the
    same message dicts on every load: when the message that ended the history last
    time is still at that position, only what follows it is estimated. Anything else
    (compaction, a replaced entry there, another store's fresh dicts) counts anew.
    An entry edited in place earlier in the history is not noticed until then: the
    figure is an estimate for budgets, never for billing.
    """

    def __init__(self, max_sessions: int = 4096) -> None:
        self._max = max_sessions
        self._counted: OrderedDict[str, tuple[int, Message, int]] = OrderedDict()
        self._lock = threading.Lock()  # the SDK's sync session API may run in threads

    def history_tokens(self, key: str, messages: Sequence[Message]) -> int:
        with self._lock:
            known = self._counted.get(key)
        if (
            known is not None
            and 0 < known[0] <= len(messages)
            and messages[known[0] - 1] is known[1]
        ):
            total = known[2] + estimate_message_tokens(messages[known[0] :])
        else:
            total = estimate_message_tokens(messages)
        with self._lock:
            if messages:
                self._counted[key] = (len(messages), messages[-1], total)
                self._counted.move_to_end(key)
                while len(self._counted) > self._max:
                    self._counted.popitem(last=False)
            else:
                self._counted.pop(key, None)
        return total


HISTORY_TOKENS = RunningTokenCount()
"""The process-wide running count (compaction budgets)."""
