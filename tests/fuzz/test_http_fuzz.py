"""Property-based fuzzing of every HTTP route the gateway serves, on a real redis-server.

Random methods, paths, path segments, query parameters, headers (any byte but CR and
LF, so also what HTTP forbids) and bodies (valid messages with hostile
strings, arbitrary JSON, nesting, huge numbers, lone surrogates, raw bytes) are sent
as raw HTTP/1.1 to a real ``GatewayApp``. Every answer must come within a bound, be
below 500, and every 4xx must carry the error shape. Afterwards every enqueued inbound
entry must decode, and the enqueued message ids must be exactly the 202s' ids.

To fuzz a new route, add a ``Route`` to ``ROUTES``; for a longer search, set
``GATEWAY_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.app import GatewayApp
from gateway.core.bus import keys
from gateway.core.bus.codec import decode_inbound
from gateway.core.messages import InboundMessage
from gateway.core.settings import Settings
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

T = TypeVar("T")

API_KEY = "fuzz-key-1"
REQUEST_BOUND_S = 10.0
"""Each exchange must finish within this (a hang guard, not a measurement)."""
MAX_EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "500"))
"""A few seconds in ``make test``; set ``GATEWAY_FUZZ_EXAMPLES=20000`` for a deeper search."""
KNOWN_CHATS = ["fuzz-1", "a{b}", "x:t", "ünï/code"]
"""Chats that have a message before fuzzing, so the events route also streams."""
KNOWN_SESSIONS = [f"http:{chat}" for chat in KNOWN_CHATS]

# -- strategies ----------------------------------------------------------------------------

# Any code point, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
short_text = st.one_of(
    any_text,
    st.sampled_from(["", " ", "0", "1-0", "²", "١", "٣-٠", "{", "}", "%", "/", "..", "\x00"]),
    st.from_regex(r"[0-9]{1,22}(-[0-9]{1,22})?", fullmatch=True),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def often(draw: st.DrawFn, usually: st.SearchStrategy[T], rarely: st.SearchStrategy[T]) -> T:
    """``usually`` four times in five: most requests should get past the first check."""
    return draw(usually if draw(st.integers(0, 4)) else rarely)


def _json_bytes(value: Any, ascii_only: bool) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes; otherwise they become the
    # invalid UTF-8 that "surrogatepass" produces.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def message_bodies(draw: st.DrawFn) -> bytes:
    """Mostly near-valid messages with hostile field values, plus arbitrary JSON and bytes."""
    kind = draw(st.sampled_from(["message", "message", "message", "json", "bytes", "edge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "edge":
        return draw(
            st.sampled_from(
                [
                    b"[" * 100_000 + b"]" * 100_000,
                    b'{"text": ' + b"9" * 5000 + b"}",
                    b'{"channel": "http", "chat_id": "c", "sender_id": "s", "text": NaN}',
                    b'{"channel": "http", "chat_id": "c", "sender_id": "s", "text": "\\ud800"}',
                    b"",
                    b"null",
                ]
            )
        )
    if kind == "json":
        value = draw(json_values)
    else:
        plain = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
        value = {
            "channel": often(draw, st.just("http"), st.sampled_from(["telegram", "", "x y"])),
            "chat_id": often(draw, st.sampled_from(KNOWN_CHATS) | plain, short_text),
            "sender_id": often(draw, st.just("s"), short_text),
            "text": often(draw, plain, st.one_of(any_text, json_scalars)),
        }
        optional = {
            "thread_id": st.one_of(plain, short_text, st.none()),
            "sender_name": any_text,
            "agent": st.sampled_from(["assistant", "helper", "nobody", ""]),
            "attachments": st.lists(
                st.dictionaries(
                    st.sampled_from(["type", "url", "path", "name", "mime_type", "x"]),
                    st.one_of(any_text, st.sampled_from(["image", "file", "http://x/y"])),
                ),
                max_size=3,
            ),
            "unknown": json_scalars,
        }
        for name in draw(st.sets(st.sampled_from(sorted(optional)), max_size=2)):
            value[name] = draw(optional[name])
    return _json_bytes(value, draw(st.booleans()))


stream_ids = st.one_of(short_text, st.sampled_from(["0-0", "0", "1-1", "$", "+", "-"]))
session_segments = st.one_of(st.sampled_from(KNOWN_SESSIONS), any_text.map(lambda s: "http:" + s))


@dataclass(frozen=True)
class Route:
    """One route to fuzz: its method and path template, and what to fill it with."""

    method: str
    template: str
    params: Mapping[str, st.SearchStrategy[str]] = field(default_factory=dict)
    query: Mapping[str, st.SearchStrategy[str]] = field(default_factory=dict)
    headers: Mapping[str, st.SearchStrategy[str]] = field(default_factory=dict)
    body: st.SearchStrategy[bytes] | None = None
    weight: int = 1
    """How many times more often than a weight-1 route to try it."""


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/messages",
        headers={
            "Idempotency-Key": st.one_of(
                st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True), short_text
            ),
            "Content-Type": st.just("application/json"),
            "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "x"]),
        },
        body=message_bodies(),
        weight=4,
    ),
    Route(
        "GET",
        "/v1/sessions/{key}/events",
        params={"key": session_segments},
        query={"after": stream_ids, "run_after": stream_ids, "follow": short_text},
        headers={"Last-Event-ID": stream_ids},
        weight=2,
    ),
    Route("GET", "/healthz"),
    Route("GET", "/readyz"),
    Route("GET", "/metrics"),
]

METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]


def header_bytes(value: bytes) -> bytes:
    """Any byte but CR and LF (which would end the header line and change the framing)."""
    return value.replace(b"\r", b"").replace(b"\n", b"")


header_values = st.binary(max_size=120).map(header_bytes)
good_auth = st.sampled_from(
    [[(b"X-API-Key", API_KEY.encode())], [(b"Authorization", f"Bearer {API_KEY}".encode())]]
)
bad_auth = st.one_of(
    st.sampled_from(
        [
            [],
            [(b"X-API-Key", b"")],
            [(b"X-API-Key", b"\xff" + API_KEY.encode())],
            [(b"Authorization", b"Bearer \xff\xfe")],
            [(b"Authorization", b"Bearer ")],
            [(b"Authorization", b"Basic " + API_KEY.encode())],
        ]
    ),
    header_values.map(lambda value: [(b"X-API-Key", value)]),
    header_values.map(lambda value: [(b"Authorization", b"Bearer " + value)]),
)


def _segment(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@dataclass(frozen=True)
class Exchange:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    route = draw(st.sampled_from([route for route in ROUTES for _ in range(route.weight)]))
    method = often(draw, st.just(route.method), st.sampled_from(METHODS))
    path = route.template
    for name, values in route.params.items():
        path = path.replace("{" + name + "}", _segment(draw(values)))
    if draw(st.integers(0, 9)) == 0:
        path += "/" + _segment(draw(any_text))  # off the route
    query = [(name, draw(values)) for name, values in route.query.items() if draw(st.booleans())]
    query += draw(st.lists(st.tuples(any_text, any_text), max_size=2))
    target = path + (
        "?" + "&".join(f"{_segment(k)}={_segment(v)}" for k, v in query) if query else ""
    )
    headers = list(often(draw, good_auth, bad_auth))
    for name, values in route.headers.items():
        if draw(st.booleans()):
            value = draw(values).encode("utf-8", "surrogatepass")
            headers.append((name.encode(), header_bytes(value)))
    headers += [(b"X-Fuzz", draw(header_values))] if draw(st.booleans()) else []
    body = draw(route.body) if route.body is not None and draw(st.integers(0, 9)) else b""
    if route.body is None and draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(min_size=1, max_size=100))
    return Exchange(method, target, headers, body)


# -- the exchange --------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


async def exchange(host: str, port: int, request: Exchange) -> Answer:
    head = f"{request.method} {request.target} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
    lines = [head.encode("ascii", "surrogateescape")]
    lines += [name + b": " + value.strip(b" \t") + b"\r\n" for name, value in request.headers]
    if request.body:
        lines.append(b"Content-Length: %d\r\n" % len(request.body))
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"".join(lines) + b"\r\n" + request.body)
        with contextlib.suppress(ConnectionError):  # answered early and closed: read on
            await writer.drain()
        status_head = await reader.readuntil(b"\r\n\r\n")
        status = int(status_head.split(b" ", 2)[1])
        content_type = ""
        for line in status_head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                content_type = value.strip().decode("latin-1")
        if content_type.startswith("text/event-stream"):
            return Answer(status, content_type, b"")  # a live stream: its head is the answer
        return Answer(status, content_type, await reader.read())
    finally:
        writer.close()


def check(request: Exchange, answer: Answer) -> None:
    assert answer.status < 500, (request, answer)
    if 400 <= answer.status < 500 and request.method != "HEAD":
        error = json.loads(answer.body)["error"]
        assert set(error) == {"code", "message"} and error["code"] and error["message"]


# -- the test ------------------------------------------------------------------------------


@pytest.fixture
async def gateway(redis_url: str, tmp_path: Path) -> AsyncIterator[GatewayApp]:
    settings_ = Settings(
        model="echo/echo",
        workspace=tmp_path / "workspace",
        redis={"url": redis_url},
        http={"host": "127.0.0.1", "port": 0, "api_keys": [API_KEY]},
        agents={"assistant": {}, "helper": {}},
        worker={"ready_partitions": 2},
    )
    async with GatewayApp(settings_, with_worker=False) as app:
        yield app


async def _enqueued(redis: Redis) -> list[InboundMessage]:
    """Every inbound entry, decoded (a malformed one fails here)."""
    messages = []
    async for stream in redis.scan_iter(match=keys.inbound("*")):
        for _, fields in await redis.xrange(stream):
            messages.append(decode_inbound(fields))
    return messages


def _bridge(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine on the test's loop from hypothesis's thread, bounded."""

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(REQUEST_BOUND_S + 5)

    return run


# 500 examples take ~10 s alone, a few times that beside the process tests of `make test`.
@pytest.mark.timeout(300)
async def test_no_route_answers_5xx_hangs_or_enqueues_garbage(
    gateway: GatewayApp, redis: Redis
) -> None:
    assert gateway.url is not None
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    accepted: set[str] = set()

    async def bounded(request: Exchange) -> Answer:
        async with asyncio.timeout(REQUEST_BOUND_S):
            return await exchange(host, int(port), request)

    for chat in KNOWN_CHATS:
        body = json.dumps({"channel": "http", "chat_id": chat, "sender_id": "s", "text": "hi"})
        auth = [(b"X-API-Key", API_KEY.encode())]
        answer = await bounded(Exchange("POST", "/v1/messages", auth, body.encode()))
        assert answer.status == 202
        accepted.add(json.loads(answer.body)["id"])
    run = _bridge(asyncio.get_running_loop())

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=exchanges())
    def one(request: Exchange) -> None:
        answer = run(bounded(request))
        check(request, answer)
        if answer.status == 202:
            accepted.add(json.loads(answer.body)["id"])

    await asyncio.to_thread(one)

    messages = await _enqueued(redis)
    assert {m.id for m in messages} == accepted
    for m in messages:
        assert m.channel in gateway.registry.names() and (m.text.strip() or m.attachments)
        m.model_dump_json().encode("utf-8")  # every string is writable Unicode
    signals = sum([await redis.xlen(keys.ready(p)) for p in range(2)])
    assert signals == len(messages)
