"""The album flusher's bounds against a real redis-server: how many flushes run at once,
no tight retry loop while a claim fails, key lifetimes, and a late finish that keeps
another flusher's claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.channels.telegram.albums import (
    KEEP_S,
    Album,
    AlbumBuffer,
    AlbumFlusher,
    PublishAlbum,
)
from gateway.core.bus import keys
from tests.integration.test_album_flusher import (
    ALBUM,
    CHANNEL,
    Publisher,
    claim_when_due,
    published_texts,
    running,
    stash_all,
)

pytestmark = pytest.mark.integration


class Watch:
    """Counters a test waits on: each change wakes the waiter, no sleeps."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.changed = asyncio.Event()

    def bump(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by
        self.changed.set()

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not done():
                self.changed.clear()
                await self.changed.wait()


class CountingFlusher(AlbumFlusher):
    """Counts its looks at Redis (every pass of its loop that may start flushes)."""

    def __init__(self, buffer: AlbumBuffer, publish: PublishAlbum, watch: Watch) -> None:
        super().__init__(buffer, publish, rescan_s=0.02)
        self.watch = watch

    async def _start_due(self, flushes: asyncio.TaskGroup) -> float:
        wait_s = await super()._start_due(flushes)
        self.watch.bump("looks")
        return wait_s


async def test_a_flood_of_albums_is_flushed_a_bounded_number_at_a_time(redis: Redis) -> None:
    buffer = AlbumBuffer(redis, CHANNEL, window_s=0.001)
    for n in range(8):
        assert await buffer.stash(f"100:mg{n}", n + 1, f"part{n + 1}")
    watch = Watch()
    release = asyncio.Event()
    publisher = Publisher(redis)

    async def held_publish(album: Album) -> None:
        watch.bump("in_flight")
        watch.counts["most"] = max(watch["most"], watch["in_flight"])
        await release.wait()  # a slow download
        await publisher(album)
        watch.bump("in_flight", -1)
        watch.bump("published")

    flusher = CountingFlusher(buffer, held_publish, watch)
    flusher.most_at_once = 3
    async with running(flusher):
        await watch.until(lambda: watch["in_flight"] == 3)
        looks = watch["looks"]
        await watch.until(lambda: watch["looks"] >= looks + 5)  # it looked again, and again
        assert watch["in_flight"] == 3  # the other albums wait in Redis
        release.set()
        await watch.until(lambda: watch["published"] == 8)
    assert watch["most"] == 3
    assert sorted(await published_texts(redis)) == [f"part{n}" for n in range(1, 9)]


class FailingClaims(AlbumBuffer):
    """Claims of ``ALBUM`` fail (Redis refusing writes); other albums flush normally."""

    def __init__(self, redis: Redis, watch: Watch) -> None:
        super().__init__(redis, CHANNEL, window_s=0.3)
        self.watch = watch

    async def claim(self, album: str) -> Album | None:
        if album == ALBUM:
            self.watch.bump("failed claims")
            raise RedisError("OOM command not allowed when used memory > 'maxmemory'")
        return await super().claim(album)

    async def finish(self, album: Album) -> None:
        await super().finish(album)
        self.watch.bump("finished")


async def test_a_claim_that_fails_is_not_retried_in_a_tight_loop(redis: Redis) -> None:
    watch = Watch()
    buffer = FailingClaims(redis, watch)
    await stash_all(buffer, 1)
    flusher = AlbumFlusher(buffer, Publisher(redis), rescan_s=3600)
    async with running(flusher):
        await watch.until(lambda: watch["failed claims"] >= 1)
        # Another album, due one window later: its stash wakes the flusher, its due
        # time times the next look, its finish wakes it again. A failed claim adds none.
        assert await flusher.stash("100:other", 2, "part2")
        await watch.until(lambda: watch["finished"] == 1)
    assert watch["failed claims"] <= 4  # one per look, not one per round trip
    assert await published_texts(redis) == ["part2"]


async def test_the_due_set_expires_no_sooner_than_the_parts_it_points_to(redis: Redis) -> None:
    buffer = AlbumBuffer(redis, CHANNEL, window_s=0.001)
    await stash_all(buffer, 1, 2)
    due_ttl = await redis.ttl(keys.album_due(CHANNEL))
    assert 0 < due_ttl <= KEEP_S  # an album nobody flushes leaves nothing for good
    assert due_ttl >= await redis.ttl(keys.album_parts(CHANNEL, ALBUM))
    claimed = await claim_when_due(buffer)
    await stash_all(buffer, 3)  # a late part: the finish leaves the album due
    await redis.persist(keys.album_due(CHANNEL))
    await buffer.finish(claimed)
    assert 0 < await redis.ttl(keys.album_due(CHANNEL)) <= KEEP_S


async def test_a_late_finish_keeps_the_claim_of_the_next_batch(redis: Redis) -> None:
    slow = AlbumBuffer(redis, CHANNEL, window_s=0.001, claim_s=0.001)
    await stash_all(slow, 1, 2)
    first = await claim_when_due(slow)
    other = AlbumBuffer(redis, CHANNEL, window_s=0.001, claim_s=30)
    second = await claim_when_due(other)  # the slow one's claim lapsed: the same batch
    assert second == first
    await other.finish(second)
    await stash_all(other, 3)
    third = await claim_when_due(other)  # the next batch, claimed for 30 s
    assert third.part_ids == [3]
    claim_until = await redis.zscore(keys.album_due(CHANNEL), ALBUM)
    await slow.finish(first)  # the slow flusher's publish returns at last
    assert await redis.zscore(keys.album_due(CHANNEL), ALBUM) == claim_until
    assert await redis.hkeys(keys.album_batch(CHANNEL, ALBUM)) == ["3"]  # type: ignore[misc]
