"""The shared message and event helpers: text of a content, the API key set, run numbering."""

from __future__ import annotations

from gateway.core.compaction import summary_prompt
from gateway.core.events import RunCompleted, RunEmitter, RunResult, RunStarted, TextDelta
from gateway.core.messages import OPENAI_MESSAGE_KEYS, ChatMessage, content_text
from gateway.core.providers.echo import last_user_text
from gateway.core.tokens import estimate_message_tokens

PARTS = [
    {"type": "text", "text": "look at"},
    {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}},
    "not a part",
    {"type": "text", "text": ""},
    {"type": "text", "text": "this"},
]


def test_content_text() -> None:
    assert content_text("plain") == "plain"
    assert content_text(None) == "" and content_text(42) == ""
    assert content_text(PARTS) == "look at this"
    assert content_text(PARTS, placeholders=True) == "look at [image_url] this"


def test_every_reader_of_content_agrees() -> None:
    message = {"role": "user", "content": PARTS}
    assert last_user_text([message]) == "look at this"
    assert "[user] look at [image_url] this" in summary_prompt([message], "")[1]["content"]
    same_text = {"role": "user", "content": "look at this"}
    assert estimate_message_tokens([message]) == estimate_message_tokens([same_text])


def test_one_api_key_set() -> None:
    assert {"role", "content", "name", "tool_call_id", "tool_calls"} == OPENAI_MESSAGE_KEYS
    assert set(ChatMessage.model_fields) == OPENAI_MESSAGE_KEYS


def test_run_emitter_numbers_events() -> None:
    emit = RunEmitter("r1")
    started = emit(RunStarted, session_key="k")
    delta = emit(TextDelta, delta="hi")
    assert (started.run_id, started.seq, delta.seq) == ("r1", 1, 2)
    later = RunEmitter("r1", after_seq=7)
    done = later(RunCompleted, result=RunResult(content="x"), content="x")
    assert done.seq == 8
