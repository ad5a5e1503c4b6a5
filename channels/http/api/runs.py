"""Publish a message onto the bus and follow the run that answers it.

Every API request that runs an agent goes through here: ``start_run`` publishes
the message like any channel does (a worker runs the agent), ``run_events``
follows the session's outbound stream for the run that covers the message.
Nothing runs an agent loop in the HTTP process.

Which run answers a message: its final event lists the message's inbound entry id
in ``message_ids`` (``channels.http.sse.answers``, the same rule as the events
route). The events of the first run at or after the entry are followed; a final
event that does not answer the message (an interrupted run) hands over to the
next run. After a worker crash the same run id starts again; its final event is
published once, with the commit (a run completes once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis

from gateway.channels.http.sse import answers
from gateway.core.bus import keys
from gateway.core.bus.codec import parse_stream_id
from gateway.core.bus.inbound import publish_inbound
from gateway.core.bus.outbound import read_events
from gateway.core.bus.scripts import DISCARD_SESSION
from gateway.core.errors import PayloadError
from gateway.core.events import RunCompleted, RunFailed, StreamEvent, is_terminal
from gateway.core.messages import InboundMessage

log = logging.getLogger(__name__)

IDLE_BLOCK_MS = 15_000
"""Longest blocking read; an idle tick (None) is yielded after each empty one."""


@dataclass(frozen=True, slots=True)
class RunRef:
    """Where the answer to one published message will appear."""

    session_key: str
    run_id: str
    """The inbound entry id of the message (the run that covers it has an id >= this)."""
    after: str
    """Outbound stream id read from: everything after it may belong to the run."""


async def start_run(
    redis: Redis,
    msg: InboundMessage,
    *,
    partitions: int,
    maxlen: int,
    accepted: Counter | None = None,
) -> RunRef:
    """Publish ``msg`` and name the run that will answer it (the outbound position is
    read by the publish script, so no event of that run can precede it)."""
    published = await publish_inbound(
        redis, msg, partitions=partitions, maxlen=maxlen, accepted=accepted
    )
    if published.entry_id is None:  # only messages with a platform_event_id are deduplicated
        raise RuntimeError(f"message {msg.id} was taken for a duplicate")
    return RunRef(
        session_key=published.session_key,
        run_id=published.entry_id,
        after=published.events_after,
    )


async def run_events(
    redis: Redis, ref: RunRef, *, idle_ms: int = IDLE_BLOCK_MS
) -> AsyncIterator[StreamEvent | None]:
    """The events of the run answering ``ref``'s message, up to its final event.

    Yields None after every ``idle_ms`` without news (SSE heartbeats). Bound the
    wait with ``asyncio.timeout`` around the iteration.
    """
    after, target = ref.after, None
    floor = parse_stream_id(ref.run_id)
    while True:
        batch = await read_events(redis, ref.session_key, after=after, block_ms=idle_ms)
        if not batch:
            yield None
        for entry_id, event in batch:
            after = entry_id
            if target is None and _run_at_or_after(event.run_id, floor):
                target = event.run_id
            if event.run_id != target:
                continue
            if is_terminal(event):
                assert isinstance(event, RunCompleted | RunFailed)
                if not answers(event, ref.run_id):
                    target = None  # interrupted: the next run answers the message
                    continue
                yield event
                return
            yield event


def _run_at_or_after(run_id: str, floor: tuple[int, int]) -> bool:
    try:
        return parse_stream_id(run_id) >= floor
    except PayloadError:  # not a bus run id (no inbound entry): not ours
        return False


async def discard_when_committed(redis: Redis, ref: RunRef, *, within_s: float) -> bool:
    """Delete a one-off session's keys once its turn is committed (else leave them).

    The worker commits the cursor with the final event; until then the session still
    holds a pending message, and until the worker released its lease it may still
    write: it is not deleted before both.
    """
    delay, waited = 0.01, 0.0
    while True:
        done = await DISCARD_SESSION.run(redis, session_keys(ref.session_key), [])
        if done == 1:
            await redis.zrem(keys.SESSIONS_INDEX, ref.session_key)
            return True
        if waited >= within_s:
            log.warning("one-off session %s not committed in %.0fs: kept", ref.session_key, waited)
            return False
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 1.0)


def session_keys(session_key: str) -> list[str]:
    """``DISCARD_SESSION``'s KEYS: the six it removes, then the lease it checks."""
    return [
        keys.cursor(session_key),
        keys.inbound(session_key),
        keys.outbound(session_key),
        keys.session(session_key),
        keys.attempts(session_key),
        keys.api_session(session_key),
        keys.lease(session_key),
    ]
