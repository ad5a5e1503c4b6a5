"""Coalescing of streamed deltas before they go onto the bus.

A model streams a text delta every few characters; publishing each one is a Redis
round trip per token and an edit per token on the chat platform. ``DeltaCoalescer``
merges consecutive ``text.delta`` (or ``reasoning.delta``) events of one run and
iteration into one event, released when the time window since the first merged
delta has passed or the merged text reaches the size window. Any other event
releases the pending delta first, so the order of events never changes.

A merged event keeps the fields of its first delta and takes the ``seq`` of its last
one: sequence numbers stay strictly increasing (with gaps where deltas merged).

``CoalescingOutbox`` wraps a coalescer for a producer/publisher pair: the producer
``put``s events as the runtime yields them, a loop timer releases pending deltas
when their window ends (no polling), and the publisher iterates ``batches()``,
getting everything that became ready while its previous publish was in flight.
A batch holding only ``run.started`` lingers (``linger_s``) for the run's next event:
a model that answers quickly then shares one bus write with it, and under load the
turn costs one Redis round trip less (and every reader of the stream one wake-up less).
``supervise`` runs such a pair (and any watcher tasks) until both are done or any
of them fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from gateway.core.bus.backoff import cancel_until_done
from gateway.core.events import (
    TERMINAL_EVENT_TYPES,
    ReasoningDelta,
    RunStarted,
    StreamEvent,
    TextDelta,
)

log = logging.getLogger(__name__)

_NOTHING: tuple[StreamEvent, ...] = ()


class DeltaCoalescer:
    """Merges runs of deltas within a time window (seconds) or size window (characters).

    A ``window_s`` of 0 turns merging off: every event passes straight through.
    ``feed`` and ``flush`` are synchronous because merging needs no I/O; the caller
    decides when to wait (see ``due_in``).
    """

    __slots__ = (
        "_chars",
        "_clock",
        "_first",
        "_last_seq",
        "_max_chars",
        "_parts",
        "_started",
        "_window_s",
    )

    def __init__(
        self, *, window_s: float, max_chars: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._max_chars = max_chars
        self._clock = clock
        self._first: TextDelta | ReasoningDelta | None = None
        self._parts: list[str] = []
        self._chars = 0
        self._last_seq = 0
        self._started = 0.0

    @property
    def pending(self) -> bool:
        return self._first is not None

    def due_in(self) -> float | None:
        """Seconds until the pending delta must be released; None when nothing is pending."""
        if self._first is None:
            return None
        return max(0.0, self._started + self._window_s - self._clock())

    def feed(self, event: StreamEvent) -> tuple[StreamEvent, ...]:
        """Take one event; return the events to publish now, in order."""
        if self._window_s <= 0:
            return (event,)
        if not isinstance(event, TextDelta | ReasoningDelta):
            if self._first is None:
                return (event,)
            return (self._release(), event)
        released = _NOTHING
        if self._first is not None and not self._continues(event):
            released = (self._release(),)
        self._add(event)
        if self._chars >= self._max_chars or self.due_in() == 0.0:
            return (*released, self._release())
        return released

    def flush(self) -> tuple[StreamEvent, ...]:
        """Release the pending delta, if any (window ended, or the stream ended)."""
        if self._first is None:
            return _NOTHING
        return (self._release(),)

    def _continues(self, event: TextDelta | ReasoningDelta) -> bool:
        first = self._first
        assert first is not None
        return (
            event.type == first.type
            and event.run_id == first.run_id
            and event.iteration == first.iteration
        )

    def _add(self, event: TextDelta | ReasoningDelta) -> None:
        if self._first is None:
            self._first = event
            self._started = self._clock()
        self._parts.append(event.delta)
        self._chars += len(event.delta)
        self._last_seq = event.seq

    def _release(self) -> StreamEvent:
        first = self._first
        assert first is not None
        merged: StreamEvent = first
        if len(self._parts) > 1:
            merged = first.model_copy(update={"delta": "".join(self._parts), "seq": self._last_seq})
        self._first = None
        self._parts = []
        self._chars = 0
        return merged


class CoalescingOutbox:
    """Events waiting to be published, with a timer that releases pending deltas.

    One producer calls ``put`` and finally ``close``; one publisher iterates
    ``batches()`` until it ends (closed and empty). Must be used inside a running loop.
    """

    __slots__ = (
        "_closed",
        "_coalescer",
        "_last_seq",
        "_linger",
        "_linger_s",
        "_loop",
        "_ready",
        "_timer",
        "_wake",
        "terminal_seen",
    )

    def __init__(self, coalescer: DeltaCoalescer, *, linger_s: float = 0.0) -> None:
        self._coalescer = coalescer
        self._linger_s = linger_s
        self._linger: asyncio.TimerHandle | None = None
        """Armed while the ready events are a lone ``run.started`` waiting for company."""
        self._loop = asyncio.get_running_loop()
        self._ready: list[StreamEvent] = []
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._last_seq = 0
        self.terminal_seen = False
        """True once run.completed or run.failed was put (the run has produced its end)."""

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` put so far (a follow-up event takes ``last_seq + 1``)."""
        return self._last_seq

    def put(self, event: StreamEvent) -> None:
        self._last_seq = max(self._last_seq, event.seq)
        if event.type in TERMINAL_EVENT_TYPES:
            self.terminal_seen = True
        self._take(self._coalescer.feed(event))
        self._arm_timer()

    def close(self) -> None:
        """No more events: release whatever is pending and let ``batches()`` end."""
        self._disarm_timer()
        self._take(self._coalescer.flush())
        self._closed = True
        self._end_linger()

    def discard(self) -> None:
        """Drop everything unpublished and end ``batches()`` (the run was abandoned)."""
        self._disarm_timer()
        self._coalescer.flush()
        self._ready = []
        self._closed = True
        self._end_linger()

    async def batches(self) -> AsyncIterator[list[StreamEvent]]:
        while True:
            if not self._ready or self._linger is not None:
                if self._closed and not self._ready:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._ready = self._ready, []
            yield batch

    def _take(self, events: tuple[StreamEvent, ...]) -> None:
        if not events:
            return
        self._ready.extend(events)
        lone_start = all(isinstance(event, RunStarted) for event in self._ready)
        if lone_start and self._linger_s > 0 and not self._closed:
            if self._linger is None:
                self._linger = self._loop.call_later(self._linger_s, self._end_linger)
            return
        self._end_linger()

    def _end_linger(self) -> None:
        """Let the publisher take what is ready (company came, or the linger ended)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._wake.set()

    def _arm_timer(self) -> None:
        if self._timer is not None or self._closed:
            return
        due = self._coalescer.due_in()
        if due is not None:
            self._timer = self._loop.call_later(due, self._on_timer)

    def _disarm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        due = self._coalescer.due_in()
        if due == 0.0:
            self._take(self._coalescer.flush())
        # The pending delta may be a newer one than the timer was set for: wait for it.
        self._arm_timer()


async def supervise(
    required: tuple[asyncio.Task[None], ...], watchers: tuple[asyncio.Task[None], ...] = ()
) -> None:
    """Wait until every ``required`` task is done; the first error of any task is raised.

    Whatever happens (success, an error, our own cancellation) every task is
    cancelled and awaited before this returns; errors not raised are logged.
    """
    tasks = (*required, *watchers)
    raised: BaseException | None = None
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while not all(task.done() for task in required):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    raised = error
                    raise error
    finally:
        await cancel_until_done(tasks)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) not in (None, raised):
                log.error("task %s failed", task.get_name(), exc_info=error)
