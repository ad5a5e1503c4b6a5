"""Pipelines: named sequences of agents, each step's output the next step's input.

A run is orchestrated here, in the gateway that accepted it, but every step is a
bus run (a worker runs the agent) on a one-off session ``pipeline:<run id>.<step>``,
discarded once its turn is committed. The run's state is written to Redis after
every change (``keys.pipeline_run``), so any replica answers its status, also
after this gateway restarts. A gateway that dies mid-run leaves the run
``running`` with its last step's state: it is not resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from aiohttp import web
from pydantic import BaseModel
from redis.asyncio import Redis

from gateway.channels.http.errors import ApiError
from gateway.core.bus import keys
from gateway.core.errors import ConfigError
from gateway.core.messages import MAX_TEXT_CHARS, InboundMessage, new_id
from gateway.core.settings import PipelineSettings, Settings

from .context import ApiContext
from .json import json_response
from .models import PipelineRun, PipelineRunRequest, PipelineStatus, PipelineStep, is_ulid
from .runs import discard_when_committed
from .stream import final_event

log = logging.getLogger(__name__)

PIPELINE_CHANNEL = "pipeline"
STATE_TTL_S = 7 * 86_400
RESERVED_NAMES = frozenset({"runs"})
"""``GET /v1/pipelines/runs/{id}`` would shadow a pipeline of that name."""

StepStatus = Literal["pending", "running", "completed", "failed"]


class StepState(BaseModel):
    name: str
    agent: str
    status: StepStatus = "pending"
    started_at: float | None = None
    finished_at: float | None = None
    run_id: str | None = None


class RunState(BaseModel):
    """A pipeline run as stored in Redis (mutable while the run goes on)."""

    run_id: str
    pipeline: str
    status: Literal["running", "completed", "failed"] = "running"
    output: str | None = None
    error: str | None = None
    steps: list[StepState]
    started_at: float
    finished_at: float | None = None

    def response(self) -> PipelineRun:
        end = self.finished_at or time.time()
        return PipelineRun(
            run_id=self.run_id,
            pipeline=self.pipeline,
            status=self.status,
            output=self.output,
            error=self.error,
            steps=[_step(step) for step in self.steps],
            started_at=self.started_at,
            elapsed_ms=_ms(self.started_at, end),
        )


def check_pipelines(settings: Settings) -> None:
    """A pipeline naming an unknown agent, or a reserved name, stops the start."""
    known = {settings.default_agent, *settings.agents}
    for name, pipeline in settings.pipelines.items():
        if name in RESERVED_NAMES:
            raise ConfigError(f"pipelines.{name}: {name!r} is reserved; choose another name")
        for index, step in enumerate(pipeline.steps):
            if step.agent not in known:
                raise ConfigError(
                    f"pipelines.{name}.steps.{index}.agent = {step.agent!r}: no such agent "
                    f"(configured: {sorted(known)})"
                )


class PipelineRoutes:
    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/pipelines/runs/{run_id}", self.get_run),
            web.post("/v1/pipelines/{name}/runs", self.start),
            web.get("/v1/pipelines/{name}/status", self.status),
        ]

    async def start(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        pipeline = self._pipeline(name)
        wait = _wait_param(request.query.get("wait", "true"))
        body = await self._ctx.body(request, PipelineRunRequest)
        state = RunState(
            run_id=new_id(),
            pipeline=name,
            steps=[StepState(name=s.agent, agent=s.agent) for s in pipeline.steps],
            started_at=time.time(),
        )
        await _save(self._ctx.redis, state)
        await self._ctx.redis.set(keys.pipeline_latest(name), state.run_id, ex=STATE_TTL_S)
        task = self._ctx.spawn(self._run(state, body.input), f"pipeline {name} {state.run_id}")
        if not wait:
            return json_response(state.response(), status=202)
        # Shielded: a client that hangs up does not stop the run (its status stays readable).
        await asyncio.shield(task)
        return json_response(state.response())

    async def status(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._pipeline(name)
        run_id = await self._ctx.redis.get(keys.pipeline_latest(name))
        state = await _load(self._ctx.redis, run_id) if run_id else None
        if state is None:
            return json_response(PipelineStatus(pipeline=name, run_id=None, status="idle"))
        run = state.response()
        status = PipelineStatus(
            pipeline=name, run_id=run.run_id, status=run.status, elapsed_ms=run.elapsed_ms
        )
        return json_response(status)

    async def get_run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        state = await _load(self._ctx.redis, run_id) if is_ulid(run_id) else None
        if state is None:
            raise ApiError(404, "not_found", f"no pipeline run {run_id!r}")
        return json_response(state.response())

    def _pipeline(self, name: str) -> PipelineSettings:
        pipeline = self._ctx.settings.pipelines.get(name)
        if pipeline is None:
            raise ApiError(404, "not_found", f"no pipeline named {name!r}")
        return pipeline

    async def _run(self, state: RunState, text: str) -> None:
        try:
            await self._steps(state, text)
        except Exception:
            log.exception("pipeline run %s failed", state.run_id)
            running = next((step for step in state.steps if step.status == "running"), None)
            await self._finish(state, running, error="internal error")

    async def _steps(self, state: RunState, text: str) -> None:
        redis = self._ctx.redis
        for index, step in enumerate(state.steps):
            step.status, step.started_at = "running", time.time()
            if len(text) > MAX_TEXT_CHARS:  # the previous step's output is this one's input
                error = f"step {step.name!r}: its input is over {MAX_TEXT_CHARS} characters"
                await self._finish(state, step, error=error)
                return
            await _save(redis, state)
            msg = InboundMessage(
                channel=PIPELINE_CHANNEL,
                chat_id=f"{state.run_id}.{index}",
                sender_id="pipeline",
                text=text,
                agent=step.agent,
            )
            ref = await self._ctx.publish(msg)
            step.run_id = ref.run_id
            try:
                event = await final_event(redis, ref, wait_s=self._ctx.wait_s(step.agent))
            except ApiError as exc:
                await self._finish(state, step, error=f"step {step.name!r}: {exc.message}")
                return
            finally:
                self._ctx.spawn(
                    discard_when_committed(redis, ref, within_s=self._ctx.wait_s(step.agent)),
                    f"discard {ref.session_key}",
                )
            step.status, step.finished_at = "completed", time.time()
            text = event.content or event.result.content
        state.output = text
        await self._finish(state, None, error=None)

    async def _finish(self, state: RunState, failed: StepState | None, error: str | None) -> None:
        now = time.time()
        if failed is not None:
            failed.status, failed.finished_at = "failed", now
        state.status = "failed" if error else "completed"
        state.error, state.finished_at = error, now
        await _save(self._ctx.redis, state)


def _wait_param(raw: str) -> bool:
    value = raw.lower()
    if value not in {"true", "false", "1", "0"}:
        raise ApiError(400, "invalid_request", "wait must be true or false")
    return value in {"true", "1"}


async def _save(redis: Redis, state: RunState) -> None:
    await redis.set(keys.pipeline_run(state.run_id), state.model_dump_json(), ex=STATE_TTL_S)


async def _load(redis: Redis, run_id: str) -> RunState | None:
    raw = await redis.get(keys.pipeline_run(run_id))
    return None if raw is None else RunState.model_validate_json(raw)


def _step(step: StepState) -> PipelineStep:
    duration = None
    if step.started_at is not None:
        duration = _ms(step.started_at, step.finished_at or time.time())
    return PipelineStep(
        name=step.name,
        agent=step.agent,
        status=step.status,
        duration_ms=duration,
        run_id=step.run_id,
    )


def _ms(start: float, end: float) -> int:
    return max(0, round((end - start) * 1000))
