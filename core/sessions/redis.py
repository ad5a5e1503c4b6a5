"""Redis session store (bus mode): a head and a log per session, plus an index.

The stored form (``core.sessions.redis_form``): ``keys.session_head(k)`` (a hash of
the small fields) and ``keys.session_log(k)`` (a list of messages, appended to by
each turn); a session still in the old single-JSON form at ``keys.session(k)`` is
read and converted by its next write. Reads and writes are scripts, so readers see
a whole write or none of it. ``keys.SESSIONS_INDEX`` is a sorted set ``session key
-> updated_at`` used for listings and idle compaction, written by the same scripts.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as redis
from pydantic_core import from_json

from gateway.core.bus import keys
from gateway.core.bus.scripts import LOAD_SESSION, SAVE_SESSION, ScriptArg
from gateway.core.errors import SessionError
from gateway.core.sessions.base import Session, SessionInfo
from gateway.core.sessions.redis_form import StoredSession, document, full_write, parse_stored

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
        stored = await self.load_stored(key)
        return None if stored is None else stored.session

    async def load_stored(self, key: str) -> StoredSession | None:
        """The stored session with what a later append needs (see ``redis_form``)."""
        async with _storage_errors("load", key):
            reply = await LOAD_SESSION.run(self._redis, keys.stored_session(key), [])
            head, log_, count, old = cast(list[Any], reply)
            return await self.parse(key, head, log_, count, old)

    async def parse(
        self,
        key: str,
        head: Sequence[str | bytes],
        log_: str | bytes,
        count: int,
        old: str | bytes | None,
    ) -> StoredSession | None:
        """A session as read by a script (``LOAD_SESSION``, ``BEGIN_TURN``); a corrupt one
        is copied to ``keys.session_corrupt`` and replaced by an empty session (which
        its next write stores in place of it)."""
        try:
            return parse_stored(key, head, log_, count, old)
        except ValueError as exc:
            log.warning(
                "session %r in redis is corrupt (%s); copied to %s, starting empty",
                key,
                exc.__class__.__name__,
                keys.session_corrupt(key),
            )
            raw = old if not head else _raw_document(key, head, log_)
            async with _storage_errors("copy aside", key):
                await self._redis.set(keys.session_corrupt(key), raw or "")
            return StoredSession.of(Session(key=key), length=count, rewrite=True)

    async def save(self, session: Session) -> None:
        """Persist ``session`` (replacing what is stored) and set its ``updated_at`` to now."""
        session.updated_at = time.time()
        write = full_write(session)
        args: list[ScriptArg] = [session.key, write.updated_at, write.head_fields]
        args.append(len(write.messages))
        async with _storage_errors("save", session.key):
            await SAVE_SESSION.run(
                self._redis,
                [*keys.stored_session(session.key), keys.SESSIONS_INDEX],
                [*args, *write.head, *write.messages],
            )

    async def delete(self, key: str) -> bool:
        async with _storage_errors("delete", key), self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(*keys.stored_session(key))
            pipe.zrem(keys.SESSIONS_INDEX, key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def list(self) -> builtins.list[SessionInfo]:
        """One row per indexed session (index entries whose value is gone are skipped)."""
        async with _storage_errors("list"):
            members = await self._redis.zrange(keys.SESSIONS_INDEX, 0, -1)
            session_keys = [_text(member) for member in members]
            infos: list[SessionInfo] = []
            for start in range(0, len(session_keys), _LIST_BATCH):
                infos.extend(await self._infos(session_keys[start : start + _LIST_BATCH]))
        return infos

    async def _infos(self, batch: builtins.list[str]) -> builtins.list[SessionInfo]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hmget(keys.session_head(key), ["created_at", "updated_at"])
                pipe.llen(keys.session_log(key))
            replies = await pipe.execute()
        infos: list[SessionInfo] = []
        old_form: list[str] = []
        for key, head, length in zip(batch, replies[::2], replies[1::2], strict=True):
            if head[0] is None:
                old_form.append(key)
                continue
            created, updated = (float(_text(v)) for v in head)
            infos.append(
                SessionInfo(key=key, message_count=length, created_at=created, updated_at=updated)
            )
        if old_form:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in old_form:
                    pipe.get(keys.session(key))
                values = await pipe.execute()
            infos.extend(
                info
                for key, raw in zip(old_form, values, strict=True)
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


async def session_documents(
    client: redis.Redis, session_keys: Sequence[str]
) -> builtins.list[str | None]:
    """Each session as one JSON document (the shape of ``Session``), None when none is
    stored: for readers that only look (the agent API's listings). One round trip."""
    async with client.pipeline(transaction=True) as pipe:
        for key in session_keys:
            pipe.hgetall(keys.session_head(key))
            pipe.lrange(keys.session_log(key), 0, -1)
            pipe.get(keys.session(key))
        replies = await pipe.execute()
    documents: list[str | None] = []
    for i, key in enumerate(session_keys):
        head, log_, old = replies[3 * i : 3 * i + 3]
        if head:
            flat = [value for pair in head.items() for value in pair]
            documents.append(document(key, flat, ",".join(_text(m) for m in log_)))
        else:
            documents.append(None if old is None else _text(old))
    return documents


def _raw_document(key: str, head: Sequence[str | bytes], log_: str | bytes) -> str:
    try:
        return document(key, head, log_)
    except ValueError:  # the head itself is broken: keep what can be kept
        return repr([head, log_])


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
