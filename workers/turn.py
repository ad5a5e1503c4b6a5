"""Running one turn of a leased session: stream the runtime onto the bus, then commit.

Order of writes (all fenced by the lease): the turn's events are published (deltas
coalesced) while the runtime streams; only when the last one is on the bus is the
session committed together with the cursor (see ``workers.store``). A crash or a
lost lease before the commit leaves the cursor where it was, so the turn re-runs
with the same ``run_id`` (the last inbound id it covers) and the deliverer replaces
the partial reply.

Failures: a ``run.failed`` caused by the model provider (stop_reason ``error``) or an
unexpected exception is a failed attempt. Its ``run.failed`` is not published while
retries remain (the re-run's reply replaces the partial one); at
``max_deliveries`` attempts the messages go to ``gw:dead`` and the chat gets a
``run.failed`` saying so. Other endings (completed, ``max_iterations``, ``timeout``)
are final: they are published and committed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from core.bus.attempts import dead_letter, record_attempt
from core.bus.lease import Lease
from core.bus.outbound import signal_delivery
from core.errors import LeaseLostError
from core.events import (
    RunFailed,
    RunResult,
    RunStarted,
    StreamEvent,
)
from core.runtime import AgentRuntime, TurnRequest
from core.sessions.base import SessionStore
from core.settings import Settings
from workers.busy import Entry, RedisSteeringInbox, TurnPlan, wait_for_newer
from workers.coalesce import CoalescingOutbox, DeltaCoalescer
from workers.store import TurnStore

log = logging.getLogger(__name__)

WATCH_BLOCK_MS = 5_000
"""Longest single blocking read while watching the inbound stream (re-issued after)."""


class TurnOutcome(enum.Enum):
    COMMITTED = "committed"
    """Published and committed (completed, or a final failure such as a timeout)."""
    INTERRUPTED = "interrupted"
    """Cancelled by a newer message; nothing committed."""
    RETRY = "retry"
    """A failed attempt with attempts left; nothing committed."""
    DEAD_LETTERED = "dead_lettered"
    """Failed ``max_deliveries`` times; dead-lettered, the chat told, cursor moved past."""


@dataclass(frozen=True, slots=True)
class TurnDeps:
    """What every turn of one worker shares."""

    settings: Settings
    redis: Redis
    runtime: AgentRuntime
    sessions: SessionStore
    deliver_channels: frozenset[str]


class _Interrupted(Exception):
    """A newer message arrived while an ``interrupt`` turn ran."""


@dataclass(slots=True)
class _Streamed:
    """How the runtime's stream ended."""

    failure: str | None = None
    """Why the attempt failed (provider error or exception), None when it did not."""


class TurnRunner:
    """One turn of ``plan`` for the session held by ``lease``."""

    def __init__(self, deps: TurnDeps, lease: Lease, plan: TurnPlan, lost: asyncio.Event) -> None:
        self._deps = deps
        self._lease = lease
        self._plan = plan
        self._lost = lost
        self._key = lease.session_key
        self._first = plan.batch[0][1]
        worker = deps.settings.worker
        coalescer = DeltaCoalescer(
            window_s=worker.coalesce_ms / 1000, max_chars=worker.coalesce_chars
        )
        self._outbox = CoalescingOutbox(coalescer)
        self._store = TurnStore(deps.sessions, lease, cursor=plan.run_id)
        self._steering: RedisSteeringInbox | None = None
        if plan.policy == "steer":
            self._steering = RedisSteeringInbox(
                deps.redis,
                self._key,
                after=plan.run_id,
                limit=plan.max_backlog,
                block_ms=WATCH_BLOCK_MS,
            )
        self._signalled = False

    async def run(self) -> tuple[TurnOutcome, int]:
        """Run the turn; returns the outcome and the attempt number it was.

        ``LeaseLostError`` propagates (nothing more may be written); so does cancellation.
        """
        attempt = await record_attempt(self._deps.redis, self._key, self._plan.run_id)
        max_deliveries = self._deps.settings.worker.max_deliveries
        if attempt > max_deliveries:
            # Earlier attempts died with their worker: do not run it again.
            await self._dead_letter(attempt - 1, "the worker stopped during every attempt")
            return TurnOutcome.DEAD_LETTERED, attempt
        try:
            streamed = await self._stream()
        except _Interrupted:
            await self._publish_interrupted()
            return TurnOutcome.INTERRUPTED, attempt
        if streamed.failure is None:
            await self._store.commit(entry_ids=self._covered_ids())
            return TurnOutcome.COMMITTED, attempt
        if attempt >= max_deliveries:
            await self._dead_letter(attempt, streamed.failure)
            return TurnOutcome.DEAD_LETTERED, attempt
        log.warning(
            "turn %s of %s failed (attempt %d of %d): %s",
            self._plan.run_id,
            self._key,
            attempt,
            max_deliveries,
            streamed.failure,
        )
        return TurnOutcome.RETRY, attempt

    def _request(self) -> TurnRequest:
        last = self._plan.batch[-1][1]
        return TurnRequest(
            session_key=self._key,
            messages=[message.to_user_message() for _, message in self._plan.batch],
            agent=self._plan.agent,
            run_id=self._plan.run_id,
            channel=self._first.channel,
            chat_id=self._first.chat_id,
            sender_id=last.sender_id,
            steering=self._steering,
        )

    async def _stream(self) -> _Streamed:
        streamed = _Streamed()
        producer = asyncio.create_task(self._produce(streamed), name=f"turn {self._key}")
        publisher = asyncio.create_task(self._publish(), name=f"publish {self._key}")
        helpers = [asyncio.create_task(self._raise_when_lost())]
        if self._steering is not None:
            helpers.append(asyncio.create_task(self._steering.run()))
        if self._plan.policy == "interrupt":
            helpers.append(asyncio.create_task(self._interrupt_on_newer()))
        tasks = (producer, publisher, *helpers)
        try:
            await _until_done_or_failed((producer, publisher), helpers)
        except BaseException as exc:
            await _stop_tasks(tasks, already_raised=exc)
            raise
        await _stop_tasks(tasks, already_raised=None)
        return streamed

    async def _produce(self, streamed: _Streamed) -> None:
        try:
            # ``stream`` is an async generator function (annotated AsyncIterator): close
            # it explicitly so the model stream and tools stop with the turn.
            events = cast(
                AsyncGenerator[StreamEvent, None],
                self._deps.runtime.stream(self._request(), store=self._store),
            )
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, RunFailed) and _is_attempt_failure(event):
                        streamed.failure = event.error
                        continue
                    self._outbox.put(event)
        except Exception as exc:  # a bug or a broken session: count it as a failed attempt
            log.exception("turn %s of %s raised", self._plan.run_id, self._key)
            streamed.failure = f"{type(exc).__name__}: {exc}"
        if streamed.failure is None:
            self._outbox.close()
        else:
            # Keep what is already on the bus; the unsent tail would only be replaced.
            self._outbox.discard()

    async def _publish(self) -> None:
        async for batch in self._outbox.batches():
            await self._publish_now(batch)

    async def _publish_now(self, events: list[StreamEvent]) -> None:
        await self._lease.publish_events(events, maxlen=self._deps.settings.worker.stream_maxlen)
        if not self._signalled and any(isinstance(event, RunStarted) for event in events):
            self._signalled = True
            channel = self._first.channel
            if channel in self._deps.deliver_channels:
                partitions = self._deps.settings.worker.ready_partitions
                await signal_delivery(self._deps.redis, channel, self._key, partitions=partitions)

    async def _raise_when_lost(self) -> None:
        await self._lost.wait()
        raise LeaseLostError(f"lease of {self._key!r} lost during turn {self._plan.run_id}")

    async def _interrupt_on_newer(self) -> None:
        await wait_for_newer(
            self._deps.redis, self._key, self._plan.run_id, block_ms=WATCH_BLOCK_MS
        )
        # Once the run produced its final event it is not interrupted: the new
        # message simply gets the next turn.
        if not self._outbox.terminal_seen:
            raise _Interrupted

    def _covered(self) -> list[Entry]:
        """The batch and every message steered into the turn, oldest first."""
        if self._steering is None or not self._steering.drained:
            return list(self._plan.batch)
        return [*self._plan.batch, *self._steering.drained]

    def _covered_ids(self) -> list[str]:
        covered = [entry_id for entry_id, _ in self._covered()]
        self._store.cursor = covered[-1]
        return covered

    def _next_seq(self) -> int:
        return self._outbox.last_seq + 1

    async def _publish_interrupted(self) -> None:
        reason = "interrupted by a newer message"
        result = RunResult(stop_reason="interrupted", error=reason)
        await self._publish_now(
            [RunFailed(run_id=self._plan.run_id, seq=self._next_seq(), error=reason, result=result)]
        )

    async def _dead_letter(self, attempts: int, cause: str) -> None:
        run_id = self._plan.run_id
        events: list[StreamEvent] = []
        if self._outbox.last_seq == 0:
            events.append(RunStarted(run_id=run_id, seq=1, session_key=self._key))
        seq = max(self._next_seq(), len(events) + 1)
        text = f"Sorry, I could not process your message after {attempts} attempts."
        result = RunResult(stop_reason="error", error=cause)
        metadata = {"dead_lettered": True, "attempts": attempts}
        events.append(
            RunFailed(run_id=run_id, seq=seq, error=text, result=result, metadata=metadata)
        )
        await self._publish_now(events)
        entries = self._covered()
        log.error(
            "dead-lettering %d message(s) of %s after %d attempts: %s",
            len(entries),
            self._key,
            attempts,
            cause,
        )
        await dead_letter(
            self._lease, entries, f"failed {attempts} attempts: {cause}", cursor=entries[-1][0]
        )


def _is_attempt_failure(event: RunFailed) -> bool:
    """A provider failure (worth another attempt); timeouts and the like are final."""
    return event.result is None or event.result.stop_reason == "error"


async def _until_done_or_failed(
    required: tuple[asyncio.Task[None], ...], helpers: list[asyncio.Task[None]]
) -> None:
    """Wait for every ``required`` task; the first exception of any task is raised."""
    watching: set[asyncio.Task[None]] = {*required, *helpers}
    while not all(task.done() for task in required):
        done, watching = await asyncio.wait(watching, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error


async def _stop_tasks(
    tasks: tuple[asyncio.Task[None], ...], *, already_raised: BaseException | None
) -> None:
    """Cancel the turn's tasks, wait for them, and log any error not already raised."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task in tasks:
        if task.cancelled():
            continue
        error = task.exception()
        if error is not None and error is not already_raised:
            log.error("task %s failed", task.get_name(), exc_info=error)
