"""The start of a session's turns in one round trip (``BEGIN_TURN``).

One script takes the session's lease, reads the entries pending after the committed
cursor, counts the attempt of the run the busy policy most likely plans, and reads
the stored session. When the lease is held by another worker it takes nothing (and
acks a fresh signal: the holder drains; a claimed one, or one seen while the
compaction job holds the session, stays pending: that holder may be dead, and the
compaction job drains nothing); when nothing is pending it takes nothing and acks
the signal. ``CountedAttempt.attempt_for`` gives the attempt of the planned
run, moving the count (``MOVE_ATTEMPT``, one more round trip) when the plan picked
another run id than the guess. ``COMMIT_TURN`` counts the next turn's attempt the
same way when it finds more pending (``workers.drain``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import pairs_to_dict
from gateway.core.bus.lease import Lease, new_token
from gateway.core.bus.scripts import BEGIN_TURN, MOVE_ATTEMPT, ScriptArg
from gateway.core.bus.session_writer import SessionWriter
from gateway.core.bus.signals import Signal
from gateway.core.sessions.base import SessionStore
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.sessions.redis_form import StoredSession
from gateway.core.settings import Settings
from gateway.workers.session_cache import SessionCache

log = logging.getLogger(__name__)

RawEntry = tuple[str, Mapping[str, str]]


COMPACTOR_OWNER = "!compactor"
"""Owner of the idle compaction job's leases (``workers.jobs``): a holder that runs no
turns. Not a possible worker id (those start with a host name)."""


class NotBegun(enum.Enum):
    BUSY = "busy"  # another holder has the lease and drains (the fresh signal was acked)
    KEPT = "kept"  # another holder has the lease; the signal is left pending
    EMPTY = "empty"  # nothing pending (the signal was acked)


@dataclass(slots=True)
class CountedAttempt:
    """An attempt a script counted for the run it guessed (``BEGIN_TURN``, or
    ``COMMIT_TURN`` for the next turn)."""

    writer: SessionWriter
    counted_id: str
    counted: int

    async def attempt_for(self, run_id: str) -> int:
        """The attempt count of ``run_id`` (moved there from the guessed id if needed)."""
        if run_id == self.counted_id:
            return self.counted
        lease = self.writer.lease
        script_keys = [lease.key, keys.attempts(self.writer.session_key)]
        args = [lease.token, self.counted_id, run_id]
        count = await MOVE_ATTEMPT.run(lease.redis, script_keys, args)
        if count is None:
            raise lease.lost_error(f"count the attempt of {run_id}")
        self.counted_id, self.counted = run_id, cast(int, count)
        return self.counted


@dataclass(slots=True)
class Begun:
    """The lease is ours: what is pending, the counted attempt, the stored session."""

    writer: SessionWriter
    entries: list[RawEntry]
    attempt: CountedAttempt
    stored: StoredSession | None
    """None when no session is stored yet (or when not ``preloaded``)."""
    preloaded: bool
    """The store is Redis's, so ``stored`` is what the turn continues."""


async def begin_turn(
    redis: Redis,
    sessions: SessionStore,
    sig: Signal,
    *,
    settings: Settings,
    owner: str,
    page: int,
    cache: SessionCache | None = None,
    token: str | None = None,
) -> Begun | NotBegun:
    """Take the session of ``sig`` and read what its next turn needs (the session from
    ``cache`` when the cached copy is still the stored one).

    ``token`` (default: a new one of ``owner``) is the grant's: a caller that gives it
    can let the lease go (``workers.outage.UnreleasedGrants``) when this raises or is
    cancelled after the script may have granted it.
    """
    s, ttl_ms = sig.session_key, settings.worker.lease_ms
    token = token or new_token(owner)
    script_keys = [
        keys.lease(s),
        keys.cursor(s),
        keys.inbound(s),
        keys.attempts(s),
        *keys.stored_session(s),
        sig.stream,
    ]
    args: list[ScriptArg] = [token, ttl_ms, page, guess_run(settings, sig.channel)]
    args += [keys.WORKER_GROUP, sig.id]
    args.append(0 if sig.claimed else 1)  # a claimed signal may be a dead holder's: keep it
    preloaded = isinstance(sessions, RedisSessionStore)
    # Copied before the call: the entry may be evicted while the script runs.
    cached = cache.checkout(s) if cache is not None and preloaded else None
    args.append(cached.stamp if cached is not None else "")
    args.append(f"{COMPACTOR_OWNER}:")
    reply = cast(list[Any], await BEGIN_TURN.run(redis, script_keys, args))
    if reply[0] == 0:
        return NotBegun.BUSY
    if reply[0] == 3:
        return NotBegun.KEPT
    if reply[0] == 1:
        return NotBegun.EMPTY
    _, raw, counted_id, counted, *session = reply
    lease = Lease(redis, keys.lease(s), token=token, ttl_ms=ttl_ms, what=f"lease of {s!r}")
    stored = cached
    if session and isinstance(sessions, RedisSessionStore):
        head, log, count, old = session
        stored = await sessions.parse(s, head, log, int(count), old)
        if cache is not None and stored is not None:
            cache.put(stored)
    entries: list[RawEntry] = [(str(entry_id), pairs_to_dict(flat)) for entry_id, flat in raw]
    writer = SessionWriter(lease, s)
    attempt = CountedAttempt(writer, str(counted_id), int(counted))
    return Begun(writer, entries, attempt, stored, preloaded)


def guess_run(settings: Settings, channel: str) -> Literal["first", "last"]:
    """Which pending entry the run will most likely end at: ``followup`` runs one
    message (the first), the other policies everything pending (the last)."""
    channel_settings = settings.channels.get(channel)
    policy = channel_settings.busy_policy if channel_settings is not None else None
    if policy is None:
        policy = settings.agent().busy_policy
    return "first" if policy == "followup" else "last"
