"""arq side jobs (schedule-tool reminders, idle compaction), ``python -m gateway.workers``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.errors import ToolError
from gateway.core.messages import InboundMessage
from gateway.core.sessions.base import Session
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.tools.base import ToolContext
from gateway.workers.jobs import (
    REMINDER_PREFIX,
    STATE_KEY,
    JobState,
    compact_idle_sessions,
    create_job_pool,
    schedule_tool,
)
from tests.integration.test_worker_kit import (
    CHANNEL,
    Transcript,
    bus_settings,
    heartbeat_of,
    running_arq,
    running_workers,
    runtime_for,
    send,
    session_key,
    target_of,
)

ROOT = Path(__file__).resolve().parents[2]


def tool_context(tmp_path: Path, chat: str) -> ToolContext:
    return ToolContext(
        session_key=session_key(chat),
        run_id="5-0",
        workspace=tmp_path,
        channel=CHANNEL,
        chat_id=chat,
        sender_id="u1",
    )


async def test_schedule_tool_reminder_arrives_later_in_the_same_chat(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = bus_settings(tmp_path)
    pool = await create_job_pool(target_of(redis_url))
    schedule = schedule_tool(pool)
    ctx = tool_context(tmp_path, "remind")
    key = session_key("remind")
    transcript = Transcript(redis, [key])
    try:
        answer = await schedule.invoke({"message": "drink water", "in_seconds": 1}, ctx)
        assert answer.startswith("Reminder scheduled for ")
        again = await schedule.invoke({"message": "drink water", "in_seconds": 1}, ctx)
        assert again.startswith("Reminder already scheduled")  # a re-run schedules nothing twice
        scheduled_at = time.monotonic()
        async with running_arq(settings, redis_url), running_workers(settings, redis):
            await transcript.runs_ended(1, seconds=15)
        assert time.monotonic() - scheduled_at >= 0.9
    finally:
        await pool.aclose()
    assert transcript.replies(key) == [REMINDER_PREFIX + "drink water"]


async def test_schedule_tool_rejects_bad_times(redis_url: str, tmp_path: Path) -> None:
    pool = await create_job_pool(target_of(redis_url))
    schedule = schedule_tool(pool)
    ctx = tool_context(tmp_path, "bad")
    try:
        with pytest.raises(ToolError, match="exactly one"):
            await schedule.invoke({"message": "x"}, ctx)
        with pytest.raises(ToolError, match="future"):
            await schedule.invoke({"message": "x", "at": "2001-01-01T00:00:00"}, ctx)
        with pytest.raises(ToolError, match="ISO 8601"):
            await schedule.invoke({"message": "x", "at": "tomorrow-ish"}, ctx)
    finally:
        await pool.aclose()


async def test_compaction_of_idle_sessions_under_the_lease(redis: Redis, tmp_path: Path) -> None:
    settings = bus_settings(tmp_path, ready_partitions=1)
    runtime = runtime_for(settings, redis)
    store = RedisSessionStore(redis)
    key = session_key("idle")
    messages = [
        {"role": role, "content": f"{role} {i}"}
        for i in range(10)
        for role in ("user", "assistant")
    ]
    await store.save(Session(key=key, messages=messages))
    await redis.zadd(keys.SESSIONS_INDEX, {key: time.time() - 2 * 3600})
    # A message that arrived while compaction held the lease: the worker that saw the
    # lease held acked its signal, so the compactor must signal again.
    await send(redis, settings, "idle", "are you there?")
    await redis.delete(keys.ready(0))
    ctx = {STATE_KEY: JobState(settings=settings, redis=redis, runtime=runtime)}
    try:
        assert await compact_idle_sessions(ctx) == 1
    finally:
        await runtime.aclose()
    session = await store.load(key)
    assert session is not None
    assert session.summary
    assert len(session.messages) <= 8
    assert await redis.xlen(keys.ready(0)) == 1
    assert await redis.get(keys.lease(key)) is None


async def test_python_m_workers_runs_and_stops_on_sigterm(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": "echo/echo",
                "workspace": str(tmp_path / "ws"),
                "worker": {"ready_partitions": 2, "coalesce_ms": 5},
            }
        ),
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.workers",
        "--redis-url",
        redis_url,
        "--config",
        str(config),
        "--worker-id",
        "proc1",
        "--stop-grace",
        "2",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert line.decode().strip() == "worker proc1 ready"
        settings = bus_settings(tmp_path, ready_partitions=2)
        message = InboundMessage(channel=CHANNEL, chat_id="proc", sender_id="u", text="ping")
        transcript = Transcript(redis, [message.session_key])
        await send(redis, settings, "proc", "ping")
        await transcript.runs_ended(1, seconds=20)
        assert transcript.replies(message.session_key) == ["ping"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert await heartbeat_of(redis, "proc1") is None
