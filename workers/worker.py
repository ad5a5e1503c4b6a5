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
``worker.claim_idle_ms`` (by then the dead holder's lease has lapsed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.bus import keys
from core.bus.inbound import pending_inbound
from core.bus.signals import (
    Signal,
    ack,
    claim_stale,
    ensure_groups,
    read_signals,
    restore_groups,
)
from core.errors import LeaseLostError
from core.metrics import GatewayMetrics
from core.runtime import AgentRuntime
from core.sessions.base import SessionStore
from core.sessions.redis import RedisSessionStore
from core.settings import Settings
from workers.busy import backlog_page, hand_off
from workers.jobs import RetryScheduler
from workers.store import leased
from workers.turn import TurnDeps, drain_turns

log = logging.getLogger(__name__)

READ_BLOCK_MS = 5_000
"""Longest single XREADGROUP block (re-issued; bounded so client socket timeouts never hit)."""
ERROR_BACKOFF_MAX_S = 5.0
MAINTENANCE_INTERVAL_S = 5.0


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
        self._streams = [keys.ready(p) for p in range(cfg.ready_partitions)]
        self._page = backlog_page(settings)
        self._initialized = False
        self._running = False
        self._stopping = False
        self._aborting = False
        self._loops: list[asyncio.Task[None]] = []
        self._turns: dict[asyncio.Task[None], Signal] = {}
        self._slot_freed = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def active(self) -> int:
        """Signals being handled right now."""
        return len(self._turns)

    async def initialize(self) -> None:
        if self._initialized:
            return
        await ensure_groups(self.redis, self._streams, keys.WORKER_GROUP)
        self._initialized = True

    async def start(self) -> None:
        if self._running:
            return
        await self.initialize()
        self._stopping = self._aborting = False
        await self._beat()
        self._loops = [
            asyncio.create_task(self._read_loop(), name=f"worker {self.worker_id} read"),
            asyncio.create_task(self._maintenance_loop(), name=f"worker {self.worker_id} claim"),
        ]
        self._running = True
        log.info(
            "worker %s started (concurrency %d)", self.worker_id, self.settings.worker.concurrency
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking signals; give running turns ``grace_s`` to finish, then cancel them.

        A cancelled turn commits and acks nothing; its session gets a fresh ready signal
        so another worker takes it over at once (its old signal stays pending until a
        live worker claims and acks it).
        """
        if not self._running:
            return
        self._stopping = True
        await _cancel_all(self._loops)
        grace = self.stop_grace_s if grace_s is None else grace_s
        unfinished: list[Signal] = []
        if self._turns:
            _, late = await asyncio.wait(list(self._turns), timeout=grace)
            unfinished = [self._turns[task] for task in late]
            await _cancel_all(late)
        for sig in unfinished:
            await hand_off(self.redis, self.settings, sig.session_key, sig.channel)
        self._running = False
        log.info("worker %s stopped (%d turn(s) cancelled)", self.worker_id, len(unfinished))

    async def abort(self) -> None:
        """Stop at once as a crash would: cancel everything, release no lease, ack nothing.

        What ``kill -9`` leaves behind, inside one process: leases lapse by their ttl and
        the pending signals are recovered by other workers' ``claim_stale``.
        """
        if not self._running:
            return
        self._aborting = self._stopping = True
        await _cancel_all([*self._loops, *self._turns])
        self._running = False

    async def shutdown(self) -> None:
        if self._running:
            await self.stop()
        if not self._initialized:
            return
        await self.redis.hdel(keys.WORKERS_ALIVE, self.worker_id)  # type: ignore[misc]
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

    # -- reading and dispatching signals ----------------------------------------------

    async def _read_loop(self) -> None:
        group, me = keys.WORKER_GROUP, self.worker_id
        failures = 0
        while True:
            free = await self._free_slots()
            try:
                signals = await read_signals(
                    self.redis, self._streams, group, me, count=free, block_ms=READ_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                failures += 1
                await self._after_read_error(exc, failures)
                continue
            failures = 0
            for sig in signals:
                self._dispatch(sig, claimed=False)

    async def _maintenance_loop(self) -> None:
        """Every few seconds: the heartbeat, and claiming signals of dead consumers."""
        interval = min(MAINTENANCE_INTERVAL_S, self.settings.worker.claim_idle_ms / 2000)
        while True:
            await asyncio.sleep(interval)  # a timer, not a wait for a condition
            try:
                await self._beat()
                await self._claim_stale()
            except (RedisError, OSError) as exc:
                log.warning("worker %s: maintenance failed: %s", self.worker_id, exc)

    async def _claim_stale(self) -> None:
        cfg = self.settings.worker
        free = cfg.concurrency - self.active
        if free <= 0:
            return
        group, me = keys.WORKER_GROUP, self.worker_id
        claimed = await claim_stale(
            self.redis, self._streams, group, me, min_idle_ms=cfg.claim_idle_ms, count=free
        )
        for sig in claimed:
            log.info("worker %s claimed stale signal %s of %s", me, sig.id, sig.session_key)
            self._dispatch(sig, claimed=True)

    async def _beat(self) -> None:
        await self.redis.hset(keys.WORKERS_ALIVE, self.worker_id, f"{time.time():.3f}")  # type: ignore[misc]

    async def _free_slots(self) -> int:
        while (free := self.settings.worker.concurrency - self.active) <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return free

    async def _after_read_error(self, exc: Exception, failures: int) -> None:
        log.warning("worker %s: reading signals failed: %s", self.worker_id, exc)
        # Redis lost its data (groups gone): recreate them, else back off. Never raises:
        # an error escaping here would end the read loop and the worker would go deaf.
        if not await restore_groups(self.redis, exc, self._streams, keys.WORKER_GROUP):
            await asyncio.sleep(min(ERROR_BACKOFF_MAX_S, 0.1 * 2**failures))

    def _dispatch(self, sig: Signal, *, claimed: bool) -> None:
        task = asyncio.create_task(self._handle(sig, claimed), name=f"session {sig.session_key}")
        self._turns[task] = sig
        task.add_done_callback(self._turn_done)

    def _turn_done(self, task: asyncio.Task[None]) -> None:
        self._turns.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("session task %s crashed", task.get_name(), exc_info=error)

    async def _handle(self, sig: Signal, claimed: bool) -> None:
        try:
            finished = await self._drain_session(sig, claimed)
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


async def _cancel_all(tasks: list[asyncio.Task[None]] | set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
