"""One follower of a session's outbound stream, fed by the process's ``OutboundReader``.

The reader offers each entry it reads to every subscription of the session; a
subscription takes the entries after its ``position``, in order, into a buffer of at
most ``limit`` entries. A full buffer *pauses* the subscription: it takes nothing
more (its position stays), the reader leaves it out of its reads, and once its
consumer has taken the buffer it resumes from its position. The entries it did not
take are still in Redis, so a slow consumer costs neither memory nor the others'
progress, and loses nothing (a stream trimmed past it skips ahead, as an ``XREAD``
from its position would).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from gateway.core.bus.codec import parse_stream_id
from gateway.core.events import StreamEvent

StreamPos = tuple[int, int]


class Entry(NamedTuple):
    """An outbound entry as subscribers get it: its id, its event, its SSE frame."""

    id: str
    event: StreamEvent
    frame: bytes


class Subscription:
    """Entries of ``session_key`` after ``after``; ``next()`` waits for them."""

    __slots__ = (
        "_buffer",
        "_error",
        "_limit",
        "_on_resume",
        "_waiter",
        "after",
        "paused",
        "position",
        "session_key",
    )

    def __init__(
        self,
        session_key: str,
        after: str,
        *,
        limit: int,
        on_resume: Callable[[Subscription], None],
    ) -> None:
        self.session_key = session_key
        self.after = after
        """The id of the last entry taken (where a read for this subscription starts)."""
        self.position: StreamPos = parse_stream_id(after)
        self.paused = False
        self._limit = limit
        self._on_resume = on_resume
        self._buffer: list[Entry] = []
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def ended(self) -> bool:
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Entries taken and not yet handed to the consumer."""
        return len(self._buffer)

    def offer(self, pos: StreamPos, entry_id: str, entry: Entry | None) -> None:
        """Take the entry at ``pos`` if it is new here (``None``: an entry no consumer
        gets, a malformed one: only the position moves past it)."""
        if self.paused or self._error is not None or pos <= self.position:
            return
        if entry is not None:
            if len(self._buffer) >= self._limit:
                self.paused = True
                return
            self._buffer.append(entry)
            self._wake()
        self.position, self.after = pos, entry_id

    def fail(self, error: BaseException) -> None:
        """End the subscription: ``next()`` raises ``error`` once the buffer is taken."""
        if self._error is None:
            self._error = error
            self._wake()

    async def next(self, timeout_s: float) -> list[Entry]:
        """The entries buffered, oldest first, waiting up to ``timeout_s`` for one
        (``[]`` when none came); raises the error the subscription ended with."""
        if not self._buffer and self._error is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout_s, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        batch, self._buffer = self._buffer, []
        if not batch and self._error is not None:
            raise self._error
        if self.paused and self._error is None:
            self.paused = False
            self._on_resume(self)
        return batch

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
