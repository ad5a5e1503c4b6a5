"""How the gateway's HTTP server runs: connection timeouts and requests that are not HTTP.

- ``header_timeout_s`` becomes aiohttp's keep-alive timeout, which aiohttp (3.14.4 and
  later) arms when a connection opens and after each response, and which closes a
  connection still waiting for a complete request head: so it bounds slow (slowloris)
  headers and idle connections alike. Bodies are bounded where they are read
  (``channels.http.parsing.read_body``).
- A request that is not valid HTTP (a bad header byte, a malformed request line, a
  body that does not decode) is refused by aiohttp's protocol layer, before any route:
  it answered with plain text and logged an ERROR with a traceback and the offending
  bytes (an API key among them, perhaps). ``ClientErrorRequestHandler`` answers with the
  API's error shape instead and logs one DEBUG line without the bytes: a client's
  mistake is not the gateway's error, and the access log already has its line.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.channels.http.errors import code_for_status, error_response
from gateway.channels.http.parsing import first_line
from gateway.core.settings import HttpSettings

log = logging.getLogger(__name__)


def _client_error(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it is a client's malformed request (a 4xx of aiohttp's parsers)."""
    if isinstance(exc, HttpProcessingError):
        return exc if 400 <= (exc.code or 400) < 500 else None
    return exc if isinstance(exc, web.RequestPayloadError) else None


class ClientErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering invalid HTTP in the API's error shape."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        client_error = _client_error(exc)
        if client_error is None or not 400 <= status < 500 or request.writer.output_size:
            return super().handle_error(request, status, exc, message)
        reason = first_line(client_error)
        log.debug("refused a request that is not valid HTTP: %s", reason)
        response = error_response(status, code_for_status(status), f"not valid HTTP: {reason}")
        response.force_close()  # the parser lost its place in the byte stream
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp drains an unread body after the response and logs what that raises:
        # for a body that does not decode, that is the client's error again.
        exc_info = kw.get("exc_info")
        if isinstance(exc_info, BaseException) and _client_error(exc_info) is not None:
            log.debug("dropped the rest of an invalid body: %s", first_line(exc_info))
            return
        super().log_exception(*args, **kw)


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return ClientErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are ``ClientErrorRequestHandler``s."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # runs the app's startup
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def app_runner(app: web.Application, http: HttpSettings) -> web.AppRunner:
    """The runner ``GatewayApp`` serves ``app`` with."""
    return GatewayRunner(
        app,
        shutdown_timeout=5.0,
        # A client that hangs up cancels its handler, so an SSE stream frees its Redis
        # connection at once instead of at the next heartbeat.
        handler_cancellation=True,
        keepalive_timeout=http.header_timeout_s,
        # Bodies are taken as sent; ``identity_bodies_only`` refuses compressed ones.
        auto_decompress=False,
    )
