"""``LuaScript``: run by SHA with a one-time load on ``NOSCRIPT``."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

ScriptArg = str | int | float


class LuaScript:
    """One script; the SHA is computed once so a call is a single ``EVALSHA``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()

    async def run(self, redis: Redis, keys: Sequence[str], args: Sequence[ScriptArg]) -> object:
        try:
            return await self._evalsha(redis, keys, args)
        except NoScriptError:
            # A restarted or different server has an empty script cache: load and retry once.
            await cast(Awaitable[str], redis.script_load(self.source))
            return await self._evalsha(redis, keys, args)

    async def _evalsha(
        self, redis: Redis, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> object:
        # redis-py annotates the arguments as str but encodes ints and floats as well.
        reply = redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        return await cast(Awaitable[object], reply)
