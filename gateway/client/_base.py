"""What both clients share: configuration, retry timing, response and SSE decoding."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import TypeAdapter, ValidationError

from .errors import GatewayError, error_for
from .types import StreamEvent

DEFAULT_BASE_URL: Final = "http://127.0.0.1:8080"
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "DELETE"})
MAX_DELAY_S: Final = 60.0

_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
EVENT_TYPES: Final = frozenset({"token", "tool_call", "tool_result", "done", "error"})


@dataclass(frozen=True, slots=True)
class ClientConfig:
    base_url: str
    headers: dict[str, str]
    timeout: float
    max_retries: int
    retry_delay: float

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        token: str | None,
        timeout: float,
        max_retries: int,
        retry_delay: float,
    ) -> ClientConfig:
        """Arguments first, then ``GATEWAY_BASE_URL`` / ``GATEWAY_API_KEY``."""
        if max_retries < 0 or retry_delay < 0 or timeout <= 0:
            raise ValueError("timeout must be > 0, max_retries and retry_delay >= 0")
        url = base_url or os.environ.get("GATEWAY_BASE_URL") or DEFAULT_BASE_URL
        key = api_key if api_key is not None else os.environ.get("GATEWAY_API_KEY")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif key:
            headers["X-API-Key"] = key
        return cls(url.rstrip("/"), headers, timeout, max_retries, retry_delay)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt`` (0-based): doubling, with jitter, never
        sooner than the server's ``Retry-After``."""
        backoff = self.retry_delay * (2**attempt) * random.uniform(0.5, 1.0)
        wait: float = max(backoff, retry_after or 0.0)
        return min(MAX_DELAY_S, wait)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def should_retry(status: int) -> bool:
    return status in RETRY_STATUSES


def may_resend(exc: httpx.TransportError, method: str) -> bool:
    """Whether a request that failed without a response can be sent again.

    One that never reached the server can; a POST that may have arrived (the
    connection broke, or the reply timed out) is not repeated: it would run the
    agent a second time.
    """
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return never_sent or method in IDEMPOTENT_METHODS


def raise_for(response: httpx.Response, body: bytes) -> None:
    if response.status_code >= 400:
        raise error_for(response.status_code, body, retry_after(response))


def decode_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        status = response.status_code
        error = GatewayError(f"the reply is not JSON: {exc}", code="internal_error", status=status)
        raise error from exc


def validation_failed(exc: ValidationError, status: int) -> GatewayError:
    return GatewayError(f"unexpected reply: {exc}", code="internal_error", status=status)


class SseDecoder:
    """Feeds SSE lines, returns an event at the end of each ``data`` frame."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> StreamEvent | None:
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))
            return None
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        try:
            payload = json.loads(data)
            if isinstance(payload, dict) and payload.get("type") not in EVENT_TYPES:
                return None  # an event type newer than this client: skipped, not an error
            return _EVENT.validate_python(payload)
        except (ValueError, ValidationError) as exc:
            raise GatewayError(f"unreadable stream event: {exc}", code="internal_error") from exc
