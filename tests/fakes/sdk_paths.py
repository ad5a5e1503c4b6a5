"""The same chat request two ways: the ``openai`` SDK's own path and ``ChatEndpoint``.

``via_sdk`` is what ``chat.completions.create(stream=True)`` does once its body is
built (``AsyncOpenAI.post`` with a stream of decoded chunks); ``via_endpoint`` is the
provider's path. ``outcome`` runs either and returns what a caller sees: the chunks,
or the exception's class, text, status and body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai

from gateway.core.providers.openai_sdk import CHAT_PATH, OPTIONS, ChatEndpoint

KEY = "sk-wire-test-key-0123456789"
BODY = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'

Path = Callable[[openai.AsyncOpenAI, bytes], Awaitable[list[Any]]]


def client(base_url: str, **options: Any) -> openai.AsyncOpenAI:
    """A client as the provider builds one (its aiohttp transport), plus ``options``."""
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(
        api_key=KEY, base_url=base_url, http_client=openai.DefaultAioHttpClient(), **options
    )


async def via_sdk(sdk: openai.AsyncOpenAI, body: bytes = BODY) -> list[Any]:
    stream = await sdk.post(
        CHAT_PATH,
        cast_to=object,
        content=body,
        options=OPTIONS,
        stream=True,
        stream_cls=openai.AsyncStream[object],
    )
    async with stream:
        return [chunk async for chunk in stream]


async def via_endpoint(sdk: openai.AsyncOpenAI, body: bytes = BODY) -> list[Any]:
    endpoint = ChatEndpoint(sdk)
    response = await endpoint.open(body)
    async with response:
        return [event async for event in endpoint.events(response, body)]


PATHS: dict[str, Path] = {"sdk": via_sdk, "endpoint": via_endpoint}


async def outcome(path: Path, sdk: openai.AsyncOpenAI, body: bytes = BODY) -> Any:
    """The chunks, or (class, text, status, body) of the exception raised."""
    try:
        return await path(sdk, body)
    except openai.APIError as exc:
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        return type(exc), str(exc), status, exc.body
