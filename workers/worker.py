"""The bus worker: claims sessions signalled on ``gw:ready:*`` and runs their turns.

Lifecycle (like python-telegram-bot's ``Application``): ``initialize()`` creates the
consumer groups, ``start()`` begins reading signals, ``stop()`` ends reading and lets
running turns finish within a grace period, ``shutdown()`` deregisters the worker.
All four are idempotent; ``async with Worker(...)`` does all of them and cleans up
when ``start`` fails.

For each signal: take the session's lease with what its first turn needs
(``BEGIN_TURN``; if another holder has it, that holder drains, so a fresh signal is
acked; a *claimed* stale one stays pending until the holder is done or gone; with
nothing pending the signal is acked and no lease taken), drain the pending messages
turn by turn under the busy policy; the last turn's commit finds nothing more, and
releases the lease and acks the signal in the same script. A drain that ends
otherwise releases, re-checks once for a message that arrived just before the
release, and only then acks. Unfinished work is never acked: a crash leaves the signal pending
and ``claim_stale`` hands it to a live worker once it has been idle for
``worker.claim_idle_ms`` (by then the dead holder's lease has lapsed). Reading,
claiming and backing off are ``core.bus.consumer.SignalConsumer``'s; a live worker
keeps ``gw:worker:{id}`` alive (it expires ``HEARTBEAT_TTL_MS`` after a crash).
"""

from __future__ import annotations

import enum
import itertools
import logging
import os
import secrets
import socket
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus import keys
from gateway.core.bus.consumer import SignalConsumer
from gateway.core.bus.inbound import pending_inbound
from gateway.core.bus.lease import new_token
from gateway.core.bus.signals import Signal, ack
from gateway.core.errors import LeaseLostError
from gateway.core.metrics import GatewayMetrics
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.base import SessionStore
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import Settings
from gateway.workers.begin import Begun, NotBegun, begin_turn
from gateway.workers.busy import backlog_page, hand_off
from gateway.workers.drain import Drained, drain_turns
from gateway.workers.jobs import RetryScheduler
from gateway.workers.outage import OUTAGE_ERRORS, UnreleasedGrants, after_outage
from gateway.workers.session_cache import SessionCache
from gateway.workers.turn import TurnDeps

log = logging.getLogger(__name__)

HEARTBEAT_TTL_MS = 20_000
"""A worker's heartbeat key outlives its last beat by this (beats come every <= 5 s)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Runs session turns from the bus, up to ``settings.worker.concurrency`` at once."""

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        runtime: AgentRuntime,
        *,
        worker_id: str | None = None,
        deliver_channels: frozenset[str] = frozenset(),
        sessions: SessionStore | None = None,
        retry: RetryScheduler | None = None,
        stop_grace_s: float = 30.0,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.worker_id = worker_id or default_worker_id()
        self.stop_grace_s = stop_grace_s
        cfg = settings.worker
        self._deps = TurnDeps(
            settings=settings,
            redis=redis,
            runtime=runtime,
            sessions=sessions if sessions is not None else RedisSessionStore(redis),
            deliver_channels=deliver_channels,
            metrics=metrics,
            cache=SessionCache(),
        )
        self._metrics = metrics
        self._retry = retry
        self._consumer = SignalConsumer(
            redis,
            [keys.ready(p) for p in range(cfg.ready_partitions)],
            keys.WORKER_GROUP,
            self.worker_id,
            self._handle,
            concurrency=cfg.concurrency,
            claim_idle_ms=cfg.claim_idle_ms,
            tick=self._beat,
        )
        self._page = backlog_page(settings)
        self._initialized = False
        self._stopping = False
        self._aborting = False

    # -- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._consumer.running

    @property
    def active(self) -> int:
        """Signals being handled right now."""
        return self._consumer.active

    async def initialize(self) -> None:
        if self._initialized:
            return
        await self._consumer.ensure_groups()
        self._initialized = True

    async def start(self) -> None:
        if self.running:
            return
        await self.initialize()
        self._stopping = self._aborting = False
        await self._beat()
        self._consumer.start()
        log.info(
            "worker %s started (concurrency %d)", self.worker_id, self.settings.worker.concurrency
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking signals; give running turns ``grace_s`` to finish, then cancel them.

        A cancelled turn commits and acks nothing; its session gets a fresh ready signal
        so another worker takes it over at once (its old signal stays pending until a
        live worker claims and acks it).
        """
        if not self.running:
            return
        self._stopping = True
        grace = self.stop_grace_s if grace_s is None else grace_s
        unfinished = await self._consumer.stop(grace)
        for sig in unfinished:
            await hand_off(self.redis, self.settings, sig.session_key, sig.channel)
        log.info("worker %s stopped (%d turn(s) cancelled)", self.worker_id, len(unfinished))

    async def abort(self) -> None:
        """Stop at once as a crash would: cancel everything, release no lease, ack nothing.

        What ``kill -9`` leaves behind, inside one process: leases lapse by their ttl and
        the pending signals are recovered by other workers' ``claim_stale``.
        """
        if not self.running:
            return
        self._aborting = self._stopping = True
        await self._consumer.abort()

    async def shutdown(self) -> None:
        if self.running:
            await self.stop()
        if not self._initialized:
            return
        await self.redis.delete(keys.worker_heartbeat(self.worker_id))
        self._initialized = False

    async def __aenter__(self) -> Worker:
        await self.initialize()
        try:
            await self.start()
        except BaseException:
            await self.shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        await self.shutdown()

    # -- handling signals ------------------------------------------------------------

    async def _beat(self) -> None:
        key = keys.worker_heartbeat(self.worker_id)
        await self.redis.set(key, f"{time.time():.3f}", px=HEARTBEAT_TTL_MS)

    async def _handle(self, sig: Signal) -> None:
        grants = UnreleasedGrants(sig.session_key)
        try:
            await self._handle_with(sig, grants)
        except BaseException:
            # Cancelled (a stop past its grace) with grants an outage kept: let them go,
            # else the stop's hand-off finds the session held by nobody until the ttl.
            if grants and not self._aborting:
                await grants.try_let_go(self.redis)
            raise

    async def _handle_with(self, sig: Signal, grants: UnreleasedGrants) -> None:
        for rerun in itertools.count():
            try:
                handled = await self._drain_session(sig, grants)
            except OUTAGE_ERRORS as exc:
                # An outage cut the session off: drain it again once Redis answers
                # (workers.outage), instead of leaving it to claim_stale.
                again = await after_outage(
                    self.redis, self.settings, sig, grants, exc, rerun, lambda: self._stopping
                )
                if again is None:
                    return
                sig = again
                continue
            except Exception as exc:
                # LeaseLostError, an error Redis answered with, or a bug: the work is
                # unfinished, so the signal stays pending and claim_stale brings it back.
                expected = isinstance(exc, LeaseLostError | RedisError)
                level = logging.WARNING if expected else logging.ERROR
                what = f"worker {self.worker_id}: {sig.session_key} unfinished, signal left pending"
                log.log(level, "%s: %r", what, exc, exc_info=not expected)
                return
            if handled is _Handled.ACK:
                await ack(self.redis, sig, keys.WORKER_GROUP)
            return

    async def _drain_session(self, sig: Signal, grants: UnreleasedGrants) -> _Handled:
        """Drain the session; says whether the signal is acked, to ack, or kept pending.
        ``grants`` gets the lease grants an outage kept from being released."""
        claimed = sig.claimed
        if claimed and self._metrics is not None:
            self._metrics.redeliveries.inc()
        # Counted once: the claimed signal's first turn is its re-run, not another one.
        redelivery_counted = claimed
        while True:
            begun = await self._begin(sig, grants)
            if begun is NotBegun.EMPTY:
                return _Handled.ACKED
            if begun is NotBegun.BUSY or begun is NotBegun.KEPT:
                if self._metrics is not None:
                    self._metrics.lease_waits.inc()
                # BUSY: the holder drains (BEGIN_TURN acked the fresh signal). KEPT: the
                # holder may be dead (a claimed signal) or runs no turns (compaction):
                # pending until that lease lapsed or was released.
                return _Handled.ACKED if begun is NotBegun.BUSY else _Handled.KEPT
            drained = await self._drain_held(begun, sig, grants, redelivery_counted)
            redelivery_counted = False
            if drained.released:
                return _Handled.ACKED
            if drained.retry is not None:
                if self._retry is None:
                    return _Handled.KEPT  # claim_stale retries it after claim_idle_ms
                attempt, run_id = drained.retry
                await self._retry.schedule(
                    sig.session_key, sig.channel, attempt=attempt, run_id=run_id
                )
                return _Handled.ACK
            if self._stopping:
                # Acked only once another signal stands for the pending work.
                handed = await hand_off(self.redis, self.settings, sig.session_key, sig.channel)
                return _Handled.ACK if handed else _Handled.KEPT
            if not await pending_inbound(self.redis, sig.session_key, count=1):
                return _Handled.ACK

    async def _begin(self, sig: Signal, grants: UnreleasedGrants) -> Begun | NotBegun:
        """``BEGIN_TURN``; if it fails or is cancelled (a stop past its grace) after the
        script may have granted the lease, the grant is let go, unless aborting: else
        the stop's hand-off would find the session held by nobody until the ttl."""
        token = new_token(self.worker_id)
        try:
            return await begin_turn(
                self.redis,
                self._deps.sessions,
                sig,
                settings=self.settings,
                owner=self.worker_id,
                page=self._page,
                cache=self._deps.cache,
                token=token,
            )
        except BaseException:
            if not self._aborting:
                grants.remember(token)
                await grants.try_let_go(self.redis)
            raise

    async def _drain_held(
        self, begun: Begun, sig: Signal, grants: UnreleasedGrants, redelivery_counted: bool
    ) -> Drained:
        """Run the turns of a session ``BEGIN_TURN`` gave us; release it unless aborting
        (a worker stopping as a crash would leaves it to lapse by its ttl)."""
        writer = begun.writer
        try:
            async with writer.keepalive(self.settings.worker.lease_ms / 3000) as lost:
                return await drain_turns(
                    self._deps,
                    begun,
                    lost,
                    page=self._page,
                    stopping=lambda: self._stopping,
                    signal=sig,
                    redelivery_counted=redelivery_counted,
                )
        finally:
            if not self._aborting:
                try:
                    await writer.release()
                except BaseException:
                    # Let go once Redis answers again, before the re-run (workers.outage),
                    # or at once if a stop's cancel cut the release itself (``_handle``).
                    grants.remember(writer.lease.token)
                    raise


class _Handled(enum.Enum):
    ACKED = "acked"  # a script acked the signal already
    ACK = "ack"  # finished: ack it
    KEPT = "kept"  # unfinished: leave it pending for claim_stale
