"""The session store of one bus turn: reads from Redis, writes only through the lease.

The runtime saves the session just before it yields ``run.completed``. If that save
committed at once, a lease lost between the commit and the publishing of the final
events would leave a chat whose turn is committed (never re-run) but whose reply
never ends. So ``save`` only keeps the session; the worker calls ``commit`` with
the turn's last events (its terminal event), and those events, the session, the
cursor, the inbound trim and the attempt counters are written together by one
fenced script (``SessionWriter.commit``).

``leased`` holds a session's lease (with keepalive) around a block: the worker's
turns and the idle compaction job both write a session only inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from gateway.core.bus.session_writer import DeliverySignal, SessionWriter
from gateway.core.errors import SessionError
from gateway.core.events import StreamEvent
from gateway.core.sessions.base import Session, SessionInfo, SessionStore


class TurnStore:
    """A ``SessionStore`` for one leased session during one turn (or one compaction)."""

    __slots__ = ("_sessions", "_writer", "cursor", "saved")

    def __init__(self, sessions: SessionStore, writer: SessionWriter, *, cursor: str) -> None:
        self._sessions = sessions
        self._writer = writer
        self.cursor = cursor
        """The inbound id the commit moves the cursor to (steering may move it on)."""
        self.saved: Session | None = None
        """The session the runtime saved, waiting for ``commit``."""

    async def load(self, key: str) -> Session | None:
        if self.saved is not None and key == self.saved.key:
            return self.saved
        return await self._sessions.load(key)

    async def save(self, session: Session) -> None:
        if session.key != self._writer.session_key:
            raise SessionError(
                f"turn of {self._writer.session_key!r} may not save session {session.key!r}"
            )
        self.saved = session

    async def commit(
        self,
        *,
        entry_ids: Sequence[str] = (),
        events: Sequence[StreamEvent] = (),
        maxlen: int = 10_000,
        signal: DeliverySignal | None = None,
    ) -> None:
        """Publish ``events`` and write the saved session (if any) and the cursor, all
        atomically; ``LeaseLostError`` when the lease is no longer ours (nothing is
        written then)."""
        await self._writer.commit(
            cursor=self.cursor,
            session=self.saved,
            entry_ids=entry_ids,
            events=events,
            maxlen=maxlen,
            signal=signal,
        )

    async def delete(self, key: str) -> bool:
        return await self._sessions.delete(key)

    async def list(self) -> list[SessionInfo]:
        return await self._sessions.list()

    async def flush(self) -> None:
        await self._sessions.flush()

    async def aclose(self) -> None:
        """Nothing to release: the shared session store is owned by the worker."""


@asynccontextmanager
async def leased(
    redis: Redis,
    session_key: str,
    *,
    ttl_ms: int,
    owner: str,
    release: Callable[[], bool] = lambda: True,
) -> AsyncIterator[tuple[SessionWriter, asyncio.Event] | None]:
    """Hold the session's lease for the block, renewed every third of its ttl.

    Yields ``(writer, lost)`` (``lost`` is set if a renewal fails), or None when another
    holder has it. At the end the lease is released if ``release()`` says so (a worker
    stopping as a crash would leaves it to lapse by its ttl).
    """
    writer = await SessionWriter.acquire(redis, session_key, ttl_ms=ttl_ms, owner=owner)
    if writer is None:
        yield None
        return
    try:
        async with writer.keepalive(ttl_ms / 3000) as lost:
            yield writer, lost
    finally:
        if release():
            await writer.release()
