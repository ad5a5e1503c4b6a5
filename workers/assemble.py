"""One bus worker with everything it runs with (``python -m gateway.workers``, ``gateway start``).

``assemble_worker`` builds, for one process: the arq job pool (unless ``jobs`` is
off), the built-in tools plus ``schedule`` (which needs that pool), the agent runtime,
and a ``Worker`` whose failed turns are retried through arq with backoff. Leaving the
block closes all of it, in reverse order.

``WorkerAssembly.running()`` then runs the worker together with the arq side jobs
(scheduled messages, deferred retries, idle compaction). Building and running are
two steps so that ``GatewayApp`` keeps its ``initialize()``/``start()`` split; the
``python -m gateway.workers`` process simply does both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import arq
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus.backoff import Outage, cancel_until_done
from gateway.core.bus.client import RedisTarget
from gateway.core.metrics import GatewayMetrics
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import Settings
from gateway.core.tools import builtin_tools
from gateway.workers.jobs import RetryScheduler, arq_worker_settings, create_job_pool, schedule_tool
from gateway.workers.worker import Worker

log = logging.getLogger(__name__)

SIDE_JOBS_RESTART_S = 1.0
SIDE_JOBS_RESTART_MAX_S = 30.0
SIDE_JOBS_STOP_TRIES = 20
"""Rounds of ``cancel_until_done`` (0.5 s each) before the side jobs are left behind."""
SIDE_JOBS_HEALTHY_S = 10.0
"""A run of the side jobs this long counts as healthy: its end is a new outage."""


@dataclass(frozen=True, slots=True)
class WorkerAssembly:
    """The parts ``assemble_worker`` built; ``pool`` is None when jobs are off."""

    settings: Settings
    target: RedisTarget
    runtime: AgentRuntime
    worker: Worker
    pool: ArqRedis | None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Worker]:
        """Run the worker (and the arq side jobs, when there is a pool) for the block.

        On exit the worker stops first (its running turns may still enqueue retries),
        then the side jobs.
        """
        async with AsyncExitStack() as stack:
            if self.pool is not None:
                await stack.enter_async_context(_side_jobs(self._side_jobs_worker))
            await self.worker.start()
            stack.push_async_callback(self.worker.stop)
            yield self.worker

    def _side_jobs_worker(self) -> arq.Worker:
        # A new arq worker (and pool) each time: arq closes its pool when it stops.
        options = arq_worker_settings(self.settings, target=self.target, runtime=self.runtime)
        return arq.Worker(**options)


@asynccontextmanager
async def assemble_worker(
    settings: Settings,
    redis: Redis,
    *,
    target: RedisTarget,
    jobs: bool = True,
    worker_id: str | None = None,
    deliver_channels: frozenset[str] = frozenset(),
    stop_grace_s: float = 30.0,
    metrics: GatewayMetrics | None = None,
) -> AsyncIterator[WorkerAssembly]:
    """Build (and initialize, but not start) a worker with its runtime and arq pool.

    ``redis`` is the bus client (``decode_responses=True``), owned by the caller;
    ``target`` is where it connects, for arq's own connections.
    """
    async with AsyncExitStack() as stack:
        pool = await create_job_pool(target) if jobs else None
        tools = builtin_tools(settings.tools)
        if pool is not None:
            stack.push_async_callback(pool.aclose)
            tools.add(schedule_tool(pool))
        runtime = AgentRuntime(settings, store=RedisSessionStore(redis), tools=tools)
        stack.push_async_callback(runtime.aclose)
        worker = Worker(
            settings,
            redis,
            runtime,
            worker_id=worker_id,
            deliver_channels=deliver_channels,
            retry=RetryScheduler(pool) if pool is not None else None,
            stop_grace_s=stop_grace_s,
            metrics=metrics,
        )
        await worker.initialize()
        stack.push_async_callback(worker.shutdown)
        yield WorkerAssembly(settings, target, runtime, worker, pool)


@asynccontextmanager
async def _side_jobs(make: Callable[[], arq.Worker]) -> AsyncIterator[None]:
    running: list[arq.Worker] = []
    task = asyncio.create_task(_keep_running(make, running), name="arq side jobs")
    try:
        yield
    finally:
        try:
            if running:
                await running[0].close()  # raises when Redis is gone: still end the task below
        finally:
            await _end(task, running)


async def _end(task: asyncio.Task[None], running: list[arq.Worker]) -> None:
    """Cancel the side jobs (and arq's own main task, which can miss a cancellation:
    seen under load, ``stop`` then waited for ever) until they end, bounded."""
    main_task = running[0].main_task if running else None
    tasks = [task] if main_task is None else [task, main_task]
    if await cancel_until_done(tasks, rounds=SIDE_JOBS_STOP_TRIES):
        log.warning("arq side jobs did not stop after %d cancellations", SIDE_JOBS_STOP_TRIES)
        return
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("arq side jobs had stopped: %s", error)


async def _keep_running(make: Callable[[], arq.Worker], running: list[arq.Worker]) -> None:
    """Run arq's worker; when a Redis outage ends it, start a new one once Redis answers.

    arq's ``async_run`` ends with the connection error of an outage and never polls
    again, so reminders and turn retries would wait for a worker restart.
    """
    loop = asyncio.get_running_loop()
    outage = Outage("arq side jobs", base_s=SIDE_JOBS_RESTART_S, max_s=SIDE_JOBS_RESTART_MAX_S)
    while True:
        side_jobs = make()
        running[:] = [side_jobs]
        started = loop.time()
        try:
            await side_jobs.async_run()
            return
        except (RedisError, OSError) as exc:
            failure = exc
            if loop.time() - started >= SIDE_JOBS_HEALTHY_S:
                outage.recovered()  # a healthy run ended: a new outage, one warning again
        try:
            await side_jobs.close()
        except (RedisError, OSError) as exc:  # the dead connection's pool; a new one follows
            log.debug("closing the stopped arq side jobs: %s", exc)
        await outage.failed(failure)  # logged when an outage begins; then the backoff
