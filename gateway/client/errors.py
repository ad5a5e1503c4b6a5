"""The exceptions of ``gateway.client``: one tree, rooted at ``GatewayError``.

``code`` is the API's error code (``unauthorized``, ``not_found``,
``invalid_request``, ``rate_limited``, ``internal_error``; ``connection_error``
when no response came), ``status`` the HTTP status (None without a response).
"""

from __future__ import annotations

import json
from typing import Final


class GatewayError(Exception):
    """Any error of the gateway API."""

    def __init__(self, message: str, *, code: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class AuthenticationError(GatewayError):
    """401/403: no or a wrong API key."""


class NotFoundError(GatewayError):
    """404: no such agent, session, pipeline or run."""


class InvalidRequestError(GatewayError):
    """400/409/413/422: the request was refused as it is; fix it before retrying."""


class RateLimitError(GatewayError):
    """429 after every retry; ``retry_after`` seconds as the server asked (if it did)."""

    def __init__(
        self, message: str, *, code: str, status: int | None = None, retry_after: float | None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class ServerError(GatewayError):
    """5xx: the gateway failed (or a run failed, or did not finish in time)."""


class APIConnectionError(GatewayError):
    """No response: the gateway could not be reached, or the connection broke."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="connection_error", status=None)


_DEFAULT_CODES: Final = {
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    429: "rate_limited",
}


def error_for(status: int, body: bytes, retry_after: float | None = None) -> GatewayError:
    """The exception for an error response (``{"error": {"code", "message"}}`` or not)."""
    code, message = _parse(body)
    code = (
        code
        or _DEFAULT_CODES.get(status)
        or ("internal_error" if status >= 500 else "invalid_request")
    )
    message = message or f"HTTP {status}"
    if status in (401, 403):
        return AuthenticationError(message, code=code, status=status)
    if status == 404:
        return NotFoundError(message, code=code, status=status)
    if status == 429:
        return RateLimitError(message, code=code, status=status, retry_after=retry_after)
    if status >= 500:
        return ServerError(message, code=code, status=status)
    if status >= 400:
        return InvalidRequestError(message, code=code, status=status)
    return GatewayError(message, code=code, status=status)


def _parse(body: bytes) -> tuple[str | None, str | None]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return None, text[:500] or None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )
