"""Any OpenAI-compatible chat completions endpoint (OpenAI, Ollama, vLLM, OpenRouter…).

One ``openai.AsyncOpenAI`` client per provider; the provider keeps no per-run state,
so concurrent runs share it. Chunk order of one response: reasoning and text deltas as
they arrive, then the assembled tool calls, then usage, then the finish reason.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)
from pydantic import SecretStr

from core.attachments import with_attachments
from core.errors import PermanentProviderError, ProviderError, RetryableProviderError
from core.messages import Message, new_id
from core.providers.base import (
    FinishChunk,
    ModelRequest,
    ProviderChunk,
    ReasoningChunk,
    TextChunk,
    ToolCallChunk,
    UsageChunk,
)
from core.settings import ProviderSettings

_API_KEYS = frozenset({"role", "content", "name", "tool_call_id", "tool_calls"})
"""The message keys the API accepts; history entries also carry timestamp, metadata…"""

_REASONING_KEYS = ("reasoning_content", "reasoning")
"""Where servers put thinking text (DeepSeek/vLLM, OpenRouter/Ollama): not in the SDK's types."""

_MAX_ERROR_CHARS = 300
_PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})
"""Statuses a retry would only repeat: the request, key or model is wrong."""
_NO_KEY = "none"


def sanitize_messages(messages: Iterable[Message]) -> list[Message]:
    """Strip non-API keys (attachments first become content: images as image parts);
    entries that are already clean are passed through uncopied."""
    return [
        m
        if m.keys() <= _API_KEYS
        else {k: v for k, v in with_attachments(m).items() if k in _API_KEYS}
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
            )
        except openai.OpenAIError as exc:
            # Missing credentials: no retry can fix it.
            raise PermanentProviderError(
                f"model provider {name}: cannot create client: {exc}"
            ) from exc
        # The key actually used (it may come from OPENAI_API_KEY), kept to redact errors.
        used_key = self._client.api_key if key != _NO_KEY else ""
        self._api_key = SecretStr(used_key) if used_key else None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ProviderChunk]:
        spec = request.spec
        messages = cast(list[ChatCompletionMessageParam], sanitize_messages(request.messages))
        tools = cast(list[ChatCompletionToolUnionParam], request.tools)
        try:
            response = await self._client.chat.completions.create(
                model=spec.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                tools=tools if tools else openai.omit,
                temperature=spec.temperature if spec.temperature is not None else openai.omit,
                max_tokens=spec.max_tokens if spec.max_tokens is not None else openai.omit,
            )
            async with response, aclosing(self._translate(response)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except openai.APIError as exc:
            raise self._provider_error(exc) from exc

    async def _translate(
        self, response: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncGenerator[ProviderChunk, None]:
        calls: dict[int, _PartialToolCall] = {}
        usage: UsageChunk | None = None
        finish_reason: str | None = None
        async for chunk in response:
            if chunk.usage is not None:
                u = chunk.usage
                usage = UsageChunk(
                    prompt_tokens=u.prompt_tokens,
                    completion_tokens=u.completion_tokens,
                    total_tokens=u.total_tokens,
                )
            for choice in chunk.choices:
                delta = choice.delta
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
                reasoning = _reasoning_delta(delta.model_extra)
                if reasoning:
                    yield ReasoningChunk(delta=reasoning)
                if delta.content:
                    yield TextChunk(delta=delta.content)
                for tool_delta in delta.tool_calls or ():
                    partial = calls.setdefault(tool_delta.index, _PartialToolCall())
                    partial.id = partial.id or tool_delta.id or ""
                    function = tool_delta.function
                    if function is not None:
                        # Some servers repeat the name in every delta: keep the first.
                        partial.name = partial.name or function.name or ""
                        partial.arguments += function.arguments or ""
        for _, call in sorted(calls.items()):
            yield ToolCallChunk(
                id=call.id or f"call_{new_id()}", name=call.name, arguments=call.arguments or "{}"
            )
        if usage is not None:
            yield usage
        yield FinishChunk(reason=finish_reason or ("tool_calls" if calls else "stop"))

    def _provider_error(self, exc: openai.APIError) -> ProviderError:
        """One line: provider, status, the server's message; transient failures are retryable."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            text = f"model provider {self.name}: HTTP {status}: {_server_message(exc)}"
            retryable = isinstance(exc, openai.RateLimitError) or status == 429 or status >= 500
        elif isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
            text = f"model provider {self.name}: {exc.message} ({type(exc).__name__})"
            retryable = True
        else:
            text = f"model provider {self.name}: {_server_message(exc)}"
            retryable = False
        text = self._redact(" ".join(text.split()))
        if retryable:
            return RetryableProviderError(text)
        if isinstance(exc, openai.APIStatusError) and exc.status_code in _PERMANENT_STATUSES:
            return PermanentProviderError(text)
        return ProviderError(text)

    def _redact(self, text: str) -> str:
        key = self._api_key.get_secret_value() if self._api_key else ""
        return text.replace(key, "***") if key else text

    async def aclose(self) -> None:
        await self._client.close()


def _reasoning_delta(extra: dict[str, Any] | None) -> str:
    if not extra:
        return ""
    for key in _REASONING_KEYS:
        value = extra.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message:
            return message[:_MAX_ERROR_CHARS]
    return exc.message[:_MAX_ERROR_CHARS]
