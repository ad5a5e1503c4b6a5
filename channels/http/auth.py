"""API-key auth: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

A configured key is either the key itself or ``sha256:<hex>``, the SHA-256 digest of
the key clients send (so the config holds no plaintext). Both are kept as digests and
compared with ``hmac.compare_digest`` against every configured key (no early exit):
neither the content nor the length of a key leaks through timing. An empty presented
key never matches, and an empty configured key is refused (``HttpSettings`` refuses
it in the config already). Header bytes that are not UTF-8 (aiohttp hands them over
as surrogate escapes) are compared as the bytes they were, so they simply do not
match. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import SecretStr

from gateway.channels.http.errors import ApiError
from gateway.core.errors import ConfigError
from gateway.core.settings import HASHED_KEY_PREFIX, api_key_problem


def _digest_of_configured(key: str) -> bytes:
    if (problem := api_key_problem(key)) is not None:
        raise ConfigError(f"http.api_keys: {problem}")
    if key.lower().startswith(HASHED_KEY_PREFIX):
        return bytes.fromhex(key[len(HASHED_KEY_PREFIX) :])
    return hashlib.sha256(key.encode("utf-8")).digest()


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents (Bearer first, then X-API-Key); None when none or empty."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("X-API-Key") or None


class KeyRing:
    """The configured keys, kept as digests; ``matches`` is constant-time."""

    def __init__(self, api_keys: Sequence[SecretStr]) -> None:
        self._digests = [_digest_of_configured(key.get_secret_value()) for key in api_keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: str | None) -> bool:
        if not presented:
            return False
        # aiohttp decodes header bytes as UTF-8 with surrogateescape: undo it losslessly.
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
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
