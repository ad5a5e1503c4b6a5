"""Any OpenAI-compatible chat completions endpoint (OpenAI, Ollama, vLLM, OpenRouter…).

One ``openai.AsyncOpenAI`` client per provider; the provider keeps no per-run state,
so concurrent runs share it. Chunk order of one response: reasoning and text deltas as
they arrive, then the assembled tool calls, then usage, then the finish reason.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import openai
from pydantic import SecretStr
from pydantic_core import PydanticSerializationError, to_json

from gateway.core.attachments import with_attachments
from gateway.core.errors import PermanentProviderError, ProviderError, RetryableProviderError
from gateway.core.messages import OPENAI_MESSAGE_KEYS, Message, new_id
from gateway.core.providers.base import (
    FinishChunk,
    ModelRequest,
    ProviderChunk,
    ReasoningChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from gateway.core.providers.openai_sdk import ChatEndpoint
from gateway.core.settings import ProviderSettings

_API_KEYS = OPENAI_MESSAGE_KEYS
"""The message keys the API accepts; history entries also carry timestamp, metadata…"""

_BODY_KEYS = ("model", "stream", "max_tokens", "stream_options", "temperature", "tools")
_INCLUDE: dict[str, Any] = {
    "messages": {"__all__": set(_API_KEYS)},
    **dict.fromkeys(_BODY_KEYS, True),
}
"""Serialise only the API keys of each message: the encoder filters, no per-message copy."""

_REASONING_KEYS = ("reasoning_content", "reasoning")
"""Where servers put thinking text (DeepSeek/vLLM, OpenRouter/Ollama)."""

_MAX_ERROR_CHARS = 300
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})
"""Statuses a retry would only repeat: the request, key or model is wrong."""
_NO_KEY = "none"


def sanitize_messages(messages: list[Message]) -> list[Message]:
    """The history as the API takes it: attachments become content (images as image
    parts); keys the API does not know are dropped. Messages without attachments are
    passed through uncopied (the encoder filters their keys, see ``_INCLUDE``)."""
    return [
        {k: v for k, v in with_attachments(m).items() if k in _API_KEYS}
        if "attachments" in m
        else m
        for m in messages
    ]


@dataclass
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAICompatProvider:
    """A ``Provider`` backed by ``openai.AsyncOpenAI`` pointed at ``settings.base_url``."""

    def __init__(self, name: str, settings: ProviderSettings) -> None:
        self.name = name
        key = settings.api_key.get_secret_value() if settings.api_key else None
        if key is None and name != "openai":
            key = _NO_KEY  # local servers (Ollama, vLLM) need no key, but the SDK wants one
        try:
            self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=settings.base_url,
                timeout=settings.timeout_s,
                max_retries=settings.max_retries,
                default_headers=_revealed(settings.headers),
                default_query=_revealed(settings.query),
                # Its aiohttp session is the one requests are sent with (``ChatEndpoint``).
                http_client=openai.DefaultAioHttpClient(),
            )
        except openai.OpenAIError as exc:
            # Missing credentials: no retry can fix it.
            raise PermanentProviderError(
                f"model provider {name}: cannot create client: {exc}"
            ) from exc
        self._endpoint = ChatEndpoint(self._client)
        # The key actually used (it may come from OPENAI_API_KEY), kept to redact errors.
        used_key = self._client.api_key if key != _NO_KEY else ""
        self._api_key = SecretStr(used_key) if used_key else None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderChunk]:
        body = self._request_body(request)
        endpoint = self._endpoint
        try:
            # Not ``create()``: its request transform walks every history message through
            # the SDK's TypedDict machinery (~250 µs a message) and the body is already
            # plain JSON. Auth, URL, retries, timeouts and error mapping stay the SDK's
            # (see ``core.providers.openai_sdk``); tests/integration guard that the body,
            # the request and the stream match the SDK's own path.
            response = await endpoint.open(body)
            events = endpoint.events(response, body)
            async with response, aclosing(self._translate(events)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except openai.APIError as exc:
            raise self._provider_error(exc) from exc

    def _request_body(self, request: ModelRequest) -> bytes:
        """The chat completions request as JSON, encoded once."""
        spec = request.spec
        params: dict[str, Any] = {
            "model": spec.model,
            "stream": True,
            "messages": sanitize_messages(request.messages),
        }
        if spec.max_tokens is not None:
            params["max_tokens"] = spec.max_tokens
        params["stream_options"] = {"include_usage": True}
        if spec.temperature is not None:
            params["temperature"] = spec.temperature
        if request.tools:
            params["tools"] = request.tools
        try:
            return to_json(params, include=_INCLUDE)
        except PydanticSerializationError as exc:
            raise ProviderError(
                f"model provider {self.name}: the request is not JSON-serialisable: {exc}"
            ) from exc

    async def _translate(self, events: AsyncIterator[Any]) -> AsyncGenerator[ProviderChunk, None]:
        calls: dict[int, _PartialToolCall] = {}
        usage: UsageChunk | None = None
        finish_reason: str | None = None
        async for chunk in events:
            if type(chunk) is not dict:
                raise self._malformed("chunk")
            u = chunk.get("usage")
            if type(u) is dict:
                usage = UsageChunk(
                    prompt_tokens=u.get("prompt_tokens") or 0,
                    completion_tokens=u.get("completion_tokens") or 0,
                    total_tokens=u.get("total_tokens") or 0,
                )
            for choice in chunk.get("choices") or ():
                if type(choice) is not dict:
                    raise self._malformed("choice")
                delta = choice.get("delta") or {}
                if type(delta) is not dict:
                    raise self._malformed("delta")
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
                reasoning = _reasoning_delta(delta)
                if reasoning:
                    yield ReasoningChunk(delta=reasoning)
                content = delta.get("content")
                if content and type(content) is str:
                    yield TextChunk(delta=content)
                tool_deltas = delta.get("tool_calls")
                if tool_deltas:
                    self._add_tool_deltas(calls, tool_deltas)
        for _, call in sorted(calls.items()):
            yield ToolCallChunk(
                id=call.id or f"call_{new_id()}", name=call.name, arguments=call.arguments or "{}"
            )
        if usage is not None:
            yield usage
        yield FinishChunk(reason=finish_reason or ("tool_calls" if calls else "stop"))

    def _add_tool_deltas(self, calls: dict[int, _PartialToolCall], deltas: object) -> None:
        if type(deltas) is not list:
            raise ProviderError(
                f"model provider {self.name}: malformed stream: tool calls are not a list"
            )
        for tool_delta in deltas:
            if type(tool_delta) is not dict:
                raise self._malformed("tool call delta")
            _add_tool_delta(calls, tool_delta)

    def _malformed(self, what: str) -> ProviderError:
        """A one-line error for a chunk part that is not a JSON object."""
        return ProviderError(
            f"model provider {self.name}: malformed stream: {what} is not an object"
        )

    def _provider_error(self, exc: openai.APIError) -> ProviderError:
        """One line: provider, status, the server's message; transient failures are retryable."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            text = f"model provider {self.name}: HTTP {status}: {self._server_message(exc)}"
            retryable = isinstance(exc, openai.RateLimitError) or status == 429 or status >= 500
        elif isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
            text = f"model provider {self.name}: {exc.message} ({type(exc).__name__})"
            retryable = True
        else:
            text = f"model provider {self.name}: {self._server_message(exc)}"
            retryable = False
        text = self._redact(" ".join(text.split()))
        if retryable:
            return RetryableProviderError(text)
        if isinstance(exc, openai.APIStatusError) and exc.status_code in _PERMANENT_STATUSES:
            return PermanentProviderError(text)
        return ProviderError(text)

    def _server_message(self, exc: openai.APIError) -> str:
        """The server's message, redacted before it is cut (a cut key would not match)."""
        return self._redact(_server_message(exc))[:_MAX_ERROR_CHARS]

    def _redact(self, text: str) -> str:
        key = self._api_key.get_secret_value() if self._api_key else ""
        return text.replace(key, "***") if key else text

    async def aclose(self) -> None:
        await self._client.close()


def _add_tool_delta(calls: dict[int, _PartialToolCall], tool_delta: dict[str, Any]) -> None:
    partial = calls.setdefault(tool_delta.get("index") or 0, _PartialToolCall())
    partial.id = partial.id or tool_delta.get("id") or ""
    function = tool_delta.get("function")
    if isinstance(function, dict):
        # Some servers repeat the name in every delta: keep the first.
        partial.name = partial.name or function.get("name") or ""
        partial.arguments += function.get("arguments") or ""


def _reasoning_delta(delta: dict[str, Any]) -> str:
    for key in _REASONING_KEYS:
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message:
            return message
    return exc.message


def _revealed(values: dict[str, SecretStr]) -> dict[str, str] | None:
    """The settings' secret values as the client needs them (None when there are none)."""
    return {name: value.get_secret_value() for name, value in values.items()} or None
