"""What every agent-API handler shares: Redis, settings, body parsing, background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.channels.http.ingress import IngressMetrics
from gateway.channels.http.ingress import _describe as describe
from gateway.channels.http.parsing import read_json_body
from gateway.core.errors import UnknownModelError
from gateway.core.messages import InboundMessage
from gateway.core.providers.router import ModelRouter
from gateway.core.settings import AgentSettings, Settings

from .runs import RunRef, start_run

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

WAIT_MARGIN_S = 30.0


@dataclass(slots=True)
class ApiContext:
    redis: Redis
    settings: Settings
    metrics: IngressMetrics | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def agent_names(self) -> list[str]:
        return sorted({self.settings.default_agent, *self.settings.agents})

    def agent(self, name: str) -> AgentSettings:
        """The named agent's settings; 404 when there is no such agent."""
        if name not in self.agent_names():
            raise ApiError(404, "not_found", f"no agent named {name!r}")
        return self.settings.agent(name)

    def model_of(self, name: str) -> tuple[str, bool]:
        """The agent's model as a worker resolves it, and whether it resolves at all (a
        provider that is not configured here makes the agent ``unavailable``)."""
        agent = self.settings.agent(name)
        try:
            return ModelRouter(self.settings).resolve(agent.model, agent.model_preset).name, True
        except (UnknownModelError, ValueError):
            return agent.model or agent.model_preset or "", False

    def wait_s(self, agent: str) -> float:
        """How long a request waits for its run: every attempt, each after a claim."""
        worker = self.settings.worker
        per_attempt = self.settings.agent(agent).timeout_s + worker.claim_idle_ms / 1000
        return per_attempt * worker.max_deliveries + WAIT_MARGIN_S

    async def body(self, request: web.Request, model: type[M]) -> M:
        """The request body validated by ``model``: 400 not JSON, 413 too big, 422 invalid."""
        http = self.settings.http
        data = await read_json_body(request, http.max_body_bytes, timeout_s=http.body_timeout_s)
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_request", "the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ApiError(422, "invalid_request", describe(exc)) from None

    async def publish(self, msg: InboundMessage) -> RunRef:
        worker = self.settings.worker
        return await start_run(
            self.redis,
            msg,
            partitions=worker.ready_partitions,
            maxlen=worker.stream_maxlen,
            accepted=self.metrics.messages_in if self.metrics is not None else None,
        )

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> asyncio.Task[Any]:
        """Run ``work`` past the request; logged if it fails, cancelled at shutdown."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=error)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
