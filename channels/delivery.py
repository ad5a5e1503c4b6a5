"""The channel-agnostic deliverer: outbound events -> platform messages, exactly once.

Per signal on ``gw:deliver:{channel}:{p}`` (consumer group ``deliverers``) it leases
the chat (``gw:dlease:{s}``, see ``channels.delivery_lease``) and renders what
``gw:out:{s}`` holds after the delivery cursor (see ``channels.delivery_run``): the
first text is sent, later text edits it, and the final text is split at the
platform limit.

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
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from channels.base import Renderer, TypingIndicator
from channels.delivery_lease import DeliveryLease
from channels.delivery_run import DeliveryMetrics, SessionRenderer
from core.bus import keys
from core.bus.codec import parse_stream_id
from core.bus.signals import (
    Signal,
    ack,
    claim_stale,
    ensure_groups,
    read_signals,
    restore_groups,
)

__all__ = ["Deliverer", "DeliveryMetrics", "Outcome"]

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR_S = 1.0


class Outcome(enum.Enum):
    DONE = "done"
    """Everything pending was rendered."""
    BUSY = "busy"
    """Another holder has the chat's delivery lease; it drains before releasing."""
    RETRY = "retry"
    """Gave up for now (a run went silent, the platform or the lease failed)."""


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
                    renderer = SessionRenderer(self, lease)
                    drained = await renderer.drain(cursor or "0-0")
            finally:
                await lease.release()
            if not drained:
                return Outcome.RETRY
            # Events that came after our last read but before the release had their
            # signal turned away as BUSY: look once more. A pass that rendered nothing
            # saw only unreadable entries there (logged by read_events): looking again
            # would spin.
            if renderer.applied == 0 or not await self._has_undelivered(session_key):
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
            except (RedisError, OSError) as exc:
                log.exception("reading %s delivery signals failed; retrying", self.channel)
                # Redis lost its data (groups gone): recreate them, or nothing is read again.
                if not await restore_groups(self.redis, exc, self.streams, keys.DELIVER_GROUP):
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
        job = asyncio.create_task(
            self._job(signal.session_key), name=f"deliver {signal.session_key}"
        )
        self._jobs.add(job)
        job.add_done_callback(self._job_finished)

    def _job_finished(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        self._job_done.set()
        if not job.cancelled() and (error := job.exception()) is not None:
            # Acking failed: the signals stay pending and claim_stale brings them back.
            log.error("delivery job %s of %s failed", job.get_name(), self.channel, exc_info=error)

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
