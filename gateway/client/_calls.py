"""Every API call as data (method, path, body, how to read the reply), shared by the
sync and the async client so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import TypeAdapter

from .types import (
    Agent,
    InvokeResponse,
    PipelineRunResponse,
    PipelineStatus,
    Session,
    SessionContinueResponse,
    SessionDetail,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    params: Mapping[str, str] = field(default_factory=dict)


def _p(segment: str) -> str:
    return quote(segment, safe="")


def _list_of(model: type[T]) -> Callable[[Any], list[T]]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]

    def parse(data: Any) -> list[T]:
        return adapter.validate_python(data["data"])

    return parse


def _nothing(data: Any) -> None:
    return None


def _turn_body(
    input: str, options: Mapping[str, Any] | None, **extra: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"input": input}
    if options:
        body["options"] = dict(options)
    body.update({name: value for name, value in extra.items() if value is not None})
    return body


def list_agents() -> Call[list[Agent]]:
    return Call("GET", "/v1/agents", _list_of(Agent))


def invoke(
    name: str, input: str, options: Mapping[str, Any] | None, session_id: str | None
) -> Call[InvokeResponse]:
    body = _turn_body(input, options, session_id=session_id)
    return Call("POST", f"/v1/agents/{_p(name)}/invoke", InvokeResponse.model_validate, body)


def stream(
    name: str, input: str, options: Mapping[str, Any] | None, session_id: str | None
) -> Call[None]:
    body = _turn_body(input, options, session_id=session_id)
    return Call("POST", f"/v1/agents/{_p(name)}/stream", _nothing, body)


def create_session(agent: str, metadata: Mapping[str, Any] | None) -> Call[Session]:
    body = {"agent": agent, "metadata": dict(metadata or {})}
    return Call("POST", "/v1/sessions", Session.model_validate, body)


def continue_session(
    session_id: str, input: str, agent: str | None, options: Mapping[str, Any] | None
) -> Call[SessionContinueResponse]:
    body = _turn_body(input, options, agent=agent)
    path = f"/v1/sessions/{_p(session_id)}/messages"
    return Call("POST", path, SessionContinueResponse.model_validate, body)


def continue_stream(
    session_id: str, input: str, agent: str | None, options: Mapping[str, Any] | None
) -> Call[None]:
    body = _turn_body(input, options, agent=agent)
    return Call("POST", f"/v1/sessions/{_p(session_id)}/messages/stream", _nothing, body)


def list_sessions(agent: str | None, limit: int) -> Call[list[Session]]:
    params = {"limit": str(limit), **({"agent": agent} if agent else {})}
    return Call("GET", "/v1/sessions", _list_of(Session), params=params)


def get_session(session_id: str) -> Call[SessionDetail]:
    return Call("GET", f"/v1/sessions/{_p(session_id)}", SessionDetail.model_validate)


def delete_session(session_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/sessions/{_p(session_id)}", _nothing)


def run_pipeline(name: str, input: str, wait: bool) -> Call[PipelineRunResponse]:
    params = {} if wait else {"wait": "false"}
    path = f"/v1/pipelines/{_p(name)}/runs"
    return Call("POST", path, PipelineRunResponse.model_validate, {"input": input}, params)


def pipeline_status(name: str) -> Call[PipelineStatus]:
    return Call("GET", f"/v1/pipelines/{_p(name)}/status", PipelineStatus.model_validate)


def pipeline_run(run_id: str) -> Call[PipelineRunResponse]:
    path = f"/v1/pipelines/runs/{_p(run_id)}"
    return Call("GET", path, PipelineRunResponse.model_validate)
