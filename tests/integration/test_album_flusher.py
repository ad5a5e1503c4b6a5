"""The album buffer and flusher against a real redis-server: crashes between their
writes (simulated by stopping after a step) lose nothing and publish nothing twice.

The publish step is the bus's real ``publish_inbound``, deduped by the album's event id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.channels.telegram.albums import Album, AlbumBuffer, AlbumFlusher
from gateway.core.bus import keys
from gateway.core.bus.inbound import Published, publish_inbound
from gateway.core.messages import InboundMessage

pytestmark = pytest.mark.integration

CHANNEL = "telegram"
ALBUM = "100:mg1"
SESSION = f"{CHANNEL}:100"


class WatchedBuffer(AlbumBuffer):
    """Counts finished batches, so a test waits for the flusher's last step."""

    def __init__(self, redis: Redis, *, window_s: float, claim_s: float = 30.0) -> None:
        super().__init__(redis, CHANNEL, window_s=window_s, claim_s=claim_s)
        self.finished = 0
        self.changed = asyncio.Event()

    async def finish(self, album: Album) -> None:
        await super().finish(album)
        self.finished += 1
        self.changed.set()

    async def wait_finished(self, count: int) -> None:
        async with asyncio.timeout(20):
            while self.finished < count:
                self.changed.clear()
                await self.changed.wait()


class Publisher:
    """Publishes an album as one inbound message (text: its parts joined)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.results: list[tuple[Album, Published]] = []

    async def __call__(self, album: Album) -> None:
        msg = InboundMessage(
            channel=CHANNEL,
            chat_id="100",
            sender_id="100",
            text=" ".join(album.parts),
            platform_event_id=album.event_id,
        )
        published = await publish_inbound(self.redis, msg, partitions=2, maxlen=1000)
        self.results.append((album, published))


@contextlib.asynccontextmanager
async def running(flusher: AlbumFlusher) -> AsyncIterator[None]:
    task = asyncio.create_task(flusher.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


async def stash_all(buffer: AlbumBuffer, *ids: int) -> None:
    for update_id in ids:
        assert await buffer.stash(ALBUM, update_id, f"part{update_id}")


async def claim_when_due(buffer: AlbumBuffer) -> Album:
    """Claim as a flusher does: once Redis's clock says the album is due."""
    albums, wait_s = await buffer.due(1)
    if not albums:
        assert wait_s is not None
        await asyncio.sleep(wait_s)
    claimed = await buffer.claim(ALBUM)
    assert claimed is not None
    return claimed


async def published_texts(redis: Redis) -> list[str]:
    entries = await redis.xrange(keys.inbound(SESSION))
    return [InboundMessage.model_validate_json(fields["d"]).text for _, fields in entries]


async def assert_forgotten(redis: Redis, *ids: int) -> None:
    """Nothing of the album is left but the ids it published."""
    assert await redis.zcard(keys.album_due(CHANNEL)) == 0
    assert not await redis.exists(keys.album_parts(CHANNEL, ALBUM))
    assert not await redis.exists(keys.album_batch(CHANNEL, ALBUM))
    done = await redis.smembers(keys.album_done(CHANNEL, ALBUM))  # type: ignore[misc]
    assert done == {str(i) for i in ids}


async def test_parts_left_by_a_dead_process_are_published_by_another_flusher(
    redis: Redis,
) -> None:
    dead = AlbumBuffer(redis, CHANNEL, window_s=0.05)
    await stash_all(dead, 3, 1, 2)  # stored, then the process died before its flush
    publisher = Publisher(redis)
    buffer = WatchedBuffer(redis, window_s=0.05)
    async with running(AlbumFlusher(buffer, publisher, rescan_s=5)):
        await buffer.wait_finished(1)
    ((album, published),) = publisher.results
    assert album.parts == ["part1", "part2", "part3"]  # in update order
    assert album.event_id == f"album:{ALBUM}:1"
    assert not published.duplicate
    assert await published_texts(redis) == ["part1 part2 part3"]
    await assert_forgotten(redis, 1, 2, 3)


async def test_a_crash_after_the_publish_before_the_finish_does_not_duplicate(
    redis: Redis,
) -> None:
    dead = AlbumBuffer(redis, CHANNEL, window_s=0.001, claim_s=0.1)
    await stash_all(dead, 1, 2)
    publisher = Publisher(redis)
    await publisher(await claim_when_due(dead))  # published, then killed before finish
    buffer = WatchedBuffer(redis, window_s=0.001, claim_s=0.1)
    async with running(AlbumFlusher(buffer, publisher, rescan_s=0.2)):
        await buffer.wait_finished(1)  # once the dead claim lapsed: the same batch again
    (first, one), (again, other) = publisher.results
    assert again.event_id == first.event_id and again.parts == first.parts
    assert not one.duplicate and other.duplicate
    assert await published_texts(redis) == ["part1 part2"]
    await assert_forgotten(redis, 1, 2)


async def test_a_crash_after_the_claim_before_the_publish_loses_nothing(redis: Redis) -> None:
    dead = AlbumBuffer(redis, CHANNEL, window_s=0.001, claim_s=0.1)
    await stash_all(dead, 1, 2)
    await claim_when_due(dead)  # claimed, then killed
    publisher = Publisher(redis)
    buffer = WatchedBuffer(redis, window_s=0.001, claim_s=0.1)
    async with running(AlbumFlusher(buffer, publisher, rescan_s=0.2)):
        await buffer.wait_finished(1)
    assert await published_texts(redis) == ["part1 part2"]
    await assert_forgotten(redis, 1, 2)


async def test_a_part_that_arrives_during_a_flush_is_published_next_not_lost(
    redis: Redis,
) -> None:
    buffer = WatchedBuffer(redis, window_s=0.001)
    await stash_all(buffer, 1, 2)
    claimed = await claim_when_due(buffer)
    assert not await buffer.stash(ALBUM, 2, "part2")  # a redelivery while claimed
    await stash_all(buffer, 3)  # a late part, not in the claimed batch
    publisher = Publisher(redis)
    await publisher(claimed)
    await buffer.finish(claimed)
    assert not await buffer.stash(ALBUM, 1, "part1")  # a redelivery after the publish
    async with running(AlbumFlusher(buffer, publisher, rescan_s=5)):
        await buffer.wait_finished(2)
    assert [album.event_id for album, _ in publisher.results] == [
        f"album:{ALBUM}:1",
        f"album:{ALBUM}:3",
    ]
    assert await published_texts(redis) == ["part1 part2", "part3"]
    await assert_forgotten(redis, 1, 2, 3)


async def test_two_flushers_on_one_batch_publish_it_once(redis: Redis) -> None:
    slow = AlbumBuffer(redis, CHANNEL, window_s=0.001, claim_s=0.001)
    await stash_all(slow, 1, 2)
    first = await claim_when_due(slow)
    second = await claim_when_due(AlbumBuffer(redis, CHANNEL, window_s=0.001))  # claim lapsed
    assert second == first
    publisher = Publisher(redis)
    await asyncio.gather(publisher(first), publisher(second))
    await asyncio.gather(slow.finish(first), slow.finish(second))
    assert sorted(p.duplicate for _, p in publisher.results) == [False, True]
    assert await published_texts(redis) == ["part1 part2"]
    await assert_forgotten(redis, 1, 2)
