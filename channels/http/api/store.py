"""Agent-API sessions in Redis: who owns them (agent, metadata) and their history.

A session made by ``POST /v1/sessions`` (or by an invoke without ``session_id``)
is the bus session of channel ``api``, chat ``<session id>``: its history is the
worker's stored session, its record (agent, metadata, created_at) lives beside it
under the same hash tag, and two sorted sets (all, per agent) list them.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.core.bus import keys
from gateway.core.bus.scripts import DISCARD_SESSION
from gateway.core.messages import default_session_key, new_id

from .models import HistoryMessage, MetadataValue, Session, SessionDetail, is_ulid
from .runs import session_keys

API_CHANNEL = "api"


class SessionRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    session_id: str
    agent: str
    metadata: dict[str, MetadataValue]
    created_at: float

    @property
    def session_key(self) -> str:
        return session_key_of(self.session_id)


def session_key_of(session_id: str) -> str:
    return default_session_key(API_CHANNEL, session_id)


async def create_session(
    redis: Redis, agent: str, metadata: dict[str, MetadataValue]
) -> SessionRecord:
    record = SessionRecord(
        session_id=new_id(), agent=agent, metadata=metadata, created_at=time.time()
    )
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.api_session(record.session_key), record.model_dump_json())
        pipe.zadd(keys.API_SESSIONS, {record.session_id: record.created_at})
        pipe.zadd(keys.api_sessions_of(agent), {record.session_id: record.created_at})
        await pipe.execute()
    return record


async def get_record(redis: Redis, session_id: str) -> SessionRecord:
    """The session's record; 404 when there is none."""
    if not is_ulid(session_id):
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    raw = await redis.get(keys.api_session(session_key_of(session_id)))
    if raw is None:
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    return SessionRecord.model_validate_json(raw)


async def list_sessions(redis: Redis, agent: str | None, limit: int) -> list[Session]:
    """The newest ``limit`` sessions (of ``agent`` when given), newest first."""
    index = keys.api_sessions_of(agent) if agent else keys.API_SESSIONS
    ids = cast(list[str], await redis.zrevrange(index, 0, limit - 1))
    async with redis.pipeline(transaction=False) as pipe:
        for session_id in ids:
            pipe.get(keys.api_session(session_key_of(session_id)))
            pipe.get(keys.session(session_key_of(session_id)))
        raw = await pipe.execute()
    rows: list[Session] = []
    for record_json, history_json in zip(raw[::2], raw[1::2], strict=True):
        if record_json is not None:  # deleted between the two reads
            record = SessionRecord.model_validate_json(record_json)
            rows.append(_summary(record, _history(history_json)))
    return rows


async def session_detail(redis: Redis, session_id: str) -> SessionDetail:
    record = await get_record(redis, session_id)
    history = _history(await redis.get(keys.session(record.session_key)))
    messages = [
        HistoryMessage(role=str(m.get("role", "")), content=_text(m.get("content")))
        for m in history.get("messages", [])
        if m.get("role") in ("user", "assistant")
    ]
    return SessionDetail(**_summary(record, history).model_dump(), messages=messages)


async def delete_session(redis: Redis, session_id: str) -> None:
    """Delete the session and its streams; 409 while a message still waits for its turn."""
    record = await get_record(redis, session_id)
    done = await DISCARD_SESSION.run(redis, session_keys(record.session_key), [])
    if done != 1:
        raise ApiError(409, "invalid_request", "the session has a turn in progress; retry later")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.API_SESSIONS, session_id)
        pipe.zrem(keys.api_sessions_of(record.agent), session_id)
        pipe.zrem(keys.SESSIONS_INDEX, record.session_key)
        await pipe.execute()


def _history(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {}  # a corrupt session: the worker copies it aside on its next turn
    return data if isinstance(data, dict) else {}


def _summary(record: SessionRecord, history: dict[str, Any]) -> Session:
    messages = history.get("messages", [])
    turns = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    last_active = history.get("updated_at")
    return Session(
        session_id=record.session_id,
        agent=record.agent,
        metadata=record.metadata,
        created_at=record.created_at,
        last_active_at=float(last_active) if last_active else record.created_at,
        turns=turns,
    )


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
