"""BEGIN_TURN, COMMIT_TURN's finish and the append-only session log, on a real redis-server."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

from typing import cast

import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.inbound import publish_inbound, read_cursor
from gateway.core.bus.lease import Lease
from gateway.core.bus.session_writer import Finish, SessionWriter
from gateway.core.bus.signals import Signal, ensure_groups, read_signals
from gateway.core.errors import LeaseLostError
from gateway.core.messages import InboundMessage
from gateway.core.sessions.base import Session
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.sessions.redis_form import StoredSession, after_write
from gateway.core.settings import Settings
from gateway.workers.begin import COMPACTOR_OWNER, Begun, NotBegun, begin_turn
from gateway.workers.session_cache import SessionCache
from gateway.workers.store import TurnStore
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

SESSION = "slack:C1"
PARTITIONS = 2
READY = [keys.ready(p) for p in range(PARTITIONS)]


def message(text: str) -> InboundMessage:
    return InboundMessage(channel="slack", chat_id="C1", sender_id="U1", text=text)


async def post(redis: Redis, *texts: str) -> list[str]:
    ids = []
    for text in texts:
        published = await publish_inbound(redis, message(text), partitions=PARTITIONS, maxlen=100)
        assert published.entry_id is not None
        ids.append(published.entry_id)
    return ids


async def next_signal(redis: Redis) -> Signal:
    await ensure_groups(redis, READY, keys.WORKER_GROUP)
    [sig, *_] = await read_signals(redis, READY, keys.WORKER_GROUP, "w1", count=1, block_ms=100)
    return sig


async def pending_signals(redis: Redis) -> int:
    total = 0
    for stream in READY:
        summary = await redis.xpending(stream, keys.WORKER_GROUP)
        total += int(summary["pending"])
    return total


async def begin(redis: Redis, sig: Signal, cache: SessionCache | None = None) -> Begun | NotBegun:
    sessions = RedisSessionStore(redis)
    settings = Settings()
    return await begin_turn(
        redis, sessions, sig, settings=settings, owner="w1", page=100, cache=cache
    )


async def begun(redis: Redis, sig: Signal) -> Begun:
    started = await begin(redis, sig)
    assert isinstance(started, Begun)
    return started


async def test_begin_on_an_empty_stream_acks_and_takes_no_lease(redis: Redis) -> None:
    [entry] = await post(redis, "hi")
    sig = await next_signal(redis)
    await redis.set(keys.cursor(SESSION), entry)  # answered already

    assert await begin(redis, sig) is NotBegun.EMPTY
    assert await redis.exists(keys.lease(SESSION)) == 0
    assert await pending_signals(redis) == 0


async def test_begin_takes_the_lease_reads_pending_counts_and_loads(redis: Redis) -> None:
    await RedisSessionStore(redis).save(Session(key=SESSION, summary="earlier"))
    ids = await post(redis, "a", "b")
    sig = await next_signal(redis)

    started = await begun(redis, sig)

    assert [entry_id for entry_id, _ in started.entries] == ids
    assert await redis.get(keys.lease(SESSION)) == started.writer.lease.token
    # The default policy (followup) runs the first message: its attempt is counted.
    assert (started.attempt.counted_id, started.attempt.counted) == (ids[0], 1)
    assert started.stored is not None and started.stored.session.summary == "earlier"
    assert await pending_signals(redis) == 1  # acked only when the work is done
    # A plan that picks another run moves the count there.
    assert await started.attempt.attempt_for(ids[1]) == 1
    assert await redis.hgetall(keys.attempts(SESSION)) == {ids[1]: "1"}


async def test_begin_on_a_held_session_acks_a_fresh_signal_keeps_a_claimed_one(
    redis: Redis,
) -> None:
    await post(redis, "a")
    sig = await next_signal(redis)
    holder = await Lease.acquire(redis, keys.lease(SESSION), ttl_ms=5000, owner="other")
    assert holder is not None

    claimed = Signal(sig.stream, sig.id, sig.session_key, sig.channel, times_delivered=2)
    assert await begin(redis, claimed) is NotBegun.KEPT
    assert await pending_signals(redis) == 1
    assert await begin(redis, sig) is NotBegun.BUSY
    assert await pending_signals(redis) == 0
    assert await redis.get(keys.lease(SESSION)) == holder.token


async def test_a_fresh_signal_is_kept_while_the_compaction_job_holds_the_session(
    redis: Redis,
) -> None:
    await post(redis, "a")
    sig = await next_signal(redis)
    compactor = await Lease.acquire(redis, keys.lease(SESSION), ttl_ms=5000, owner=COMPACTOR_OWNER)
    assert compactor is not None

    assert await begin(redis, sig) is NotBegun.KEPT
    # The compactor runs no turns: were it killed now, its lease would lapse and only
    # this signal would still stand for the message.
    assert await pending_signals(redis) == 1


async def test_commit_with_nothing_pending_releases_and_acks(redis: Redis) -> None:
    [entry] = await post(redis, "a")
    sig = await next_signal(redis)
    started = await begun(redis, sig)

    done = await started.writer.commit(cursor=entry, entry_ids=[entry], finish=Finish(100, sig))

    assert done.released and done.pending == []
    assert started.writer.lease.released
    assert await redis.exists(keys.lease(SESSION)) == 0
    assert await pending_signals(redis) == 0
    assert await started.writer.lease.renew()  # released on purpose: not "lost"


async def test_commit_with_more_pending_keeps_the_lease_and_counts_the_next(
    redis: Redis,
) -> None:
    ids = await post(redis, "a", "b", "c")
    sig = await next_signal(redis)
    started = await begun(redis, sig)

    done = await started.writer.commit(
        cursor=ids[0], entry_ids=ids[:1], finish=Finish(100, sig, count="first")
    )

    assert not done.released
    assert [entry_id for entry_id, _ in done.pending] == ids[1:]
    assert (done.counted_id, done.counted) == (ids[1], 1)
    assert await redis.get(keys.lease(SESSION)) == started.writer.lease.token
    assert await pending_signals(redis) == 1


async def test_a_stale_token_writes_nothing(redis: Redis) -> None:
    ids = await post(redis, "a", "b")
    sig = await next_signal(redis)
    started = await begun(redis, sig)
    # The lease lapsed and another worker took the session.
    await redis.delete(keys.lease(SESSION))
    current = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w2")
    assert current is not None

    with pytest.raises(LeaseLostError):
        await started.attempt.attempt_for(ids[1])
    with pytest.raises(LeaseLostError):
        await started.writer.commit(
            cursor=ids[0],
            session=Session(key=SESSION, messages=[{"role": "user", "content": "a"}]),
            base=started.stored,
            entry_ids=ids[:1],
            finish=Finish(100, sig, count="first"),
        )

    assert await read_cursor(redis, SESSION) == "0-0"
    assert await redis.exists(*keys.stored_session(SESSION)) == 0
    assert await redis.hgetall(keys.attempts(SESSION)) == {ids[0]: "1"}
    assert await redis.get(keys.lease(SESSION)) == current.lease.token
    assert await pending_signals(redis) == 1


async def test_an_old_form_session_is_converted_by_its_first_commit(redis: Redis) -> None:
    old = Session(key=SESSION, messages=[{"role": "user", "content": "old"}], summary="s")
    await redis.set(keys.session(SESSION), old.model_dump_json())
    [entry] = await post(redis, "new")
    started = await begun(redis, await next_signal(redis))
    store = TurnStore(
        RedisSessionStore(redis), started.writer, cursor=entry, base=started.stored, loaded=True
    )

    session = await store.load(SESSION)
    assert session is not None and session.messages == old.messages
    session.messages.append({"role": "user", "content": "new"})
    await store.save(session)
    await store.commit(entry_ids=[entry])

    assert await redis.exists(keys.session(SESSION)) == 0
    assert await redis.lrange(keys.session_log(SESSION), 0, -1) == [
        '{"role":"user","content":"old"}',
        '{"role":"user","content":"new"}',
    ]
    reloaded = await RedisSessionStore(redis).load(SESSION)
    assert reloaded is not None and (reloaded.summary, len(reloaded.messages)) == ("s", 2)


async def input_bytes(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_net_input_bytes"])


async def turn_bytes(redis: Redis, writer: SessionWriter, base: StoredSession) -> StoredSession:
    """One turn's commit of two new messages; returns the next base. Bytes are counted
    by the caller from ``input_bytes``."""
    session = base.session
    session.messages += [
        {"role": "user", "content": "question " * 10},
        {"role": "assistant", "content": "answer " * 20},
    ]
    committed = await writer.commit(cursor="0-1", session=session, base=base)
    return after_write(session, committed.stamp)


async def test_the_bytes_a_commit_writes_do_not_grow_with_the_history(redis: Redis) -> None:
    writer = await SessionWriter.acquire(redis, SESSION, ttl_ms=60_000, owner="w1")
    assert writer is not None
    base = StoredSession.of(Session(key=SESSION), length=0, rewrite=True)
    sizes: dict[int, int] = {}
    for turn in range(1, 1001):
        before = await input_bytes(redis)
        base = await turn_bytes(redis, writer, base)
        sizes[turn] = await input_bytes(redis) - before

    assert await redis.llen(keys.session_log(SESSION)) == 2000
    # Every turn after the first sends the same: its two messages, never the history
    # (the stamp of updated_at may differ by a digit or two).
    assert abs(sizes[1000] - sizes[10]) <= 4
    assert sizes[1000] < 1000
    reloaded = await RedisSessionStore(redis).load(SESSION)
    assert reloaded is not None and reloaded.messages == base.session.messages
    history = await redis.memory_usage(keys.session_log(SESSION))
    assert cast(int, history) > 100 * sizes[1000]  # what the old form wrote every turn


async def test_a_compaction_rewrites_the_log_in_the_commit(redis: Redis) -> None:
    store = RedisSessionStore(redis)
    messages = [{"role": "user", "content": str(i)} for i in range(10)]
    await store.save(Session(key=SESSION, messages=messages))
    writer = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="compactor")
    assert writer is not None
    turn = TurnStore(store, writer, cursor="0-0")

    session = await turn.load(SESSION)
    assert session is not None
    session.summary, session.messages = "folded", session.messages[-3:]  # as compact() does
    await turn.save(session)
    await turn.commit()

    assert await redis.llen(keys.session_log(SESSION)) == 3
    stored = await store.load(SESSION)
    assert stored is not None and (stored.summary, stored.messages) == ("folded", messages[-3:])


async def test_an_append_to_a_log_that_moved_rewrites_it(redis: Redis) -> None:
    store = RedisSessionStore(redis)
    await store.save(Session(key=SESSION, messages=[{"role": "user", "content": "a"}]))
    writer = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w1")
    assert writer is not None
    base = await store.load_stored(SESSION)
    assert base is not None
    await redis.rpush(keys.session_log(SESSION), '{"role":"user","content":"outside"}')

    base.session.messages.append({"role": "assistant", "content": "b"})
    await writer.commit(cursor="0-1", session=base.session, base=base)

    stored = await store.load(SESSION)
    assert stored is not None
    assert [m["content"] for m in stored.messages] == ["a", "b"]
