"""One reader of the outbound streams for the whole process, fanned out to subscribers.

Every SSE stream used to wait in its own ``XREAD BLOCK`` on its own pooled
connection: a Redis connection per open stream, and a read per outbound batch per
stream. ``OutboundReader`` instead issues one ``XREAD BLOCK`` on a dedicated
connection over every followed session, each from the position of its furthest
behind (unpaused) subscription, and offers each entry read to the subscriptions of
its session (``channels.http.subscription``): a subscription takes the entries after
its own position, so subscribers of one session may be at different places (a
``Last-Event-ID`` resume, a catch-up from ``after=0-0``) and each still gets every
entry once, in order.

Wake-up: a subscription that joins (or resumes) behind what the read in flight
covers would wait for that read's block to end; the reader's connection is then
woken with ``CLIENT UNBLOCK <id>`` from the pool (the id learned with ``CLIENT ID``
on each connect). That ends the ``XREAD`` as a timeout would, with nothing cancelled
in flight. An unblock that reaches Redis before the ``XREAD`` does finds nothing to
unblock: the waker tries again (briefly spaced) until the reader has moved on.

Failures: a Redis error that is not an error reply ends every subscription with that
error (their streams end as they did with their own reads: the client resumes with
``Last-Event-ID``), the connection is dropped and the reader backs off (``Outage``)
before it reads again; with no subscriptions left it waits, issuing nothing. An error
reply (one stream of the wrong type) is narrowed down stream by stream, and only
that stream's subscriptions end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from gateway.channels.http.subscription import Entry, StreamPos, Subscription
from gateway.channels.http.xread import (
    Planned,
    Read,
    XreadCommand,
    entry_fields,
    xread_batches,
)
from gateway.core.bus import keys
from gateway.core.bus.backoff import Outage, cancel_until_done
from gateway.core.bus.codec import decode_event, parse_stream_id
from gateway.core.errors import PayloadError
from gateway.core.events import StreamEvent

log = logging.getLogger(__name__)

READ_BLOCK_MS: Final = 5_000
"""Longest single block (re-issued; well under the clients' socket timeout)."""
READ_COUNT: Final = 500
"""Entries per stream per read."""
BUFFER_LIMIT: Final = 1_000
"""Entries a subscription holds before it pauses."""
UNBLOCK_RETRY_S: Final = (0.001, 0.05)
"""First and longest wait between unblock attempts that found no read blocked yet."""

Render = Callable[[str, StreamEvent], bytes]


class ReaderClosed(RuntimeError):
    """The reader is not running (the server is stopping)."""


class OutboundReader:
    """``subscribe()`` a session from an entry id; ``start()``/``close()`` the reader."""

    def __init__(
        self,
        redis: Redis,
        render: Render,
        *,
        block_ms: int = READ_BLOCK_MS,
        buffer_limit: int = BUFFER_LIMIT,
    ) -> None:
        self._redis = redis
        self._render = render
        self._block_ms = block_ms
        self._limit = buffer_limit
        self._sessions: dict[str, set[Subscription]] = {}
        self._joined = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._waker: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None
        self._client_id: int | None = None
        self._read: Read | None = None
        """What the read in flight covers (None between reads)."""
        self._reads = 0
        self._command = XreadCommand(count=READ_COUNT, block_ms=block_ms)
        self.outage = Outage("SSE outbound reader")

    @property
    def subscriptions(self) -> int:
        return sum(len(subs) for subs in self._sessions.values())

    def start(self) -> None:
        """Begin reading (idempotent)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="SSE outbound reader")

    async def close(self) -> None:
        """Stop reading, end every subscription, give the connection back (idempotent)."""
        tasks = [t for t in (self._loop_task, self._waker) if t is not None]
        self._loop_task = self._waker = None
        await cancel_until_done(tasks)
        self._fail_all(ReaderClosed("the event stream reader stopped"))
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

    def subscribe(self, session_key: str, after: str) -> Subscription:
        """Follow ``session_key`` from after entry id ``after``."""
        if self._loop_task is None:
            raise ReaderClosed("the event stream reader is not running")
        sub = Subscription(session_key, after, limit=self._limit, on_resume=self._resumed)
        self._sessions.setdefault(session_key, set()).add(sub)
        self._joined.set()
        self._resumed(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._sessions.get(sub.session_key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._sessions[sub.session_key]

    # -- waking the read in flight ----------------------------------------------------

    def _resumed(self, sub: Subscription) -> None:
        """Wake the read in flight if it does not cover ``sub`` (joined or resumed)."""
        read = self._read
        if read is None:
            return  # between reads: the next one includes it
        covered = read.get(keys.outbound(sub.session_key))
        if covered is not None and covered.pos <= sub.position:
            return
        if self._waker is None or self._waker.done():
            self._waker = asyncio.create_task(self._unblock(self._reads), name="SSE reader wake")

    async def _unblock(self, read_no: int) -> None:
        delay, longest = UNBLOCK_RETRY_S
        while self._read is not None and self._reads == read_no and self._client_id is not None:
            try:
                if await self._redis.client_unblock(self._client_id):
                    return
            except (RedisError, OSError) as exc:
                # The reader meets the same outage in its read, and handles it there.
                log.debug("could not wake the SSE reader: %s", exc)
                return
            await asyncio.sleep(delay)  # its XREAD has not reached Redis yet
            delay = min(longest, delay * 2)

    # -- the read loop ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._sessions:
                await self._idle()
                continue
            try:
                await self._read_once()
            except (RedisError, OSError) as exc:
                await self._lost(exc)
                continue
            except Exception as exc:  # a bug: end the streams, keep the reader alive
                log.exception("the SSE outbound reader failed")
                await self._lost(exc)
                continue
            self.outage.recovered()

    async def _read_once(self) -> None:
        conn = await self._connection()
        read = self._plan()
        if not read:  # every subscription paused: wait for one to resume
            await self._idle()
            return
        self._reads += 1
        self._read = read
        try:
            await conn.send_packed_command(self._command.pack(read), check_health=False)
            reply = await conn.read_response()
        except ResponseError as exc:
            await self._isolate(read, exc)
            return
        finally:
            self._read = None
        if self._dispatch(read, reply):
            # Let the streams write what they got before reading again: entries that
            # land meanwhile come in the same read (a read names every followed stream).
            await asyncio.sleep(0)

    async def _idle(self) -> None:
        """Wait for a subscription to join or resume; the connection may die meanwhile
        (a Redis restart), unnoticed as nothing reads it: check it before the next read."""
        self._joined.clear()
        await self._joined.wait()
        conn = self._conn
        if conn is not None and conn.is_connected:
            try:
                stale = await conn.can_read_destructive()  # type: ignore[no-untyped-call]
            except (RedisError, OSError):
                stale = True
            if stale:
                await conn.disconnect()

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            # Its own, outside the pool: it is blocked most of the time.
            self._conn = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._client_id = None
        conn = self._conn
        if self._client_id is None or not conn.is_connected:
            await conn.connect()
            await conn.send_command("CLIENT", "ID", check_health=False)
            self._client_id = int(cast(int, await conn.read_response()))
        return conn

    def _plan(self) -> Read:
        """Each followed stream from its furthest-behind unpaused subscription."""
        read: Read = {}
        for session_key, subs in self._sessions.items():
            if len(subs) == 1:  # the common case, without the loop
                (only,) = subs
                if not only.paused:
                    read[keys.outbound(session_key)] = Planned(
                        session_key, only.after, only.position
                    )
                continue
            low: Subscription | None = None
            for sub in subs:
                if not sub.paused and (low is None or sub.position < low.position):
                    low = sub
            if low is not None:
                read[keys.outbound(session_key)] = Planned(session_key, low.after, low.position)
        return read

    async def _lost(self, exc: BaseException) -> None:
        self._client_id = None
        if self._conn is not None:
            await self._conn.disconnect()
        self._fail_all(exc)
        await self.outage.failed(exc)

    def _fail_all(self, exc: BaseException) -> None:
        sessions, self._sessions = self._sessions, {}
        for subs in sessions.values():
            for sub in subs:
                sub.fail(exc)

    async def _isolate(self, read: Read, exc: ResponseError) -> None:
        """An error reply to the whole read: read each stream alone (no block) and end
        only the subscriptions of the streams that fail."""
        log.warning("SSE outbound read failed (%s); reading its streams one by one", exc)
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, planned in read.items():
                pipe.execute_command("XREAD", "COUNT", READ_COUNT, "STREAMS", stream, planned.after)
            replies = await pipe.execute(raise_on_error=False)
        for (stream, planned), reply in zip(read.items(), replies, strict=True):
            if isinstance(reply, ResponseError):
                log.error("event stream %s cannot be read: %s", stream, reply)
                for sub in self._covered(planned.session_key, planned.pos):
                    self.unsubscribe(sub)
                    sub.fail(reply)
            else:
                self._dispatch({stream: planned}, reply)

    # -- handing entries out ------------------------------------------------------------

    def _dispatch(self, read: Read, reply: object) -> bool:
        """Hand out the entries of ``reply``; True if there were any."""
        batches = xread_batches(reply)
        for stream, entries in batches:
            planned = read.get(stream)
            if planned is None:
                continue
            subs = self._covered(planned.session_key, planned.pos)
            if subs:
                self._hand_out(planned.session_key, entries, subs)
        return bool(batches)

    def _covered(self, session_key: str, start: StreamPos) -> list[Subscription]:
        """The subscriptions a read from ``start`` serves: those at or after it (one
        further behind would miss the entries between; the next read covers it)."""
        return [sub for sub in self._sessions.get(session_key, ()) if sub.position >= start]

    def _hand_out(self, session_key: str, entries: Sequence[Any], subs: list[Subscription]) -> None:
        for entry_id, fields in entries:
            pos = parse_stream_id(entry_id)
            entry: Entry | None = None
            try:
                event = decode_event(entry_fields(fields))
            except PayloadError as exc:
                log.error("skipping malformed event %s of %s: %s", entry_id, session_key, exc)
            else:
                entry = Entry(entry_id, event, self._render(entry_id, event))
            for sub in subs:
                sub.offer(pos, entry_id, entry)
