"""``ChatEndpoint``'s reading of the event stream against the SDK's own stream.

The same bytes, written in the same pieces, read both ways: the same chunks, or the
same ``APIError`` for an error event (also gzip-encoded, also cut off mid-body). Then
what the provider adds: a data line that is not JSON, or an answer without a single
event, is one clear error; the connection is reused after ``[DONE]``, and closed when
the turn is cancelled mid-stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from gateway.core.errors import ProviderError
from gateway.core.providers.base import ModelRequest, ModelSpec
from gateway.core.providers.openai_compat import OpenAICompatProvider
from gateway.core.providers.sse import MAX_EVENT_BYTES
from gateway.core.settings import ProviderSettings
from tests.fakes.sdk_paths import PATHS, client, outcome
from tests.fakes.wire_server import (  # noqa: F401
    CHUNK,
    STREAM,
    USAGE,
    Answer,
    WireServer,
    gzipped,
    sse,
    status,
    wire,
)

pytestmark = pytest.mark.integration

UNICODE = '{"choices":[{"index":0,"delta":{"content":"日本語 ✓"}}]}'.encode()
FIELDS = (
    b": a comment\n\nevent: message\nid: 7\nretry: 100\ndata: " + CHUNK + b"\n\n"
    b'data: {"choices":\ndata:[]}\n\n'  # two data lines, joined with LF; no space
    b"data: " + USAGE + b"\n\ndata: [DONE]\n\n"
)
STREAMS: dict[str, list[bytes]] = {
    "lf": [STREAM],
    "crlf": [STREAM.replace(b"\n", b"\r\n")],
    "cr": [STREAM.replace(b"\n", b"\r")],
    "byte-by-byte": [bytes([b]) for b in STREAM.replace(b"\n", b"\r\n")],
    "other-fields": [FIELDS],
    "after-done": [STREAM + b"data: " + CHUNK + b"\n\n"],
    "no-done": [STREAM.removesuffix(b"data: [DONE]\n\n")],
    "unicode-split": [b"data: " + UNICODE[:45], UNICODE[45:] + b"\n\ndata: [DONE]\n\n"],
}
ERRORS = {
    "message": b'data: {"error": {"message": "the model is overloaded", "code": 1}}\n\n',
    "no-message": b'data: {"error": {"code": "overloaded"}}\n\n',
    "named": b'event: error\ndata: {"error": {"message": "boom"}}\n\n',
}


async def read_both(server: WireServer, pieces: list[bytes]) -> list[Any]:
    return await answer_both(server, sse(*pieces))


async def answer_both(server: WireServer, answer: Answer) -> list[Any]:
    """The outcome both ways (SDK first), ``answer`` answering each."""
    results = []
    for path in PATHS.values():
        server.script(answer)
        sdk = client(server.base_url)
        try:
            results.append(await outcome(path, sdk))
        finally:
            await sdk.close()
    return results


@pytest.mark.parametrize("name", STREAMS)
async def test_the_chunks_are_the_sdks(wire: WireServer, name: str) -> None:
    sdk, ours = await read_both(wire, STREAMS[name])
    assert ours == sdk
    assert isinstance(ours, list) and ours


async def test_a_gzipped_stream_is_read_as_the_sdk_reads_it(wire: WireServer) -> None:
    pieces = [event + b"\n\n" for event in STREAM.split(b"\n\n") if event]
    sdk_result, ours = await answer_both(wire, gzipped(*pieces))
    assert ours == sdk_result and isinstance(ours, list) and len(ours) == 2


async def test_a_body_cut_before_done_is_the_sdks_connection_error(wire: WireServer) -> None:
    sdk_result, ours = await answer_both(wire, wire.cut_after(b"data: " + CHUNK + b"\n\n"))
    assert ours == sdk_result and ours[0] is openai.APIConnectionError


@pytest.mark.parametrize("name", ERRORS)
async def test_an_error_event_is_the_sdks_api_error(wire: WireServer, name: str) -> None:
    sdk, ours = await read_both(wire, [b"data: " + CHUNK + b"\n\n", ERRORS[name]])
    assert ours == sdk
    assert isinstance(ours, tuple) and ours[0].__name__ == "APIError"


async def _raises_provider_error(wire: WireServer, answer: Any, match: str) -> None:
    """Streaming through the provider against ``answer`` ends in a ProviderError."""
    wire.script(answer)
    provider = OpenAICompatProvider(
        "odd", ProviderSettings(base_url=wire.base_url, api_key="k", max_retries=0)
    )
    request = ModelRequest(spec=ModelSpec(provider="odd", model="m"), messages=[])
    try:
        with pytest.raises(ProviderError, match=match):
            async for _chunk in provider.stream(request):
                pass
    finally:
        await provider.aclose()


async def test_data_that_is_not_json_is_one_clear_error(wire: WireServer) -> None:
    answer = sse(b"data: " + CHUNK + b"\n\ndata: {not json\n\ndata: [DONE]\n\n")
    await _raises_provider_error(wire, answer, r"^model provider odd: malformed stream: an event")


async def test_an_event_that_never_ends_is_one_clear_error(wire: WireServer) -> None:
    # A server streaming one endless line: refused at the limit, not held until memory runs out.
    endless = b"data: " + b"x" * (MAX_EVENT_BYTES + 1024)
    await _raises_provider_error(wire, sse(endless), r"malformed stream: an event over \d+ bytes")


async def test_the_connection_is_reused_after_done(wire: WireServer) -> None:
    """[DONE] and the end of the body written separately: the response is released
    with its body read to the end, so the next request goes over the same connection."""
    head, done = STREAM.split(b"data: [DONE]")
    provider = OpenAICompatProvider(
        "local", ProviderSettings(base_url=wire.base_url, api_key="k", max_retries=0)
    )
    request = ModelRequest(spec=ModelSpec(provider="local", model="m"), messages=[])
    try:
        for _ in range(2):
            wire.script(sse(head, b"data: [DONE]" + done))
            chunks = [chunk async for chunk in provider.stream(request)]
            assert chunks
    finally:
        await provider.aclose()
    first, second = wire.seen
    assert first.port == second.port


NO_EVENTS = {
    "completion": (b'{"id":"c","choices":[{"message":{"content":"hi"}}]}', "application/json"),
    "html": (b"<html><body>Sign in</body></html>", "text/html"),
    "empty": (b"", "text/event-stream"),
}


@pytest.mark.parametrize("name", NO_EVENTS)
async def test_an_answer_without_events_is_one_clear_error(wire: WireServer, name: str) -> None:
    """Not an empty reply: a server that ignores ``stream``, a login page, nothing."""
    body, kind = NO_EVENTS[name]
    wire.script(status(200, body, content_type=kind))
    provider = OpenAICompatProvider(
        "odd", ProviderSettings(base_url=wire.base_url, api_key="k", max_retries=0)
    )
    request = ModelRequest(spec=ModelSpec(provider="odd", model="m"), messages=[])
    expected = rf"^model provider odd: malformed stream: the answer has no events \({kind}\): "
    try:
        with pytest.raises(ProviderError, match=expected) as caught:
            async for _chunk in provider.stream(request):
                pass
    finally:
        await provider.aclose()
    assert str(caught.value).endswith(body.decode() or "an empty body")


async def test_a_cancelled_stream_raises_cancelled_and_hangs_up(wire: WireServer) -> None:
    """A stop, an interrupt or a lost lease cancels the turn mid-stream: the cancellation
    goes through (no retry, no provider error) and the connection is closed."""
    wire.script(wire.hang_after(b"data: " + CHUNK + b"\n\n"))
    provider = OpenAICompatProvider(
        "local", ProviderSettings(base_url=wire.base_url, api_key="k", max_retries=2)
    )
    request = ModelRequest(spec=ModelSpec(provider="local", model="m"), messages=[])
    received = asyncio.Event()

    async def consume() -> None:
        async for _chunk in provider.stream(request):
            received.set()

    task = asyncio.create_task(consume())
    try:
        await received.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wire.hung_up.wait()
    finally:
        await provider.aclose()
    assert len(wire.seen) == 1
