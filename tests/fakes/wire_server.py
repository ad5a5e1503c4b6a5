"""A loopback HTTP server that records each request as it arrived and plays scripted answers.

For tests that compare two clients byte for byte: method, path and query, headers,
body and the client's port (one port for two requests: the connection was reused).
Each request takes the next queued ``Answer``; with none queued, a short chat stream.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest_asyncio
from aiohttp import web

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHUNK = b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
STREAM = b"data: " + CHUNK + b"\n\ndata: " + USAGE + b"\n\ndata: [DONE]\n\n"


@dataclass(frozen=True)
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    """Lower-cased names; a repeated header would show as its last value."""
    body: bytes
    port: int


def sse(*pieces: bytes) -> Answer:
    """A 200 event stream written in these pieces, one write each."""

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    return answer


def gzipped(*pieces: bytes) -> Answer:
    """A 200 event stream, gzip-encoded, each piece flushed in its own write."""

    async def answer(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        encoder = zlib.compressobj(wbits=31)
        for piece in pieces:
            await response.write(encoder.compress(piece) + encoder.flush(zlib.Z_SYNC_FLUSH))
        await response.write(encoder.flush())
        await response.write_eof()
        return response

    return answer


def status(
    code: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Answer:
    """An error (or any) status with a body as given, JSON unless told."""

    async def answer(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, body=body, headers=headers, content_type=content_type)

    return answer


class WireServer:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.answers: deque[Answer] = deque()
        self.stopping = asyncio.Event()
        self.hung_up = asyncio.Event()
        """Set when the client closed a connection ``hang_after`` was answering on."""
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def hang(self, request: web.Request) -> web.StreamResponse:
        """No answer at all until the server stops (a request timeout)."""
        await self.stopping.wait()
        return web.Response(status=500)

    def hang_after(
        self, first: bytes, code: int = 200, headers: dict[str, str] | None = None
    ) -> Answer:
        """Status ``code``, ``first`` of the body, then nothing until the server stops or
        the client hangs up (a read timeout mid-stream; a stalled error body)."""
        sent = {"Content-Type": "text/event-stream", **(headers or {})}

        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(status=code, headers=sent)
            await response.prepare(request)
            await response.write(first)
            try:
                await self.stopping.wait()
            except asyncio.CancelledError:  # the client hung up (``handler_cancellation``)
                self.hung_up.set()
                raise
            return response

        return answer

    @staticmethod
    def cut_after(first: bytes) -> Answer:
        """A 200 event stream that stops after ``first``: the connection is dropped."""

        async def answer(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(first)
            assert request.transport is not None
            request.transport.abort()
            return response

        return answer

    async def _record(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                method=request.method,
                path_qs=request.path_qs,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.read(),
                port=peer[1] if peer else 0,
            )
        )
        answer = self.answers.popleft() if self.answers else sse(STREAM)
        return await answer(request)

    async def __aenter__(self) -> WireServer:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture
async def wire() -> AsyncIterator[WireServer]:
    async with WireServer() as server:
        yield server
