"""Work signals on partitioned streams read by consumer groups (``gw:ready:*``, ``gw:deliver:*``).

A signal only says "session ``s`` of channel ``c`` has something for you"; the data
lives in the session's own streams. ``ack`` also deletes the entry, so a signal
stream holds only unread and in-flight signals. Its length is still capped
(``SIGNAL_MAXLEN``, approximate), so a stream that nothing reads (a misconfigured
channel) cannot grow without end; the cap is far above any backlog a reader keeps up
with, and a trimmed signal costs only a delay: the session's next signal, or a
redelivery, finds its data.

"Times delivered" is Redis's count of how often a pending signal was handed to a
consumer (``XPENDING``): 1 when first read, one more per claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT, StreamIdT

from gateway.core.bus import keys
from gateway.core.bus.codec import CHANNEL_FIELD, SESSION_FIELD, pairs_to_dict

log = logging.getLogger(__name__)

RawEntry = tuple[str, Mapping[str, str]]
TimesDeliveredOf = Callable[[str], int]

SIGNAL_MAXLEN: Final = 100_000
"""Approximate cap of each signal stream partition (see the module doc)."""


@dataclass(frozen=True, slots=True)
class Signal:
    stream: str
    id: str
    session_key: str
    channel: str
    times_delivered: int
    """``XPENDING``'s delivery count: 1 on the first read, more once claimed."""

    @property
    def claimed(self) -> bool:
        """Handed out before: its earlier consumer died or gave up (or still holds on)."""
        return self.times_delivered > 1


@dataclass(frozen=True, slots=True)
class AutoclaimReply:
    next_start: str
    entries: list[RawEntry]
    deleted_ids: list[str]
    """Pending ids whose entries were deleted (Redis 7 drops them from the PEL itself)."""


def _as_fields(raw: object) -> Mapping[str, str]:
    if isinstance(raw, Mapping):
        return cast(Mapping[str, str], raw)
    return pairs_to_dict(cast(list[str], raw))


def parse_autoclaim(reply: Sequence[object]) -> AutoclaimReply:
    """Normalize an ``XAUTOCLAIM`` reply.

    Redis 6.2 answers ``[next, entries]`` with nil for entries deleted meanwhile;
    Redis 7 answers ``[next, entries, deleted_ids]``. Entries may be raw
    ``[id, [field, value, ...]]`` or redis-py's parsed ``(id, {field: value})``,
    where a deleted entry becomes ``(None, None)``.
    """
    entries: list[RawEntry] = []
    for item in cast(Iterable[Sequence[object] | None], reply[1]):
        if item is None or item[0] is None or item[1] is None:
            continue
        entries.append((str(item[0]), _as_fields(item[1])))
    deleted = [str(i) for i in cast(Iterable[object], reply[2])] if len(reply) > 2 else []
    return AutoclaimReply(next_start=str(reply[0]), entries=entries, deleted_ids=deleted)


def stream_batches(reply: object) -> list[tuple[str, list[RawEntry]]]:
    """``XREAD``/``XREADGROUP`` replies as ``[(stream, entries)]`` (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        # redis-py's RESP3 callback wraps each stream's entries in a one-element list.
        return [(str(name), cast(list[RawEntry], nested[0])) for name, nested in reply.items()]
    pairs = cast(list[Sequence[object]], reply)
    return [(str(name), cast(list[RawEntry], entries)) for name, entries in pairs]


async def ensure_groups(redis: Redis, streams: Sequence[str], group: str) -> None:
    """Create ``group`` on each stream (and the stream), reading from the start."""
    for stream in streams:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def is_missing_group(exc: BaseException) -> bool:
    """True for the ``NOGROUP`` reply: the stream or its group is gone (Redis lost data)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


async def signal(redis: Redis, stream: str, session_key: str, channel: str) -> str:
    fields: dict[FieldT, EncodableT] = {SESSION_FIELD: session_key, CHANNEL_FIELD: channel}
    return cast(str, await redis.xadd(stream, fields, maxlen=SIGNAL_MAXLEN, approximate=True))


async def signal_ready(redis: Redis, session_key: str, channel: str, *, partitions: int) -> str:
    """A work signal on the session's ready partition (new inbound messages signal
    inside their publish script; this is for re-signalling a session)."""
    stream = keys.ready(keys.partition(session_key, partitions))
    return await signal(redis, stream, session_key, channel)


async def read_signals(
    redis: Redis,
    streams: Sequence[str],
    group: str,
    consumer: str,
    *,
    count: int,
    block_ms: int,
) -> list[Signal]:
    """New signals for ``consumer``; waits up to ``block_ms`` (0 waits forever, as in Redis)."""
    reply = await redis.xreadgroup(
        group, consumer, dict.fromkeys(streams, ">"), count=count, block=block_ms
    )
    signals: list[Signal] = []
    for stream, entries in stream_batches(reply):
        signals.extend(await _to_signals(redis, stream, group, entries, _first_delivery))
    return signals


def _first_delivery(_entry_id: str) -> int:
    return 1


@dataclass(slots=True)
class ClaimScan:
    """Where a consumer's next ``claim_stale`` resumes; kept by the caller between calls.

    ``XAUTOCLAIM`` looks at no more than ten times ``count`` pending entries per call,
    and a claimed signal whose session is busy stays pending (claimed again and again).
    A scan that always began at ``0-0`` of the first stream could therefore never reach
    a dead consumer's signal behind enough in-flight or re-claimed ones, and a stream
    listed later never got the few free slots: its chat waited until its next message.
    So each stream's scan continues where the last one stopped, and the first stream
    scanned rotates.
    """

    first: int = 0
    starts: dict[str, str] = field(default_factory=dict)

    def order(self, streams: Sequence[str]) -> list[str]:
        """``streams`` starting at this scan's turn; the next call starts one later."""
        if not streams:
            return []
        first = self.first % len(streams)
        self.first = first + 1
        return [*streams[first:], *streams[:first]]


async def claim_stale(
    redis: Redis,
    streams: Sequence[str],
    group: str,
    consumer: str,
    *,
    min_idle_ms: int,
    count: int,
    scan: ClaimScan | None = None,
) -> list[Signal]:
    """Take over up to ``count`` signals left unacked for ``min_idle_ms`` by any consumer.

    With ``scan``, resume where the previous call stopped (see ``ClaimScan``); without,
    scan every stream from its start.
    """
    claimed: list[Signal] = []
    for stream in scan.order(streams) if scan is not None else streams:
        wanted = count - len(claimed)
        if wanted <= 0:
            break
        start = scan.starts.get(stream, "0-0") if scan is not None else "0-0"
        raw = await redis.xautoclaim(stream, group, consumer, min_idle_ms, start, count=wanted)
        reply = parse_autoclaim(cast(Sequence[object], raw))
        if scan is not None:
            scan.starts[stream] = reply.next_start  # "0-0" once the scan went round
        if reply.deleted_ids:
            log.warning("signals %s of %s were deleted while pending", reply.deleted_ids, stream)
        if not reply.entries:
            continue
        counts = await _times_delivered(redis, stream, group, [i for i, _ in reply.entries])
        claimed.extend(await _to_signals(redis, stream, group, reply.entries, counts.__getitem__))
    return claimed


async def keep_claimed(redis: Redis, signals: Iterable[Signal], group: str, consumer: str) -> None:
    """Mark ``signals`` (jobs ``consumer`` is running) as just delivered to it.

    ``XAUTOCLAIM`` judges a signal stale by the time since its last delivery; a job that
    runs longer than ``min_idle_ms`` (a long turn, a busy machine) would otherwise look
    dead and be claimed by every peer in turn (or by its own consumer), each claim
    taking a slot, and ahead of new work. ``XCLAIM ... JUSTID`` resets that time without
    counting a delivery.
    """
    by_stream: dict[str, list[StreamIdT]] = {}
    for sig in signals:
        by_stream.setdefault(sig.stream, []).append(sig.id)
    if not by_stream:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for stream, ids in by_stream.items():
            pipe.xclaim(stream, group, consumer, 0, ids, justid=True)
        await pipe.execute()


async def _times_delivered(redis: Redis, stream: str, group: str, ids: list[str]) -> dict[str, int]:
    """Times each pending id was delivered, from ``XPENDING`` (claiming counts as a delivery)."""
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        rows = cast(list[list[dict[str, object]]], await pipe.execute())
    counts = dict.fromkeys(ids, 1)
    for found in rows:
        for row in found:
            counts[str(row["message_id"])] = cast(int, row["times_delivered"])
    return counts


async def _to_signals(
    redis: Redis,
    stream: str,
    group: str,
    entries: list[RawEntry],
    times_delivered_of: TimesDeliveredOf,
) -> list[Signal]:
    signals: list[Signal] = []
    for entry_id, fields in entries:
        session_key = fields.get(SESSION_FIELD)
        if not session_key:
            # Nothing can act on it; acking keeps it from being claimed forever.
            log.error("dropping malformed signal %s on %s: %r", entry_id, stream, dict(fields))
            await _ack_ids(redis, stream, group, [entry_id])
            continue
        signals.append(
            Signal(
                stream=stream,
                id=entry_id,
                session_key=session_key,
                channel=fields.get(CHANNEL_FIELD, ""),
                times_delivered=times_delivered_of(entry_id),
            )
        )
    return signals


async def ack(redis: Redis, signal: Signal, group: str) -> None:
    """Acknowledge and delete the signal (each signal stream has exactly one group)."""
    await _ack_ids(redis, signal.stream, group, [signal.id])


async def _ack_ids(redis: Redis, stream: str, group: str, ids: list[str]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xack(stream, group, *ids)
        pipe.xdel(stream, *ids)
        await pipe.execute()
