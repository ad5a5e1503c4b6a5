"""Compaction: where to split, the prompt, and applying the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.compaction import (
    TOOL_RESULT_PREVIEW_CHARS,
    compact,
    needs_compaction,
    split_for_compaction,
    summary_prompt,
)
from gateway.core.memory import MemoryStore
from gateway.core.messages import Message
from gateway.core.sessions.base import Session


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def call(*ids: str) -> Message:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
            for i in ids
        ],
    }


def result(call_id: str, text: str = "ok") -> Message:
    return {"role": "tool", "tool_call_id": call_id, "name": "read_file", "content": text}


HISTORY: list[Message] = [
    user("u0"),
    call("a", "b"),
    result("a"),
    result("b"),
    assistant("done 1"),
    user("u1"),
    call("c"),
    result("c"),
    assistant("done 2"),
]


class FakeSummarizer:
    """A real async summarizer with a deterministic reply; records what it was given."""

    def __init__(self, reply: str = "SUMMARY") -> None:
        self.reply = reply
        self.prompts: list[list[Message]] = []

    async def __call__(self, messages: list[Message]) -> str:
        self.prompts.append(messages)
        return f"  {self.reply} #{len(self.prompts)}  " if self.reply else "   "


def test_split_keeps_the_last_messages() -> None:
    older, kept = split_for_compaction(HISTORY, keep_last=4)
    assert older == HISTORY[:5]
    assert kept == HISTORY[5:]


def test_split_moves_back_over_tool_results() -> None:
    older, kept = split_for_compaction(HISTORY, keep_last=6)  # boundary on result("b")
    assert kept[0] is HISTORY[1]
    assert older == [HISTORY[0]]


def test_split_edges() -> None:
    assert split_for_compaction(HISTORY, keep_last=100) == ([], HISTORY)
    assert split_for_compaction(HISTORY, keep_last=0) == (HISTORY, [])
    assert split_for_compaction(HISTORY, keep_last=-3) == (HISTORY, [])
    assert split_for_compaction([], keep_last=2) == ([], [])


@pytest.mark.parametrize("keep_last", range(len(HISTORY) + 2))
def test_split_never_separates_a_tool_call_from_its_results(keep_last: int) -> None:
    older, kept = split_for_compaction(HISTORY, keep_last)
    assert older + kept == HISTORY
    assert not kept or kept[0]["role"] != "tool"
    calls_kept = {c["id"] for m in kept for c in m.get("tool_calls", [])}
    assert all(m["tool_call_id"] in calls_kept for m in kept if m["role"] == "tool")
    assert len(kept) >= min(keep_last, len(HISTORY))


def test_split_moves_forward_past_orphan_tool_results() -> None:
    broken = [result("x"), result("y"), user("u"), assistant("a")]
    assert split_for_compaction(broken, keep_last=3) == (broken[:2], broken[2:])


def test_needs_compaction_counts_messages_and_summary() -> None:
    session = Session(key="k", messages=[user("word " * 100)])
    assert needs_compaction(session, token_budget=50)
    assert not needs_compaction(session, token_budget=1000)
    session.summary = "fact " * 1000
    assert needs_compaction(session, token_budget=1000)


def test_summary_prompt_renders_the_transcript() -> None:
    long_output = "z" * (TOOL_RESULT_PREVIEW_CHARS + 500)
    older = [
        user("my name is Ada"),
        call("a"),
        result("a", long_output),
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]},
    ]
    system, prompt = summary_prompt(older, previous_summary="Ada likes tea.")

    assert system["role"] == "system"
    assert "summary" in system["content"]
    text = prompt["content"]
    assert prompt["role"] == "user"
    assert text.index("Ada likes tea.") < text.index("[user] my name is Ada")
    assert "[assistant calls] read_file({})" in text
    assert "[tool read_file result] " + "z" * TOOL_RESULT_PREVIEW_CHARS + " …[cut]" in text
    assert "z" * (TOOL_RESULT_PREVIEW_CHARS + 1) not in text
    assert "[user] look [image_url]" in text


def test_summary_prompt_without_previous_summary() -> None:
    _, prompt = summary_prompt([user("hi")], previous_summary="")
    assert "Previous summary" not in prompt["content"]


async def test_compact_folds_older_messages(tmp_path: Path) -> None:
    session = Session(key="chat:1", messages=list(HISTORY), summary="before")
    memory = MemoryStore(tmp_path)
    summarize = FakeSummarizer()

    summary = await compact(session, summarize, keep_last=4, memory=memory)

    assert summary == "SUMMARY #1"
    assert session.summary == "SUMMARY #1"
    assert session.messages == HISTORY[5:]
    (prompt,) = summarize.prompts
    assert prompt == summary_prompt(HISTORY[:5], "before")
    assert [(e["text"], e["session_key"]) for e in memory.read_history()] == [
        ("SUMMARY #1", "chat:1")
    ]


async def test_compact_twice_carries_the_summary_forward() -> None:
    session = Session(key="k", messages=[user(str(i)) for i in range(10)])
    summarize = FakeSummarizer()
    await compact(session, summarize, keep_last=6)
    session.messages.extend(user(f"new {i}") for i in range(4))
    await compact(session, summarize, keep_last=6)
    assert session.summary == "SUMMARY #2"
    assert "SUMMARY #1" in summarize.prompts[1][1]["content"]
    assert len(session.messages) == 6


async def test_nothing_to_compact_changes_nothing(tmp_path: Path) -> None:
    session = Session(key="k", messages=HISTORY[:3], summary="s")
    summarize = FakeSummarizer()
    memory = MemoryStore(tmp_path)
    assert await compact(session, summarize, keep_last=8, memory=memory) == ""
    assert (session.messages, session.summary) == (HISTORY[:3], "s")
    assert summarize.prompts == []
    assert memory.read_history() == []


async def test_empty_model_reply_keeps_the_history() -> None:
    session = Session(key="k", messages=list(HISTORY), summary="s")
    assert await compact(session, FakeSummarizer(reply=""), keep_last=2) == ""
    assert (session.messages, session.summary) == (HISTORY, "s")
