"""Turn attempts per inbound entry (``keys.attempts``), and the dead-letter stream ``gw:dead``.

A worker counts each attempt at a turn; after ``max_deliveries`` it dead-letters the
turn's messages and commits past them, so one poisonous message cannot wedge a chat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import cast

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from gateway.core.bus import keys
from gateway.core.bus.codec import SESSION_FIELD
from gateway.core.bus.session_writer import (
    DEAD_LETTER_MAXLEN,
    DeadLetterRecord,
    DeliverySignal,
    SessionWriter,
)
from gateway.core.events import StreamEvent
from gateway.core.messages import InboundMessage


async def record_attempt(redis: Redis, session_key: str, entry_id: str) -> int:
    """Count one more attempt at ``entry_id``; returns the count including this one."""
    count = redis.hincrby(keys.attempts(session_key), entry_id, 1)
    return await cast(Awaitable[int], count)


async def add_dead_letter(
    redis: Redis, session_key: str, entry_ids: Sequence[str], reason: str, payload: str
) -> str:
    """Append one record to ``gw:dead``: session, space-separated entry ids, reason, payload."""
    fields: dict[FieldT, EncodableT] = {
        SESSION_FIELD: session_key,
        "ids": " ".join(entry_ids),
        "reason": reason,
        "payload": payload,
    }
    entry_id = await redis.xadd(
        keys.DEAD_LETTER, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True
    )
    return cast(str, entry_id)


async def dead_letter(
    writer: SessionWriter,
    entries: list[tuple[str, InboundMessage]],
    reason: str,
    *,
    cursor: str,
    events: Sequence[StreamEvent] = (),
    maxlen: int = 10_000,
    signal: DeliverySignal | None = None,
) -> None:
    """Record ``entries`` in ``gw:dead`` with ``reason``, publish ``events`` (what the
    chat is told) and commit the cursor past them, all in one fenced script: a crash
    can neither tell the chat twice nor lose the record. ``LeaseLostError`` if the
    lease is gone (then nothing was written).
    """
    entry_ids = [entry_id for entry_id, _ in entries]
    payload = "[" + ",".join(message.model_dump_json() for _, message in entries) + "]"
    await writer.commit(
        cursor=cursor,
        entry_ids=entry_ids,
        events=events,
        maxlen=maxlen,
        signal=signal,
        dead=DeadLetterRecord(entry_ids=entry_ids, reason=reason, payload=payload),
    )
