"""``AsyncGatewayClient``: the asyncio client (same surface as ``GatewayClient``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
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


class AsyncGatewayClient:
    """``async with AsyncGatewayClient(base_url=None, api_key=None, ...) as client``;
    or ``await client.close()`` when done."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_delay: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._config = ClientConfig.resolve(
            base_url, api_key, token, timeout, max_retries, retry_delay
        )
        self._http = httpx.AsyncClient(
            base_url=self._config.base_url,
            headers=self._config.headers,
            timeout=timeout,
            transport=transport,
        )
        self.agents = AsyncAgents(self)
        self.sessions = AsyncSessions(self)
        self.pipelines = AsyncPipelines(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def call(self, call: calls.Call[T]) -> T:
        response = await self._send(call, stream=False)
        raise_for(response, response.content)
        try:
            return call.parse(decode_json(response) if response.content else None)
        except ValidationError as exc:
            raise _invalid(exc, response.status_code) from exc

    async def stream(self, call: calls.Call[Any]) -> AsyncIterator[StreamEvent]:
        response = await self._send(call, stream=True)
        try:
            if response.status_code >= 400:
                raise_for(response, await response.aread())
            decoder = SseDecoder()
            async for line in response.aiter_lines():
                if (event := decoder.feed(line)) is not None:
                    yield event
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the stream broke: {exc}") from exc
        finally:
            await response.aclose()

    async def _send(self, call: calls.Call[Any], *, stream: bool) -> httpx.Response:
        """The first response that is not a retryable failure (or the last one)."""
        config = self._config
        for attempt in range(config.max_retries + 1):
            last = attempt == config.max_retries
            request = self._http.build_request(
                call.method, call.path, json=call.body, params=dict(call.params)
            )
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if last or not may_resend(exc, call.method):
                    raise APIConnectionError(f"{call.method} {call.path} failed: {exc}") from exc
                await asyncio.sleep(config.delay(attempt, None))
                continue
            if last or not should_retry(response.status_code):
                return response
            await response.aclose()
            await asyncio.sleep(config.delay(attempt, retry_after(response)))
        raise AssertionError("unreachable: the last attempt returns or raises")


class AsyncAgents:
    def __init__(self, client: AsyncGatewayClient) -> None:
        self._client = client

    async def list(self) -> list[Agent]:
        return await self._client.call(calls.list_agents())

    async def invoke(
        self,
        name: str,
        input: str,
        *,
        options: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> InvokeResponse:
        return await self._client.call(calls.invoke(name, input, options, session_id))

    def stream(
        self,
        name: str,
        input: str,
        *,
        options: Mapping[str, Any] | None = None,
        session_id: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        return self._client.stream(calls.stream(name, input, options, session_id))


class AsyncSessions:
    def __init__(self, client: AsyncGatewayClient) -> None:
        self._client = client

    async def create(self, agent: str, *, metadata: Mapping[str, Any] | None = None) -> Session:
        return await self._client.call(calls.create_session(agent, metadata))

    async def continue_(
        self,
        session_id: str,
        input: str,
        *,
        agent: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> SessionContinueResponse:
        return await self._client.call(calls.continue_session(session_id, input, agent, options))

    def continue_stream(
        self,
        session_id: str,
        input: str,
        *,
        agent: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        return self._client.stream(calls.continue_stream(session_id, input, agent, options))

    async def list(self, *, agent: str | None = None, limit: int = 20) -> list[Session]:
        return await self._client.call(calls.list_sessions(agent, limit))

    async def get(self, session_id: str) -> SessionDetail:
        return await self._client.call(calls.get_session(session_id))

    async def delete(self, session_id: str) -> None:
        await self._client.call(calls.delete_session(session_id))


class AsyncPipelines:
    def __init__(self, client: AsyncGatewayClient) -> None:
        self._client = client

    async def run(self, name: str, input: str, *, wait: bool = True) -> PipelineRunResponse:
        return await self._client.call(calls.run_pipeline(name, input, wait))

    async def status(self, name: str) -> PipelineStatus:
        return await self._client.call(calls.pipeline_status(name))

    async def get_run(self, run_id: str) -> PipelineRunResponse:
        return await self._client.call(calls.pipeline_run(run_id))
