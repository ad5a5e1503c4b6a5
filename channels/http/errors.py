"""The one error shape of the HTTP API: ``{"error": {"code", "message"}}``.

Handlers raise ``ApiError``; ``error_middleware`` turns it, aiohttp's own HTTP
errors (unknown route, wrong method, body too large), an unreachable Redis (503
with ``Retry-After``, see ``channels.http.outage``) and unexpected exceptions into
that shape. Unexpected exceptions are logged with their traceback and answered
with a generic message: internals never reach the client.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.channels.http.outage import RETRY_AFTER_S, UNAVAILABLE_ERRORS, report_unavailable
from gateway.core.errors import GatewayError

log = logging.getLogger(__name__)

ErrorCode = Literal[
    "invalid_request",
    "unauthorized",
    "not_found",
    "rate_limited",
    "internal_error",
    "payload_too_large",
    "request_timeout",
    "unavailable",
]

_CODE_OF_STATUS: Final[dict[int, ErrorCode]] = {
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    408: "request_timeout",
    413: "payload_too_large",
    429: "rate_limited",
}


class ApiError(GatewayError):
    """A request the API refuses; becomes ``status`` with the error body."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(
    status: int, code: ErrorCode, message: str, *, retry_after_s: int | None = None
) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    response = web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )
    if status == 408:
        # The client is too slow to send its request: do not wait for another on this
        # connection.
        response.force_close()
    return response


def unavailable_response() -> web.Response:
    return error_response(
        503,
        "unavailable",
        "the message bus (Redis) is unreachable; retry later",
        retry_after_s=RETRY_AFTER_S,
    )


def code_for_status(status: int) -> ErrorCode:
    if status == 503:
        return "unavailable"
    if status >= 500:
        return "internal_error"
    return _CODE_OF_STATUS.get(status, "invalid_request")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, code_for_status(exc.status), exc.reason)
    except UNAVAILABLE_ERRORS as exc:
        report_unavailable(request, exc)
        return unavailable_response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")
