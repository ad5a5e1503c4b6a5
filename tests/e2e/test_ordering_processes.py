"""Many chats through several worker processes: each turn once, in publish order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.inbound import read_cursor
from gateway.core.sessions.base import Session
from gateway.core.sessions.redis import RedisSessionStore
from tests.e2e.conftest import (
    OutboundWatch,
    WorkerLauncher,
    eventually_equal,
    inbound,
    publish,
    write_worker_config,
)

CHATS = 50
MESSAGES = 20
WORKERS = 3


async def message_counts(redis: Redis, session_keys: list[str]) -> list[int]:
    """Messages stored per session (0 when not saved yet), in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in session_keys:
            pipe.get(keys.session(key))
        values = await pipe.execute()
    return [0 if raw is None else len(Session.model_validate_json(raw).messages) for raw in values]


async def test_fifty_chats_through_three_worker_processes_stay_in_order(
    redis: Redis, redis_url: str, worker_launcher: WorkerLauncher, tmp_path: Path
) -> None:
    config = tmp_path / "worker.yaml"
    # No crash here: roomier leases so a loaded machine never looks like a dead worker.
    settings = write_worker_config(
        config, workspace=tmp_path / "ws", lease_ms=5000, claim_idle_ms=5000
    )
    await asyncio.gather(
        *(
            worker_launcher.start(f"w{i}", redis_url=redis_url, config=config)
            for i in range(WORKERS)
        )
    )
    chats = [f"chat{c}" for c in range(CHATS)]
    session_keys = [inbound(chat, "-").session_key for chat in chats]

    async def publish_chat(chat: str) -> list[str | None]:
        texts = (f"{chat} m{i}" for i in range(MESSAGES))
        return [(await publish(redis, settings, inbound(chat, text))).entry_id for text in texts]

    # The chats' messages interleave on the bus while the workers are already taking them.
    entry_ids = await asyncio.gather(*(publish_chat(chat) for chat in chats))

    await eventually_equal(
        lambda: message_counts(redis, session_keys),
        [2 * MESSAGES] * CHATS,
        what="every session to hold 40 messages",
        timeout_s=50,
        interval_s=0.25,
    )
    store = RedisSessionStore(redis)
    for chat, key, ids in zip(chats, session_keys, entry_ids, strict=True):
        session = await store.load(key)
        assert session is not None
        expected: list[tuple[str, str]] = []
        for i in range(MESSAGES):
            expected += [("user", f"{chat} m{i}"), ("assistant", f"{chat} m{i}")]
        assert [(m["role"], m["content"]) for m in session.messages] == expected, chat
        assert await read_cursor(redis, key) == ids[-1]
    watch = OutboundWatch(redis, session_keys)
    await watch.until(
        lambda w: all(len(w.terminals(k)) >= MESSAGES for k in session_keys),
        what="the run.completed events",
    )
    for key, ids in zip(session_keys, entry_ids, strict=True):
        assert [e.run_id for e in watch.terminals(key)] == ids, key  # one run per message


async def test_a_redelivered_platform_event_makes_one_turn(
    redis: Redis, redis_url: str, worker_launcher: WorkerLauncher, tmp_path: Path
) -> None:
    config = tmp_path / "worker.yaml"
    settings = write_worker_config(config, workspace=tmp_path / "ws")
    await worker_launcher.start("W", redis_url=redis_url, config=config)
    first = await publish(redis, settings, inbound("c1", "hello", event_id="e1"))
    again = await publish(redis, settings, inbound("c1", "hello", event_id="e1"))
    assert first.entry_id is not None
    assert again.duplicate and again.entry_id is None
    key = first.session_key
    watch = OutboundWatch(redis, [key])
    await watch.until(lambda w: len(w.terminals(key)) >= 1, what="the first reply")
    # A platform retry after the turn finished is dropped too; the next event is not.
    late = await publish(redis, settings, inbound("c1", "hello", event_id="e1"))
    assert late.duplicate
    follow_up = await publish(redis, settings, inbound("c1", "bye", event_id="e2"))
    assert follow_up.entry_id is not None
    await watch.until(lambda w: len(w.terminals(key)) >= 2, what="the second reply")
    await eventually_equal(
        lambda: read_cursor(redis, key), follow_up.entry_id, what="the second commit"
    )
    completed = [event for _, event in watch.completed(key)]
    assert [(e.run_id, e.content) for e in completed] == [
        (first.entry_id, "hello"),
        (follow_up.entry_id, "bye"),
    ]
    assert len(watch.terminals(key)) == 2
    session = await RedisSessionStore(redis).load(key)
    assert session is not None
    assert [(m["role"], m["content"]) for m in session.messages] == [
        ("user", "hello"),
        ("assistant", "hello"),
        ("user", "bye"),
        ("assistant", "bye"),
    ]
