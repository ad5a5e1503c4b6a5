"""``RunStream``: cancelling someone who waits on a run is not cancelling the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from gateway.core.events import RunCompleted, RunResult, RunStarted, StreamEvent
from gateway.core.runs import RunStream


async def _slow_to_stop(started: asyncio.Event, cleanup_s: float) -> AsyncGenerator[StreamEvent]:
    """A run that waits forever and, once cancelled, takes ``cleanup_s`` to stop."""
    yield RunStarted(run_id="r", seq=1)
    started.set()
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(asyncio.sleep(cleanup_s))


async def _released_by(release: asyncio.Event) -> AsyncGenerator[StreamEvent]:
    yield RunStarted(run_id="r", seq=1)
    await release.wait()
    result = RunResult(content="done", stop_reason="completed")
    yield RunCompleted(run_id="r", seq=2, result=result, content="done")


async def test_cancelling_the_caller_of_cancel_propagates() -> None:
    started = asyncio.Event()
    run = RunStream(_slow_to_stop(started, cleanup_s=0.2))
    await started.wait()
    canceller = asyncio.create_task(run.cancel())
    await asyncio.sleep(0.02)  # the run is cancelled and still cleaning up
    canceller.cancel()
    await asyncio.wait((canceller,))
    assert canceller.cancelled()
    assert (await run.wait()).stop_reason == "cancelled"


async def test_cancelling_a_waiter_leaves_the_run_alone() -> None:
    release = asyncio.Event()
    run = RunStream(_released_by(release))
    seen: list[str] = []

    async def consume() -> None:
        async for event in run.stream_events():
            seen.append(event.type)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(run.wait())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.wait((waiter,))
    assert waiter.cancelled()
    release.set()
    await consumer
    assert seen == ["run.started", "run.completed"]
    assert (await run.wait()).content == "done"
