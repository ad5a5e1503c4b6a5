"""The bus worker: claims sessions signalled on ``gw:ready:*`` and runs their turns.

Lifecycle (like python-telegram-bot's ``Application``): ``initialize()`` creates the
consumer groups, ``start()`` begins reading signals, ``stop()`` ends reading and lets
running turns finish within a grace period, ``shutdown()`` deregisters the worker.
All four are idempotent; ``async with Worker(...)`` does all of them and cleans up
when ``start`` fails.

For each signal: take the session's lease (if another holder has it, that holder
drains, so a fresh signal is acked; a *claimed* stale one stays pending until the
holder is done or gone), drain the pending messages turn by turn under the busy
policy, release, re-check once for a message that arrived just before the release,
and only then ack. Unfinished work is never acked: a crash leaves the signal pending
and ``claim_stale`` hands it to a live worker once it has been idle for
``worker.claim_idle_ms`` (by then the dead holder's lease has lapsed). Reading,
claiming and backing off are ``core.bus.consumer.SignalConsumer``'s; a live worker
keeps ``gw:worker:{id}`` alive (it expires ``HEARTBEAT_TTL_MS`` after a crash).
"""

from __future__ import annotations

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
from gateway.core.bus.signals import Signal, ack
from gateway.core.errors import LeaseLostError
from gateway.core.metrics import GatewayMetrics
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.base import SessionStore
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import Settings
from gateway.workers.busy import backlog_page, hand_off
from gateway.workers.jobs import RetryScheduler
from gateway.workers.store import leased
from gateway.workers.turn import TurnDeps, drain_turns

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
        try:
            finished = await self._drain_session(sig, sig.claimed)
        except Exception as exc:
            # LeaseLostError, a Redis outage or a bug: the work is unfinished, so the
            # signal stays pending and claim_stale brings it back.
            expected = isinstance(exc, LeaseLostError | RedisError | OSError)
            level = logging.WARNING if expected else logging.ERROR
            what = f"worker {self.worker_id}: {sig.session_key} unfinished, signal left pending"
            log.log(level, "%s: %r", what, exc, exc_info=not expected)
            return
        if finished:
            await ack(self.redis, sig, keys.WORKER_GROUP)

    async def _drain_session(self, sig: Signal, claimed: bool) -> bool:
        """Drain the session; True when the signal may be acked."""
        cfg = self.settings.worker
        if claimed and self._metrics is not None:
            self._metrics.redeliveries.inc()
        # Counted once: the claimed signal's first turn is its re-run, not another one.
        redelivery_counted = claimed
        while True:
            async with leased(
                self.redis,
                sig.session_key,
                ttl_ms=cfg.lease_ms,
                owner=self.worker_id,
                release=lambda: not self._aborting,
            ) as held:
                if held is None:
                    if self._metrics is not None:
                        self._metrics.lease_waits.inc()
                    # The holder drains. A claimed signal may be a dead holder's: keep
                    # it pending until that lease lapsed or was released.
                    return not claimed
                retry = await drain_turns(
                    self._deps,
                    *held,
                    page=self._page,
                    stopping=lambda: self._stopping,
                    redelivery_counted=redelivery_counted,
                )
                redelivery_counted = False
            if retry is not None:
                if self._retry is None:
                    return False  # left pending: claim_stale retries it after claim_idle_ms
                attempt, run_id = retry
                await self._retry.schedule(
                    sig.session_key, sig.channel, attempt=attempt, run_id=run_id
                )
                return True
            if self._stopping:
                await hand_off(self.redis, self.settings, sig.session_key, sig.channel)
                return True
            if not await pending_inbound(self.redis, sig.session_key, count=1):
                return True
