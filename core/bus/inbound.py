"""Inbound messages: dedupe + append to the chat's stream, signal a worker, read back.

``publish_inbound`` runs, in one script (``PUBLISH_INBOUND``): the dedupe check and
claim of the message's marker (a platform event id's ``gw:seen:{s}:{event}``, or an
HTTP ``Idempotency-Key``'s ``gw:idem:{key}``), the ``XADD gw:in:{s}``, the
``gw:ready:{p}`` signal, and the read of the outbound tail. So a crash can never
leave a stored message without its signal, a claimed key without its message, or a
message whose retry would be stored again; a duplicate gets the first publish's
ids. The ready stream and the idempotency key are in other hash slots: one reason
Redis Cluster is not supported (see README). ``pending_inbound`` reads
the entries after the committed cursor; entries that fail to parse go to ``gw:dead``
and are deleted from the chat's stream so they cannot wedge it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from prometheus_client import Counter
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.attempts import add_dead_letter
from gateway.core.bus.codec import PAYLOAD_FIELD, decode_inbound, encode, pairs_to_dict
from gateway.core.bus.scripts import PENDING_INBOUND, PUBLISH_INBOUND, ScriptArg
from gateway.core.errors import PayloadError
from gateway.core.messages import InboundMessage

log = logging.getLogger(__name__)

INITIAL_CURSOR = "0-0"


@dataclass(frozen=True, slots=True)
class Published:
    entry_id: str | None
    """The inbound stream id this call stored; None for a duplicate."""
    duplicate: bool
    session_key: str
    accepted_id: str | None = None
    """The inbound stream id of the accepted message: this call's, or for a duplicate
    the first publish's (None if its marker predates stored ids)."""
    events_after: str = INITIAL_CURSOR
    """The outbound tail when the message was accepted: its reply comes after it."""
    message_id: str = ""
    """``InboundMessage.id`` of the accepted message (the first publish's)."""


async def publish_inbound(
    redis: Redis,
    msg: InboundMessage,
    *,
    partitions: int,
    maxlen: int,
    dedupe_ttl_s: int = 86_400,
    idempotency_key: str | None = None,
    accepted: Counter | None = None,
) -> Published:
    """Append ``msg`` to its chat's stream and signal the workers, unless it was seen
    before: under ``idempotency_key`` when given, else under its platform event id.
    ``accepted`` (the ``messages_in`` metric) counts a message that was not a repeat."""
    published = await _publish(redis, msg, partitions, maxlen, dedupe_ttl_s, idempotency_key)
    if accepted is not None and not published.duplicate:
        accepted.labels(channel=msg.channel).inc()
    return published


async def _publish(
    redis: Redis,
    msg: InboundMessage,
    partitions: int,
    maxlen: int,
    dedupe_ttl_s: int,
    idempotency_key: str | None,
) -> Published:
    s = msg.session_key
    script_keys = [keys.inbound(s), keys.ready(keys.partition(s, partitions)), keys.outbound(s)]
    args: list[ScriptArg] = [encode(msg), maxlen, s, msg.channel, msg.id]
    if idempotency_key is not None:
        script_keys.append(keys.idempotency(idempotency_key))
    elif msg.platform_event_id:
        script_keys.append(keys.seen(s, msg.platform_event_id))
    if len(script_keys) > 3:
        args.append(dedupe_ttl_s)
    reply = cast(list[object], await PUBLISH_INBOUND.run(redis, script_keys, args))
    fresh, accepted_id, after, message_id, stored_key = (
        str(v) if v is not None else "" for v in reply
    )
    return Published(
        entry_id=accepted_id if fresh == "1" else None,
        duplicate=fresh != "1",
        # A key reused for another chat answers with the chat of its first message.
        session_key=stored_key or s,
        accepted_id=accepted_id or None,
        events_after=after or INITIAL_CURSOR,
        message_id=message_id,
    )


async def read_cursor(redis: Redis, session_key: str) -> str:
    """Id of the last committed inbound entry, ``"0-0"`` when none."""
    cursor = await redis.get(keys.cursor(session_key))
    return cast(str | None, cursor) or INITIAL_CURSOR


async def pending_inbound(
    redis: Redis, session_key: str, *, after: str | None = None, count: int = 100
) -> list[tuple[str, InboundMessage]]:
    """Up to ``count`` valid entries after ``after`` (default: the cursor), oldest first."""
    stream = keys.inbound(session_key)
    raw: list[tuple[str, Mapping[str, str]]]
    if after is None:  # cursor and range in one round trip
        reply = await PENDING_INBOUND.run(redis, [keys.cursor(session_key), stream], [count])
        raw = [(eid, pairs_to_dict(flat)) for eid, flat in cast(list[tuple[str, list[str]]], reply)]
    else:
        raw = await _range(redis, stream, after, count)
    while True:
        valid: list[tuple[str, InboundMessage]] = []
        for entry_id, fields in raw:
            try:
                valid.append((entry_id, decode_inbound(fields)))
            except PayloadError as exc:
                await _drop_malformed(redis, session_key, entry_id, fields, exc)
        # A full batch of only malformed entries says nothing about what follows it.
        if valid or len(raw) < count:
            return valid
        raw = await _range(redis, stream, raw[-1][0], count)


async def _range(
    redis: Redis, stream: str, after: str, count: int
) -> list[tuple[str, Mapping[str, str]]]:
    reply = await redis.xrange(stream, min=f"({after}", max="+", count=count)
    return cast(list[tuple[str, Mapping[str, str]]], reply)


async def _drop_malformed(
    redis: Redis,
    session_key: str,
    entry_id: str,
    fields: Mapping[str, str],
    error: PayloadError,
) -> None:
    log.error(
        "inbound entry %s of %s is malformed, dead-lettered: %s", entry_id, session_key, error
    )
    payload = fields.get(PAYLOAD_FIELD)
    if payload is None:
        payload = repr(dict(fields))
    await add_dead_letter(redis, session_key, [entry_id], f"malformed: {error}", payload)
    await redis.xdel(keys.inbound(session_key), entry_id)
