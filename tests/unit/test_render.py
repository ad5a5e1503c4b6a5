"""Pure rendering helpers: splitting at platform limits, reply assembly, throttling."""

from __future__ import annotations

import pytest

from gateway.channels.render import (
    FAILED_TEXT,
    FENCE,
    ChatAddress,
    ReplyText,
    chat_address,
    edit_delay,
    failure_text,
    split_message,
)


def _fence_lines(part: str) -> list[str]:
    return [line.strip() for line in part.split("\n") if line.strip().startswith(FENCE)]


def _words(text: str) -> list[str]:
    return [w for w in text.split() if not w.startswith(FENCE)]


def test_short_text_is_one_part_and_empty_text_none() -> None:
    assert split_message("hello", 100) == ["hello"]
    assert split_message("", 100) == []


@pytest.mark.parametrize("limit", [20, 37, 64, 100])
def test_parts_respect_the_limit_and_keep_every_word(limit: int) -> None:
    text = " ".join(f"word{i}" for i in range(200))
    parts = split_message(text, limit)
    assert len(parts) > 1
    assert all(0 < len(p) <= limit for p in parts)
    assert _words(" ".join(parts)) == _words(text)


def test_cut_prefers_paragraph_then_line_breaks() -> None:
    text = "first paragraph here\n\nsecond one\nthird line"
    assert split_message(text, 36) == ["first paragraph here", "second one\nthird line"]
    assert split_message("aaaa bbbb\ncccc dddd", 16) == ["aaaa bbbb", "cccc dddd"]


def test_text_without_separators_is_cut_hard() -> None:
    parts = split_message("x" * 50, 20)
    assert "".join(parts) == "x" * 50
    assert all(len(p) <= 20 for p in parts)


def test_code_fence_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})" for i in range(40))
    text = f"Here is code:\n```python\n{code}\n```\nDone."
    parts = split_message(text, 120)
    assert len(parts) > 2
    for part in parts:
        assert len(part) <= 120
        assert len(_fence_lines(part)) % 2 == 0, f"unbalanced fences in {part!r}"
    for later in parts[1:-1]:
        assert later.startswith("```python\n")
    assert parts[-1].endswith("Done.")
    lines = [ln for p in parts for ln in p.split("\n") if ln.startswith("print(")]
    assert lines == [f"print({i})" for i in range(40)]


def test_text_after_a_closed_fence_is_not_reopened() -> None:
    text = "```\ncode\n```\n" + "plain words " * 20
    parts = split_message(text, 60)
    assert parts[0].startswith("```\ncode\n```")
    assert all(not p.startswith(FENCE) for p in parts[1:])


def test_too_small_a_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_message("hello world", 5)


def test_reply_text_joins_segments_and_resets() -> None:
    reply = ReplyText()
    reply.add_delta("Hel")
    reply.add_delta("lo")
    assert reply.text() == "Hello"
    reply.complete_segment("Hello!")
    reply.add_delta("More")
    assert reply.text() == "Hello!\n\nMore"
    reply.reset()
    assert reply.text() == ""


def test_edit_delay_throttles_to_the_interval() -> None:
    assert edit_delay(10.0, None, 1.0) == 0.0
    assert edit_delay(10.25, 10.0, 1.0) == pytest.approx(0.75)
    assert edit_delay(12.0, 10.0, 1.0) == 0.0


def test_failure_text_keeps_what_was_written() -> None:
    assert failure_text("", "model timed out").endswith(f"{FAILED_TEXT}: model timed out")
    shown = failure_text("partial", "boom\n  trace")
    assert shown.startswith("partial\n\n") and shown.endswith(": boom trace")


def test_chat_address_from_session_keys() -> None:
    assert chat_address("telegram:42", "telegram") == ChatAddress("42")
    assert chat_address("slack:C1:1700.01", "slack") == ChatAddress("C1", "1700.01")
    assert chat_address("custom-key", "slack") == ChatAddress("custom-key")
