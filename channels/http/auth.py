"""API-key auth: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Keys are compared by their SHA-256 digests with ``hmac.compare_digest`` against
every configured key (no early exit), so neither the content nor the length of a
configured key leaks through timing. An empty presented key never matches, and an
empty configured key is refused (``HttpSettings`` already refuses it in the config).
Header bytes that are not UTF-8 (aiohttp hands them over as surrogate escapes) are
compared as the bytes they were, so they simply do not match. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import SecretStr

from channels.http.errors import ApiError
from core.errors import ConfigError


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _header_bytes(value: str) -> bytes:
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: undo it losslessly.
    return value.encode("utf-8", "surrogateescape")


def presented_key(headers: Mapping[str, str]) -> bytes | None:
    """The key a request presents (Bearer first, then X-API-Key); None when none or empty."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return _header_bytes(token.strip())
    key = headers.get("X-API-Key", "")
    return _header_bytes(key) if key else None


class KeyRing:
    """The configured keys, kept as digests; ``matches`` is constant-time."""

    def __init__(self, api_keys: Sequence[SecretStr]) -> None:
        plain = [key.get_secret_value() for key in api_keys]
        if any(not key.strip() for key in plain):
            raise ConfigError("http.api_keys: an API key is empty or blank")
        self._digests = [_digest(key.encode("utf-8")) for key in plain]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: bytes | None) -> bool:
        if not presented:
            return False
        digest = _digest(presented)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found


def api_key_middleware(api_keys: Sequence[SecretStr], *, prefix: str = "/v1/") -> Middleware:
    """Require one of ``api_keys`` on ``prefix`` paths (all of them open when there are none)."""
    ring = KeyRing(api_keys)

    @web.middleware
    async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            ring
            and request.path.startswith(prefix)
            and not ring.matches(presented_key(request.headers))
        ):
            raise ApiError(401, "unauthorized", "a valid API key is required")
        return await handler(request)

    return require_api_key
