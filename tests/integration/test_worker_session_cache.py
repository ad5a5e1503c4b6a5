"""The worker's session cache: BEGIN_TURN against a cached stamp, and real turns (what
crosses the wire, and when)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.session_writer import SessionWriter
from gateway.core.messages import Message
from gateway.core.sessions.base import Session
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.sessions.redis_form import StoredSession
from gateway.workers.begin import Begun
from gateway.workers.session_cache import SessionCache
from gateway.workers.store import TurnStore
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401
from tests.integration.test_bus_turn_scripts import SESSION, begin, next_signal, post
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
)

HISTORY = 100
"""Stored messages of 500 characters: ~50 kB of history, under the compaction budget."""


async def traffic(redis: Redis) -> tuple[int, int]:
    """Bytes Redis sent and received so far."""
    stats = await redis.info("stats")
    return int(stats["total_net_output_bytes"]), int(stats["total_net_input_bytes"])


async def since(redis: Redis, before: tuple[int, int]) -> tuple[int, int]:
    now = await traffic(redis)
    return now[0] - before[0], now[1] - before[1]


async def test_a_turn_after_a_released_commit_does_not_reload_the_history(
    redis: Redis, tmp_path: Path
) -> None:
    settings = bus_settings(tmp_path)
    key = session_key("long")
    history: list[Message] = [
        {"role": "user", "content": f"{i:03} " + "x" * 496} for i in range(HISTORY)
    ]
    await RedisSessionStore(redis).save(Session(key=key, messages=history))
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis):
        before = await traffic(redis)
        await send(redis, settings, "long", "one")
        await transcript.runs_ended(1)
        first, _ = await since(redis, before)
        # The first turn's commit found nothing pending and released the lease; the
        # worker keeps the session it committed, so the next turn's BEGIN_TURN sends
        # the stamp and gets no history back; its commit appends (sends no history).
        before = await traffic(redis)
        await send(redis, settings, "long", "two")
        await transcript.runs_ended(2)
        second, sent = await since(redis, before)
    assert transcript.replies(key) == ["one", "two"]
    assert first > HISTORY * 500  # loaded once
    assert second < HISTORY * 500 // 5, (first, second)
    assert sent < HISTORY * 500 // 5, sent
    stored = await RedisSessionStore(redis).load(key)
    assert stored is not None and len(stored.messages) == HISTORY + 4


async def committed_with_cache(redis: Redis, cache: SessionCache) -> list[str]:
    """One turn begun and committed with ``cache``: its session cached at its stamp."""
    ids = await post(redis, "a", "b")
    sig = await next_signal(redis)
    started = await begin(redis, sig, cache=cache)
    assert isinstance(started, Begun) and started.stored is None
    session = Session(key=SESSION, messages=[{"role": "user", "content": "a"}])
    store = TurnStore(RedisSessionStore(redis), started.writer, cursor=ids[0], loaded=True)
    await store.save(session)
    await store.commit(entry_ids=ids[:1])
    await started.writer.release()
    assert store.stored is not None
    cache.put(store.stored)
    return ids


async def test_begin_leaves_out_a_history_the_worker_has_cached(redis: Redis) -> None:
    cache = SessionCache()
    await committed_with_cache(redis, cache)
    # Changed behind the stamp's back: a begin that used the cache cannot see it.
    await redis.rpush(keys.session_log(SESSION), '{"role":"user","content":"unseen"}')

    started = await begin(redis, await next_signal(redis), cache=cache)

    assert isinstance(started, Begun) and started.stored is not None
    assert started.stored.session.messages == [{"role": "user", "content": "a"}]
    started.stored.session.messages.append({"role": "user", "content": "b"})  # a turn's copy
    cached = cache.checkout(SESSION)
    assert cached is not None and len(cached.session.messages) == 1


async def test_begin_reloads_a_session_written_since_it_was_cached(redis: Redis) -> None:
    cache = SessionCache()
    await committed_with_cache(redis, cache)
    await RedisSessionStore(redis).save(Session(key=SESSION, summary="written elsewhere"))

    started = await begin(redis, await next_signal(redis), cache=cache)

    assert isinstance(started, Begun) and started.stored is not None
    assert started.stored.session.summary == "written elsewhere"
    assert cache.stamp(SESSION) == started.stored.stamp


async def test_begin_sees_a_deleted_session_as_gone(redis: Redis) -> None:
    cache = SessionCache()
    await committed_with_cache(redis, cache)
    await RedisSessionStore(redis).delete(SESSION)

    started = await begin(redis, await next_signal(redis), cache=cache)

    assert isinstance(started, Begun) and started.stored is None


def test_the_cache_is_bounded_by_messages() -> None:
    cache = SessionCache(max_messages=5)
    for key in ("a", "b", "c"):
        messages = [{"role": "user", "content": key}, {"role": "user", "content": key}]
        stored = StoredSession.of(Session(key=key, messages=messages), length=2, stamp=key)
        cache.put(stored)
    assert (cache.stamp("a"), cache.stamp("b"), cache.stamp("c")) == ("", "b", "c")
    cache.put(StoredSession.of(Session(key="d"), length=0))  # no stamp: not kept
    assert cache.stamp("d") == "" and len(cache) == 2


async def test_an_append_to_a_log_rewritten_to_the_same_length_rewrites_it(
    redis: Redis,
) -> None:
    store = RedisSessionStore(redis)
    await store.save(Session(key=SESSION, messages=[{"role": "user", "content": "a"}]))
    writer = await SessionWriter.acquire(redis, SESSION, ttl_ms=5000, owner="w1")
    assert writer is not None
    base = await store.load_stored(SESSION)
    assert base is not None
    # Saved outside the lease while the turn ran: another log of the same length.
    await store.save(Session(key=SESSION, messages=[{"role": "user", "content": "outside"}]))

    base.session.messages.append({"role": "assistant", "content": "b"})
    committed = await writer.commit(cursor="0-1", session=base.session, base=base)

    # Not "outside" + "b": what is stored is what the worker holds (and may cache).
    stored = await store.load_stored(SESSION)
    assert stored is not None
    assert [m["content"] for m in stored.messages] == ["a", "b"]
    assert stored.stamp == committed.stamp
