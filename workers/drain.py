"""Draining a leased session: its turns one after another until nothing is pending.

The worker starts with ``BEGIN_TURN`` (``workers.begin``): the lease, the pending
entries, the first turn's attempt and the stored session in one round trip. Each
turn's commit (``COMMIT_TURN`` with ``Finish``) reads what is pending next, or, with
nothing pending, releases the lease and acks the signal in the same script; so a
message answered in one turn costs the begin, the turn's event publishes and the
commit. Other endings (interrupted, stopped, dead-lettered, a backlog notice) read
the backlog again, as a plain read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.core.bus.inbound import decode_entries
from gateway.core.bus.session_writer import Finish
from gateway.core.bus.signals import Signal
from gateway.core.errors import LeaseLostError
from gateway.core.logcontext import log_context
from gateway.workers.begin import Begun, CountedAttempt, RawEntry, guess_run
from gateway.workers.busy import Entry, plan_turn, publish_backlog_notice, read_backlog
from gateway.workers.store import TurnStore
from gateway.workers.turn import TurnDeps, TurnOutcome, TurnRunner


@dataclass(frozen=True, slots=True)
class Drained:
    """How draining a session ended."""

    retry: tuple[int, str] | None = None
    """``(attempt, run_id)`` of a failed turn to retry later."""
    released: bool = False
    """The last commit found nothing pending: the lease is released, the signal acked."""


async def drain_turns(
    deps: TurnDeps,
    begun: Begun,
    lost: asyncio.Event,
    *,
    page: int,
    stopping: Callable[[], bool],
    signal: Signal | None = None,
    redelivery_counted: bool = False,
) -> Drained:
    """Run the session's turns until nothing is pending or ``stopping()``.

    ``begun`` holds the lease and what ``BEGIN_TURN`` read (the pending entries, the
    first turn's attempt, the stored session); a commit that finds more pending hands
    its entries and the committed session to the next turn, so only the commit is a
    round trip between turns. Draining stops at a failed turn to retry later (so the
    chat's order holds). ``redelivery_counted``: the caller already counted this work
    as a redelivery (a claimed signal), so the first turn's repeated attempt is not
    counted again.
    """
    lease = begun.writer
    raw: list[RawEntry] | None = begun.entries
    base, loaded = begun.stored, begun.preloaded
    counted: CountedAttempt | None = begun.attempt
    guess = guess_run(deps.settings, signal.channel) if signal is not None else ""
    while not stopping():
        if lost.is_set():
            raise LeaseLostError(f"lease of {lease.session_key!r} lost between turns")
        pending = await _pending(deps.redis, lease.session_key, raw, page)
        if not pending:
            return Drained()
        plan = plan_turn(pending, deps.settings)
        if plan.dropped:
            await publish_backlog_notice(
                deps.settings,
                lease,
                plan.dropped,
                plan.max_backlog,
                deliver_channels=deps.deliver_channels,
            )
        attempt = await counted.attempt_for(plan.run_id) if counted is not None else None
        # The commit counts the next turn's attempt, unless this worker is stopping by then.
        finish = Finish(page, signal, count=guess, stopping=stopping)
        runner = TurnRunner(
            deps,
            lease,
            plan,
            lost,
            redelivery_counted=redelivery_counted,
            attempt=attempt,
            store=TurnStore(deps.sessions, lease, cursor=plan.run_id, base=base, loaded=loaded),
            finish=finish,
        )
        redelivery_counted = False
        with log_context(session_key=lease.session_key, run_id=plan.run_id):  # for log records
            outcome, attempt = await runner.run()
        if outcome is TurnOutcome.RETRY:
            return Drained(retry=(attempt, plan.run_id))
        raw, base, loaded, counted = None, None, False, None
        if (committed := runner.committed) is not None:
            # Kept whether or not the commit released the lease: the next turn of this
            # session (now, or after its next message) then needs no history read.
            stored = runner.stored
            if deps.cache is not None and stored is not None:
                deps.cache.put(stored)
            if committed.released:
                return Drained(released=True)
            raw, base, loaded = committed.pending, stored, True
            if committed.counted_id:
                counted = CountedAttempt(lease, committed.counted_id, committed.counted)
    return Drained()


async def _pending(
    redis: Redis, session_key: str, raw: list[RawEntry] | None, page: int
) -> list[Entry]:
    """The entries a script read (a full page may have more behind it), else a fresh read."""
    if raw is None or len(raw) >= page:
        return await read_backlog(redis, session_key, page=page)
    return await decode_entries(redis, session_key, raw)
