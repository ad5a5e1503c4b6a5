"""The channel-agnostic deliverer: outbound events -> platform messages, exactly once.

Per signal on ``gw:deliver:{channel}:{p}`` (consumer group ``deliverers``) it leases
the chat (``gw:dlease:{s}``), reads ``gw:out:{s}`` after the delivery cursor and
renders each run: the first text is sent, later text edits it (throttled by the
renderer's ``edit_interval_s``), and the final text is split at the platform limit
(part 0 edited in place, further parts sent).

Exactly once: every platform message sent is recorded as ``sent[{run_id}:{part}]``
right after it is sent and before anything else, and the cursor advances only past
a run's final event. A redelivery (deliverer crash) or a re-run (worker crash; same
run_id, starting again at run.started) therefore replays the run from its start and
*edits* the recorded messages instead of posting new ones. Records, cursor and lease
share the session's hash tag, and the writes are fenced by the lease token.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, cast

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from channels.base import Renderer, TypingIndicator
from channels.render import (
    SUPERSEDED_TEXT,
    ReplyText,
    chat_address,
    edit_delay,
    failure_text,
    split_message,
)
from core.bus import keys
from core.bus.codec import parse_stream_id
from core.bus.outbound import read_events
from core.bus.scripts import RELEASE_LEASE, RENEW_LEASE, LuaScript
from core.bus.signals import Signal, ack, claim_stale, ensure_groups, read_signals
from core.errors import LeaseLostError
from core.events import (
    RunCompleted,
    RunFailed,
    RunStarted,
    StreamEvent,
    TextCompleted,
    TextDelta,
    ToolStarted,
)

log = logging.getLogger(__name__)

SENT_RECORDS_TTL_S = 7 * 86_400
RETRY_AFTER_ERROR_S = 1.0

_BEGIN_RUN = LuaScript(
    """
-- KEYS: delivery lease, sent-parts hash   ARGV: token, run id
-- Returns this run's records [field, id, ...] and forgets those of older runs:
-- a run starts only after the one before it committed, so those never re-run.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local prefix = ARGV[2] .. ':'
local kept = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, #prefix) == prefix then
    kept[#kept + 1] = all[i]
    kept[#kept + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[2], all[i])
  end
end
return kept
""",
)

_RECORD_PART = LuaScript(
    """
-- KEYS: delivery lease, sent-parts hash   ARGV: token, field, platform id, ttl s
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
""",
)

_ADVANCE = LuaScript(
    """
-- KEYS: delivery lease, delivery cursor   ARGV: token, entry id
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
""",
)


class Outcome(enum.Enum):
    DONE = "done"
    """Everything pending was rendered."""
    BUSY = "busy"
    """Another holder has the chat's delivery lease; it drains before releasing."""
    RETRY = "retry"
    """Gave up for now (a run went silent, the platform or the lease failed)."""


class DeliveryMetrics(Protocol):
    """The counters a deliverer updates (``gateway.metrics.GatewayMetrics`` has them)."""

    @property
    def messages_out(self) -> Counter: ...
    @property
    def lease_waits(self) -> Counter: ...
    @property
    def redeliveries(self) -> Counter: ...


class DeliveryLease:
    """One grant of ``gw:dlease:{s}``, and the writes fenced by it."""

    __slots__ = ("lost", "redis", "session_key", "token", "ttl_ms")

    def __init__(self, redis: Redis, session_key: str, token: str, ttl_ms: int) -> None:
        self.redis = redis
        self.session_key = session_key
        self.token = token
        self.ttl_ms = ttl_ms
        self.lost = asyncio.Event()

    @classmethod
    async def acquire(
        cls, redis: Redis, session_key: str, *, ttl_ms: int, owner: str
    ) -> DeliveryLease | None:
        token = f"{owner}:{secrets.token_hex(8)}"
        granted = await redis.set(keys.deliver_lease(session_key), token, nx=True, px=ttl_ms)
        return cls(redis, session_key, token, ttl_ms) if granted else None

    async def release(self) -> None:
        await RELEASE_LEASE.run(self.redis, [keys.deliver_lease(self.session_key)], [self.token])

    @asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew at a third of the ttl while the block runs; ``lost`` is set on failure."""
        renewer = asyncio.create_task(self._renew_until_lost())
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.wait([renewer])

    async def _renew_until_lost(self) -> None:
        loop = asyncio.get_running_loop()
        ttl_s = self.ttl_ms / 1000
        valid_until = loop.time() + ttl_s
        lease_key = [keys.deliver_lease(self.session_key)]
        while True:
            await asyncio.sleep(ttl_s / 3)
            sent_at = loop.time()
            try:
                renewed = await RENEW_LEASE.run(self.redis, lease_key, [self.token, self.ttl_ms])
            except (RedisError, OSError) as exc:
                log.warning("delivery lease renewal of %s failed: %s", self.session_key, exc)
                if loop.time() < valid_until:
                    continue  # it may still be ours: try again before the ttl runs out
                renewed = 0
            if renewed != 1:
                log.warning("delivery lease of %s was lost", self.session_key)
                self.lost.set()
                return
            valid_until = sent_at + ttl_s

    async def begin_run(self, run_id: str) -> dict[int, str]:
        """The messages already sent for ``run_id``: part -> platform message id."""
        s = self.session_key
        reply = await _BEGIN_RUN.run(
            self.redis, [keys.deliver_lease(s), keys.sent_parts(s)], [self.token, run_id]
        )
        if reply is None:
            raise self.lost_error("begin run")
        flat = cast(list[str], reply)
        return {
            int(f.rpartition(":")[2]): mid for f, mid in zip(flat[::2], flat[1::2], strict=True)
        }

    async def record_part(self, run_id: str, part: int, message_id: str) -> None:
        s = self.session_key
        recorded = await _RECORD_PART.run(
            self.redis,
            [keys.deliver_lease(s), keys.sent_parts(s)],
            [self.token, f"{run_id}:{part}", message_id, SENT_RECORDS_TTL_S],
        )
        if recorded != 1:
            raise self.lost_error(f"record part {part} of run {run_id}")

    async def advance(self, entry_id: str) -> None:
        s = self.session_key
        moved = await _ADVANCE.run(
            self.redis, [keys.deliver_lease(s), keys.deliver_cursor(s)], [self.token, entry_id]
        )
        if moved != 1:
            raise self.lost_error(f"advance cursor to {entry_id}")

    def check(self) -> None:
        if self.lost.is_set():
            raise self.lost_error("send")

    def lost_error(self, action: str) -> LeaseLostError:
        return LeaseLostError(f"cannot {action}: delivery lease of {self.session_key!r} lost")


@dataclass(slots=True)
class _RunView:
    """What one run shows on the platform, and what is still to be shown."""

    run_id: str
    message_ids: dict[int, str]
    reply: ReplyText = field(default_factory=ReplyText)
    shown: dict[int, str] = field(default_factory=dict)
    last_edit_at: float | None = None
    dirty: bool = False


class _SessionRenderer:
    """Renders one session's pending events while its delivery lease is held."""

    def __init__(self, deliverer: Deliverer, lease: DeliveryLease) -> None:
        self._d = deliverer
        self._lease = lease
        self._renderer = deliverer.renderer
        self._address = chat_address(lease.session_key, deliverer.channel)
        self._view: _RunView | None = None

    async def drain(self, after: str) -> bool:
        """Render until nothing is in progress. False: gave up on a silent run."""
        clock, idle_s = self._d.clock, self._d.idle_timeout_s
        idle_until = clock() + idle_s
        while not self._lease.lost.is_set():
            view = self._view
            if view is None:
                block_ms = None
            else:
                wait_s = idle_until - clock()
                if view.dirty:
                    wait_s = min(wait_s, self._flush_delay(view))
                block_ms = max(1, int(wait_s * 1000))
            batch = await read_events(
                self._d.redis, self._lease.session_key, after=after, block_ms=block_ms
            )
            for entry_id, event in batch:
                await self._apply(entry_id, event)
                after = entry_id
            if batch:
                idle_until = clock() + idle_s
            view = self._view
            if view is None and not batch:
                return True
            if view is not None and view.dirty and self._flush_delay(view) == 0:
                await self._flush_streaming(view)
            elif view is not None and not batch and clock() >= idle_until:
                log.warning("run %s of %s went silent; will retry", view.run_id, self._address)
                return False
        raise self._lease.lost_error("render")

    def _flush_delay(self, view: _RunView) -> float:
        return edit_delay(self._d.clock(), view.last_edit_at, self._renderer.edit_interval_s)

    async def _view_for(self, run_id: str) -> _RunView:
        if self._view is None or self._view.run_id != run_id:
            self._view = _RunView(run_id, await self._lease.begin_run(run_id))
        return self._view

    async def _apply(self, entry_id: str, event: StreamEvent) -> None:
        view = await self._view_for(event.run_id)
        if isinstance(event, RunStarted):
            view.reply.reset()  # a re-run replaces the partial reply
            await self._typing()
        elif isinstance(event, TextDelta):
            view.reply.add_delta(event.delta)
            view.dirty = True
        elif isinstance(event, TextCompleted):
            view.reply.complete_segment(event.content)
            view.dirty = True
        elif isinstance(event, ToolStarted):
            await self._typing()
        elif isinstance(event, RunCompleted):
            await self._show(view, view.reply.text() or event.content, final=True)
            await self._finish(entry_id)
        elif isinstance(event, RunFailed):
            await self._show(view, failure_text(view.reply.text(), event.error), final=True)
            await self._finish(entry_id)

    async def _finish(self, entry_id: str) -> None:
        await self._lease.advance(entry_id)
        self._view = None
        if self._d.metrics is not None:
            self._d.metrics.messages_out.labels(channel=self._d.channel).inc()

    async def _flush_streaming(self, view: _RunView) -> None:
        try:
            await self._show(view, view.reply.text(), final=False)
        except LeaseLostError:
            raise
        except Exception:
            # A failed preview edit is retried at the next interval; the final one is not lost.
            log.warning("preview of run %s failed", view.run_id, exc_info=True)
            view.last_edit_at = self._d.clock()

    async def _show(self, view: _RunView, text: str, *, final: bool) -> None:
        parts = split_message(text, self._renderer.max_message_chars) if text.strip() else []
        chat = self._address.chat_id
        for part, body in enumerate(parts):
            if view.shown.get(part) == body:
                continue
            self._lease.check()
            message_id = view.message_ids.get(part)
            if message_id is None:
                view.message_ids[part] = await self._send_recorded(view.run_id, part, body)
            else:
                await self._renderer.edit(chat, message_id, body)
            view.shown[part] = body
        if final:
            for part in sorted(set(view.message_ids) - set(range(len(parts)))):
                if view.shown.get(part) != SUPERSEDED_TEXT:
                    await self._renderer.edit(chat, view.message_ids[part], SUPERSEDED_TEXT)
                    view.shown[part] = SUPERSEDED_TEXT
        view.last_edit_at = self._d.clock()
        view.dirty = False

    async def _send_recorded(self, run_id: str, part: int, body: str) -> str:
        """Send one part and record it; a cancel (shutdown) waits for the record first."""
        sending = asyncio.ensure_future(self._send_then_record(run_id, part, body))
        try:
            return await asyncio.shield(sending)
        except asyncio.CancelledError:
            # Leaving now could post this part twice: the replay would not know of it.
            await sending
            raise

    async def _send_then_record(self, run_id: str, part: int, body: str) -> str:
        address = self._address
        message_id = await self._renderer.send(address.chat_id, body, thread_id=address.thread_id)
        # Recorded before anything else: a replay must edit this, not send it again.
        await self._lease.record_part(run_id, part, message_id)
        return message_id

    async def _typing(self) -> None:
        if not self._d.can_type:
            return
        try:
            indicator = cast(TypingIndicator, self._renderer)
            await indicator.typing(self._address.chat_id, thread_id=self._address.thread_id)
        except Exception:
            log.warning("typing indicator failed for %s", self._address, exc_info=True)


class Deliverer:
    """Delivers one channel's replies through ``renderer``; run one per process per channel.

    Signals of a session already being delivered here join that delivery (acked when
    it ends), so a session is rendered by one task at a time. A delivery that gives
    up (a run went silent past ``idle_timeout_s``, the lease was lost, the platform
    failed) leaves its signals pending: ``XAUTOCLAIM`` hands them out again after
    ``claim_idle_ms``, until ``max_deliveries``.
    """

    def __init__(
        self,
        redis: Redis,
        channel_name: str,
        renderer: Renderer,
        *,
        partitions: int,
        consumer: str,
        metrics: DeliveryMetrics | None = None,
        lease_ms: int = 30_000,
        claim_idle_ms: int = 60_000,
        idle_timeout_s: float = 600.0,
        max_deliveries: int = 5,
        concurrency: int = 64,
        block_ms: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.channel = channel_name
        self.renderer = renderer
        self.can_type = isinstance(renderer, TypingIndicator)
        self.consumer = consumer
        self.metrics = metrics
        self.lease_ms = lease_ms
        self.claim_idle_ms = claim_idle_ms
        self.idle_timeout_s = idle_timeout_s
        self.max_deliveries = max_deliveries
        self.concurrency = concurrency
        self.block_ms = block_ms
        self.clock = clock
        self.streams = [keys.deliver(channel_name, p) for p in range(partitions)]
        self._inflight: dict[str, list[Signal]] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._job_done = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Create the consumer groups and begin reading signals; idempotent."""
        if self._loops:
            return
        await ensure_groups(self.redis, self.streams, keys.DELIVER_GROUP)
        self._loops = [
            asyncio.create_task(self._read_loop(), name=f"deliver-read {self.channel}"),
            asyncio.create_task(self._claim_loop(), name=f"deliver-claim {self.channel}"),
        ]

    async def stop(self) -> None:
        """Stop reading and cancel deliveries in flight (their signals stay pending)."""
        tasks = [*self._loops, *self._jobs]
        self._loops = []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def wait_idle(self) -> None:
        """Return once no session is being delivered (every signal read so far handled)."""
        while self._jobs:
            self._job_done.clear()
            await self._job_done.wait()

    async def deliver_session(self, session_key: str) -> Outcome:
        """Render everything pending for the session, unless another holder has it."""
        while True:
            lease = await DeliveryLease.acquire(
                self.redis, session_key, ttl_ms=self.lease_ms, owner=self.consumer
            )
            if lease is None:
                if self.metrics is not None:
                    self.metrics.lease_waits.inc()
                return Outcome.BUSY
            try:
                async with lease.kept_alive():
                    cursor = await self.redis.get(keys.deliver_cursor(session_key))
                    drained = await _SessionRenderer(self, lease).drain(cursor or "0-0")
            finally:
                await lease.release()
            if not drained:
                return Outcome.RETRY
            # Events that came after our last read but before the release had their
            # signal turned away as BUSY: look once more.
            if not await self._has_undelivered(session_key):
                return Outcome.DONE

    async def _has_undelivered(self, session_key: str) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.deliver_cursor(session_key))
            pipe.xrevrange(keys.outbound(session_key), count=1)
            cursor, last = await pipe.execute()
        return bool(last) and parse_stream_id(last[0][0]) > parse_stream_id(cursor or "0-0")

    async def _read_loop(self) -> None:
        while True:
            while len(self._jobs) >= self.concurrency:
                self._job_done.clear()
                await self._job_done.wait()
            try:
                signals = await read_signals(
                    self.redis,
                    self.streams,
                    keys.DELIVER_GROUP,
                    self.consumer,
                    count=self.concurrency - len(self._jobs),
                    block_ms=self.block_ms,
                )
            except (RedisError, OSError):
                log.exception("reading %s delivery signals failed; retrying", self.channel)
                await asyncio.sleep(RETRY_AFTER_ERROR_S)
                continue
            for signal in signals:
                self._dispatch(signal)

    async def _claim_loop(self) -> None:
        """Take over signals a dead (or gave-up) delivery left pending."""
        while True:
            try:
                claimed = await claim_stale(
                    self.redis,
                    self.streams,
                    keys.DELIVER_GROUP,
                    self.consumer,
                    min_idle_ms=self.claim_idle_ms,
                    count=self.concurrency,
                )
            except (RedisError, OSError):
                log.exception("claiming stale %s delivery signals failed", self.channel)
                claimed = []
            for signal in claimed:
                self._dispatch(signal)
            await asyncio.sleep(self.claim_idle_ms / 2000)

    def _dispatch(self, signal: Signal) -> None:
        if signal.deliveries > 1 and self.metrics is not None:
            self.metrics.redeliveries.inc()
        joined = self._inflight.get(signal.session_key)
        if joined is not None:
            joined.append(signal)
            return
        self._inflight[signal.session_key] = [signal]
        job = asyncio.create_task(self._job(signal.session_key))
        self._jobs.add(job)
        job.add_done_callback(self._job_finished)

    def _job_finished(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._job_done.set()

    async def _job(self, session_key: str) -> None:
        signals = self._inflight[session_key]
        handled = 0
        outcome = Outcome.RETRY
        try:
            # Signals that joined while we rendered may be for events after our last look.
            while handled < len(signals) and outcome is not Outcome.BUSY:
                handled = len(signals)
                outcome = await self.deliver_session(session_key)
                if outcome is Outcome.RETRY:
                    break
        except Exception:
            log.exception("delivering %s to %s failed", session_key, self.channel)
            outcome = Outcome.RETRY
        finally:
            del self._inflight[session_key]
        tries = max(s.deliveries for s in signals)
        if outcome is not Outcome.DONE and tries < self.max_deliveries:
            # BUSY on a fresh signal: the live holder drains it. BUSY on a claimed one:
            # the holder may have died; retry once its lease lapses.
            if outcome is Outcome.RETRY or tries > 1:
                return
        elif outcome is Outcome.RETRY:
            log.error(
                "giving up delivering %s to %s after %d tries", session_key, self.channel, tries
            )
        for signal in signals:
            await ack(self.redis, signal, keys.DELIVER_GROUP)
