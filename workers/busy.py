"""Busy policies: what a session's next turn covers when messages queue up.

``plan_turn`` is pure (no I/O): given the entries pending after the committed cursor
it returns the next ``TurnPlan``. The worker calls it again after every turn.

- ``followup``: one turn per message, oldest first.
- ``collect``: everything pending in one turn.
- ``steer``: like collect; messages arriving while the turn runs are injected between
  model calls through ``RedisSteeringInbox``, and the committed cursor covers them.
- ``interrupt``: like collect; a newer message cancels the running turn, which
  publishes ``run.failed`` (stop_reason ``interrupted``) and commits nothing, so the
  next turn covers its messages and the new ones together.

Backlog cap: when more than the agent's ``max_backlog`` messages are pending, the
oldest are dropped. The chat is told with a separate short notice (a tiny run of
its own: ``run.started``, ``text.delta``, ``text.completed``, ``run.completed``,
``metadata.notice = "backlog_dropped"``) whose run id is the last dropped entry's id;
the cursor is then committed past the dropped entries.

A turn covers messages of one agent only (``InboundMessage.agent``): a batch stops
where the routed agent changes. The policy is the channel's ``busy_policy`` when
set, else the agent's. An unknown agent name falls back to the default agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_inbound
from gateway.core.bus.inbound import pending_inbound
from gateway.core.bus.session_writer import DeliverySignal, SessionWriter
from gateway.core.bus.signals import signal_ready, stream_batches
from gateway.core.errors import PayloadError
from gateway.core.events import (
    RunCompleted,
    RunResult,
    RunStarted,
    StreamEvent,
    TextCompleted,
    TextDelta,
)
from gateway.core.messages import InboundMessage, Message
from gateway.core.settings import BusyPolicy, Settings

log = logging.getLogger(__name__)

Entry = tuple[str, InboundMessage]
"""An inbound stream id and its message."""

NOTICE_PREVIEW_CHARS = 40
NOTICE_PREVIEW_COUNT = 3


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """The next turn of a session, and the entries to drop before it."""

    policy: BusyPolicy
    agent: str | None
    """The agent of the batch (None: the default agent)."""
    batch: tuple[Entry, ...]
    dropped: tuple[Entry, ...]
    max_backlog: int
    newest_id: str
    """The newest entry pending when planned: only later ones are news to the turn."""

    @property
    def run_id(self) -> str:
        """Deterministic: the id of the last entry the turn covers (same id on a re-run)."""
        return self.batch[-1][0]

    @property
    def steers(self) -> bool:
        """Steer only when the batch covers everything pending: steering must not skip
        the (other agent's) messages left for the next turn."""
        return self.policy == "steer" and self.run_id == self.newest_id


def known_agent(settings: Settings, name: str | None) -> str | None:
    """The agent a message goes to: None for the default agent (by name or unnamed, and
    with a warning for a name that is not configured), else the configured name."""
    if name is None or name == settings.default_agent:
        return None
    if name in settings.agents:
        return name
    log.warning("message routed to unknown agent %r: using the default agent", name)
    return None


def policy_for(settings: Settings, message: InboundMessage) -> BusyPolicy:
    """The channel's busy policy when it sets one, else the message's agent's."""
    channel = settings.channels.get(message.channel)
    if channel is not None and channel.busy_policy is not None:
        return channel.busy_policy
    return settings.agent(known_agent(settings, message.agent)).busy_policy


def plan_turn(pending: Sequence[Entry], settings: Settings) -> TurnPlan:
    """The next turn for ``pending`` (oldest first, not empty).

    The cap comes from the newest message's agent (the one the chat talks to now);
    the policy and the batch from the oldest message kept.
    """
    if not pending:
        raise ValueError("plan_turn needs at least one pending entry")
    newest_agent = known_agent(settings, pending[-1][1].agent)
    cap = settings.agent(newest_agent).max_backlog
    cut = max(0, len(pending) - cap)
    dropped, kept = tuple(pending[:cut]), pending[cut:]
    first = kept[0][1]
    agent = known_agent(settings, first.agent)
    policy = policy_for(settings, first)
    if policy == "followup":
        batch: tuple[Entry, ...] = (kept[0],)
    else:
        batch = tuple(_same_agent_prefix(kept, settings, agent))
    return TurnPlan(
        policy=policy,
        agent=agent,
        batch=batch,
        dropped=dropped,
        max_backlog=cap,
        newest_id=pending[-1][0],
    )


def _same_agent_prefix(
    entries: Sequence[Entry], settings: Settings, agent: str | None
) -> list[Entry]:
    prefix: list[Entry] = []
    for entry in entries:
        if known_agent(settings, entry[1].agent) != agent:
            break
        prefix.append(entry)
    return prefix


def backlog_notice(dropped: Sequence[Entry], max_backlog: int) -> str:
    """The text telling the chat which messages were dropped, and why."""
    count = len(dropped)
    noun = "message was" if count == 1 else "messages were"
    previews = [_preview(message.text) for _, message in dropped[-NOTICE_PREVIEW_COUNT:]]
    more = count - len(previews)
    listed = ", ".join(previews) + (f" and {more} older" if more > 0 else "")
    return (
        f"⚠️ {count} earlier {noun} not processed because more than {max_backlog} "
        f"were waiting: {listed}. Please resend what still matters."
    )


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > NOTICE_PREVIEW_CHARS:
        flat = flat[: NOTICE_PREVIEW_CHARS - 1] + "…"
    return f"“{flat}”"


def backlog_page(settings: Settings) -> int:
    """Entries read per page: more than any agent's cap, so one read usually suffices."""
    caps = [agent.max_backlog for agent in settings.agents.values()]
    return max(100, settings.agent().max_backlog + 1, *(cap + 1 for cap in caps))


async def read_backlog(redis: Redis, session_key: str, *, page: int) -> list[Entry]:
    """Everything pending after the cursor, page by page, so the cap sees the whole backlog.

    A page shortened by malformed entries (dead-lettered by ``pending_inbound``) ends
    the read early; the rest is read before the next turn.
    """
    entries = await pending_inbound(redis, session_key, count=page)
    batch = entries
    while len(batch) == page:
        batch = await pending_inbound(redis, session_key, after=batch[-1][0], count=page)
        entries.extend(batch)
    return entries


async def hand_off(redis: Redis, settings: Settings, session_key: str, channel: str) -> bool:
    """A fresh ready signal for a session whose holder stops without finishing it.

    Best effort; False when it failed: the caller must then leave its own signal
    pending (``claim_stale`` recovers it), never ack it.
    """
    try:
        await signal_ready(redis, session_key, channel, partitions=settings.worker.ready_partitions)
    except (RedisError, OSError) as exc:
        log.warning("hand-off of %s failed (%s); claim_stale will recover it", session_key, exc)
        return False
    return True


async def wait_for_newer(
    redis: Redis, session_key: str, after: str, *, block_ms: int
) -> InboundMessage | None:
    """The first entry of the chat's inbound stream after ``after`` once there is one
    (interrupt); None when it is malformed."""
    stream = keys.inbound(session_key)
    while True:
        reply = await redis.xread({stream: after}, count=1, block=block_ms)
        for _, raw in stream_batches(reply):
            for _, fields in raw:
                try:
                    return decode_inbound(fields)
                except PayloadError:
                    return None


class RedisSteeringInbox:
    """Messages that arrive during a ``steer`` turn, handed to the loop between model calls.

    ``run()`` (a background task for the turn's duration) blocks on the chat's
    inbound stream and buffers new messages; ``drain()`` gives the loop what is
    buffered and records it in ``drained`` (what the turn's commit covers). At most
    ``limit`` messages are injected per turn. Steering stops at a malformed entry or
    one that ``accepts`` refuses (routed to another agent), so the cursor never
    passes it: the next turn handles it.
    """

    def __init__(
        self,
        redis: Redis,
        session_key: str,
        *,
        after: str,
        limit: int,
        block_ms: int,
        accepts: Callable[[InboundMessage], bool],
    ) -> None:
        self._redis = redis
        self._accepts = accepts
        self._stream = keys.inbound(session_key)
        self._seen = after
        self._limit = limit
        self._block_ms = block_ms
        self._buffer: list[Entry] = []
        self._taken = 0
        self.drained: list[Entry] = []
        """Every entry handed to the loop, in order (the turn's commit covers them)."""

    def drain(self) -> list[Message]:
        entries, self._buffer = self._buffer, []
        self.drained.extend(entries)
        return [message.to_user_message() for _, message in entries]

    async def run(self) -> None:
        """Buffer arrivals until the limit or a malformed entry; cancel to stop."""
        while self._taken < self._limit:
            wanted = self._limit - self._taken
            reply = await self._redis.xread(
                {self._stream: self._seen}, count=wanted, block=self._block_ms
            )
            for _, raw in stream_batches(reply):
                if not self._take(raw):
                    return

    def _take(self, raw: list[tuple[str, Mapping[str, str]]]) -> bool:
        for entry_id, fields in raw:
            try:
                message = decode_inbound(fields)
            except PayloadError as exc:
                log.warning("steering stops at malformed entry %s: %s", entry_id, exc)
                return False
            if not self._accepts(message):
                return False
            self._buffer.append((entry_id, message))
            self._seen = entry_id
            self._taken += 1
        return True


async def publish_backlog_notice(
    settings: Settings,
    writer: SessionWriter,
    dropped: Sequence[Entry],
    max_backlog: int,
    *,
    deliver_channels: frozenset[str],
) -> None:
    """Tell the chat which messages were dropped (a tiny run of its own) and commit past
    them, in one fenced script: a crash cannot tell the chat twice."""
    run_id = dropped[-1][0]
    text = backlog_notice(dropped, max_backlog)
    ids = [i for i, _ in dropped]
    meta: dict[str, Any] = {"notice": "backlog_dropped", "dropped_ids": ids}
    result = RunResult(content=text, stop_reason="completed", metadata=meta)
    events: list[StreamEvent] = [
        RunStarted(
            run_id=run_id, seq=1, session_key=writer.session_key, metadata=meta, message_ids=ids
        ),
        TextDelta(run_id=run_id, seq=2, delta=text),
        TextCompleted(run_id=run_id, seq=3, content=text),
        RunCompleted(
            run_id=run_id, seq=4, result=result, content=text, metadata=meta, message_ids=ids
        ),
    ]
    channel = dropped[-1][1].channel
    signal = None
    if channel in deliver_channels:
        signal = DeliverySignal(channel, settings.worker.ready_partitions)
    log.warning("dropping %d backlog message(s) of %s", len(dropped), writer.session_key)
    await writer.commit(
        cursor=run_id,
        entry_ids=ids,
        events=events,
        maxlen=settings.worker.stream_maxlen,
        signal=signal,
    )
