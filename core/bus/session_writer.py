"""The fenced session writer: every write a worker makes to a session it holds.

A ``SessionWriter`` is one grant of the session's lease (``gw:lease:{s}``, a
``core.bus.lease.Lease``) plus the two fenced scripts that write under it:

- ``publish``: XADD events to ``gw:out:{s}`` (and, with ``signal``, the delivery
  signal that announces them, in the same script).
- ``commit``: the end of a turn in ONE script: its last events (the terminal
  ``run.completed``/``run.failed``), an optional ``gw:dead`` record, the session,
  the cursor, the inbound trim and the attempt counters. Either all of it is
  written or none of it, so a turn is never answered without being committed (a
  kill then re-runs it and a second terminal event would follow) nor committed
  without its answer.

Both return nil from Redis when the lease no longer holds this grant's token; the
writer then raises ``LeaseLostError`` and nothing was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import encode, next_stream_id
from gateway.core.bus.lease import Lease
from gateway.core.bus.scripts import COMMIT_TURN, PUBLISH_EVENTS, ScriptArg
from gateway.core.events import StreamEvent
from gateway.core.sessions.base import Session

DEAD_LETTER_MAXLEN = 100_000
"""Approximate cap of ``gw:dead``: it is an operator's record, not a queue."""


@dataclass(frozen=True, slots=True)
class DeliverySignal:
    """Wake the deliverers of ``channel`` (``gw:deliver:{channel}:{p}``) with the write."""

    channel: str
    partitions: int


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
        entry_ids: Sequence[str] = (),
        events: Sequence[StreamEvent] = (),
        maxlen: int = 10_000,
        signal: DeliverySignal | None = None,
        dead: DeadLetterRecord | None = None,
    ) -> list[str]:
        """End a turn atomically; returns the ids of ``events``.

        Publishes ``events``, records ``dead`` in ``gw:dead``, stores the session (if
        given, with its sessions-index score) and the cursor, trims inbound entries up
        to and including ``cursor`` and forgets the attempt counts of ``entry_ids``.
        One round trip; the index, ``gw:dead`` and the signal stream are outside the
        session's hash slot (no Redis Cluster, see README).
        """
        s = self.session_key
        script_keys = [
            self.lease.key,
            keys.cursor(s),
            keys.inbound(s),
            keys.attempts(s),
            keys.session(s),
            keys.SESSIONS_INDEX,
            keys.outbound(s),
            keys.DEAD_LETTER,
        ]
        if signal is not None:
            script_keys.append(keys.deliver(signal.channel, keys.partition(s, signal.partitions)))
        args: list[ScriptArg] = [
            self.lease.token,
            cursor,
            next_stream_id(cursor),
            # The session write: one value today (perf may make it an append).
            session.model_dump_json() if session is not None else "",
            session.updated_at if session is not None else 0.0,
            s,
            signal.channel if signal is not None else "",
            maxlen,
            " ".join(dead.entry_ids) if dead is not None else "",
            dead.reason if dead is not None else "",
            dead.payload if dead is not None else "",
            DEAD_LETTER_MAXLEN,
            len(events),
            *(encode(event) for event in events),
            *entry_ids,
        ]
        ids = await COMMIT_TURN.run(self.redis, script_keys, args)
        if ids is None:
            raise self.lease.lost_error(f"commit cursor {cursor}")
        return cast(list[str], ids)
