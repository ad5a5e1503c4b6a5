"""``RunStream``: a handle on one run in its own task (seed 000's ``bot.run_streamed``).

Every turn of the runtime runs this way (``AgentRuntime.start``): the task holds the
session's lock and the consumer only reads the buffer, so no lock waits on the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from types import TracebackType

from gateway.core.events import RunCompleted, RunFailed, RunResult, StreamEvent

_END = object()


class RunStream:
    """One run in a background task, its events buffered for a single consumer.

    Consume ``stream_events()`` to the end, or ``wait()``/``text()``, or ``cancel()``/
    ``aclose()``. Leaving ``stream_events()`` early cancels the run. The buffer is
    unbounded (a run is finite), so the producer never blocks on a slow or absent reader.
    """

    def __init__(self, events: AsyncGenerator[StreamEvent, None]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._result: RunResult | None = None
        self._consumed = False
        self._task = asyncio.create_task(self._pump(events))
        # A done callback, not a ``finally``: it also fires for a task cancelled before it ran.
        self._task.add_done_callback(lambda _: self._queue.put_nowait(_END))

    async def _pump(self, events: AsyncGenerator[StreamEvent, None]) -> None:
        try:
            async for event in events:
                if isinstance(event, RunCompleted | RunFailed):
                    self._result = event.result
                await self._queue.put(event)
        finally:
            await events.aclose()

    @property
    def done(self) -> bool:
        return self._task.done()

    async def stream_events(self) -> AsyncGenerator[StreamEvent, None]:
        """Single-consumer iterator over the run's events."""
        if self._consumed:
            raise RuntimeError("stream_events() can be consumed only once")
        self._consumed = True
        finished = False
        try:
            async for event in self._drain():
                yield event
            finished = True
        finally:
            if not finished:
                await self.cancel()

    async def _drain(self) -> AsyncGenerator[StreamEvent, None]:
        while (item := await self._queue.get()) is not _END:
            yield item  # type: ignore[misc]
        await self._finish()

    async def _finish(self) -> None:
        """Wait for the run's task; re-raise its error, record a cancellation as the result.

        ``asyncio.wait`` rather than ``await self._task``: cancelling the caller must
        propagate to the caller (not be read as the run's own cancellation) and must
        not cancel the run it was only waiting for.
        """
        if not self._task.done():
            await asyncio.wait((self._task,))
        if self._task.cancelled():
            if self._result is None:
                self._result = _cancelled()
            return
        self._task.result()  # the run's own exception, if it raised one

    async def wait(self) -> RunResult:
        """Wait for the run to finish and return its ``RunResult``."""
        if not self._consumed:
            self._consumed = True
            async for _ in self._drain():
                pass
        else:
            await self._finish()
        if self._result is None:
            raise RuntimeError("the run ended without a result")
        return self._result

    async def text(self) -> str:
        return (await self.wait()).content

    async def cancel(self) -> None:
        """Cancel the run (stops the model stream and tools) and release its resources."""
        if not self._task.done():
            self._task.cancel()
        await self._finish()

    async def aclose(self) -> None:
        await self.cancel()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _cancelled() -> RunResult:
    return RunResult(stop_reason="cancelled", error="the run was cancelled")
