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

import enum
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.channels.base import Renderer, TypingIndicator
from gateway.channels.delivery_lease import DeliveryLease
from gateway.channels.delivery_run import DeliveryMetrics, SessionRenderer
from gateway.channels.render import chat_address
from gateway.channels.toolkit.ratelimit import PLATFORM_LIMITS, RateLimiter, RateLimits
from gateway.core.bus import keys
from gateway.core.bus.codec import parse_stream_id
from gateway.core.bus.consumer import READ_BLOCK_MS, SignalConsumer
from gateway.core.bus.signals import Signal, ack
from gateway.core.errors import LeaseLostError
from gateway.core.events import ChatAddress, RunStarted
from gateway.core.settings import ChannelSettings, WorkerSettings

__all__ = ["AckDecision", "Deliverer", "DeliveryMetrics", "Outcome", "decide_ack"]

log = logging.getLogger(__name__)

_WORKER_DEFAULTS = WorkerSettings()
_CHANNEL_DEFAULTS = ChannelSettings()


class Outcome(enum.Enum):
    DONE = "done"
    """Everything pending was rendered."""
    BUSY = "busy"
    """Another holder has the chat's delivery lease; it drains before releasing."""
    RETRY = "retry"
    """Gave up for now (a run went silent, the platform or the lease failed)."""


class AckDecision(enum.Enum):
    ACK = "ack"
    """Done, or a fresh signal for a chat a live holder is delivering (it drains it)."""
    LEAVE_PENDING = "leave_pending"
    """Try again: ``XAUTOCLAIM`` hands the signal out once it was idle ``claim_idle_ms``."""
    GIVE_UP = "give_up"
    """Failed ``max_deliveries`` times: ack and log."""


def decide_ack(outcome: Outcome, times_delivered: int, max_deliveries: int) -> AckDecision:
    """What to do with the signals of a delivery that ended with ``outcome``.

    BUSY on a fresh signal: the live holder drains what it announced. BUSY on a
    claimed one: the holder may have died (its lease lapses by its ttl), so retry,
    however often: BUSY is no failed attempt, and giving up while a dead holder's
    lease has not lapsed yet (``claim_idle_ms`` short of ``lease_ms``, or a small
    ``max_deliveries``) would leave its reply unshown. A live holder ends its hold
    (it drains, or gives up on a silent run), so this does not retry forever.
    """
    if outcome is Outcome.DONE:
        return AckDecision.ACK
    if outcome is Outcome.BUSY:
        return AckDecision.ACK if times_delivered == 1 else AckDecision.LEAVE_PENDING
    if times_delivered < max_deliveries:
        return AckDecision.LEAVE_PENDING
    return AckDecision.GIVE_UP


class Deliverer:
    """Delivers one channel's replies through ``renderer``; run one per process per channel.

    Signals of a session already being delivered here join that delivery (acked when
    it ends), so a session is rendered by one task at a time. What a delivery that did
    not finish does with its signals is ``decide_ack``'s: a delivery gives up when a
    run went silent past ``idle_timeout_s``, the lease was lost, or the platform failed
    or did not answer within ``render_timeout_s``.
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
        lease_ms: int = _WORKER_DEFAULTS.lease_ms,
        claim_idle_ms: int = _WORKER_DEFAULTS.claim_idle_ms,
        max_deliveries: int = _WORKER_DEFAULTS.max_deliveries,
        render_timeout_s: float = _CHANNEL_DEFAULTS.render_timeout_s,
        edit_interval_s: float | None = None,
        idle_timeout_s: float = 600.0,
        concurrency: int = 64,
        block_ms: int = READ_BLOCK_MS,
        clock: Callable[[], float] = time.monotonic,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.redis = redis
        self.channel = channel_name
        self.renderer = renderer
        self.can_type = isinstance(renderer, TypingIndicator)
        self.consumer = consumer
        self.metrics = metrics
        self.lease_ms = lease_ms
        self.max_deliveries = max_deliveries
        self.render_timeout_s = render_timeout_s
        self.edit_interval_s = (
            renderer.edit_interval_s if edit_interval_s is None else edit_interval_s
        )
        """Least time between two streamed edits of one chat (``channels.<name>.edit_interval``;
        None: the renderer's own default)."""
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self.streams = [keys.deliver(channel_name, p) for p in range(partitions)]
        limits = rate_limits or PLATFORM_LIMITS.get(channel_name)
        self.limiter = None if limits is None else RateLimiter(redis, channel_name, limits)
        """Shared with every replica; None: the channel has no platform limit (HTTP)."""
        self._inflight: dict[str, list[Signal]] = {}
        self._signals = SignalConsumer(
            redis,
            self.streams,
            keys.DELIVER_GROUP,
            consumer,
            self.handle,
            concurrency=concurrency,
            claim_idle_ms=claim_idle_ms,
            block_ms=block_ms,
        )

    async def start(self) -> None:
        """Create the consumer groups and begin reading signals; idempotent."""
        await self._signals.ensure_groups()
        self._signals.start()

    async def stop(self) -> None:
        """Stop reading and cancel deliveries in flight (their signals stay pending).

        Bounded: a platform call in flight is awaited (so a sent message is recorded)
        for at most ``render_timeout_s``.
        """
        await self._signals.stop()

    async def wait_idle(self) -> None:
        """Return once no session is being delivered (every signal read so far handled)."""
        await self._signals.wait_idle()

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
            # signal turned away as BUSY: look once more, whether or not this pass
            # rendered anything. Compared with what the pass looked at (unreadable
            # entries included), not the cursor, so an unreadable tail does not spin.
            if not await self._arrived_after(session_key, renderer.read_until):
                return Outcome.DONE

    async def address_of(self, session_key: str, event: RunStarted | None) -> ChatAddress:
        """Where the session's replies go: ``event``'s address (remembered for runs
        that carry none, e.g. a backlog notice), else the remembered one, else the
        default session key's parts."""
        key = keys.chat_address(session_key)
        if event is not None and event.address is not None:
            await self.redis.set(key, event.address.model_dump_json())
            return event.address
        stored = await self.redis.get(key)
        if stored:
            return ChatAddress.model_validate_json(stored)
        parsed = chat_address(session_key, self.channel)
        return ChatAddress(channel=self.channel, chat_id=parsed.chat_id, thread_id=parsed.thread_id)

    async def _arrived_after(self, session_key: str, read_until: str) -> bool:
        last = await self.redis.xrevrange(keys.outbound(session_key), count=1)
        return bool(last) and parse_stream_id(last[0][0]) > parse_stream_id(read_until)

    async def handle(self, signal: Signal) -> None:
        """The job run for each signal read or claimed (acks what ``decide_ack`` says)."""
        if signal.claimed and self.metrics is not None:
            self.metrics.redeliveries.inc()
        joined = self._inflight.get(signal.session_key)
        if joined is not None:
            joined.append(signal)
            return
        signals = self._inflight[signal.session_key] = [signal]
        try:
            outcome = await self._deliver_joined(signal.session_key, signals)
        finally:
            del self._inflight[signal.session_key]
        times = max(s.times_delivered for s in signals)
        decision = decide_ack(outcome, times, self.max_deliveries)
        if decision is AckDecision.LEAVE_PENDING:
            return
        if decision is AckDecision.GIVE_UP:
            log.error(
                "giving up delivering %s to %s after %d deliveries (%s)",
                signal.session_key,
                self.channel,
                times,
                outcome.value,
            )
        for joined_signal in signals:
            await ack(self.redis, joined_signal, keys.DELIVER_GROUP)

    async def _deliver_joined(self, session_key: str, signals: list[Signal]) -> Outcome:
        """Deliver until no signal joined meanwhile (it may announce events after our look)."""
        try:
            handled = len(signals)
            outcome = await self.deliver_session(session_key)
            while outcome is Outcome.DONE and handled < len(signals):
                handled = len(signals)
                outcome = await self.deliver_session(session_key)
        except (RedisError, OSError, LeaseLostError, TimeoutError) as exc:
            log.warning("delivering %s to %s failed: %r", session_key, self.channel, exc)
            return Outcome.RETRY
        except Exception:
            log.exception("delivering %s to %s failed", session_key, self.channel)
            return Outcome.RETRY
        return outcome
