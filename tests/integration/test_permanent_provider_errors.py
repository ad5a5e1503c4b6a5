"""A permanent provider error (refused key, unknown model, missing credentials) is not
retried: the chat gets one short error at once, nothing is dead-lettered; a transient
one (500) still is retried."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.events import RunFailed
from gateway.core.settings import AgentSettings, ProviderSettings
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.integration.test_worker_kit import (
    Transcript,
    bus_settings,
    running_workers,
    send,
    session_key,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("status", "expected"), [(401, "HTTP 401"), (403, "HTTP 403"), (404, "HTTP 404")]
)
async def test_refused_key_or_unknown_model_fails_once_without_retry(
    status: int, expected: str, redis: Redis, tmp_path: Path
) -> None:
    async with FakeModelServer() as model:
        model.script(Reply(status=status, error_message="no such thing"))
        settings = bus_settings(tmp_path, fake=model, max_deliveries=3)
        key = session_key("c1")
        transcript = Transcript(redis, [key])
        async with running_workers(settings, redis, 1):
            await send(redis, settings, "c1", "hello?")
            await transcript.until(lambda t: len(t.terminals(key)) >= 1)
    assert len(model.requests) == 1, "a permanent error is never retried"
    (end,) = transcript.terminals(key)
    assert isinstance(end, RunFailed) and end.permanent
    assert expected in end.error and "no such thing" in end.error
    assert await redis.xlen(keys.DEAD_LETTER) == 0


async def test_missing_credentials_fail_at_once(
    redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = bus_settings(
        tmp_path,
        providers={"openai": ProviderSettings()},
        extra_agents={"keyless": AgentSettings(model="openai/gpt-4o-mini", tools=[])},
    )
    key = session_key("c2")
    transcript = Transcript(redis, [key])
    async with running_workers(settings, redis, 1):
        await send(redis, settings, "c2", "hi", agent="keyless")
        await transcript.until(lambda t: len(t.terminals(key)) >= 1)
    (end,) = transcript.terminals(key)
    assert isinstance(end, RunFailed) and end.permanent and "api_key" in end.error
    assert await redis.xlen(keys.DEAD_LETTER) == 0


async def test_a_server_error_is_still_retried(redis: Redis, tmp_path: Path) -> None:
    async with FakeModelServer() as model:
        model.script(Reply(status=500, error_message="busy"))
        settings = bus_settings(tmp_path, fake=model, max_deliveries=3)
        key = session_key("c3")
        transcript = Transcript(redis, [key])
        async with running_workers(settings, redis, 1):
            await send(redis, settings, "c3", "again")
            await transcript.until(lambda t: len(t.terminals(key)) >= 1, seconds=30)
    assert len(model.requests) == 2  # the 500, then the echo reply
    assert transcript.replies(key) == ["echo: again"]
