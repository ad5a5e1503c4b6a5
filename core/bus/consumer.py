"""One consumer of a group's signal streams: the loop the worker and the deliverer share.

``SignalConsumer`` reads signals with ``XREADGROUP`` and runs ``job(signal)`` in its
own task, at most ``concurrency`` at a time. A semaphore gates the reads (as arq's
worker does): a consumer with no free slot does not read, so signals it could not
start wait in the stream for its peers. Every few seconds it calls ``tick`` (the
worker's heartbeat), marks the signals of its running jobs as just delivered, and
takes over signals any consumer left pending for ``claim_idle_ms`` (``XAUTOCLAIM``:
that consumer died, or its job gave up).

A stop never cancels a read in flight: it wakes the blocked ``XREADGROUP``
(``core.bus.blocking_reader``) and starts whatever that read returned, so no signal is
left delivered to a consumer that is gone.

Redis errors back off exponentially, with one log line when an outage begins and one
when it ends; a consumer group that Redis lost (a restart without its data) is
recreated at once. The consumer never acks: ``job`` acks what it finished, so a job
that is cancelled (``stop``, ``abort``) or fails leaves its signal pending, for a peer
to claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, RedisError

from gateway.core.bus.backoff import Outage, cancel_all
from gateway.core.bus.blocking_reader import BlockingReader
from gateway.core.bus.signals import (
    ClaimScan,
    Signal,
    claim_stale,
    ensure_groups,
    is_missing_group,
    keep_claimed,
    read_signals,
)

log = logging.getLogger(__name__)

READ_BLOCK_MS = 5_000
"""Longest single XREADGROUP block (re-issued; well under the clients' socket timeout)."""
WAKE_EVERY_S = 0.05
"""How often a stop asks again to wake a read it found not blocked yet."""
CLAIM_INTERVAL_MAX_S = 5.0
LOADING_WAIT_S = 120.0
"""How long start-up waits for a Redis that is still loading its data (AOF replay)."""

Job = Callable[[Signal], Coroutine[Any, Any, None]]
Tick = Callable[[], Awaitable[None]]


class SignalConsumer:
    """Reads ``streams`` as ``consumer`` of ``group`` and runs a job per signal."""

    def __init__(
        self,
        redis: Redis,
        streams: Sequence[str],
        group: str,
        consumer: str,
        job: Job,
        *,
        concurrency: int,
        claim_idle_ms: int,
        block_ms: int = READ_BLOCK_MS,
        tick: Tick | None = None,
    ) -> None:
        self.redis = redis
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self.concurrency = concurrency
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self._job = job
        self._tick = tick
        self._slots = asyncio.Semaphore(concurrency)
        self._loops: list[asyncio.Task[None]] = []
        self._reader: BlockingReader | None = None
        self._closing = False
        self._taking = False
        """True while the read loop claims or reads signals and starts their jobs: a
        stop then lets it finish (they are this consumer's once Redis answered)."""
        self._jobs: dict[asyncio.Task[None], Signal] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._claim_due = False
        """A claim found no free slot: the next free slot claims before reading new work,
        so signals a dead consumer left are never starved by a steady inflow."""
        self._scan = ClaimScan()
        """Where the next claim resumes, so every stale signal is reached in turn."""
        self.outage = Outage(f"{group} consumer {consumer}")

    @property
    def running(self) -> bool:
        return bool(self._loops)

    @property
    def active(self) -> int:
        """Jobs running now."""
        return len(self._jobs)

    async def ensure_groups(self) -> None:
        """Create the groups; a Redis still loading its data (just restarted) is waited
        for, up to ``LOADING_WAIT_S``, instead of failing the start."""
        loading = Outage(f"{self.group} consumer {self.consumer} start")
        deadline = asyncio.get_running_loop().time() + LOADING_WAIT_S
        while True:
            try:
                await ensure_groups(self.redis, self.streams, self.group)
            except BusyLoadingError as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                await loading.failed(exc)
                continue
            loading.recovered()
            return

    def start(self) -> None:
        """Begin reading and claiming (the groups must exist); idempotent."""
        if self._loops:
            return
        name = f"{self.group} {self.consumer}"
        self._closing = False
        self._reader = BlockingReader(self.redis)
        self._loops = [
            asyncio.create_task(self._read_loop(), name=f"{name} read"),
            asyncio.create_task(self._claim_loop(), name=f"{name} claim"),
        ]
        for loop in self._loops:
            loop.add_done_callback(_log_crash)

    async def stop(self, grace_s: float = 0.0) -> list[Signal]:
        """Stop reading; give running jobs ``grace_s``, then cancel them.

        Returns the signals whose jobs were cancelled: unfinished, so never acked.
        """
        loops, self._loops = self._loops, []
        if not loops:
            return []
        self._closing = True
        read, claim = loops
        await cancel_all([claim])
        await self._end_reading(read)
        late: Iterable[asyncio.Task[None]] = list(self._jobs)
        if late and grace_s > 0:
            _, late = await asyncio.wait(late, timeout=grace_s)
        unfinished = [self._jobs[task] for task in late if task in self._jobs]
        await cancel_all(late)
        return unfinished

    async def abort(self) -> None:
        """Cancel reading and every job at once (what a crash leaves: nothing acked)."""
        tasks = [*self._loops, *self._jobs]
        self._loops = []
        await cancel_all(tasks)
        await self._close_reader()

    async def _end_reading(self, read: asyncio.Task[None]) -> None:
        """Let the read loop finish what it is taking (waking its blocked read), then
        end it; bounded by one block, after which it is cancelled as before."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.block_ms / 1000 + 1.0
        while self._taking and not read.done() and loop.time() < deadline:
            if self._reader is not None:
                try:
                    # Bounded too: in a network partition the unblock itself would wait
                    # for the socket timeout.
                    await asyncio.wait_for(self._reader.wake(), deadline - loop.time())
                except (RedisError, OSError, TimeoutError):
                    break  # Redis is gone: so is the reply the read waited for
            await asyncio.wait([read], timeout=WAKE_EVERY_S)
        await cancel_all([read])
        await self._close_reader()

    async def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(RedisError, OSError):  # its connection is dropped anyway
                await reader.aclose()

    async def wait_idle(self) -> None:
        """Return once no job runs (every signal read so far handled)."""
        await self._idle.wait()

    # -- loops -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self._closing:
            await self._slots.acquire()  # read only with a free slot
            self._slots.release()
            self._taking = True
            try:
                await self._take()
            except (RedisError, OSError) as exc:
                self._taking = False
                await self._after_error(exc)
            finally:
                self._taking = False

    async def _take(self) -> None:
        """Claim stale signals when due, else read new ones; start a job for each."""
        if self._claim_due:
            self._claim_due = False
            if await self._claim_and_start():
                return  # slots may be left: claim again before new work
        reader = self._reader
        assert reader is not None  # set by start(), before this loop
        count = max(1, self.concurrency - self.active)
        signals = await reader.read(
            lambda conn: read_signals(
                conn, self.streams, self.group, self.consumer, count=count, block_ms=self.block_ms
            )
        )
        self.outage.recovered()
        for signal in signals:
            await self._start_job(signal)

    async def _claim_loop(self) -> None:
        interval = min(CLAIM_INTERVAL_MAX_S, self.claim_idle_ms / 2000)
        while True:
            await asyncio.sleep(interval)  # a timer, not a wait for a condition
            try:
                if self._tick is not None:
                    await self._tick()
                # Running jobs are not stale, however long they take.
                await keep_claimed(self.redis, list(self._jobs.values()), self.group, self.consumer)
                if self.concurrency - self.active <= 0:
                    self._claim_due = True  # the read loop claims with its next free slot
                    continue
                await self._claim_and_start()
            except (RedisError, OSError) as exc:
                await self._after_error(exc)
                continue
            self.outage.recovered()

    async def _claim_and_start(self) -> bool:
        """Claim stale signals into the free slots and start them; True if it claimed
        as many as there were slots (more may be waiting)."""
        free = self.concurrency - self.active
        if free <= 0:
            self._claim_due = True
            return False
        claimed = await self._claim(free)
        # A job that outlived a refresh (an event-loop stall) may find its own signal
        # claimed back: its job acks it; a second one would only fail the lease.
        running = {(job.stream, job.id) for job in self._jobs.values()}
        for signal in claimed:
            if (signal.stream, signal.id) in running:
                continue
            log.info(
                "%s claimed stale signal %s of %s", self.consumer, signal.id, signal.session_key
            )
            await self._start_job(signal)
        if len(claimed) >= free:
            self._claim_due = True
            return True
        return False

    async def _claim(self, free: int) -> list[Signal]:
        return await claim_stale(
            self.redis,
            self.streams,
            self.group,
            self.consumer,
            min_idle_ms=self.claim_idle_ms,
            count=free,
            scan=self._scan,
        )

    async def _after_error(self, exc: BaseException) -> None:
        """Recreate the groups if Redis lost them (read again at once), else back off.

        Never raises: an error escaping would end the loop and the consumer go deaf.
        """
        if is_missing_group(exc):
            try:
                await self.ensure_groups()
            except (RedisError, OSError) as again:
                exc = again  # e.g. not allowed to create groups: an outage like any other
            else:
                log.warning(
                    "recreated consumer group %s on %d stream(s)", self.group, len(self.streams)
                )
                return
        await self.outage.failed(exc)

    # -- jobs ------------------------------------------------------------------------

    async def _start_job(self, signal: Signal) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._job(signal), name=f"{self.group} {signal.session_key}")
        self._jobs[task] = signal
        self._idle.clear()
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.pop(task, None)
        self._slots.release()
        if not self._jobs:
            self._idle.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            # Its signal stays pending: claim_stale brings it back.
            log.error("%s job %s crashed", self.group, task.get_name(), exc_info=error)


def _log_crash(loop: asyncio.Task[None]) -> None:
    # Redis errors never end a loop; anything else is a bug that leaves the consumer deaf.
    if not loop.cancelled() and (error := loop.exception()) is not None:
        log.critical("%s crashed; this consumer reads no more", loop.get_name(), exc_info=error)
