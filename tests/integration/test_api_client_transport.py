"""``gateway.client`` retries, errors and independence from the server side.

The retry tests use a scripted HTTP server on loopback (answers in order, then 200).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.client import (
    APIConnectionError,
    AsyncGatewayClient,
    GatewayClient,
    InvalidRequestError,
    RateLimitError,
    ServerError,
)
from tests.fakes.redis_server import free_port

AGENTS = {"data": [{"name": "assistant", "model": "m", "status": "ready", "description": ""}]}


class Scripted(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self.delays: list[float] = []
        """Seconds to wait before answering, per request in order."""
        self.seen: list[tuple[float, str, str]] = []
        """(monotonic time, method, path) of every request."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_answer(self) -> tuple[int, dict[str, str], Any]:
        return self.answers.pop(0) if self.answers else (200, {}, AGENTS)


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((time.monotonic(), self.command, self.path))
        if self.server.delays:
            time.sleep(self.server.delays.pop(0))
        status, headers, body = self.server.next_answer()
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[Scripted]:
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def error(code: str, message: str = "m") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


UNAVAILABLE = (503, {}, error("internal_error", "busy"))


def test_two_503_then_success(server: Scripted) -> None:
    server.answers = [UNAVAILABLE, UNAVAILABLE]
    with GatewayClient(server.url, "k", max_retries=2, retry_delay=0.01) as client:
        assert [a.name for a in client.agents.list()] == ["assistant"]
    assert len(server.seen) == 3


async def test_async_two_503_then_success(server: Scripted) -> None:
    server.answers = [UNAVAILABLE, (502, {}, b"bad gateway")]
    async with AsyncGatewayClient(server.url, "k", max_retries=2, retry_delay=0.01) as client:
        assert [a.name for a in await client.agents.list()] == ["assistant"]
    assert len(server.seen) == 3


def test_retries_exhausted_raise_the_last_error(server: Scripted) -> None:
    server.answers = [UNAVAILABLE] * 3
    with (
        GatewayClient(server.url, "k", max_retries=2, retry_delay=0.01) as client,
        pytest.raises(ServerError) as failed,
    ):
        client.agents.list()
    assert (failed.value.status, failed.value.code, failed.value.message) == (
        503,
        "internal_error",
        "busy",
    )
    assert len(server.seen) == 3


def test_429_waits_for_retry_after(server: Scripted) -> None:
    server.answers = [(429, {"Retry-After": "1"}, error("rate_limited"))]
    with GatewayClient(server.url, "k", max_retries=1, retry_delay=0.01) as client:
        client.agents.list()
    (first, *_), (second, *_) = server.seen
    assert second - first >= 0.9  # the server's Retry-After beats the 10 ms backoff


def test_429_after_every_retry_is_a_rate_limit_error(server: Scripted) -> None:
    server.answers = [(429, {"Retry-After": "0"}, error("rate_limited", "slow down"))] * 2
    with (
        GatewayClient(server.url, "k", max_retries=1, retry_delay=0.01) as client,
        pytest.raises(RateLimitError) as limited,
    ):
        client.agents.list()
    assert (limited.value.code, limited.value.retry_after) == ("rate_limited", 0.0)


def test_client_errors_are_not_retried(server: Scripted) -> None:
    server.answers = [(422, {}, error("invalid_request", "field 'input'"))]
    with (
        GatewayClient(server.url, "k", max_retries=3, retry_delay=0.01) as client,
        pytest.raises(InvalidRequestError, match="field 'input'"),
    ):
        client.agents.invoke(name="assistant", input="")
    assert len(server.seen) == 1


def test_stream_is_retried_before_it_starts(server: Scripted) -> None:
    frames = (
        b'event: token\ndata: {"type":"token","content":"hi"}\n\n'
        b": keepalive\n\n"
        b'event: done\ndata: {"type":"done","output":"hi","usage":{"prompt_tokens":1,'
        b'"completion_tokens":1,"total_tokens":2},"session_id":"s","run_id":"1-0"}\n\n'
    )
    server.answers = [UNAVAILABLE, (200, {"Content-Type": "text/event-stream"}, frames)]
    with GatewayClient(server.url, "k", max_retries=1, retry_delay=0.01) as client:
        events = list(client.agents.stream(name="assistant", input="x"))
    assert [e.type for e in events] == ["token", "done"]
    assert events[-1].type == "done" and events[-1].usage.total_tokens == 2


def test_a_post_that_may_have_arrived_is_not_sent_again(server: Scripted) -> None:
    server.delays = [1.0]
    with (
        GatewayClient(server.url, "k", timeout=0.2, max_retries=2, retry_delay=0.01) as client,
        pytest.raises(APIConnectionError, match="POST /v1/agents/assistant/invoke"),
    ):
        client.agents.invoke(name="assistant", input="x")
    assert len(server.seen) == 1  # the agent runs once, even if the reply is lost


def test_a_get_whose_reply_timed_out_is_retried(server: Scripted) -> None:
    server.delays = [1.0, 1.0]
    with GatewayClient(server.url, "k", timeout=0.2, max_retries=2, retry_delay=0.01) as client:
        assert client.agents.list()[0].name == "assistant"
    assert len(server.seen) == 3


def test_unknown_stream_event_types_are_skipped(server: Scripted) -> None:
    frames = (
        b'event: thinking\ndata: {"type":"thinking","content":"hm"}\n\n'
        b'event: token\ndata: {"type":"token","content":"hi"}\n\n'
    )
    server.answers = [(200, {"Content-Type": "text/event-stream"}, frames)]
    with GatewayClient(server.url, "k") as client:
        assert [e.type for e in client.agents.stream(name="assistant", input="x")] == ["token"]


def test_unreachable_gateway_is_a_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        GatewayClient(url, "k", max_retries=1, retry_delay=0.01) as client,
        pytest.raises(APIConnectionError) as failed,
    ):
        client.agents.list()
    assert (failed.value.code, failed.value.status) == ("connection_error", None)


def test_bad_options_are_refused_early() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        GatewayClient("http://127.0.0.1:1", max_retries=-1)


BLOCKED = (
    "gateway.core",
    "gateway.channels",
    "gateway.workers",
    "core",
    "channels",
    "workers",
    "redis",
    "aiohttp",
    "openai",
    "arq",
    "yaml",
)

ISOLATED = f"""
import importlib.abc, sys

def _blocked(name):
    return any(name == b or name.startswith(b + ".") for b in {BLOCKED!r})

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Block())
from gateway.client import GatewayClient, AsyncGatewayClient
from gateway.client.errors import GatewayError, AuthenticationError, NotFoundError
from gateway.client.types import Agent, InvokeResponse, StreamEvent, Session, Usage
from gateway.client.types import SessionContinueResponse, PipelineRunResponse, PipelineStatus
GatewayClient("http://127.0.0.1:1", "k").close()
loaded = sorted(m for m in sys.modules if _blocked(m))
print("loaded:", loaded)
"""


def test_the_client_needs_no_server_module() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ISOLATED], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"
