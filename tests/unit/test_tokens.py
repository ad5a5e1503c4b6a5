"""Token estimates: about four bytes of narrow text per token, one per CJK character."""

from __future__ import annotations

import pytest

from gateway.core import tokens
from gateway.core.messages import Message
from gateway.core.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_message_tokens, estimate_tokens


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


def _history(count: int, tag: str = "m") -> list[Message]:
    return [{"role": "user", "content": f"{tag} {i} " + "word " * i} for i in range(count)]


def test_running_count_estimates_only_the_appended_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = tokens.RunningTokenCount()
    history = _history(40)
    assert counter.history_tokens("s", history) == tokens.estimate_message_tokens(history)
    estimated: list[str] = []
    real = tokens.estimate_tokens

    def counting(text: str) -> int:
        estimated.append(text)
        return real(text)

    monkeypatch.setattr(tokens, "estimate_tokens", counting)
    grown = [*history, *_history(2, tag="new")]  # a fresh list of the same dicts, as a reload

    total = counter.history_tokens("s", grown)

    assert len(estimated) == 2
    monkeypatch.setattr(tokens, "estimate_tokens", real)
    assert total == tokens.estimate_message_tokens(grown)


def test_running_count_recounts_a_changed_or_shorter_history() -> None:
    counter = tokens.RunningTokenCount()
    history = _history(10)
    counter.history_tokens("s", history)
    replaced = [*history[:-1], {"role": "user", "content": "a much longer last message " * 20}]
    assert counter.history_tokens("s", replaced) == tokens.estimate_message_tokens(replaced)
    compacted = replaced[6:]
    assert counter.history_tokens("s", compacted) == tokens.estimate_message_tokens(compacted)
    assert counter.history_tokens("s", []) == 0
    other_store = [dict(m) for m in compacted]  # equal content, other dicts
    assert counter.history_tokens("s", other_store) == tokens.estimate_message_tokens(compacted)


def test_running_count_keeps_a_bounded_number_of_sessions() -> None:
    counter = tokens.RunningTokenCount(max_sessions=2)
    for key in ("a", "b", "c"):
        counter.history_tokens(key, _history(3, tag=key))
    assert len(counter._counted) == 2 and "a" not in counter._counted
