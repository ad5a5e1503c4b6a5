"""Stop requests: a chat asks the worker running its turn to cancel it.

``request_stop`` appends ``{type: stop, upto: <newest inbound id>}`` to the chat's
control stream (``gw:control:{s}``, capped, expiring). A stop covers every
message the chat had sent when it was asked: a turn is cancelled when its whole
batch was sent by then (its last id is at or before ``upto``), so the running turn
and queued ones stop. Messages sent after the stop run as usual, also when a
``collect`` batch puts them behind messages sent before it. The worker side
(``wait_for_stop``) reads the whole (short) stream a few times a second while a
turn runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import parse_stream_id
from gateway.core.errors import PayloadError

CONTROL_MAXLEN = 32
"""Stop requests kept per chat (only the newest can still matter)."""

CONTROL_TTL_S = 86_400
"""A chat's control stream expires a day after its last stop request."""

STOP_POLL_S = 0.25
"""How often a running turn looks for a stop request (the most a stop waits)."""

STOP = "stop"


async def request_stop(redis: Redis, session_key: str) -> str | None:
    """Ask the chat's running (and queued) turns to stop; the ``upto`` id, or None when
    the chat has no message on the bus to stop."""
    last = await redis.xrevrange(keys.inbound(session_key), count=1)
    cursor = cast(str | None, await redis.get(keys.cursor(session_key)))
    if not last:
        return None  # nothing on the bus (the commit trims answered messages away)
    newest = str(last[0][0])
    if cursor is not None and parse_stream_id(newest) <= parse_stream_id(cursor):
        return None  # nothing pending: every message of the chat is answered already
    stream = keys.control(session_key)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(stream, {"type": STOP, "upto": newest}, maxlen=CONTROL_MAXLEN, approximate=False)
        pipe.expire(stream, CONTROL_TTL_S)
        await pipe.execute()
    return newest


async def wait_for_stop(
    redis: Redis, session_key: str, last_id: str, *, poll_s: float | None = None
) -> str:
    """Once a stop request covers a turn whose batch ends at ``last_id``, its ``upto``.

    Polls with a short non-blocking read instead of a blocking ``XREAD``: this runs
    beside every turn and is cancelled when the turn ends, and cancelling a command
    in flight costs its connection. A turn shorter than ``poll_s`` costs no read.
    """
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(STOP_POLL_S if poll_s is None else poll_s)
        upto = await stop_requested(redis, session_key, last_id)
        if task is not None and task.cancelling():
            # A cancellation that landed inside the command was swallowed (seen in make
            # chaos): polling on would keep the turn, and its lease, alive for ever.
            raise asyncio.CancelledError
        if upto is not None:
            return upto


async def stop_requested(redis: Redis, session_key: str, last_id: str) -> str | None:
    """The newest ``upto`` of a stop request made after ``last_id`` was sent, or None."""
    entries = await redis.xrange(keys.control(session_key), count=CONTROL_MAXLEN)
    covering = [upto for _, fields in entries if (upto := _covers(fields, last_id))]
    return max(covering, key=parse_stream_id) if covering else None


def _covers(fields: Mapping[str, str], last_id: str) -> str | None:
    """The request's ``upto`` if it covers a batch ending at ``last_id``."""
    if fields.get("type") != STOP:
        return None
    upto = fields.get("upto", "")
    try:
        return upto if parse_stream_id(upto) >= parse_stream_id(last_id) else None
    except PayloadError:
        return None  # a malformed request stops nothing
