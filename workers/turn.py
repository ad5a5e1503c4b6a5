"""Running the turns of a leased session: stream the runtime onto the bus, then commit.

Order of writes (all fenced by the lease): the turn's events are published (deltas
coalesced) while the runtime streams, except its terminal event (``run.completed`` /
``run.failed``), which is held back and written by the commit script together with
the session and the cursor (``SessionWriter.commit``); so are the events that became
ready together with it (a quick model's whole reply is one write). A crash or a lost lease
before the commit leaves the cursor where it was and no terminal event on the bus,
so the turn re-runs with the same ``run_id`` (the last inbound id it covers), the
deliverer replaces the partial reply, and the run ends exactly once.

Which messages a run answers: ``run.started`` lists the inbound entry ids of its
batch in ``message_ids``; the terminal event lists every id it answers (the batch
plus messages steered in). ``POST /v1/messages`` answers a message's entry id, so a
client finds its reply as the terminal event whose ``message_ids`` hold that id.

Failures: a ``run.failed`` caused by the model provider (stop_reason ``error``) or an
unexpected exception is a failed attempt. Its ``run.failed`` is not published while
attempts remain (the re-run's reply replaces the partial one); at
``max_deliveries`` attempts the messages go to ``gw:dead`` and the chat gets a
``run.failed`` saying so. Other endings (completed, ``max_iterations``, ``timeout``)
are final: they are published and committed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.core.bus.attempts import dead_letter, record_attempt
from gateway.core.bus.control import wait_for_stop
from gateway.core.bus.session_writer import Committed, Finish, SessionWriter
from gateway.core.errors import LeaseLostError
from gateway.core.events import (
    RunFailed,
    addressed,
)
from gateway.core.metrics import GatewayMetrics
from gateway.core.runtime import AgentRuntime, TurnRequest
from gateway.core.sessions.base import SessionStore
from gateway.core.sessions.redis_form import StoredSession
from gateway.core.settings import Settings
from gateway.workers.busy import (
    Entry,
    RedisSteeringInbox,
    TurnPlan,
    known_agent,
    wait_for_newer,
)
from gateway.workers.coalesce import CoalescingOutbox, DeltaCoalescer, supervise
from gateway.workers.endings import dead_letter_events, is_attempt_failure
from gateway.workers.session_cache import SessionCache
from gateway.workers.stop import TurnStopped, commit_stopped, stopped_events
from gateway.workers.store import TurnStore
from gateway.workers.turn_events import TurnEvents

log = logging.getLogger(__name__)

WATCH_BLOCK_MS = 5_000
"""Longest single blocking read while watching the inbound stream (re-issued after)."""


class TurnOutcome(enum.Enum):
    COMMITTED = "committed"  # published and committed (completed, or a final failure)
    INTERRUPTED = "interrupted"  # cancelled by a newer message; nothing committed
    RETRY = "retry"  # a failed attempt with attempts left; nothing committed
    DEAD_LETTERED = "dead_lettered"  # failed max_deliveries times; chat told, cursor moved
    STOPPED = "stopped"  # the chat asked to stop it; what it showed committed (workers.stop)


@dataclass(frozen=True, slots=True)
class TurnDeps:
    """What every turn of one worker shares."""

    settings: Settings
    redis: Redis
    runtime: AgentRuntime
    sessions: SessionStore
    deliver_channels: frozenset[str]
    metrics: GatewayMetrics | None = None
    cache: SessionCache | None = None
    """Sessions this worker committed or loaded lately (``BEGIN_TURN`` checks them)."""


class _Interrupted(Exception):
    """A newer message arrived while an ``interrupt`` turn ran."""


class TurnRunner:
    """One turn of ``plan`` for the session held by ``lease``."""

    def __init__(
        self,
        deps: TurnDeps,
        lease: SessionWriter,
        plan: TurnPlan,
        lost: asyncio.Event,
        *,
        redelivery_counted: bool = False,
        attempt: int | None = None,
        store: TurnStore | None = None,
        finish: Finish | None = None,
    ) -> None:
        self._deps = deps
        self._counted = attempt
        """This attempt, when already counted (``BEGIN_TURN``)."""
        self._finish = finish
        self.committed: Committed | None = None
        """The commit of a COMMITTED outcome (with what ``finish`` found)."""
        self._metrics = deps.metrics
        self._redelivery_counted = redelivery_counted
        self._lease = lease
        self._plan = plan
        self._lost = lost
        self._key = lease.session_key
        cfg = deps.settings.worker
        coalescer = DeltaCoalescer(window_s=cfg.coalesce_ms / 1000, max_chars=cfg.coalesce_chars)
        self._outbox = CoalescingOutbox(coalescer, linger_s=cfg.start_linger_ms / 1000)
        self._events = TurnEvents(
            lease,
            plan,
            self._outbox,
            settings=deps.settings,
            deliver_channels=deps.deliver_channels,
            covered=self._covered,
        )
        self._store = store or TurnStore(deps.sessions, lease, cursor=plan.run_id)
        self._steering: RedisSteeringInbox | None = None
        if plan.steers:
            settings = deps.settings
            self._steering = RedisSteeringInbox(
                deps.redis,
                self._key,
                after=plan.run_id,
                limit=plan.max_backlog,
                block_ms=WATCH_BLOCK_MS,
                accepts=lambda message: known_agent(settings, message.agent) == plan.agent,
            )
        self._failure: str | None = None

    async def run(self) -> tuple[TurnOutcome, int]:
        """Run the turn; returns the outcome and which attempt it was.

        ``LeaseLostError`` propagates (nothing more may be written), as does cancellation.
        """
        attempt = self._counted
        if attempt is None:
            attempt = await record_attempt(self._deps.redis, self._key, self._plan.run_id)
        if attempt > 1 and not self._redelivery_counted and self._metrics is not None:
            self._metrics.redeliveries.inc()
        if attempt > self._deps.settings.worker.max_deliveries:
            # Earlier attempts died with their worker: do not run it again.
            await self._dead_letter(
                attempt - 1, "every attempt ended unfinished (worker stopped or lease lost)"
            )
            return TurnOutcome.DEAD_LETTERED, attempt
        started = time.perf_counter()
        outcome = await self._attempt(attempt)
        if self._metrics is not None:
            self._metrics.turn_latency.observe(time.perf_counter() - started)
        return outcome, attempt

    @property
    def stored(self) -> StoredSession | None:
        """The session as stored after this turn's commit."""
        return self._store.stored

    async def _attempt(self, attempt: int) -> TurnOutcome:
        """Stream the turn, then commit it, dead-letter it or leave it for a retry."""
        try:
            await self._stream()
        except _Interrupted:
            await self._events.publish(self._events.interrupted())
            return TurnOutcome.INTERRUPTED
        except TurnStopped as stop:
            entries = stop.covered(self._covered())
            ending = stopped_events(self._plan.run_id, self._events.ending_seq(), self._key)
            ending = [self._events.stamped(event, entries) for event in ending]
            await commit_stopped(
                self._lease,
                self._deps.sessions,
                entries,
                self._plan.run_id,
                events=ending,
                maxlen=self._deps.settings.worker.stream_maxlen,
                signal=self._events.signal_for(ending),
            )
            return TurnOutcome.STOPPED
        if self._failure is None:
            covered = [entry_id for entry_id, _ in self._covered()]
            self._store.cursor = covered[-1]
            self.committed = await self._store.commit(
                entry_ids=covered,
                events=self._events.final,
                maxlen=self._deps.settings.worker.stream_maxlen,
                signal=self._events.signal_for(self._events.final),
                finish=self._finish,
            )
            return TurnOutcome.COMMITTED
        max_deliveries = self._deps.settings.worker.max_deliveries
        if attempt >= max_deliveries:
            await self._dead_letter(attempt, self._failure)
            return TurnOutcome.DEAD_LETTERED
        log.warning(
            "turn %s of %s failed (attempt %d of %d): %s",
            self._plan.run_id,
            self._key,
            attempt,
            max_deliveries,
            self._failure,
        )
        return TurnOutcome.RETRY

    def _request(self) -> TurnRequest:
        first, last = self._plan.batch[0][1], self._plan.batch[-1][1]
        return TurnRequest(
            session_key=self._key,
            messages=[message.to_user_message() for _, message in self._plan.batch],
            agent=self._plan.agent,
            run_id=self._plan.run_id,
            channel=first.channel,
            chat_id=first.chat_id,
            sender_id=last.sender_id,
            steering=self._steering,
            options=last.options,
        )

    async def _stream(self) -> None:
        """Produce and publish the run's events, with the watchers its policy needs."""
        producer = asyncio.create_task(self._produce(), name=f"turn {self._key}")
        publisher = asyncio.create_task(self._events.publish_all(), name=f"publish {self._key}")
        watchers = [
            asyncio.create_task(self._raise_when_lost()),
            asyncio.create_task(self._stop_on_request()),
        ]
        if self._steering is not None:
            watchers.append(asyncio.create_task(self._steering.run()))
        if self._plan.policy == "interrupt":
            watchers.append(asyncio.create_task(self._interrupt_on_newer()))
        await supervise((producer, publisher), tuple(watchers))

    async def _produce(self) -> None:
        try:
            # Closed explicitly so the model stream and tools stop with the turn. Run in
            # this task: handling an event is a put into the outbox, it never waits.
            events = self._deps.runtime.events_here(self._request(), store=self._store)
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, RunFailed) and is_attempt_failure(event):
                        self._failure = event.error
                        continue
                    self._outbox.put(self._events.stamped(event))
        except Exception as exc:  # a bug or a broken session: count it as a failed attempt
            log.exception("turn %s of %s raised", self._plan.run_id, self._key)
            self._failure = f"{type(exc).__name__}: {exc}"
        if self._failure is None:
            self._outbox.close()
        else:
            # Keep what is already on the bus; the unsent tail would only be replaced.
            self._outbox.discard()

    async def _raise_when_lost(self) -> None:
        await self._lost.wait()
        raise LeaseLostError(f"lease of {self._key!r} lost during turn {self._plan.run_id}")

    async def _interrupt_on_newer(self) -> None:
        newest = self._plan.newest_id
        newer = await wait_for_newer(self._deps.redis, self._key, newest, block_ms=WATCH_BLOCK_MS)
        if newer is None or known_agent(self._deps.settings, newer.agent) != self._plan.agent:
            # It cannot join this batch (another agent's, or malformed): the next turn
            # would cover the same messages, so an interrupt would only run this one twice.
            await asyncio.get_running_loop().create_future()  # idle until the turn ends
        # A run that already produced its final event is not interrupted: the new
        # message simply gets the next turn.
        if not self._outbox.terminal_seen:
            raise _Interrupted

    async def _stop_on_request(self) -> None:
        # The batch's last message: a stop asked before it was sent is not about it.
        last = self._plan.batch[-1][0]
        upto = await wait_for_stop(self._deps.redis, self._key, last)
        if not self._outbox.terminal_seen:  # as with interrupt: a finished run stays
            raise TurnStopped(upto)

    def _covered(self) -> list[Entry]:
        """The batch and every message steered into the turn, oldest first."""
        if self._steering is None or not self._steering.drained:
            return list(self._plan.batch)
        return [*self._plan.batch, *self._steering.drained]

    async def _dead_letter(self, attempts: int, cause: str) -> None:
        entries = self._covered()
        events = dead_letter_events(
            self._plan.run_id,
            self._events.ending_seq(),
            self._key,
            attempts=attempts,
            cause=cause,
            message_ids=[entry_id for entry_id, _ in entries],
        )
        events = addressed(events, self._events.address)
        log.error(
            "dead-lettering %d message(s) of %s after %d attempts: %s",
            len(entries),
            self._key,
            attempts,
            cause,
        )
        reason = f"failed {attempts} attempts: {cause}"
        await dead_letter(
            self._lease,
            entries,
            reason,
            cursor=entries[-1][0],
            events=events,
            maxlen=self._deps.settings.worker.stream_maxlen,
            signal=self._events.signal_for(events),
        )
        if self._metrics is not None:
            self._metrics.dead_letters.inc(len(entries))
