"""Consumer-group signals: groups, reads, acks, and claiming from a dead consumer (real Redis)."""

# The fixtures are imported by name, so test parameters "redefine" them.

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.signals import (
    ClaimScan,
    ack,
    claim_stale,
    ensure_groups,
    read_signals,
    signal,
)
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

GROUP = keys.WORKER_GROUP
STREAMS = [keys.ready(0), keys.ready(1)]


async def pending_count(redis: Redis, stream: str) -> int:
    summary = await redis.xpending(stream, GROUP)
    return int(summary["pending"])


async def test_ensure_groups_is_idempotent_and_reads_earlier_signals(redis: Redis) -> None:
    early = await signal(redis, STREAMS[0], "telegram:1", "telegram")
    await ensure_groups(redis, STREAMS, GROUP)
    await ensure_groups(redis, STREAMS, GROUP)

    groups = await redis.xinfo_groups(STREAMS[1])
    assert [g["name"] for g in groups] == [GROUP]
    got = await read_signals(redis, STREAMS, GROUP, "c1", count=10, block_ms=10)
    assert [(s.id, s.session_key, s.channel) for s in got] == [(early, "telegram:1", "telegram")]


async def test_fresh_read_counts_one_delivery_and_ack_removes_it(redis: Redis) -> None:
    await ensure_groups(redis, STREAMS, GROUP)
    await signal(redis, STREAMS[0], "a", "telegram")
    await signal(redis, STREAMS[1], "b", "slack")

    got = await read_signals(redis, STREAMS, GROUP, "c1", count=10, block_ms=10)

    assert sorted((s.stream, s.session_key, s.times_delivered) for s in got) == [
        (STREAMS[0], "a", 1),
        (STREAMS[1], "b", 1),
    ]
    for sig in got:
        await ack(redis, sig, GROUP)
    assert [await pending_count(redis, s) for s in STREAMS] == [0, 0]
    assert [await redis.xlen(s) for s in STREAMS] == [0, 0]
    assert await read_signals(redis, STREAMS, GROUP, "c1", count=10, block_ms=10) == []


async def test_count_limits_a_read(redis: Redis) -> None:
    await ensure_groups(redis, STREAMS[:1], GROUP)
    for i in range(5):
        await signal(redis, STREAMS[0], f"s{i}", "telegram")
    got = await read_signals(redis, STREAMS[:1], GROUP, "c1", count=2, block_ms=10)
    assert [s.session_key for s in got] == ["s0", "s1"]


async def test_blocking_read_wakes_on_a_new_signal(redis: Redis, redis_url: str) -> None:
    await ensure_groups(redis, STREAMS, GROUP)
    reader = Redis.from_url(redis_url, decode_responses=True)
    try:
        waiting = asyncio.create_task(
            read_signals(reader, STREAMS, GROUP, "c1", count=10, block_ms=5000)
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await signal(redis, STREAMS[1], "late", "discord")
        got = await asyncio.wait_for(waiting, timeout=2)
    finally:
        await reader.aclose()
    assert [(s.session_key, s.channel) for s in got] == [("late", "discord")]


async def test_claim_stale_takes_over_a_dead_consumers_signals(redis: Redis) -> None:
    await ensure_groups(redis, STREAMS, GROUP)
    await signal(redis, STREAMS[0], "x", "telegram")
    await signal(redis, STREAMS[1], "y", "telegram")
    taken = await read_signals(redis, STREAMS, GROUP, "dead", count=10, block_ms=10)
    assert len(taken) == 2

    assert await claim_stale(redis, STREAMS, GROUP, "alive", min_idle_ms=60_000, count=10) == []
    await asyncio.sleep(0.03)
    claimed = await claim_stale(redis, STREAMS, GROUP, "alive", min_idle_ms=20, count=10)

    assert sorted((s.session_key, s.times_delivered) for s in claimed) == [("x", 2), ("y", 2)]
    assert {s.id for s in claimed} == {s.id for s in taken}
    consumers = {c["name"]: c["pending"] for c in await redis.xinfo_consumers(STREAMS[0], GROUP)}
    assert consumers == {"dead": 0, "alive": 1}

    await asyncio.sleep(0.03)
    again = await claim_stale(redis, STREAMS, GROUP, "third", min_idle_ms=20, count=1)
    assert [s.times_delivered for s in again] == [3]
    for sig in [*claimed, *again]:
        await ack(redis, sig, GROUP)
    assert [await pending_count(redis, s) for s in STREAMS] == [0, 0]


async def test_claim_skips_signals_deleted_while_pending(redis: Redis) -> None:
    await ensure_groups(redis, STREAMS[:1], GROUP)
    gone = await signal(redis, STREAMS[0], "gone", "telegram")
    await signal(redis, STREAMS[0], "kept", "telegram")
    await read_signals(redis, STREAMS[:1], GROUP, "dead", count=10, block_ms=10)
    await redis.xdel(STREAMS[0], gone)
    await asyncio.sleep(0.03)

    claimed = await claim_stale(redis, STREAMS[:1], GROUP, "alive", min_idle_ms=20, count=10)

    assert [s.session_key for s in claimed] == ["kept"]


async def test_malformed_signal_is_dropped_not_returned(redis: Redis) -> None:
    await ensure_groups(redis, STREAMS[:1], GROUP)
    await redis.xadd(STREAMS[0], {"junk": "1"})
    await signal(redis, STREAMS[0], "ok", "slack")

    got = await read_signals(redis, STREAMS[:1], GROUP, "c1", count=10, block_ms=10)

    assert [s.session_key for s in got] == ["ok"]
    assert await pending_count(redis, STREAMS[0]) == 1


async def test_claim_scan_reaches_a_stale_signal_behind_many_in_flight(redis: Redis) -> None:
    # XAUTOCLAIM looks at ten times COUNT pending entries per call: a scan that always
    # began at 0-0 never got past 30 in-flight signals to the dead consumer's one.
    await ensure_groups(redis, STREAMS[:1], GROUP)
    for n in range(31):
        await signal(redis, STREAMS[0], f"s{n}", "telegram")
    in_flight = await read_signals(redis, STREAMS[:1], GROUP, "busy", count=31, block_ms=10)
    stale = in_flight[-1]
    await redis.xclaim(STREAMS[0], GROUP, "dead", 0, [stale.id], idle=600_000)

    scan = ClaimScan()
    found: list[str] = []
    for _ in range(len(in_flight)):  # each call moves the scan on by at least one entry
        claimed = await claim_stale(
            redis, STREAMS[:1], GROUP, "alive", min_idle_ms=60_000, count=1, scan=scan
        )
        found += [s.session_key for s in claimed]
        if found:
            break

    assert found == ["s30"]


async def test_claim_scan_rotates_so_a_later_stream_gets_the_free_slot(redis: Redis) -> None:
    # A session whose signal is claimed again and again (its lease is busy) sits on the
    # first stream; with one free slot, the second stream's signal was never claimed.
    await ensure_groups(redis, STREAMS, GROUP)
    await signal(redis, STREAMS[0], "busy", "telegram")
    await signal(redis, STREAMS[1], "waiting", "telegram")
    await read_signals(redis, STREAMS, GROUP, "dead", count=10, block_ms=10)

    scan = ClaimScan()
    claimed = [
        s.session_key
        for _ in STREAMS
        for s in await claim_stale(
            redis, STREAMS, GROUP, "alive", min_idle_ms=0, count=1, scan=scan
        )
    ]

    assert sorted(claimed) == ["busy", "waiting"]
