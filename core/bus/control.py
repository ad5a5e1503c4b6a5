"""Stop requests: a chat asks the worker running its turn to cancel it.

``request_stop`` appends ``{type: stop, upto: <newest inbound id>}`` to the chat's
control stream (``gw:control:{s}``, capped, expiring). A stop covers every
message the chat had sent when it was asked: a running turn whose batch starts at
or before ``upto`` is cancelled, and so is a queued turn that starts later but
covers only messages sent before the stop. Messages sent after the stop run as
usual. The worker side (``wait_for_stop``) reads the whole (short) stream a few
times a second while a turn runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

from redis.asyncio import Redis

from core.bus import keys
from core.bus.codec import parse_stream_id
from core.errors import PayloadError

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
    redis: Redis, session_key: str, first_id: str, *, poll_s: float = STOP_POLL_S
) -> None:
    """Return once a stop request covers a turn whose batch starts at ``first_id``.

    Polls with a short non-blocking read instead of a blocking ``XREAD``: this runs
    beside every turn and is cancelled when the turn ends, and cancelling a command
    in flight costs its connection. A turn shorter than ``poll_s`` costs no read.
    """
    stream = keys.control(session_key)
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(poll_s)
        entries = await redis.xrange(stream, count=CONTROL_MAXLEN)
        if task is not None and task.cancelling():
            # A cancellation that landed inside the command was swallowed (seen in make
            # chaos): polling on would keep the turn, and its lease, alive for ever.
            raise asyncio.CancelledError
        if any(_covers(fields, first_id) for _, fields in entries):
            return


def _covers(fields: Mapping[str, str], first_id: str) -> bool:
    if fields.get("type") != STOP:
        return False
    try:
        return parse_stream_id(fields.get("upto", "")) >= parse_stream_id(first_id)
    except PayloadError:
        return False  # a malformed request stops nothing
