"""Redis session store (bus mode): one JSON value per session plus an index.

``keys.session(k)`` holds the whole session as JSON, written with one SET so readers
see the old value or the new one. ``keys.SESSIONS_INDEX`` is a sorted set
``session key -> updated_at`` used for listings and idle compaction. The two are
written in one non-transactional pipeline (one round trip): they live in different
cluster slots, and a stale index score only delays an idle compaction.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from pydantic_core import from_json

from gateway.core.bus import keys
from gateway.core.errors import SessionError
from gateway.core.sessions.base import Session, SessionInfo

log = logging.getLogger(__name__)

_LIST_BATCH = 256
"""Sessions fetched per pipeline round trip when listing."""


@asynccontextmanager
async def _storage_errors(action: str, session_key: str | None = None) -> AsyncIterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        target = f" of session {session_key!r}" if session_key is not None else ""
        raise SessionError(f"redis session store: {action}{target} failed: {exc}") from exc


class RedisSessionStore:
    """``SessionStore`` on a ``redis.asyncio.Redis`` client (bytes or str replies)."""

    def __init__(self, client: redis.Redis, *, owns_client: bool = False) -> None:
        self._redis = client
        self._owns_client = owns_client

    async def load(self, key: str) -> Session | None:
        """The stored session; a corrupt value is copied aside and an empty session returned."""
        async with _storage_errors("load", key):
            raw = await self._redis.get(keys.session(key))
            if raw is None:
                return None
            try:
                return Session.model_validate_json(raw)
            except ValueError as exc:
                log.warning(
                    "session %r in redis is corrupt (%s); copied to %s, starting empty",
                    key,
                    exc.__class__.__name__,
                    keys.session_corrupt(key),
                )
                await self._redis.set(keys.session_corrupt(key), raw)
                return Session(key=key)

    async def save(self, session: Session) -> None:
        """Persist ``session`` and set its ``updated_at`` to now."""
        session.updated_at = time.time()
        payload = session.model_dump_json()
        async with (
            _storage_errors("save", session.key),
            self._redis.pipeline(transaction=False) as pipe,
        ):
            pipe.set(keys.session(session.key), payload)
            pipe.zadd(keys.SESSIONS_INDEX, {session.key: session.updated_at})
            await pipe.execute()

    async def delete(self, key: str) -> bool:
        async with _storage_errors("delete", key), self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.session(key))
            pipe.zrem(keys.SESSIONS_INDEX, key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def list(self) -> list[SessionInfo]:
        """One row per indexed session (index entries whose value is gone are skipped)."""
        async with _storage_errors("list"):
            members = await self._redis.zrange(keys.SESSIONS_INDEX, 0, -1)
            session_keys = [_text(member) for member in members]
            infos: list[SessionInfo] = []
            for start in range(0, len(session_keys), _LIST_BATCH):
                batch = session_keys[start : start + _LIST_BATCH]
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.get(keys.session(key))
                    values = await pipe.execute()
                infos.extend(
                    info
                    for key, raw in zip(batch, values, strict=True)
                    if raw is not None and (info := _info(key, raw)) is not None
                )
        return infos

    async def idle_sessions(self, older_than_s: float) -> builtins.list[str]:
        """Keys of sessions not saved for at least ``older_than_s`` seconds, oldest first."""
        async with _storage_errors("idle scan"):
            members = await self._redis.zrangebyscore(
                keys.SESSIONS_INDEX, "-inf", time.time() - older_than_s
            )
        return [_text(member) for member in members]

    async def flush(self) -> None:
        """Nothing to do: each save is an acknowledged SET, and durability beyond that
        is the Redis server's persistence setting (AOF fsync policy), not the store's."""

    async def aclose(self) -> None:
        """Close the client when this store was given ownership of it."""
        if self._owns_client:
            await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _info(key: str, raw: bytes | str) -> SessionInfo | None:
    try:
        data: Any = from_json(raw)
        return SessionInfo(
            key=key,
            message_count=len(data["messages"]),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("session %r in redis is corrupt (%s); left out of the listing", key, exc)
        return None
