"""Regression tests of the HTTP API against hostile and unlucky clients (real redis-server).

Malformed input answers 4xx with the error shape and enqueues nothing; blank API keys
are refused; any accepted chat id has a working events URL; HEAD does not hold the
connection; slow headers and bodies are cut off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from gateway.app import GatewayApp
from gateway.channels.http import api_key_middleware
from gateway.channels.http.auth import KeyRing
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings, load_settings
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401
from tests.integration.test_http_ingress import MESSAGE, enqueued, make_settings, read_sse

pytestmark = pytest.mark.integration

API_KEY = "k-hardening-1"
HANG_GUARD_S = 20.0
"""Bounds a step that hangs without the fix (a guard against a hung test, not a measurement)."""


@pytest.fixture
async def queue_only(redis_url: str, tmp_path: Path) -> AsyncIterator[GatewayApp]:
    settings = make_settings(redis_url, tmp_path, api_keys=[API_KEY])
    async with GatewayApp(settings, with_worker=False) as app:
        yield app


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        yield session


async def raw_exchange(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as it is (bytes a client library would refuse); status and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(HANG_GUARD_S):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), body


# -- blank API keys ----------------------------------------------------------------------


@pytest.mark.parametrize("keys", [[""], ["   "], [API_KEY, ""]])
def test_blank_api_keys_are_a_config_error(tmp_path: Path, keys: list[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"http": {"host": "0.0.0.0", "api_keys": keys}}))
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert "http.api_keys" in message and "empty or blank" in message and "\n" not in message
    with pytest.raises(ValidationError):
        Settings(http={"api_keys": keys})


def test_unset_variable_as_api_key_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GW_TEST_UNSET_KEY", raising=False)
    config = tmp_path / "config.yaml"
    config.write_text("http: {host: 0.0.0.0, api_keys: [${GW_TEST_UNSET_KEY}]}\n")
    with pytest.raises(ConfigError, match=r"http\.api_keys"):
        load_settings(config)


def test_key_ring_refuses_blank_keys_and_never_matches_an_empty_one() -> None:
    with pytest.raises(ConfigError):
        api_key_middleware([SecretStr("")])
    ring = KeyRing([SecretStr(API_KEY)])
    assert ring.matches(API_KEY)
    assert not ring.matches("") and not ring.matches(None)
    assert not ring.matches(API_KEY[:-1]) and not ring.matches("\udcff" + API_KEY)


def test_hashed_keys_match_the_key_they_hash(tmp_path: Path) -> None:
    hashed = "SHA256:" + hashlib.sha256(API_KEY.encode()).hexdigest().upper()
    ring = KeyRing([SecretStr(hashed), SecretStr("plain-key")])
    assert ring.matches(API_KEY) and ring.matches("plain-key")
    assert not ring.matches(hashed) and not ring.matches(hashed.lower())
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"http": {"api_keys": ["sha256:abc"]}}))
    with pytest.raises(ConfigError, match="64 hex digits"):
        load_settings(config)


async def test_empty_or_non_utf8_keys_are_refused_with_401(
    queue_only: GatewayApp, redis: Redis
) -> None:
    assert queue_only.url is not None
    body = json.dumps(MESSAGE).encode()
    for header in (
        b"X-API-Key: ",
        b"Authorization: Bearer ",
        b"X-API-Key: \xff" + API_KEY.encode(),
        b"Authorization: Bearer \xff\xfe",
    ):
        request = (
            b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\n" + header + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        status, answer = await raw_exchange(queue_only.url, request)
        assert status == 401, header
        assert json.loads(answer)["error"]["code"] == "unauthorized"
    assert await enqueued(redis) == (0, 0)


# -- malformed input -----------------------------------------------------------------------

_POST = "/v1/messages"
_EVENTS = "/v1/sessions/http%3Aorder-7/events"
_PREFIX = b'{"channel": "http", "chat_id": "c", "sender_id": "s", '
_NESTED = b"[" * 100_000 + b"]" * 100_000  # under the 256 KiB body limit, past recursion

MALFORMED: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("deeply nested json", "POST", _POST, {}, _NESTED),
    ("nested json in text", "POST", _POST, {}, _PREFIX + b'"text": ' + _NESTED + b"}"),
    ("5000-digit integer as text", "POST", _POST, {}, _PREFIX + b'"text": ' + b"7" * 5000 + b"}"),
    ("5000-digit integer in attachments", "POST", _POST, {},
     _PREFIX + b'"text": "x", "attachments": [{"url": "u", "name": ' + b"7" * 5000 + b"}]}"),
    ("negative 5000-digit integer", "POST", _POST, {}, b"-" + b"7" * 5000),
    ("NaN", "POST", _POST, {}, _PREFIX + b'"text": NaN}'),
    ("lone surrogate in text", "POST", _POST, {}, _PREFIX + b'"text": "hi \\ud800"}'),
    ("lone low surrogate in text", "POST", _POST, {}, _PREFIX + b'"text": "\\udc00 there"}'),
    ("lone surrogate in attachment url", "POST", _POST, {},
     _PREFIX + b'"text": "x", "attachments": [{"url": "\\udfff"}]}'),
    ("lone surrogate in attachment name", "POST", _POST, {},
     _PREFIX + b'"text": "x", "attachments": [{"url": "u", "name": "\\ud83d"}]}'),
    ("lone surrogate in chat_id", "POST", _POST, {},
     b'{"channel": "http", "chat_id": "\\ud800", "sender_id": "s", "text": "x"}'),
    ("lone surrogate in sender_name", "POST", _POST, {},
     _PREFIX + b'"text": "x", "sender_name": "\\udabc"}'),
    ("lone surrogate as a key", "POST", _POST, {}, _PREFIX + b'"text": "x", "\\ud800": 1}'),
    ("gzip body that is not gzip", "POST", _POST, {"Content-Encoding": "gzip"}, b"not gzip"),
    ("deflate body that is not deflate", "POST", _POST, {"Content-Encoding": "deflate"}, b"{}"),
    # aiohttp decoded this as raw deflate that never ends: the request waited for ever.
    ("unterminated deflate body", "POST", _POST, {"Content-Encoding": "deflate"}, b"[" * 200_000),
    ("brotli body", "POST", _POST, {"Content-Encoding": "br"}, b"\x0b\x02\x80{}\x03"),
    ("superscript digit after", "GET", _EVENTS + "?after=%C2%B2", {}, b""),
    ("arabic digit after", "GET", _EVENTS + "?after=%D9%A1", {}, b""),
    ("arabic digits after with seq", "GET", _EVENTS + "?after=%D9%A1%D9%A2-0", {}, b""),
    ("superscript digit run_after", "GET", _EVENTS + "?after=0-0&run_after=%C2%B2", {}, b""),
    ("arabic digit run_after", "GET", _EVENTS + "?after=0-0&run_after=%D9%A1-0", {}, b""),
    ("fullwidth digit run_after", "GET", _EVENTS + "?after=0-0&run_after=%EF%BC%91", {}, b""),
    ("superscript Last-Event-ID", "GET", _EVENTS, {"Last-Event-ID": "²"}, b""),
    ("arabic Last-Event-ID", "GET", _EVENTS, {"Last-Event-ID": "١-٠"}, b""),
    ("stream id past 64 bits", "GET", _EVENTS + "?after=18446744073709551616-0", {}, b""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
async def test_malformed_input_answers_4xx_with_the_error_shape(
    queue_only: GatewayApp,
    client: aiohttp.ClientSession,
    redis: Redis,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    async with client.post(f"{queue_only.url}/v1/messages", json=MESSAGE) as resp:
        assert resp.status == 202  # so that the events route has a session to refuse
    before = await enqueued(redis)
    headers = {"Content-Type": "application/json", "Idempotency-Key": "bad-1", **headers}
    url = f"{queue_only.url}{path}"
    async with asyncio.timeout(HANG_GUARD_S):
        async with client.request(method, url, data=body or None, headers=headers) as resp:
            assert 400 <= resp.status < 500, await resp.text()
            error = (await resp.json())["error"]
    assert set(error) == {"code", "message"} and error["message"]
    assert await enqueued(redis) == before


# -- events_url for any accepted id -------------------------------------------------------

ODD_IDS = ["a{b}", "{", "}x{", "a/b", "a%2Fb", "100%", "a?b#c", "sp ace", "ünï", "..", "a:b"]


@pytest.mark.parametrize("field", ["chat_id", "thread_id"])
async def test_events_url_works_for_every_accepted_id(
    redis_url: str, tmp_path: Path, field: str
) -> None:
    settings = make_settings(redis_url, tmp_path)
    async with GatewayApp(settings) as app, aiohttp.ClientSession() as client:
        for odd in ODD_IDS:
            message = {**MESSAGE, field: odd, "text": f"hello {odd}"}
            async with client.post(f"{app.url}/v1/messages", json=message) as resp:
                assert resp.status == 202
                accepted = await resp.json()
            async with asyncio.timeout(HANG_GUARD_S):
                async with client.get(f"{app.url}{accepted['events_url']}") as resp:
                    assert resp.status == 200, (odd, await resp.text())
                    frames = await read_sse(resp)
            assert frames[-1].event == "run.completed", odd
            assert f"hello {odd}" in frames[-1].data["content"]


# -- HEAD ----------------------------------------------------------------------------------


async def test_head_on_the_events_route_answers_at_once_and_frees_the_connection(
    queue_only: GatewayApp, client: aiohttp.ClientSession
) -> None:
    assert queue_only.url is not None
    async with client.post(f"{queue_only.url}/v1/messages", json=MESSAGE) as resp:
        events_url = (await resp.json())["events_url"]
    host, port = queue_only.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = f"X-API-Key: {API_KEY}\r\nHost: t\r\n\r\n".encode()
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            writer.write(f"HEAD {events_url}&follow=1 HTTP/1.1\r\n".encode() + auth)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
            # The same keep-alive connection serves the next request.
            writer.write(b"GET /healthz HTTP/1.1\r\n" + auth)
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    async with client.head(f"{queue_only.url}/v1/sessions/http%3Anobody/events") as resp:
        assert resp.status == 404


# -- slow clients --------------------------------------------------------------------------


@pytest.fixture
async def impatient(redis_url: str, tmp_path: Path) -> AsyncIterator[GatewayApp]:
    settings = make_settings(redis_url, tmp_path, header_timeout_s=1.0, body_timeout_s=1.0)
    async with GatewayApp(settings, with_worker=False) as app:
        yield app


async def _trickle(
    writer: asyncio.StreamWriter, data: bytes, reader: asyncio.StreamReader
) -> bytes:
    """Send ``data`` a byte every 50 ms until the server answers or closes; what it sent."""
    for byte in data:
        writer.write(bytes([byte]))
        try:
            await writer.drain()
            return await asyncio.wait_for(reader.read(4096), timeout=0.05)
        except TimeoutError:
            continue
        except ConnectionError:
            return b""
    pytest.fail("the server waited for the whole trickle")


async def test_headers_sent_byte_by_byte_are_cut_off(impatient: GatewayApp) -> None:
    assert impatient.url is not None
    host, port = impatient.url.removeprefix("http://").rsplit(":", 1)
    # 30 s of headers at a byte per 50 ms: far past the 1 s header timeout.
    headers = b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 600 + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        answer = await _trickle(writer, headers, reader)
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/1.1 200")


async def test_a_connection_that_sends_nothing_is_closed(impatient: GatewayApp) -> None:
    assert impatient.url is not None
    host, port = impatient.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            assert await reader.read() == b""  # closed by the server
    finally:
        writer.close()


async def test_a_trickling_body_gets_408_and_enqueues_nothing(
    impatient: GatewayApp, redis: Redis
) -> None:
    assert impatient.url is not None
    host, port = impatient.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({**MESSAGE, "text": "x" * 500}).encode()
    head = (
        b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        answer = await _trickle(writer, body, reader)
        async with asyncio.timeout(HANG_GUARD_S):
            while b"}}" not in answer:  # the whole (small) error body
                chunk = await reader.read(4096)
                assert chunk, f"closed without a whole answer: {answer!r}"
                answer += chunk
    finally:
        writer.close()
    head, _, error_body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nConnection: close" in head  # the client is not waited for again
    error: dict[str, Any] = json.loads(error_body)["error"]
    assert error["code"] == "request_timeout"
    assert await enqueued(redis) == (0, 0)


# -- requests that are not HTTP ------------------------------------------------------------


async def test_invalid_http_is_refused_in_the_error_shape_with_one_quiet_line(
    queue_only: GatewayApp, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp refuses these before any route: it answered in plain text and logged a
    traceback with the raw header (which may hold an API key) at ERROR."""
    assert queue_only.url is not None
    caplog.set_level(logging.DEBUG)
    for request in (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-API-Key: secret\x10key\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        b"GET /heal\x00thz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        status, body = await raw_exchange(queue_only.url, request)
        assert status == 400
        assert json.loads(body)["error"]["code"] == "invalid_request"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    refusals = [r for r in caplog.records if r.name == "gateway.channels.http.server"]
    assert len(refusals) == 4
    assert all("\n" not in r.getMessage() and "secret" not in r.getMessage() for r in refusals)
