"""The fenced session writer: every write a worker makes to a session it holds.

A ``SessionWriter`` is one grant of the session's lease (``gw:lease:{s}``, a
``core.bus.lease.Lease``) plus the two fenced scripts that write under it:

- ``publish``: XADD events to ``gw:out:{s}`` (and, with ``signal``, the delivery
  signal that announces them, in the same script).
- ``commit``: the end of a turn in ONE script: its last events (the terminal
  ``run.completed``/``run.failed``), an optional ``gw:dead`` record, the session
  (the turn's messages appended to its log), the cursor, the inbound trim and the
  attempt counters. Either all of it is written or none of it, so a turn is never
  answered without being committed (a kill then re-runs it and a second terminal
  event would follow) nor committed without its answer. With ``Finish`` the same
  script looks for more work and, finding none, releases the lease and acks the
  signal.

Both return nil from Redis when the lease no longer holds this grant's token; the
writer then raises ``LeaseLostError`` and nothing was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import encode, next_stream_id, pairs_to_dict
from gateway.core.bus.lease import Lease
from gateway.core.bus.scripts import COMMIT_TURN, PUBLISH_EVENTS, ScriptArg
from gateway.core.bus.signals import Signal
from gateway.core.events import StreamEvent
from gateway.core.sessions.base import Session
from gateway.core.sessions.redis_form import SessionWrite, StoredSession, full_write, plan_write

DEAD_LETTER_MAXLEN = 100_000
"""Approximate cap of ``gw:dead``: it is an operator's record, not a queue."""


@dataclass(frozen=True, slots=True)
class DeliverySignal:
    """Wake the deliverers of ``channel`` (``gw:deliver:{channel}:{p}``) with the write."""

    channel: str
    partitions: int


@dataclass(frozen=True, slots=True)
class Finish:
    """What a commit does after the turn: read up to ``page`` entries pending after the
    cursor and, when there are none, release the lease and ack ``signal`` (the work
    signal the turn came from, in consumer group ``group``)."""

    page: int
    signal: Signal | None = None
    group: str = keys.WORKER_GROUP
    count: str = ""
    """Count an attempt for the ``first`` or ``last`` pending entry ('' none): the run
    the next turn most likely is (see ``BEGIN_TURN``)."""
    stopping: Callable[[], bool] | None = None
    """Asked when the commit is sent (a turn may run for minutes after the ``Finish``
    was made): a worker that is stopping will not run the next turn, so it counts
    no attempt for it."""

    def next_count(self) -> str:
        """What ``count`` says, unless the worker is stopping now."""
        return "" if self.stopping is not None and self.stopping() else self.count


@dataclass(frozen=True, slots=True)
class Committed:
    """A commit's outcome: the events' ids, and what ``Finish`` found."""

    ids: list[str]
    pending: list[tuple[str, Mapping[str, str]]]
    """Raw entries pending after the cursor (the lease is still held then)."""
    released: bool
    """Nothing was pending: the lease is released and the signal acked."""
    counted_id: str = ""
    """The pending entry whose attempt was counted ('' none)."""
    counted: int = 0
    stamp: str = ""
    """The stamp of the session write ('' when the session was not written)."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One ``gw:dead`` entry: the entry ids (space separated), why, and their payload."""

    entry_ids: Sequence[str]
    reason: str
    payload: str


class SessionWriter:
    """One grant of ``gw:lease:{session_key}`` and the fenced writes it allows."""

    __slots__ = ("lease", "session_key")

    def __init__(self, lease: Lease, session_key: str) -> None:
        self.lease = lease
        self.session_key = session_key

    def __repr__(self) -> str:
        return f"SessionWriter(session_key={self.session_key!r})"

    @property
    def redis(self) -> Redis:
        return self.lease.redis

    @classmethod
    async def acquire(
        cls, redis: Redis, session_key: str, *, ttl_ms: int, owner: str
    ) -> SessionWriter | None:
        """The session's lease, or None while another holder has it."""
        lease = await Lease.acquire(
            redis,
            keys.lease(session_key),
            ttl_ms=ttl_ms,
            owner=owner,
            what=f"lease of {session_key!r}",
        )
        return None if lease is None else cls(lease, session_key)

    async def release(self) -> bool:
        return await self.lease.release()

    def keepalive(self, interval_s: float) -> AbstractAsyncContextManager[asyncio.Event]:
        return self.lease.keepalive(interval_s)

    async def publish(
        self,
        events: Sequence[StreamEvent],
        *,
        maxlen: int,
        signal: DeliverySignal | None = None,
    ) -> list[str]:
        """XADD the events to ``gw:out:{s}`` in order, only while we hold the lease."""
        if not events:
            return []
        s = self.session_key
        script_keys = [self.lease.key, keys.outbound(s)]
        if signal is not None:
            script_keys.append(keys.deliver(signal.channel, keys.partition(s, signal.partitions)))
        args: list[ScriptArg] = [self.lease.token, maxlen, s, signal.channel if signal else ""]
        args.extend(encode(event) for event in events)
        ids = await PUBLISH_EVENTS.run(self.redis, script_keys, args)
        if ids is None:
            raise self.lease.lost_error("publish events")
        return cast(list[str], ids)

    async def commit(
        self,
        *,
        cursor: str,
        session: Session | None = None,
        base: StoredSession | None = None,
        entry_ids: Sequence[str] = (),
        events: Sequence[StreamEvent] = (),
        maxlen: int = 10_000,
        signal: DeliverySignal | None = None,
        dead: DeadLetterRecord | None = None,
        finish: Finish | None = None,
    ) -> Committed:
        """End a turn atomically.

        Publishes ``events``, records ``dead`` in ``gw:dead``, stores the session (if
        given: what it added since ``base`` was read is appended, else it is rewritten)
        with its sessions-index score and the cursor, trims inbound entries up to and
        including ``cursor`` and forgets the attempt counts of ``entry_ids``. With
        ``finish``, it then reads what is pending after the cursor and, when nothing
        is, releases the lease and acks ``finish.signal``. One round trip (two when the
        stored log is not the one ``base`` describes: then it is rewritten); the index,
        ``gw:dead`` and the signal streams are outside the session's hash slot (no
        Redis Cluster, see README).
        """
        write = None if session is None else plan_write(session, base)
        reply = await self._commit(cursor, write, entry_ids, events, maxlen, signal, dead, finish)
        if reply == [0] and session is not None:
            # The log moved under the lease (written outside a turn): store it whole.
            write = full_write(session)
            reply = await self._commit(
                cursor, write, entry_ids, events, maxlen, signal, dead, finish
            )
        if reply is None:
            raise self.lease.lost_error(f"commit cursor {cursor}")
        code, ids, *rest = cast(list[Any], reply)
        stamp = write.stamp if write is not None else ""
        if code == 2:
            self.lease.released = True
            return Committed(cast(list[str], ids), [], True, stamp=stamp)
        raw, counted_id, counted = rest
        pending = [(str(i), _fields(f)) for i, f in raw]
        return Committed(cast(list[str], ids), pending, False, str(counted_id), int(counted), stamp)

    async def _commit(
        self,
        cursor: str,
        write: SessionWrite | None,
        entry_ids: Sequence[str],
        events: Sequence[StreamEvent],
        maxlen: int,
        signal: DeliverySignal | None,
        dead: DeadLetterRecord | None,
        finish: Finish | None,
    ) -> object:
        s = self.session_key
        script_keys = [
            self.lease.key,
            keys.cursor(s),
            keys.inbound(s),
            keys.attempts(s),
            *keys.stored_session(s),
            keys.SESSIONS_INDEX,
            keys.outbound(s),
            keys.DEAD_LETTER,
        ]
        if signal is not None:
            script_keys.append(keys.deliver(signal.channel, keys.partition(s, signal.partitions)))
        ack = finish.signal if finish is not None else None
        if ack is not None:
            script_keys.append(ack.stream)
        args: list[ScriptArg] = [
            self.lease.token,
            cursor,
            next_stream_id(cursor),
            write.mode if write is not None else "",
            write.expected_length if write is not None else 0,
            write.updated_at if write is not None else 0.0,
            s,
            signal.channel if signal is not None else "",
            maxlen,
            " ".join(dead.entry_ids) if dead is not None else "",
            dead.reason if dead is not None else "",
            dead.payload if dead is not None else "",
            DEAD_LETTER_MAXLEN,
            finish.page if finish is not None else 0,
            finish.group if finish is not None else "",
            ack.id if ack is not None else "",
            finish.next_count() if finish is not None else "",
            len(events),
            write.head_fields if write is not None else 0,
            len(write.messages) if write is not None else 0,
            write.expected_stamp if write is not None else "",
            *(encode(event) for event in events),
        ]
        if write is not None:
            args += [*write.head, *write.messages]
        args += entry_ids
        return await COMMIT_TURN.run(self.redis, script_keys, args)


def _fields(flat: object) -> Mapping[str, str]:
    return pairs_to_dict(cast(list[str], flat)) if isinstance(flat, list) else cast(Any, flat)
