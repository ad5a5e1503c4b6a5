"""Shared helpers of the worker integration tests (this module holds no tests).

Settings for a fast bus, in-process ``Worker`` instances, publishing inbound
messages, and waiting for replies with blocking reads of the outbound streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

from arq import Worker as ArqWorker
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.client import RedisTarget
from gateway.core.bus.codec import decode_event
from gateway.core.bus.inbound import publish_inbound
from gateway.core.bus.signals import stream_batches
from gateway.core.events import RunCompleted, RunFailed, StreamEvent
from gateway.core.messages import InboundMessage, default_session_key
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import (
    AgentSettings,
    BusyPolicy,
    ProviderSettings,
    RedisSettings,
    Settings,
    WorkerSettings,
)
from gateway.workers.jobs import arq_worker_settings
from gateway.workers.worker import Worker
from tests.fakes.openai_server import FakeModelServer

CHANNEL = "telegram"


def bus_settings(
    tmp_path: Path,
    *,
    fake: FakeModelServer | None = None,
    policy: BusyPolicy = "followup",
    max_backlog: int = 20,
    extra_agents: dict[str, AgentSettings] | None = None,
    providers: dict[str, ProviderSettings] | None = None,
    **worker: Any,
) -> Settings:
    """Echo model (or the fake server's), no tools, quick leases and claims."""
    all_providers = dict(providers or {})
    if fake is not None:
        all_providers["local"] = ProviderSettings(
            base_url=fake.base_url, api_key="none", max_retries=0
        )
    agent = AgentSettings(
        system_prompt="sys", tools=[], busy_policy=policy, max_backlog=max_backlog
    )
    defaults: dict[str, Any] = {
        "coalesce_ms": 5,
        "ready_partitions": 4,
        "lease_ms": 3000,
        "claim_idle_ms": 3000,
        "concurrency": 8,
    }
    return Settings(
        model="local/fake-model" if fake is not None else "echo/echo",
        providers=all_providers,
        workspace=tmp_path / "workspace",
        agents={"assistant": agent, **(extra_agents or {})},
        worker=WorkerSettings(**{**defaults, **worker}),
    )


def session_key(chat: str) -> str:
    return default_session_key(CHANNEL, chat)


async def send(
    redis: Redis, settings: Settings, chat: str, text: str, *, agent: str | None = None
) -> str:
    """Publish one inbound message; its entry id in the chat's stream."""
    message = InboundMessage(channel=CHANNEL, chat_id=chat, sender_id="u1", text=text, agent=agent)
    cfg = settings.worker
    published = await publish_inbound(
        redis, message, partitions=cfg.ready_partitions, maxlen=cfg.stream_maxlen
    )
    assert published.entry_id is not None
    return published.entry_id


def runtime_for(settings: Settings, redis: Redis) -> AgentRuntime:
    return AgentRuntime(settings, store=RedisSessionStore(redis))


@asynccontextmanager
async def running_workers(
    settings: Settings, redis: Redis, count: int = 1, *, name: str = "w", **options: Any
) -> AsyncIterator[list[Worker]]:
    """``count`` started workers (ids ``{name}0``, ``{name}1``…), each with its own runtime."""
    async with AsyncExitStack() as stack:
        workers = []
        for index in range(count):
            runtime = runtime_for(settings, redis)
            stack.push_async_callback(runtime.aclose)
            worker = Worker(settings, redis, runtime, worker_id=f"{name}{index}", **options)
            workers.append(await stack.enter_async_context(worker))
        yield workers


@asynccontextmanager
async def running_arq(
    settings: Settings, redis_url: str, **options: Any
) -> AsyncIterator[ArqWorker]:
    """arq's real worker, in-process, polling every 20 ms."""
    jobs = ArqWorker(
        **arq_worker_settings(settings, target=target_of(redis_url), **options), poll_delay=0.02
    )
    task = asyncio.create_task(jobs.async_run())
    try:
        yield jobs
    finally:
        await jobs.close()
        task.cancel()
        await asyncio.wait([task])


class Transcript:
    """Reads chats' outbound streams with blocking XREADs; groups events by session."""

    def __init__(self, redis: Redis, session_keys: Sequence[str]) -> None:
        self._redis = redis
        self.events: dict[str, list[StreamEvent]] = {key: [] for key in session_keys}
        self._after = dict.fromkeys(session_keys, "0-0")

    def terminals(self, key: str) -> list[RunCompleted | RunFailed]:
        return [e for e in self.events[key] if isinstance(e, RunCompleted | RunFailed)]

    def replies(self, key: str) -> list[str]:
        return [e.content for e in self.events[key] if isinstance(e, RunCompleted)]

    async def until(self, done: Callable[[Transcript], bool], *, seconds: float = 20.0) -> None:
        async with asyncio.timeout(seconds):
            while not done(self):
                await self._read()

    async def runs_ended(self, count: int, *, seconds: float = 20.0) -> None:
        """Wait until every chat has ``count`` terminal events."""
        await self.until(
            lambda t: all(len(t.terminals(k)) >= count for k in t.events), seconds=seconds
        )

    async def _read(self) -> None:
        reply = await self._redis.xread(
            {keys.outbound(key): after for key, after in self._after.items()},
            count=1000,
            block=1000,
        )
        by_stream = {keys.outbound(key): key for key in self._after}
        for stream, entries in stream_batches(reply):
            key = by_stream[stream]
            for entry_id, fields in entries:
                self.events[key].append(decode_event(fields))
                self._after[key] = entry_id


async def heartbeat_of(redis: Redis, worker_id: str) -> str | None:
    """The worker's last heartbeat, None when it has none (stopped, or never started)."""
    return cast(str | None, await redis.get(keys.worker_heartbeat(worker_id)))


def target_of(redis_url: str) -> RedisTarget:
    """The test server as the client factory sees a configured ``redis.url``."""
    return RedisTarget(RedisSettings(), redis_url, "config")
