"""``GatewayClient``: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from . import _calls as calls
from ._base import (
    ClientConfig,
    SseDecoder,
    decode_json,
    may_resend,
    raise_for,
    retry_after,
    should_retry,
)
from ._base import validation_failed as _invalid
from .errors import APIConnectionError
from .types import (
    Agent,
    InvokeResponse,
    PipelineRunResponse,
    PipelineStatus,
    Session,
    SessionContinueResponse,
    SessionDetail,
    StreamEvent,
)

T = TypeVar("T")


class GatewayClient:
    """``GatewayClient(base_url=None, api_key=None, *, token=None, timeout=60.0,
    max_retries=2, retry_delay=0.5)``; ``close()`` or use it as a context manager."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_delay: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = ClientConfig.resolve(
            base_url, api_key, token, timeout, max_retries, retry_delay
        )
        self._http = httpx.Client(
            base_url=self._config.base_url,
            headers=self._config.headers,
            timeout=timeout,
            transport=transport,
        )
        self.agents = Agents(self)
        self.sessions = Sessions(self)
        self.pipelines = Pipelines(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, call: calls.Call[T]) -> T:
        response = self._send(call, stream=False)
        raise_for(response, response.content)
        try:
            return call.parse(decode_json(response) if response.content else None)
        except ValidationError as exc:
            raise _invalid(exc, response.status_code) from exc

    def stream(self, call: calls.Call[Any]) -> Iterator[StreamEvent]:
        response = self._send(call, stream=True)
        try:
            if response.status_code >= 400:
                raise_for(response, response.read())
            decoder = SseDecoder()
            for line in response.iter_lines():
                if (event := decoder.feed(line)) is not None:
                    yield event
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the stream broke: {exc}") from exc
        finally:
            response.close()

    def _send(self, call: calls.Call[Any], *, stream: bool) -> httpx.Response:
        """The first response that is not a retryable failure (or the last one)."""
        config = self._config
        for attempt in range(config.max_retries + 1):
            last = attempt == config.max_retries
            request = self._http.build_request(
                call.method, call.path, json=call.body, params=dict(call.params)
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if last or not may_resend(exc, call.method):
                    raise APIConnectionError(f"{call.method} {call.path} failed: {exc}") from exc
                time.sleep(config.delay(attempt, None))
                continue
            if last or not should_retry(response.status_code):
                return response
            response.close()
            time.sleep(config.delay(attempt, retry_after(response)))
        raise AssertionError("unreachable: the last attempt returns or raises")


class Agents:
    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    def list(self) -> list[Agent]:
        return self._client.call(calls.list_agents())

    def invoke(
        self,
        name: str,
        input: str,
        *,
        options: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> InvokeResponse:
        return self._client.call(calls.invoke(name, input, options, session_id))

    def stream(
        self,
        name: str,
        input: str,
        *,
        options: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Iterator[StreamEvent]:
        return self._client.stream(calls.stream(name, input, options, session_id))


class Sessions:
    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    def create(self, agent: str, *, metadata: Mapping[str, Any] | None = None) -> Session:
        return self._client.call(calls.create_session(agent, metadata))

    def continue_(
        self,
        session_id: str,
        input: str,
        *,
        agent: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> SessionContinueResponse:
        return self._client.call(calls.continue_session(session_id, input, agent, options))

    def continue_stream(
        self,
        session_id: str,
        input: str,
        *,
        agent: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Iterator[StreamEvent]:
        return self._client.stream(calls.continue_stream(session_id, input, agent, options))

    def list(self, *, agent: str | None = None, limit: int = 20) -> list[Session]:
        return self._client.call(calls.list_sessions(agent, limit))

    def get(self, session_id: str) -> SessionDetail:
        return self._client.call(calls.get_session(session_id))

    def delete(self, session_id: str) -> None:
        self._client.call(calls.delete_session(session_id))


class Pipelines:
    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    def run(self, name: str, input: str, *, wait: bool = True) -> PipelineRunResponse:
        return self._client.call(calls.run_pipeline(name, input, wait))

    def status(self, name: str) -> PipelineStatus:
        return self._client.call(calls.pipeline_status(name))

    def get_run(self, run_id: str) -> PipelineRunResponse:
        return self._client.call(calls.pipeline_run(run_id))
