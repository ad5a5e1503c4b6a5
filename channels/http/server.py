"""How the gateway's HTTP server runs: connection timeouts and quiet refusals.

- ``header_timeout_s`` becomes aiohttp's keep-alive timeout, which aiohttp arms when
  a connection opens and after each response and which closes a connection still
  waiting for a complete request head: so it bounds slow (slowloris) headers and idle
  connections alike. Bodies are bounded where they are read (``read_body``).
- A request that is not valid HTTP (a bad header byte, a malformed request line) is
  refused by aiohttp before any route with a 400; aiohttp logs that at ERROR with a
  traceback and the offending bytes (an API key among them, perhaps). A client's
  mistake is not the gateway's error: ``MalformedRequestFilter`` turns the record into
  one DEBUG line without the bytes (the access log already has one line per request).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from core.settings import HttpSettings

AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class MalformedRequestFilter(logging.Filter):
    """One DEBUG line, no traceback, for a 4xx that aiohttp's request parser raised."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 400) < 500:
            return True
        reason = (exc.message or type(exc).__name__).splitlines()[0].strip(" :")
        record.msg, record.args = "refused a request that is not valid HTTP: %s", (reason,)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _quiet_malformed_requests() -> None:
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())


def app_runner(app: web.Application, http: HttpSettings) -> web.AppRunner:
    """The runner ``GatewayApp`` serves ``app`` with."""
    _quiet_malformed_requests()
    return web.AppRunner(
        app,
        shutdown_timeout=5.0,
        # A client that hangs up cancels its handler, so an SSE stream frees its Redis
        # connection at once instead of at the next heartbeat.
        handler_cancellation=True,
        keepalive_timeout=http.header_timeout_s,
    )
