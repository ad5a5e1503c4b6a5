"""Chat completions requests sent with aiohttp straight, the ``openai`` client deciding.

Through ``AsyncOpenAI.request`` a streamed request cost the worker ~0.3 ms of CPU
more than a bare aiohttp request: options copied per attempt, headers merged into
``httpx2`` objects, the request and response rebuilt as ``httpx2`` models over the
aiohttp transport, its SSE decoder working a line at a time. Here the SDK still
decides everything that is not a byte on the wire, once per client and attempt number
instead of per request:

- URL (base URL, default query), headers (auth, default and platform headers, retry
  count, read timeout) and timeouts: the request ``AsyncOpenAI._build_request``
  builds, as the SDK's aiohttp transport would send it, remembered per attempt;
- the connection pool, TLS and proxy: the SDK's own aiohttp transport's session;
- retries: ``_should_retry`` and ``_calculate_retry_timeout`` (Retry-After, backoff),
  ``max_retries`` read from the client at each request;
- errors: aiohttp failures through the SDK transport's own mapping, then
  ``APITimeoutError`` / ``APIConnectionError`` as ``request()`` raises them; statuses
  through ``_make_status_error_from_response``; error events as ``APIError``.

``tests/integration/test_openai_sdk_shortcuts.py`` compares each of these with the
SDK's own path, so an SDK upgrade that changes one fails there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from aiohttp import BasicAuth, ClientError, ClientResponse, ClientSession, ClientTimeout
from multidict import CIMultiDict
from openai._base_client import get_platform
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import FinalRequestOptions
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport, map_aiohttp_exceptions
from pydantic_core import from_json
from yarl import URL

from gateway.core.providers.sse import EventTooLarge, SSEDataDecoder

log = logging.getLogger(__name__)

CHAT_PATH = "/chat/completions"

OPTIONS: openai.RequestOptions = {"security": {"bearer_auth": True}}
"""What ``chat.completions.create`` passes: bearer auth; the client's timeout and retries."""

_NOT_SENT = frozenset({"host", "content-length", "accept-encoding", "transfer-encoding"})
"""Headers aiohttp writes itself: host and length per request; the encodings it can
decode (it decompresses; the SDK's transport leaves that to httpx2)."""

_HEAD_BYTES = 300  # how much of a body without events its error shows

_DRAIN_S = 0.1
"""How long the rest of a body after ``[DONE]`` is read for, as the SDK does, so the
connection goes back to the pool instead of being closed."""


def chat_options(body: bytes | None = None) -> FinalRequestOptions:
    """The options ``post(CHAT_PATH, content=body, options=OPTIONS)`` builds."""
    return FinalRequestOptions.construct(
        method="post", url=CHAT_PATH, json_data=None, content=body, files=None, **OPTIONS
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """One attempt's request as the SDK builds it, less the body."""

    url: URL
    headers: CIMultiDict[str]
    timeout: ClientTimeout


def prepare(request: httpx2.Request) -> Prepared:
    """What the SDK's aiohttp transport sends for ``request``: URL, headers, timeouts."""
    timeout = request.extensions.get("timeout", {})
    return Prepared(
        url=URL(str(request.url), encoded=True),
        headers=CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _NOT_SENT
        ),
        timeout=ClientTimeout(
            sock_connect=timeout.get("connect"),
            sock_read=timeout.get("read"),
            connect=timeout.get("pool"),
        ),
    )


class ChatEndpoint:
    """``POST /chat/completions`` of one client, streamed; see the module docstring."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        if client._api_key_provider or client._provider_runtime or client._workload_identity_auth:
            # These rewrite each request per send (``_prepare_options``, ``_send_request``):
            # remembered headers would be stale. The provider passes a plain key.
            raise ValueError("ChatEndpoint needs a client with a plain API key")
        self._client = client
        transport = client._client._transport_for_url(client.base_url)
        if not isinstance(transport, AiohttpTransport):
            raise TypeError(f"expected the SDK's aiohttp transport, got {type(transport)}")
        self._transport = transport
        self._proxy = _proxy_arguments(transport.proxy)
        self._template = chat_options()
        self._prepared: dict[int, Prepared] = {}
        self._prepared_for: tuple[object, ...] = ()

    async def open(self, body: bytes) -> ClientResponse:
        """The response to ``body`` once its status is 2xx, after the SDK's retries."""
        client = self._client
        max_retries = client.max_retries
        for attempt in range(max_retries + 1):
            retry = attempt < max_retries
            prepared = await self._prepare(attempt)
            try:
                response = await self._session().request(
                    "POST",
                    prepared.url,
                    data=body,
                    headers=prepared.headers,
                    timeout=prepared.timeout,
                    **self._proxy,
                )
            except Exception as exc:
                error = self._transport_error(exc, body, attempt)
                if error is None:
                    raise
                if retry:
                    await self._sleep(attempt, max_retries, None)
                    continue
                raise error from exc
            if 200 <= response.status < 300:
                return response
            if retry and client._should_retry(head := self._sdk_head(response, body, attempt)):
                # As the SDK: decided on the status and headers, the body left unread (a
                # stalled or cut error body must not cost the retry); the connection closes.
                response.release()
                await self._sleep(attempt, max_retries, head.headers)
                continue
            raise client._make_status_error_from_response(
                await self._sdk_response(response, body, attempt)
            )
        raise AssertionError("the retry loop returns or raises")

    async def events(self, response: ClientResponse, body: bytes) -> AsyncIterator[Any]:
        """Each event's decoded JSON up to ``[DONE]``; an error event raises ``APIError``."""
        decoder = SSEDataDecoder()
        reader = response.content
        # The body's start until an event comes: for the error if none ever does.
        head: bytes | None = b""
        while True:
            with self._as_sdk_errors(body, 0):
                chunk = await reader.readany()
            if not chunk:
                if head is not None:
                    raise self._no_events(response, head, body)
                return
            try:
                events = decoder.feed(chunk)
            except EventTooLarge as exc:
                raise openai.APIError(
                    f"malformed stream: {exc}", self._request(body, 0), body=None
                ) from exc
            if head is not None:
                head = None if events else (head + chunk)[:_HEAD_BYTES]
            for data in events:
                if data[:6] == b"[DONE]":
                    if not reader.at_eof():
                        await _drain(response)
                    return
                yield self._event(data, body)

    def _event(self, data: bytes, body: bytes) -> Any:
        try:
            value = from_json(data)
        except ValueError as exc:
            raise openai.APIError(
                f"malformed stream: an event is not JSON: {exc}", self._request(body, 0), body=None
            ) from exc
        if type(value) is dict and value.get("error"):
            error = value["error"]
            message = error.get("message") if isinstance(error, dict) else None
            if not message or not isinstance(message, str):
                message = "An error occurred during streaming"
            raise openai.APIError(message, self._request(body, 0), body=error)
        return value

    def _no_events(self, response: ClientResponse, head: bytes, body: bytes) -> openai.APIError:
        """A 2xx answer that ended without one event: a JSON body, an HTML page, nothing."""
        kind = response.headers.get("Content-Type") or "no content type"
        text = head.decode(errors="replace") if head else "an empty body"
        return openai.APIError(
            f"malformed stream: the answer has no events ({kind}): {text}",
            self._request(body, 0),
            body=None,
        )

    async def _prepare(self, attempt: int) -> Prepared:
        """The SDK's request for ``attempt``, rebuilt when what it depends on changed."""
        client = self._client
        # ``_base_url``: the ``base_url`` property imports a module at each read.
        key = (client.api_key, client._base_url, client.timeout)
        if key != self._prepared_for:
            if client._platform is None:  # as request() does: it may read files
                client._platform = await asyncio.to_thread(get_platform)
            self._prepared, self._prepared_for = {}, key
        prepared = self._prepared.get(attempt)
        if prepared is None:
            prepared = self._prepared[attempt] = prepare(self._request(None, attempt))
        return prepared

    def _request(self, body: bytes | None, attempt: int) -> httpx2.Request:
        return self._client._build_request(chat_options(body), retries_taken=attempt)

    def _session(self) -> ClientSession:
        # The transport's own session (created on first use, closed with the client).
        transport = self._transport
        if not isinstance(transport.client, ClientSession):
            transport.client = transport.get_client()
        return transport.client

    @contextlib.contextmanager
    def _as_sdk_errors(self, body: bytes, attempt: int) -> Iterator[None]:
        """Transport failures inside raised as ``request()`` raises them."""
        try:
            yield
        except Exception as exc:
            error = self._transport_error(exc, body, attempt)
            if error is None:
                raise
            raise error from exc

    def _transport_error(
        self, exc: Exception, body: bytes, attempt: int
    ) -> openai.APIConnectionError | None:
        """``exc`` as ``request()`` raises it (the transport's mapping, then the SDK's);
        None when it is no transport failure: the caller re-raises it as it is."""
        try:
            with map_aiohttp_exceptions():
                raise exc
        except timeout_exceptions():
            return openai.APITimeoutError(request=self._request(body, attempt))
        except request_exceptions():
            return openai.APIConnectionError(request=self._request(body, attempt))
        except ClientError:
            # Not in the transport's table (an answer that is not HTTP, too many redirects):
            # a connection error, as with the SDK's default transport.
            detail = " ".join(str(getattr(exc, "message", "")).split())[:200]
            message = f"Connection error: {detail or type(exc).__name__}"
            return openai.APIConnectionError(message=message, request=self._request(body, attempt))
        except Exception:  # the caller re-raises the original
            return None

    async def _sdk_response(
        self, response: ClientResponse, body: bytes, attempt: int
    ) -> httpx2.Response:
        """A failed response, read and released, as the ``httpx2`` response the SDK reads."""
        with self._as_sdk_errors(body, attempt):
            async with response:
                content = await response.read()
        return self._sdk_head(response, body, attempt, content)

    def _sdk_head(
        self, response: ClientResponse, body: bytes, attempt: int, content: bytes = b""
    ) -> httpx2.Response:
        """``response``'s status and headers (and ``content``) as an ``httpx2`` response."""
        # The body is already decompressed (aiohttp's default, see ``_NOT_SENT``).
        headers = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-encoding"]
        return httpx2.Response(
            response.status,
            headers=headers,
            content=content,
            request=self._request(body, attempt),
        )

    async def _sleep(self, attempt: int, max_retries: int, headers: httpx2.Headers | None) -> None:
        delay = self._client._calculate_retry_timeout(
            max_retries - attempt, self._template, headers
        )
        log.info(
            "retrying the model request in %.2f s (retry %d of %d)", delay, attempt + 1, max_retries
        )
        await asyncio.sleep(delay)


def _proxy_arguments(proxy: httpx2.Proxy | None) -> dict[str, Any]:
    """The proxy the SDK's transport would use for this client's URL (from the environment)."""
    if proxy is None:
        return {}
    auth = BasicAuth(proxy.auth[0], proxy.auth[1]) if proxy.auth else None
    return {"proxy": str(proxy.url), "proxy_auth": auth, "proxy_headers": proxy.headers}


async def _drain(response: ClientResponse) -> None:
    """Read what follows ``[DONE]`` to the end of the body, for at most ``_DRAIN_S``."""
    reader = response.content
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await reader.readany():
                pass
    except (TimeoutError, OSError, ClientError) as exc:
        # The answer is complete: the connection is closed instead of reused.
        log.debug("the rest of the stream after [DONE] was not read: %r", exc)
