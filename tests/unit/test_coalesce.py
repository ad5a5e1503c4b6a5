"""DeltaCoalescer and CoalescingOutbox: merging, ordering, seq, time and size windows."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.events import (
    ReasoningDelta,
    RunCompleted,
    RunResult,
    RunStarted,
    StreamEvent,
    TextCompleted,
    TextDelta,
)
from gateway.workers.coalesce import CoalescingOutbox, DeltaCoalescer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def text(seq: int, delta: str, iteration: int = 1, run_id: str = "r1") -> TextDelta:
    return TextDelta(run_id=run_id, seq=seq, iteration=iteration, delta=delta)


def feed_all(coalescer: DeltaCoalescer, events: list[StreamEvent]) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    for event in events:
        out.extend(coalescer.feed(event))
    out.extend(coalescer.flush())
    return out


def test_consecutive_text_deltas_merge_and_keep_last_seq() -> None:
    clock = Clock()
    coalescer = DeltaCoalescer(window_s=1.0, max_chars=1000, clock=clock)
    events: list[StreamEvent] = [
        RunStarted(run_id="r1", seq=1),
        text(2, "Hel"),
        text(3, "lo "),
        text(4, "world"),
        TextCompleted(run_id="r1", seq=5, content="Hello world"),
    ]
    out = feed_all(coalescer, events)
    assert [e.type for e in out] == ["run.started", "text.delta", "text.completed"]
    merged = out[1]
    assert isinstance(merged, TextDelta)
    assert merged.delta == "Hello world"
    assert merged.seq == 4
    assert [e.seq for e in out] == sorted({e.seq for e in out})


def test_non_delta_event_releases_pending_delta_first() -> None:
    coalescer = DeltaCoalescer(window_s=1.0, max_chars=1000, clock=Clock())
    assert coalescer.feed(text(1, "a")) == ()
    assert coalescer.pending
    released = coalescer.feed(TextCompleted(run_id="r1", seq=2, content="a"))
    assert [e.type for e in released] == ["text.delta", "text.completed"]
    assert not coalescer.pending


def test_size_window_releases_at_once() -> None:
    coalescer = DeltaCoalescer(window_s=10.0, max_chars=5, clock=Clock())
    assert coalescer.feed(text(1, "abc")) == ()
    released = coalescer.feed(text(2, "defg"))
    assert len(released) == 1
    assert isinstance(released[0], TextDelta)
    assert released[0].delta == "abcdefg"
    assert coalescer.due_in() is None


def test_time_window_reports_due_and_releases_on_next_feed() -> None:
    clock = Clock()
    coalescer = DeltaCoalescer(window_s=0.05, max_chars=1000, clock=clock)
    coalescer.feed(text(1, "a"))
    assert coalescer.due_in() == pytest.approx(0.05)
    clock.now += 0.03
    assert coalescer.feed(text(2, "b")) == ()
    clock.now += 0.03
    released = coalescer.feed(text(3, "c"))
    assert [e.delta for e in released if isinstance(e, TextDelta)] == ["abc"]


def test_text_and_reasoning_and_iterations_do_not_mix() -> None:
    coalescer = DeltaCoalescer(window_s=1.0, max_chars=1000, clock=Clock())
    events: list[StreamEvent] = [
        ReasoningDelta(run_id="r1", seq=1, iteration=1, delta="think "),
        ReasoningDelta(run_id="r1", seq=2, iteration=1, delta="more"),
        text(3, "x"),
        text(4, "y"),
        text(5, "z", iteration=2),
        text(6, "other run", run_id="r2"),
    ]
    out = feed_all(coalescer, events)
    assert [(e.type, getattr(e, "delta", "")) for e in out] == [
        ("reasoning.delta", "think more"),
        ("text.delta", "xy"),
        ("text.delta", "z"),
        ("text.delta", "other run"),
    ]


def test_zero_window_passes_everything_through() -> None:
    coalescer = DeltaCoalescer(window_s=0, max_chars=1000, clock=Clock())
    events: list[StreamEvent] = [text(1, "a"), text(2, "b")]
    assert feed_all(coalescer, events) == events


async def test_outbox_timer_releases_pending_delta_without_more_events() -> None:
    outbox = CoalescingOutbox(DeltaCoalescer(window_s=0.02, max_chars=1000))
    outbox.put(RunStarted(run_id="r1", seq=1))
    outbox.put(text(2, "hel"))
    outbox.put(text(3, "lo"))
    batches = outbox.batches()
    first = await anext(batches)
    assert [e.type for e in first] == ["run.started"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    second = await asyncio.wait_for(anext(batches), timeout=1.0)
    assert loop.time() - started >= 0.01
    assert [getattr(e, "delta", None) for e in second] == ["hello"]
    result = RunResult(content="hello", stop_reason="completed")
    outbox.put(RunCompleted(run_id="r1", seq=4, result=result, content="hello"))
    assert outbox.terminal_seen
    assert outbox.last_seq == 4
    outbox.close()
    rest = [event async for batch in batches for event in batch]
    assert [e.type for e in rest] == ["run.completed"]


async def test_outbox_close_flushes_and_discard_drops() -> None:
    outbox = CoalescingOutbox(DeltaCoalescer(window_s=5.0, max_chars=1000))
    outbox.put(text(1, "tail"))
    outbox.close()
    got = [event async for batch in outbox.batches() for event in batch]
    assert [getattr(e, "delta", None) for e in got] == ["tail"]

    dropped = CoalescingOutbox(DeltaCoalescer(window_s=5.0, max_chars=1000))
    dropped.put(RunStarted(run_id="r1", seq=1))
    dropped.put(text(2, "partial"))
    dropped.discard()
    assert [event async for batch in dropped.batches() for event in batch] == []


async def test_outbox_lone_run_started_lingers_for_the_next_event() -> None:
    outbox = CoalescingOutbox(DeltaCoalescer(window_s=0.0, max_chars=1000), linger_s=5.0)
    batches = outbox.batches()
    outbox.put(RunStarted(run_id="r1", seq=1))
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # run.started alone waits for company
    outbox.put(text(2, "hi"))
    first = await asyncio.wait_for(waiting, timeout=1.0)
    assert [e.type for e in first] == ["run.started", "text.delta"]
    outbox.put(text(3, "there"))  # later events never linger
    second = await asyncio.wait_for(anext(batches), timeout=1.0)
    assert [e.type for e in second] == ["text.delta"]
    outbox.close()
    assert [event async for batch in batches for event in batch] == []


async def test_outbox_linger_ends_on_its_timer_and_on_close() -> None:
    outbox = CoalescingOutbox(DeltaCoalescer(window_s=0.0, max_chars=1000), linger_s=0.02)
    outbox.put(RunStarted(run_id="r1", seq=1))
    alone = await asyncio.wait_for(anext(outbox.batches()), timeout=1.0)
    assert [e.type for e in alone] == ["run.started"]  # published after the linger

    closing = CoalescingOutbox(DeltaCoalescer(window_s=0.0, max_chars=1000), linger_s=5.0)
    closing.put(RunStarted(run_id="r2", seq=1))
    closing.close()
    got = await asyncio.wait_for(anext(closing.batches()), timeout=1.0)
    assert [e.type for e in got] == ["run.started"]
