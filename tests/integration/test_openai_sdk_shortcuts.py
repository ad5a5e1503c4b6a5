"""``ChatEndpoint`` (aiohttp straight, the SDK deciding) against the SDK's own request path.

Each test makes the same request both ways against a recording loopback server and
compares what the server saw and what the caller got: the request on the wire, the
retry attempts and their delays, the exception classes, texts and bodies. An SDK
upgrade that changes any of these fails here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import openai
import pytest

from gateway.core.errors import ProviderError, RetryableProviderError
from gateway.core.providers.base import ModelRequest, ModelSpec
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.providers.openai_sdk import ChatEndpoint
from gateway.core.settings import ProviderSettings
from tests.fakes.sdk_paths import KEY, PATHS, client, outcome
from tests.fakes.wire_server import STREAM, Seen, WireServer, sse, status, wire  # noqa: F401

pytestmark = pytest.mark.integration

ERROR = json.dumps({"error": {"message": "no such model", "type": "invalid", "code": None}})
QUICK = {"retry-after": "0.01"}


def comparable(seen: Seen) -> tuple[Any, ...]:
    """What must match; aiohttp advertises the encodings it decodes, httpx2 its own."""
    headers = {k: v for k, v in seen.headers.items() if k != "accept-encoding"}
    return seen.method, seen.path_qs, headers, seen.body


async def both(
    server: WireServer, script: list[Any], **options: Any
) -> tuple[list[Any], list[list[Seen]]]:
    """Outcome and requests seen, per path (SDK first), each on a fresh client."""
    outcomes, seen = [], []
    for path in PATHS.values():
        server.seen.clear()
        server.answers.clear()
        server.script(*script)
        sdk = client(server.base_url, **options)
        try:
            outcomes.append(await outcome(path, sdk))
        finally:
            await sdk.close()
        seen.append(list(server.seen))
    return outcomes, seen


@pytest.mark.parametrize("suffix", ["/v1", "/v1/"])
async def test_the_request_on_the_wire_is_the_sdks(wire: WireServer, suffix: str) -> None:
    options = {"default_headers": {"X-Team": "a"}, "default_query": {"api-version": "1"}}
    for path in PATHS.values():
        sdk = client(wire.base_url.removesuffix("/v1") + suffix, timeout=42, **options)
        try:
            await path(sdk, b'{"model":"m"}')
        finally:
            await sdk.close()
    ours, theirs = (comparable(s) for s in reversed(wire.seen))
    assert ours == theirs
    method, path_qs, headers, body = ours
    assert (method, path_qs, body) == (
        "POST",
        "/v1/chat/completions?api-version=1",
        b'{"model":"m"}',
    )
    assert headers["authorization"] == f"Bearer {KEY}" and headers["x-team"] == "a"
    assert headers["x-stainless-read-timeout"] == "42"


async def test_the_providers_settings_reach_the_wire_as_the_sdks(wire: WireServer) -> None:
    """Key, base URL, timeout, and the extra headers and query of the provider's settings."""
    extra = {"headers": {"X-Title": "gateway"}, "query": {"api-version": "1"}}
    settings = ProviderSettings(base_url=wire.base_url, api_key=KEY, timeout_s=30, **extra)
    provider = OpenAICompatProvider("local", settings)
    request = ModelRequest(spec=ModelSpec(provider="local", model="m"), messages=[])
    try:
        assert [chunk async for chunk in provider.stream(request)]
    finally:
        await provider.aclose()
    sdk = client(
        wire.base_url, timeout=30.0, default_headers=extra["headers"], default_query=extra["query"]
    )
    try:
        await PATHS["sdk"](sdk, wire.seen[0].body)
    finally:
        await sdk.close()
    ours, theirs = (comparable(s) for s in wire.seen)
    assert ours == theirs
    assert ours[1] == "/v1/chat/completions?api-version=1" and ours[2]["x-title"] == "gateway"


async def test_retries_and_their_delays_are_the_sdks(
    wire: WireServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    calculate = openai.AsyncOpenAI._calculate_retry_timeout

    def recorded(self: openai.AsyncOpenAI, *args: Any, **kwargs: Any) -> float:
        delays.append(calculate(self, *args, **kwargs))
        return delays[-1]

    monkeypatch.setattr(openai.AsyncOpenAI, "_calculate_retry_timeout", recorded)
    script = [status(503, b"{}", QUICK), status(429, b"{}", {"retry-after-ms": "20"}), sse(STREAM)]
    (sdk, ours), (sdk_seen, our_seen) = await both(wire, script, max_retries=2)
    assert ours == sdk and ours[0]["choices"][0]["delta"]["content"] == "hi"
    assert [comparable(s) for s in our_seen] == [comparable(s) for s in sdk_seen]
    assert [s.headers["x-stainless-retry-count"] for s in our_seen] == ["0", "1", "2"]
    assert delays == [0.01, 0.02, 0.01, 0.02]  # Retry-After honoured, both ways


async def test_max_retries_is_honoured_and_the_last_error_raised(wire: WireServer) -> None:
    script = [status(500, ERROR.encode(), QUICK)] * 3
    (sdk, ours), (sdk_seen, our_seen) = await both(wire, script, max_retries=2)
    assert ours == sdk
    # How the message quotes the body is the SDK's and changed between versions.
    assert (ours[0], ours[2]) == (openai.InternalServerError, 500)
    assert "no such model" in ours[1]
    assert len(our_seen) == len(sdk_seen) == 3


@pytest.mark.parametrize(
    "headers", [{"x-should-retry": "false"}, {"retry-after": "1000"}], ids=["refused", "too-long"]
)
async def test_the_server_can_refuse_a_retry(wire: WireServer, headers: dict[str, str]) -> None:
    script = [status(503, ERROR.encode(), headers), sse(STREAM)]
    (sdk, ours), (sdk_seen, our_seen) = await both(wire, script, max_retries=2)
    assert ours == sdk and ours[0] is openai.InternalServerError
    assert len(our_seen) == len(sdk_seen) == 1


async def test_a_retry_is_decided_before_the_error_body_is_read(wire: WireServer) -> None:
    """A 503 whose body stalls: retried at once on its status and headers, as the SDK
    does, not failed after a read timeout on a body nobody needs."""
    stalled = wire.hang_after(b'{"error":', 503, {**QUICK, "Content-Type": "application/json"})
    script = [stalled, sse(STREAM)]
    (sdk, ours), (sdk_seen, our_seen) = await both(wire, script, max_retries=1, timeout=1)
    assert ours == sdk and ours[0]["choices"][0]["delta"]["content"] == "hi"
    assert len(our_seen) == len(sdk_seen) == 2


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422, 429, 500, 503])
@pytest.mark.parametrize(
    "body", [ERROR.encode(), b"plain text", b""], ids=["json", "text", "empty"]
)
async def test_statuses_raise_the_sdks_exceptions(wire: WireServer, code: int, body: bytes) -> None:
    (sdk, ours), _ = await both(wire, [status(code, body)])
    assert ours == sdk and ours[2] == code


async def test_a_connection_failure_is_retried_with_the_sdks_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Any, ...]] = []
    calculate = openai.AsyncOpenAI._calculate_retry_timeout

    def recorded(self: openai.AsyncOpenAI, remaining: int, options: Any, headers: Any) -> float:
        calls.append((remaining, headers))
        return calculate(self, remaining, options, headers) / 100  # keep the test short

    monkeypatch.setattr(openai.AsyncOpenAI, "_calculate_retry_timeout", recorded)
    results = []
    for path in PATHS.values():
        sdk = client("http://127.0.0.1:9/v1", max_retries=2)  # nothing listens on port 9
        try:
            results.append(await outcome(path, sdk))
        finally:
            await sdk.close()
    sdk_result, ours = results
    assert ours == sdk_result and issubclass(ours[0], openai.APIConnectionError)
    assert calls == [(2, None), (1, None)] * 2


async def test_an_answer_that_is_not_http_is_a_connection_error() -> None:
    """The base URL names another service: one clear, retryable error, not aiohttp's."""

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"+PONG\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = ProviderSettings(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
    provider = OpenAICompatProvider("local", settings)
    request = ModelRequest(spec=ModelSpec(provider="local", model="m"), messages=[])
    try:
        with pytest.raises(
            RetryableProviderError, match=r"^model provider local: Connection error"
        ):
            async for _chunk in provider.stream(request):
                pass
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()


async def test_a_request_timeout_is_the_sdks(wire: WireServer) -> None:
    (sdk, ours), _ = await both(wire, [wire.hang], timeout=0.2)
    assert ours == sdk and ours[0] is openai.APITimeoutError


async def test_a_read_timeout_mid_stream_is_the_sdks(wire: WireServer) -> None:
    first = STREAM.split(b"\n\n")[0] + b"\n\n"
    (sdk, ours), _ = await both(wire, [wire.hang_after(first)], timeout=0.2)
    assert ours == sdk and ours[0] is openai.APITimeoutError


async def test_the_key_is_never_logged(wire: WireServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wire.script(
        status(503, b"{}", QUICK),
        status(401, json.dumps({"error": {"message": f"bad key {KEY}"}}).encode()),
    )
    settings = ProviderSettings(base_url=wire.base_url, api_key=KEY, max_retries=1)
    provider = OpenAICompatProvider("local", settings)
    request = ModelRequest(spec=ModelSpec(provider="local", model="m"), messages=[])
    try:
        with pytest.raises(ProviderError) as caught:
            async for _chunk in provider.stream(request):
                pass
    finally:
        await provider.aclose()
    assert KEY not in str(caught.value)
    assert len(wire.seen) == 2 and caplog.records
    for record in caplog.records:
        assert KEY not in record.getMessage()


async def test_a_key_where_the_message_is_cut_is_redacted(wire: WireServer) -> None:
    """The server's message is cut at 300 characters: the key is taken out before, or
    the part of it before the cut would be left in the error."""
    message = "x" * 280 + f" bad key {KEY}"  # the cut falls inside the key
    wire.script(status(401, json.dumps({"error": {"message": message}}).encode()))
    settings = ProviderSettings(base_url=wire.base_url, api_key=KEY, max_retries=0)
    provider = OpenAICompatProvider("local", settings)
    request = ModelRequest(spec=ModelSpec(provider="local", model="m"), messages=[])
    try:
        with pytest.raises(ProviderError, match="bad key") as caught:
            async for _chunk in provider.stream(request):
                pass
    finally:
        await provider.aclose()
    assert KEY[:3] not in str(caught.value)


async def test_a_changed_key_or_base_url_is_followed(wire: WireServer) -> None:
    """The remembered request is rebuilt when the client's key or base URL changes."""
    sdk = client(wire.base_url)
    endpoint = ChatEndpoint(sdk)
    try:
        for _ in range(2):
            response = await endpoint.open(b"{}")
            async with response:
                assert [event async for event in endpoint.events(response, b"{}")]
            sdk.base_url = wire.base_url.removesuffix("/v1") + "/v2"
            sdk.api_key = "sk-another"
    finally:
        await sdk.close()
    assert [s.path_qs for s in wire.seen] == ["/v1/chat/completions", "/v2/chat/completions"]
    assert [s.headers["authorization"] for s in wire.seen] == [f"Bearer {KEY}", "Bearer sk-another"]


async def test_a_client_that_rewrites_each_request_is_refused() -> None:
    async def key() -> str:
        return KEY

    sdk = openai.AsyncOpenAI(api_key=key, http_client=openai.DefaultAioHttpClient())
    try:
        with pytest.raises(ValueError, match="plain API key"):
            ChatEndpoint(sdk)
    finally:
        await sdk.close()
