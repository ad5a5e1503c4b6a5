"""Per-key request rate limit (``http.rate_limit`` requests per minute) for ``/v1/`` routes.

One token bucket per API key in Redis (``TOKEN_BUCKET``, on the server's clock), so
every replica meters the same bucket. Keys are identified by a SHA-256 digest, never
stored as given; without API keys the client address is metered. A refused request
gets 429 ``rate_limited`` with ``Retry-After`` (whole seconds until a token is back).
"""

from __future__ import annotations

import hashlib
import math
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.asyncio import Redis

from gateway.channels.http.auth import presented_key
from gateway.channels.http.errors import error_response
from gateway.core.bus import keys
from gateway.core.bus.scripts import TOKEN_BUCKET

PREFIX = "/v1/"


def client_id(request: web.Request) -> str:
    key = presented_key(request.headers)
    if key:
        return "key:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"addr:{request.remote or 'unknown'}"


def rate_limit_middleware(redis: Redis, per_minute: int) -> Middleware:
    capacity, per_ms = per_minute, per_minute / 60_000

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PREFIX):
            bucket = keys.rate_bucket(client_id(request))
            reply = await TOKEN_BUCKET.run(redis, [bucket], [capacity, per_ms])
            allowed, wait_ms = cast(list[int], reply)
            if not allowed:
                response = error_response(
                    429, "rate_limited", f"over {per_minute} requests per minute; slow down"
                )
                response.headers["Retry-After"] = str(max(1, math.ceil(wait_ms / 1000)))
                return response
        return await handler(request)

    return rate_limit
