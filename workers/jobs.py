"""Side jobs on the same Redis, run by arq: reminders, deferred turn retries, compaction.

- ``deliver_scheduled_message``: at its time, a scheduled message is published into
  its chat like any inbound message (the ``schedule`` tool enqueues it).
- ``retry_turn``: a deferred re-signal of a session whose turn failed and has
  attempts left (``RetryScheduler`` enqueues it with exponential backoff).
- ``compact_idle_sessions`` (cron): summarizes the old turns of sessions idle for
  ``worker.compact_idle_after_s``, under the session's lease, so it never races a turn.

Jobs are serialized as JSON (not arq's default pickle: nothing read back from Redis
is ever unpickled). ``create_job_pool`` and ``arq_worker_settings`` agree on that.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from arq import cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.client import RedisTarget
from gateway.core.bus.inbound import pending_inbound, publish_inbound, read_cursor
from gateway.core.bus.signals import signal_ready
from gateway.core.errors import ToolError
from gateway.core.messages import InboundMessage
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import Settings
from gateway.core.tools.base import Tool, ToolContext, tool
from gateway.workers.begin import COMPACTOR_OWNER
from gateway.workers.busy import hand_off
from gateway.workers.store import TurnStore, leased

log = logging.getLogger(__name__)

JobContext = dict[Any, Any]
"""arq's per-worker context dict; ours keeps one ``JobState`` under ``STATE_KEY``."""
STATE_KEY = "gateway"


def _dumps(value: Any) -> bytes:
    # default=str: a failed job's result is an exception object; keep its text.
    return json.dumps(value, default=str).encode("utf-8")


def _loads(data: bytes) -> Any:
    return json.loads(data)


@dataclass(frozen=True, slots=True)
class JobState:
    """What the jobs of one arq worker share."""

    settings: Settings
    redis: Redis
    """A ``decode_responses=True`` client for the bus (arq's own pool speaks bytes)."""
    runtime: AgentRuntime | None = None
    """Needed only by compaction."""


def job_state(ctx: JobContext) -> JobState:
    state = ctx.get(STATE_KEY)
    if not isinstance(state, JobState):
        raise RuntimeError(f"arq context has no {STATE_KEY!r} state: use arq_worker_settings()")
    return state


def arq_pool(target: RedisTarget) -> ArqRedis:
    """An arq pool on the gateway's queue with JSON job payloads (not connected yet)."""
    pool = target.client_of(ArqRedis, decode_responses=False)
    pool.job_serializer = _dumps
    pool.job_deserializer = _loads
    pool.default_queue_name = keys.SCHEDULE_QUEUE
    return pool


async def create_job_pool(target: RedisTarget) -> ArqRedis:
    """``arq_pool``, checked with a PING (a wrong address fails here, not at first use)."""
    pool = arq_pool(target)
    try:
        await pool.ping()
    except BaseException:
        await pool.aclose()
        raise
    return pool


# -- jobs ----------------------------------------------------------------------------


async def deliver_scheduled_message(ctx: JobContext, message_json: str) -> str | None:
    """Publish a scheduled message into its chat; its inbound id (None: a duplicate)."""
    state = job_state(ctx)
    message = InboundMessage.model_validate_json(message_json)
    cfg = state.settings.worker
    published = await publish_inbound(
        state.redis, message, partitions=cfg.ready_partitions, maxlen=cfg.stream_maxlen
    )
    log.info("scheduled message %s delivered to %s", message.id, message.session_key)
    return published.entry_id


async def retry_turn(ctx: JobContext, session_key: str, channel: str) -> str:
    """Signal the workers again for a session whose failed turn should be retried."""
    state = job_state(ctx)
    return await _resignal(state, session_key, channel)


async def compact_idle_sessions(ctx: JobContext) -> int:
    """Compact every idle session that has turns to fold; returns how many were compacted.

    One session failing (a model error, say) is logged and does not stop the others.
    """
    state = job_state(ctx)
    if state.runtime is None:
        log.warning("compact_idle_sessions: no runtime in the arq context; skipped")
        return 0
    sessions = RedisSessionStore(state.redis)
    compacted = 0
    for session_key in await sessions.idle_sessions(state.settings.worker.compact_idle_after_s):
        try:
            compacted += await compact_one(state, state.runtime, sessions, session_key)
        except Exception:
            log.exception("compaction of idle session %s failed", session_key)
    return compacted


async def compact_one(
    state: JobState, runtime: AgentRuntime, sessions: RedisSessionStore, session_key: str
) -> bool:
    """Compact one session under its lease; False when busy or nothing to fold."""
    redis, cfg = state.redis, state.settings.worker
    summary, held_it = "", False
    try:
        async with leased(redis, session_key, ttl_ms=cfg.lease_ms, owner=COMPACTOR_OWNER) as held:
            if held is None:
                return False  # a turn is running: the session is not idle after all
            held_it = True
            store = TurnStore(sessions, held[0], cursor=await read_cursor(redis, session_key))
            summary = await runtime.compact_session(session_key, store=store)
            if summary and store.saved is not None:
                await store.commit()
    finally:
        # A worker that found the lease held left its signal pending (this holder runs
        # no turns: BEGIN_TURN keeps signals seen while it holds the session, so a
        # compactor killed here strands nothing); the hand-off passes the work on now
        # instead of after the claim delay.
        if held_it and (pending := await pending_inbound(redis, session_key, count=1)):
            await hand_off(redis, state.settings, session_key, pending[0][1].channel)
    return bool(summary)


async def _resignal(state: JobState, session_key: str, channel: str) -> str:
    partitions = state.settings.worker.ready_partitions
    return await signal_ready(state.redis, session_key, channel, partitions=partitions)


# -- enqueueing ----------------------------------------------------------------------


class RetryScheduler:
    """Enqueues ``retry_turn`` with exponential backoff: base, 2x base, 4x base… capped."""

    def __init__(self, pool: ArqRedis, *, base_delay_s: float = 1.0, max_delay_s: float = 60.0):
        self._pool = pool
        self._base = base_delay_s
        self._max = max_delay_s

    def delay_s(self, attempt: int) -> float:
        return float(min(self._max, self._base * 2 ** max(0, attempt - 1)))

    async def schedule(self, session_key: str, channel: str, *, attempt: int, run_id: str) -> None:
        delay = self.delay_s(attempt)
        await self._pool.enqueue_job(
            retry_turn.__name__,
            session_key,
            channel,
            # One retry per failed attempt, even if the failure is reported twice.
            _job_id=f"retry:{session_key}:{run_id}:{attempt}",
            _defer_by=delay,
        )
        log.info("retry of %s (run %s, attempt %d) in %.1fs", session_key, run_id, attempt, delay)


# -- the schedule tool ---------------------------------------------------------------

MAX_SCHEDULE_DELAY_S = 366 * 86_400
REMINDER_PREFIX = "⏰ Reminder you scheduled earlier: "


def reminder_job_id(ctx: ToolContext, message: str, when_spec: str) -> str:
    """Deterministic, so a re-run of the same turn (after a crash) schedules nothing twice."""
    basis = "\x1f".join((ctx.session_key, ctx.run_id, message, when_spec))
    return "reminder:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:24]


def _due_time(in_seconds: int | None, at: str | None) -> datetime:
    if (in_seconds is None) == (at is None):
        raise ToolError("give exactly one of in_seconds or at")
    now = datetime.now(UTC)
    if at is not None:
        try:
            due = datetime.fromisoformat(at)
        except ValueError as exc:
            raise ToolError(f"at={at!r} is not an ISO 8601 date-time") from exc
        due = due if due.tzinfo is not None else due.replace(tzinfo=UTC)
    else:
        due = now + timedelta(seconds=in_seconds or 0)
    delay = (due - now).total_seconds()
    if not 0 < delay <= MAX_SCHEDULE_DELAY_S:
        raise ToolError(
            f"the time must be in the future and within 366 days (got {due.isoformat()})"
        )
    return due


def schedule_tool(pool: ArqRedis) -> Tool:
    """The ``schedule`` tool: the agent sets a reminder that comes back to this chat."""

    @tool(name="schedule")
    async def schedule(
        ctx: ToolContext, message: str, in_seconds: int | None = None, at: str | None = None
    ) -> str:
        """Set a reminder: at the given time, `message` arrives in this chat and you answer it.

        Args:
            message: What to do or say then, written for your future self
                (e.g. "remind the user to call Bob").
            in_seconds: How long from now, in seconds. Give this or `at`.
            at: When, as an ISO 8601 date-time (UTC unless it has an offset). Give this
                or `in_seconds`.
        """
        if not message.strip():
            raise ToolError("message must not be empty")
        due = _due_time(in_seconds, at)
        job_id = reminder_job_id(ctx, message, at or f"+{in_seconds}s")
        inbound = InboundMessage(
            channel=ctx.channel,
            chat_id=ctx.chat_id,
            sender_id=ctx.sender_id,
            sender_name="reminder",
            text=REMINDER_PREFIX + message,
            session_key=ctx.session_key,
            platform_event_id=job_id,
        )
        job = await pool.enqueue_job(
            deliver_scheduled_message.__name__,
            inbound.model_dump_json(),
            _job_id=job_id,
            _defer_until=due,
        )
        state = "scheduled" if job is not None else "already scheduled"
        return f"Reminder {state} for {due.isoformat(timespec='seconds')}."

    return schedule


# -- the arq worker ------------------------------------------------------------------


class ArqWorkerSettings(TypedDict):
    """Keyword arguments of ``arq.Worker`` (``arq.Worker(**arq_worker_settings(...))``)."""

    functions: list[WorkerCoroutine]
    cron_jobs: list[CronJob]
    queue_name: str
    redis_pool: ArqRedis
    on_startup: StartupShutdown
    on_shutdown: StartupShutdown
    job_serializer: Any
    job_deserializer: Any
    handle_signals: bool


def arq_worker_settings(
    settings: Settings,
    *,
    target: RedisTarget,
    runtime: AgentRuntime | None = None,
    compact_every_minutes: int = 10,
) -> ArqWorkerSettings:
    """The arq configuration of the gateway's side jobs.

    ``handle_signals`` is off: the process that embeds arq (the ``gateway`` CLI)
    owns SIGTERM and closes the arq worker itself.
    """

    async def on_startup(ctx: JobContext) -> None:
        client = target.client()
        ctx[STATE_KEY] = JobState(settings=settings, redis=client, runtime=runtime)

    async def on_shutdown(ctx: JobContext) -> None:
        state = ctx.pop(STATE_KEY, None)
        if isinstance(state, JobState):
            await state.redis.aclose()

    minutes = set(range(0, 60, max(1, min(59, compact_every_minutes))))
    return ArqWorkerSettings(
        functions=[deliver_scheduled_message, retry_turn],
        cron_jobs=[cron(compact_idle_sessions, minute=minutes, unique=True)],
        queue_name=keys.SCHEDULE_QUEUE,
        redis_pool=arq_pool(target),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        job_serializer=_dumps,
        job_deserializer=_loads,
        handle_signals=False,
    )
