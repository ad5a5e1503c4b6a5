"""The session store of one bus turn: reads from Redis, writes only through the lease.

The runtime saves the session just before it yields ``run.completed``. If that save
committed at once, a lease lost between the commit and the publishing of the final
events would leave a chat whose turn is committed (never re-run) but whose reply
never ends. So ``save`` only keeps the session; the worker calls ``commit`` with
the turn's last events (its terminal event), and those events, the session, the
cursor, the inbound trim and the attempt counters are written together by one
fenced script (``SessionWriter.commit``). The store remembers the session as it
was read (``StoredSession``), so the commit appends only the messages the turn
added to the stored log.

``leased`` holds a session's lease (with keepalive) around a block: the worker's
turns and the idle compaction job both write a session only inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from gateway.core.bus.session_writer import Committed, DeliverySignal, Finish, SessionWriter
from gateway.core.errors import SessionError
from gateway.core.events import StreamEvent
from gateway.core.sessions.base import Session, SessionInfo, SessionStore
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.sessions.redis_form import StoredSession, after_write


class TurnStore:
    """A ``SessionStore`` for one leased session during one turn (or one compaction)."""

    __slots__ = ("_base", "_loaded", "_sessions", "_stamp", "_writer", "cursor", "saved")

    def __init__(
        self,
        sessions: SessionStore,
        writer: SessionWriter,
        *,
        cursor: str,
        base: StoredSession | None = None,
        loaded: bool = False,
    ) -> None:
        self._sessions = sessions
        self._writer = writer
        self.cursor = cursor
        """The inbound id the commit moves the cursor to (steering may move it on)."""
        self.saved: Session | None = None
        """The session the runtime saved, waiting for ``commit``."""
        self._base = base
        """The session as stored (what a commit appends to), once ``_loaded``."""
        self._loaded = loaded
        self._stamp = ""

    @property
    def stored(self) -> StoredSession | None:
        """What is stored once the commit is through: the next turn's base."""
        return after_write(self.saved, self._stamp) if self.saved is not None else self._base

    async def load(self, key: str) -> Session | None:
        if self.saved is not None and key == self.saved.key:
            return self.saved
        if key != self._writer.session_key:
            return await self._sessions.load(key)
        if not self._loaded:
            self._base = await _load_stored(self._sessions, key)
            self._loaded = True
        return None if self._base is None else self._base.session

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
        finish: Finish | None = None,
    ) -> Committed:
        """Publish ``events`` and write the saved session (if any: what the turn added
        is appended to the stored log) and the cursor, all atomically;
        ``LeaseLostError`` when the lease is no longer ours (nothing is written then)."""
        committed = await self._writer.commit(
            cursor=self.cursor,
            session=self.saved,
            base=self._base,
            entry_ids=entry_ids,
            events=events,
            maxlen=maxlen,
            signal=signal,
            finish=finish,
        )
        self._stamp = committed.stamp
        return committed

    async def delete(self, key: str) -> bool:
        return await self._sessions.delete(key)

    async def list(self) -> list[SessionInfo]:
        return await self._sessions.list()

    async def flush(self) -> None:
        await self._sessions.flush()

    async def aclose(self) -> None:
        """Nothing to release: the shared session store is owned by the worker."""


async def _load_stored(sessions: SessionStore, key: str) -> StoredSession | None:
    if isinstance(sessions, RedisSessionStore):
        return await sessions.load_stored(key)
    session = await sessions.load(key)
    # Another store: no stored log to append to, so the commit writes it whole.
    return None if session is None else StoredSession.of(session, length=0, rewrite=True)


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
