"""``GET /openapi.json``: the OpenAPI 3.1 document of every route the gateway serves.

Schemas are generated from the same pydantic models that validate requests and
serialize responses; this module only says which model goes with which route.
A test checks that the routes listed here and the routes served are the same set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.channels.http.ingress import PostMessage

from .models import (
    AgentList,
    CreateSessionRequest,
    ErrorResponse,
    InvokeRequest,
    InvokeResponse,
    PipelineRun,
    PipelineRunRequest,
    PipelineStatus,
    Session,
    SessionDetail,
    SessionList,
    SessionMessageRequest,
    StreamDone,
    StreamError,
    StreamToken,
    StreamToolCall,
    StreamToolResult,
)
from .openai_models import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ModelList

REF: Final = "#/components/schemas/{model}"
SSE: Final = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Op:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    streams: tuple[type[BaseModel], ...] = ()
    """Event bodies of an SSE response (``text/event-stream``)."""
    query: dict[str, str] = field(default_factory=dict)
    public: bool = False
    """Served without an API key."""


_AGENT_EVENTS = (StreamToken, StreamToolCall, StreamToolResult, StreamDone, StreamError)

OPERATIONS: Final[tuple[Op, ...]] = (
    Op("GET", "/healthz", "Liveness", public=True),
    Op("GET", "/readyz", "Readiness: Redis answers and the consumer groups exist", public=True),
    Op("GET", "/metrics", "Prometheus metrics", public=True),
    Op("GET", "/openapi.json", "This document", public=True),
    Op("POST", "/v1/messages", "Push a message onto the bus (202)", PostMessage, status=202),
    Op("GET", "/v1/sessions/{key}/events", "A bus session's outbound events (SSE)"),
    Op("GET", "/", "The web chat page", public=True),
    Op("GET", "/webchat/{name}", "The web chat's static files", public=True),
    Op("GET", "/v1/chats/{channel}/{chat_id}/history", "A chat's history (web chat)"),
    Op("POST", "/v1/chats/{channel}/{chat_id}/stop", "Stop a chat's running turn", status=202),
    Op("GET", "/v1/agents", "List the agents", response=AgentList),
    Op("POST", "/v1/agents/{name}/invoke", "Run an agent", InvokeRequest, InvokeResponse),
    Op("POST", "/v1/agents/{name}/stream", "Run an agent, streamed", InvokeRequest,
       streams=_AGENT_EVENTS),
    Op("POST", "/v1/sessions", "Create a session", CreateSessionRequest, Session, status=201),
    Op("GET", "/v1/sessions", "List sessions, newest first", response=SessionList,
       query={"agent": "only this agent's sessions", "limit": "1-100, default 20"}),
    Op("GET", "/v1/sessions/{id}", "A session and its history", response=SessionDetail),
    Op("DELETE", "/v1/sessions/{id}", "Delete a session", status=204),
    Op("POST", "/v1/sessions/{id}/messages", "One more turn", SessionMessageRequest,
       InvokeResponse),
    Op("POST", "/v1/sessions/{id}/messages/stream", "One more turn, streamed",
       SessionMessageRequest, streams=_AGENT_EVENTS),
    Op("POST", "/v1/pipelines/{name}/runs", "Run a pipeline", PipelineRunRequest, PipelineRun,
       query={"wait": "false: answer 202 at once with the run id"}),
    Op("GET", "/v1/pipelines/{name}/status", "The latest run of a pipeline",
       response=PipelineStatus),
    Op("GET", "/v1/pipelines/runs/{run_id}", "One pipeline run", response=PipelineRun),
    Op("POST", "/v1/chat/completions", "OpenAI-compatible chat completion",
       ChatCompletionRequest, ChatCompletion, streams=(ChatCompletionChunk,)),
    Op("GET", "/v1/models", "OpenAI-compatible model list (the agents)", response=ModelList),
)  # fmt: skip

_PATH_PARAM = re.compile(r"\{(\w+)\}")


def build_document(operations: tuple[Op, ...] = OPERATIONS) -> dict[str, Any]:
    models = _models(operations)
    _, schemas = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    }


def _models(operations: tuple[Op, ...]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {ErrorResponse.__name__: ErrorResponse}
    for op in operations:
        for model in (op.body, op.response, *op.streams):
            if model is not None:
                found[model.__name__] = model
    return list(found.values())


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(op: Op) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": op.summary, "responses": _responses(op)}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}}
        for name, text in op.query.items()
    ]  # fmt: skip
    if params:
        operation["parameters"] = params
    if op.body is not None:
        content = {"application/json": {"schema": _ref(op.body)}}
        operation["requestBody"] = {"required": True, "content": content}
    if op.public:
        operation["security"] = []
    return operation


def _responses(op: Op) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if op.response is not None:
        content["application/json"] = {"schema": _ref(op.response)}
    if op.streams:
        events = [_ref(model) for model in op.streams]
        content[SSE] = {"schema": {"oneOf": events} if len(events) > 1 else events[0]}
    ok: dict[str, Any] = {"description": "OK"}
    if content:
        ok["content"] = content
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": _ref(ErrorResponse)}},
    }
    return {str(op.status): ok, "4XX": error, "5XX": error}


class OpenApiRoute:
    def __init__(self) -> None:
        self._document = build_document()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/openapi.json", self.serve)]

    async def serve(self, request: web.Request) -> web.Response:
        return web.json_response(self._document)
