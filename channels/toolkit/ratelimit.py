"""Shared platform rate limits: token buckets in Redis that every replica takes from.

Before each send or edit the deliverer takes one token from the bot's bucket and
one from the chat's (``RATE_LIMIT``, all or none, on the server's clock), so any
number of gateway replicas stay inside one platform limit together. A platform's
429 with a retry-after ``pause``s the bucket it names for every replica.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.scripts import RATE_LIMIT

MAX_SLEEP_S = 5.0
"""Longest single wait for a token (taken again after it: a pause may have been extended)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """``capacity`` tokens (the burst), refilled at ``per_s`` tokens a second."""

    capacity: float
    per_s: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.per_s <= 0:
            raise ValueError(f"a bucket needs capacity >= 1 and a positive rate: {self}")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A platform's limits: one bucket per bot (token) and one per chat."""

    bot: Bucket
    chat: Bucket


PLATFORM_LIMITS: dict[str, RateLimits] = {
    # ~30 messages/s per bot, ~1 message/s per chat.
    "telegram": RateLimits(bot=Bucket(30, 30.0), chat=Bucket(1, 1.0)),
    # chat.postMessage / chat.update: about 1 per second per channel (Tier "special").
    "slack": RateLimits(bot=Bucket(50, 50.0), chat=Bucket(1, 1.0)),
    # 5 messages per 5 s per channel; 50 requests/s per bot.
    "discord": RateLimits(bot=Bucket(50, 50.0), chat=Bucket(5, 1.0)),
}


class RateLimiter:
    """Takes tokens for one channel's sends and edits from the shared buckets."""

    def __init__(self, redis: Redis, channel: str, limits: RateLimits) -> None:
        self.redis = redis
        self.channel = channel
        self.limits = limits
        self._bot = keys.channel_rate(channel, "bot")

    def _chat(self, chat_id: str) -> str:
        return keys.channel_rate(self.channel, f"chat:{chat_id}")

    async def try_take(self, chat_id: str) -> float:
        """Take a token for a call in ``chat_id``: 0.0 when taken, else seconds to wait."""
        bot, chat = self.limits.bot, self.limits.chat
        args: list[str | float] = [
            "take",
            bot.capacity,
            bot.per_s / 1000,
            chat.capacity,
            chat.per_s / 1000,
        ]
        wait_ms = await RATE_LIMIT.run(self.redis, [self._bot, self._chat(chat_id)], args)
        return cast(int, wait_ms) / 1000

    async def take(self, chat_id: str) -> None:
        """Wait until a token for ``chat_id`` is taken."""
        wait_s = await self.try_take(chat_id)
        while wait_s > 0:
            # A timer, not a condition: the bucket (on Redis' clock) says when to ask again.
            await asyncio.sleep(min(wait_s, MAX_SLEEP_S))
            wait_s = await self.try_take(chat_id)

    async def pause(self, seconds: float, chat_id: str | None = None) -> None:
        """No replica sends to ``chat_id`` (or, with None, on this bot) for ``seconds``."""
        key = self._bot if chat_id is None else self._chat(chat_id)
        await RATE_LIMIT.run(self.redis, [key], ["pause", max(1, round(seconds * 1000))])
