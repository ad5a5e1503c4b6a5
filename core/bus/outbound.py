"""Reading a chat's outbound events; signalling the channel deliverers (tests, tools).

Workers publish through ``core.bus.session_writer`` (fenced, with the signal in the
same script)."""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_event
from gateway.core.bus.signals import signal, stream_batches
from gateway.core.errors import PayloadError
from gateway.core.events import StreamEvent

log = logging.getLogger(__name__)


async def read_events(
    redis: Redis,
    session_key: str,
    *,
    after: str,
    block_ms: int | None,
    count: int = 500,
    skipped: list[str] | None = None,
) -> list[tuple[str, StreamEvent]]:
    """Events of ``gw:out:{s}`` after id ``after``, oldest first.

    ``block_ms=None`` returns at once; otherwise waits up to ``block_ms`` for the
    first event (0 waits forever, as in Redis). An entry that does not parse is
    logged and skipped, never returned; its id is appended to ``skipped`` if given
    (a reader that must know how far it has looked counts it as read).
    """
    stream = keys.outbound(session_key)
    while True:
        reply = await redis.xread({stream: after}, count=count, block=block_ms)
        entries = [entry for _, batch in stream_batches(reply) for entry in batch]
        events: list[tuple[str, StreamEvent]] = []
        for entry_id, fields in entries:
            try:
                events.append((entry_id, decode_event(fields)))
            except PayloadError as exc:
                log.error("skipping malformed event %s of %s: %s", entry_id, session_key, exc)
                if skipped is not None:
                    skipped.append(entry_id)
        # If every entry read was malformed, the caller could not advance past them: go on.
        if events or not entries:
            return events
        after = entries[-1][0]


async def signal_delivery(redis: Redis, channel: str, session_key: str, *, partitions: int) -> str:
    """Wake the deliverers of ``channel`` for this session (``gw:deliver:{channel}:{p}``)."""
    stream = keys.deliver(channel, keys.partition(session_key, partitions))
    return await signal(redis, stream, session_key, channel)
