"""Telegram albums (media groups): parts held in Redis, published as one message.

An album arrives as one update per photo or document, all with the same
``media_group_id``, usually in one ``getUpdates`` batch but not always (and in
webhook mode each part is its own POST, maybe to another replica). The adapter's
hand-off must return once a part is safe, before the next part can even be fetched,
so a part is *stashed*, not published: ``STASH_ALBUM_PART`` adds it to the album's
parts hash (idempotent by update id) and sets the album due one window after its
latest part, in ``gw:album:due:{album:<channel>}``. An ``AlbumFlusher`` runs
wherever parts are accepted (the polling lease holder, every webhook replica); when
an album is due it claims it, publishes all its parts as one inbound message, then
finishes it.

Why a crash (kill -9) between any two writes is harmless:

- *stash*: one script. Before it, the offset is not confirmed (or the webhook POST
  not answered): Telegram delivers the part again. After it, a redelivery finds the
  part stored (rewritten as it was) or done (dropped).
- *claim* (``CLAIM_ALBUM``): one script that freezes the parts into the album's batch
  and moves its due time past a claim period. Crash after it: once the claim lapses,
  any flusher claims the *same* batch (a batch is reused until finished), so the
  event id (``album:<album>:<lowest update id>``) and content are the same.
- *publish*: the bus's ``PUBLISH_INBOUND``, deduped on that event id. Crash after it,
  before the finish: the re-claimed batch publishes again and the bus drops it as a
  duplicate; the pairing or "too large" replies are guarded by the same event id.
- *finish* (``FINISH_ALBUM``): one script that removes exactly the published part ids
  from the batch, records them as done (a redelivered part is dropped), and leaves
  the album due if parts came in meanwhile (those become the next batch, with their
  own lowest update id, so they are not mistaken for the first publish).

Two flushers on one batch (a slow one outliving its claim) both publish the same
event id with the same parts: the bus keeps one. Correctness never rests on timing;
the claim period only keeps replicas from downloading the same files twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus import keys
from gateway.core.bus.scripts import (
    CLAIM_ALBUM,
    DUE_ALBUMS,
    FINISH_ALBUM,
    STASH_ALBUM_PART,
    ScriptArg,
)

log = logging.getLogger(__name__)

KEEP_S = 86_400
"""How long parts wait for a flusher (a channel removed from the config) and done ids
are remembered (as long as the bus remembers a platform event id)."""


@dataclass(frozen=True, slots=True)
class Album:
    """One claimed batch: what becomes one inbound message."""

    album: str
    event_id: str
    """Stable across re-claims of the batch: the bus's dedupe key for its publish."""
    parts: list[str]
    """The parts' update JSON, by update id."""
    part_ids: list[int]


def album_event_id(album: str, part_ids: list[int]) -> str:
    return f"album:{album}:{min(part_ids)}"


class AlbumBuffer:
    """The Redis side: stash, list due, claim, finish (one script each)."""

    def __init__(
        self, redis: Redis, channel: str, *, window_s: float, claim_s: float = 30.0
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.window_ms = max(1, round(window_s * 1000))
        self.claim_ms = max(1, round(claim_s * 1000))
        self.due_key = keys.album_due(channel)

    async def stash(self, album: str, update_id: int, payload: str) -> bool:
        """Keep one part; False for a redelivery of a part already claimed or published."""
        script_keys = [*self._album_keys(album), self.due_key]
        args: list[ScriptArg] = [album, update_id, payload, self.window_ms, KEEP_S]
        return bool(await STASH_ALBUM_PART.run(self.redis, script_keys, args))

    async def waiting_in(self, chat_id: str) -> str | None:
        """An album of ``chat_id`` not yet published (stashed or being published), if any."""
        prefix = f"{chat_id}:"
        albums = cast(list[str], await self.redis.zrange(self.due_key, 0, -1))
        return next((album for album in albums if album.startswith(prefix)), None)

    async def due(self, most: int) -> tuple[list[str], float | None]:
        """Albums due now (at most ``most``), and seconds until the next one (None: none)."""
        reply = cast(list[object], await DUE_ALBUMS.run(self.redis, [self.due_key], [most]))
        albums = [str(a) for a in cast(list[object], reply[0])]
        wait_ms = int(cast(int, reply[1]))
        return albums, (wait_ms / 1000 if wait_ms >= 0 else None)

    async def claim(self, album: str) -> Album | None:
        """The album's batch, now claimed; None when it is not due (or gone)."""
        parts_key, batch_key, _ = self._album_keys(album)
        script_keys = [parts_key, batch_key, self.due_key]
        reply = await CLAIM_ALBUM.run(self.redis, script_keys, [album, self.claim_ms])
        if not reply:
            return None
        flat = [str(v) for v in cast(list[object], reply)]
        batch = sorted((int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2))
        ids = [part_id for part_id, _ in batch]
        return Album(album, album_event_id(album, ids), [p for _, p in batch], ids)

    async def finish(self, album: Album) -> None:
        """The batch was published (or dropped for good): forget it, remember its ids."""
        script_keys = [*self._album_keys(album.album), self.due_key]
        args: list[ScriptArg] = [album.album, self.window_ms, KEEP_S, *album.part_ids]
        await FINISH_ALBUM.run(self.redis, script_keys, args)

    def _album_keys(self, album: str) -> tuple[str, str, str]:
        return (
            keys.album_parts(self.channel, album),
            keys.album_batch(self.channel, album),
            keys.album_done(self.channel, album),
        )


PublishAlbum = Callable[[Album], Awaitable[None]]
"""Publishes one album; returns when it is on the bus or dropped for good, raises to
have it tried again once its claim lapses."""


class AlbumFlusher:
    """Publishes albums when due: woken by this process's parts, else by a timer.

    The timer is the next due time read from Redis, bounded by ``rescan_s``: an album
    left by a dead process (or stashed by another webhook replica that died) wakes
    nobody, so it is found by that bounded re-read (one script call per ``rescan_s``
    when idle), the same way a lapsed connection lease is. Each album is flushed in a
    task of its own: a slow download holds up only its album; ``most_at_once`` of them
    at a time. A failed flush is retried by a later look (the timer, a part, another
    flush's end), never at once: a failing Redis would otherwise be retried in a loop.
    """

    most_at_once = 32
    """Flushes under way at most: a flood of albums waits in Redis, not in this process
    (each flush holds an album's downloaded files)."""

    def __init__(self, buffer: AlbumBuffer, publish: PublishAlbum, *, rescan_s: float) -> None:
        self.buffer = buffer
        self._publish = publish
        self.rescan_s = rescan_s
        self._wake = asyncio.Event()
        self._flushing: set[str] = set()

    @property
    def name(self) -> str:
        return self.buffer.channel

    async def stash(self, album: str, update_id: int, payload: str) -> bool:
        stored = await self.buffer.stash(album, update_id, payload)
        if stored:
            self._wake.set()  # the flusher's timer may be later than this album's window
        return stored

    async def run(self) -> None:
        """Flush due albums until cancelled (flushes under way are cancelled with it)."""
        async with asyncio.TaskGroup() as flushes:
            while True:
                self._wake.clear()  # before reading: a part stashed meanwhile wakes us again
                try:
                    wait_s = await self._start_due(flushes)
                except (RedisError, OSError) as exc:
                    log.warning("channel %s: albums unreadable, retrying: %r", self.name, exc)
                    wait_s = self.rescan_s
                # Not wait_for: on 3.11 it swallows a cancel that meets a wake-up.
                with contextlib.suppress(TimeoutError):  # the timer: time to look
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()

    async def _start_due(self, flushes: asyncio.TaskGroup) -> float:
        """Start a flush for albums due now, up to ``most_at_once``; seconds to the next look."""
        room = self.most_at_once - len(self._flushing)
        if room <= 0:
            return self.rescan_s  # a flush that ends wakes us (a failed one: this timer)
        # Ours whose claim lapsed are listed too (and skipped): ask for room beyond them.
        albums, next_s = await self.buffer.due(room + len(self._flushing))
        for album in [a for a in albums if a not in self._flushing][:room]:
            self._flushing.add(album)
            flushes.create_task(self._flush(album), name=f"album {album}")
        return self.rescan_s if next_s is None else min(next_s, self.rescan_s)

    async def _flush(self, album: str) -> None:
        failed = False
        try:
            claimed = await self.buffer.claim(album)
            if claimed is None:
                return  # another flusher has it
            await self._publish(claimed)
            await self.buffer.finish(claimed)
        except Exception as exc:  # tried again when its claim lapses (or at the next look)
            failed = True
            log.warning(
                "channel %s: album %s not published yet, retried later: %r", self.name, album, exc
            )
        finally:
            self._flushing.discard(album)
            # After a failure, no look at once: an album whose claim failed is still due,
            # and it would be retried in a tight loop for as long as the error lasts.
            if not failed:
                self._wake.set()  # look again: the finish may have left parts due, or room
