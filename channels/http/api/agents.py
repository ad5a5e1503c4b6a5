"""``/v1/agents`` and ``/v1/sessions``: run an agent once, or turn by turn in a session.

Each turn is a message published on the bus for session ``api:<session id>``; a
worker runs it; the handler follows that run's events (``runs``). An invoke
without ``session_id`` starts a new session, so its reply can be continued.
"""

from __future__ import annotations

from aiohttp import web

from gateway.channels.http.errors import ApiError
from gateway.core.messages import InboundMessage, RunOptions

from . import store
from .context import ApiContext
from .json import json_response
from .models import (
    Agent,
    AgentList,
    AgentStatus,
    CreateSessionRequest,
    InvokeOptions,
    InvokeRequest,
    Session,
    SessionList,
    SessionMessageRequest,
)
from .runs import RunRef
from .store import API_CHANNEL, SessionRecord, get_record
from .stream import final_event, invoke_response, stream_run

MAX_LIST_LIMIT = 100


class AgentRoutes:
    def __init__(self, ctx: ApiContext) -> None:
        self._ctx = ctx

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/agents", self.list_agents),
            web.post("/v1/agents/{name}/invoke", self.invoke),
            web.post("/v1/agents/{name}/stream", self.invoke_stream),
            web.post("/v1/sessions", self.create_session),
            web.get("/v1/sessions", self.list_sessions),
            web.get("/v1/sessions/{id}", self.get_session),
            web.delete("/v1/sessions/{id}", self.delete_session),
            web.post("/v1/sessions/{id}/messages", self.message),
            web.post("/v1/sessions/{id}/messages/stream", self.message_stream),
        ]

    async def list_agents(self, request: web.Request) -> web.Response:
        agents = []
        for name in self._ctx.agent_names():
            model, resolves = self._ctx.model_of(name)
            description = self._ctx.settings.agent(name).description
            status: AgentStatus = "ready" if resolves else "unavailable"
            agents.append(Agent(name=name, model=model, status=status, description=description))
        return json_response(AgentList(data=agents))

    async def invoke(self, request: web.Request) -> web.Response:
        record, ref = await self._start_invoke(request)
        event = await final_event(self._ctx.redis, ref, wait_s=self._ctx.wait_s(record.agent))
        return json_response(invoke_response(event, ref, record.session_id))

    async def invoke_stream(self, request: web.Request) -> web.StreamResponse:
        record, ref = await self._start_invoke(request)
        wait_s = self._ctx.wait_s(record.agent)
        return await stream_run(request, self._ctx.redis, ref, record.session_id, wait_s=wait_s)

    async def _start_invoke(self, request: web.Request) -> tuple[SessionRecord, RunRef]:
        name = request.match_info["name"]
        self._ctx.agent(name)
        body = await self._ctx.body(request, InvokeRequest)
        if body.session_id is None:
            record = await store.create_session(self._ctx.redis, name, {})
        else:
            record = await get_record(self._ctx.redis, body.session_id)
            _check_agent(record, name)
        return record, await self._turn(record, body.input, body.options)

    async def create_session(self, request: web.Request) -> web.Response:
        body = await self._ctx.body(request, CreateSessionRequest)
        self._ctx.agent(body.agent)
        record = await store.create_session(self._ctx.redis, body.agent, body.metadata)
        session = Session(
            session_id=record.session_id,
            agent=record.agent,
            metadata=record.metadata,
            created_at=record.created_at,
            last_active_at=record.created_at,
            turns=0,
        )
        return json_response(session, status=201)

    async def list_sessions(self, request: web.Request) -> web.Response:
        agent = request.query.get("agent") or None
        if agent is not None:
            self._ctx.agent(agent)
        limit = _limit(request.query.get("limit", "20"))
        return json_response(
            SessionList(data=await store.list_sessions(self._ctx.redis, agent, limit))
        )

    async def get_session(self, request: web.Request) -> web.Response:
        return json_response(await store.session_detail(self._ctx.redis, request.match_info["id"]))

    async def delete_session(self, request: web.Request) -> web.Response:
        await store.delete_session(self._ctx.redis, request.match_info["id"])
        return web.Response(status=204)

    async def message(self, request: web.Request) -> web.Response:
        record, ref = await self._start_message(request)
        event = await final_event(self._ctx.redis, ref, wait_s=self._ctx.wait_s(record.agent))
        return json_response(invoke_response(event, ref, record.session_id))

    async def message_stream(self, request: web.Request) -> web.StreamResponse:
        record, ref = await self._start_message(request)
        wait_s = self._ctx.wait_s(record.agent)
        return await stream_run(request, self._ctx.redis, ref, record.session_id, wait_s=wait_s)

    async def _start_message(self, request: web.Request) -> tuple[SessionRecord, RunRef]:
        record = await get_record(self._ctx.redis, request.match_info["id"])
        body = await self._ctx.body(request, SessionMessageRequest)
        if body.agent is not None:
            _check_agent(record, body.agent)
        return record, await self._turn(record, body.input, body.options)

    async def _turn(
        self, record: SessionRecord, text: str, options: InvokeOptions | None
    ) -> RunRef:
        run_options = None
        if options is not None:
            run_options = RunOptions(temperature=options.temperature, max_tokens=options.max_tokens)
        msg = InboundMessage(
            channel=API_CHANNEL,
            chat_id=record.session_id,
            sender_id="api",
            text=text,
            agent=record.agent,
            options=run_options,
        )
        return await self._ctx.publish(msg)


def _check_agent(record: SessionRecord, agent: str) -> None:
    if record.agent != agent:
        raise ApiError(
            400,
            "invalid_request",
            f"session {record.session_id} belongs to agent {record.agent!r}, not {agent!r}",
        )


def _limit(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_LIST_LIMIT):
        raise ApiError(400, "invalid_request", f"limit must be 1-{MAX_LIST_LIMIT}")
    return int(raw)
