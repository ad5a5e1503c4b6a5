"""Token estimates: about four bytes of narrow text per token, one per CJK character."""

from __future__ import annotations

import pytest

from core.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_message_tokens, estimate_tokens


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("word " * 40, 50),
        ("é", 1),  # two UTF-8 bytes
        ("€€", 2),  # six bytes below the CJK range: narrow
        ("中文", 3),  # two wide characters, plus the minimum of one for the narrow part
        ("中文 and some text", 2 + 4),  # 14 narrow bytes -> 4 tokens
        ("😀", 2),  # wide, like everything after U+2E80
        ("\u2e7f\u2e80", 2),  # the boundary: the first is narrow, the second wide
    ],
)
def test_estimate_tokens(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_message_estimate_adds_overhead_and_tool_calls() -> None:
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [
        {"role": "user", "content": "abcd"},
        {"role": "assistant", "content": None, "tool_calls": call},
    ]
    serialized = '[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]'
    expected = 2 * MESSAGE_OVERHEAD_TOKENS + 1 + estimate_tokens(serialized)
    assert estimate_message_tokens(messages) == expected
