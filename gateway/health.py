"""``/healthz``, ``/readyz``, ``/metrics``, and the facts ``gateway status`` prints.

- ``/healthz``: the process answers (no I/O).
- ``/readyz``: Redis answers PING and every consumer group this process relies on
  exists (``workers`` on ``gw:ready:*``, ``deliverers`` on the delivered channels'
  streams); 503 with the reason otherwise.
- ``/metrics``: the Prometheus text format of this app's own registry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gateway.channels.http.outage import RETRY_AFTER_S, report_unavailable
from gateway.core.bus import keys
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

WORKER_PREFIX = keys.worker_heartbeat("")


def required_groups(partitions: int, delivered: Sequence[str]) -> list[tuple[str, str]]:
    """``(stream, group)`` pairs that must exist before work can flow."""
    pairs = [(keys.ready(p), keys.WORKER_GROUP) for p in range(partitions)]
    for channel in delivered:
        pairs.extend((keys.deliver(channel, p), keys.DELIVER_GROUP) for p in range(partitions))
    return pairs


async def missing_groups(redis: Redis, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The ``stream/group`` names of ``pairs`` that do not exist."""
    missing: list[str] = []
    for stream, group in pairs:
        try:
            groups = cast(list[dict[str, object]], await redis.xinfo_groups(stream))
        except ResponseError:  # no such stream
            groups = []
        if not any(g.get("name") == group for g in groups):
            missing.append(f"{stream}/{group}")
    return missing


class HealthRoutes:
    def __init__(
        self, redis: Redis, metrics: GatewayMetrics, groups: Sequence[tuple[str, str]]
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self._groups = list(groups)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            await self._redis.ping()
            missing = await missing_groups(self._redis, self._groups)
        except (RedisError, OSError) as exc:
            report_unavailable(request, exc)  # one log line per outage, not one per probe
            down = {"status": "unavailable", "redis": "unreachable"}
            return web.json_response(down, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        if missing:
            body = {"status": "unavailable", "redis": "ok", "missing_groups": missing}
            return web.json_response(body, status=503)
        return web.json_response({"status": "ready", "redis": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        payload, content_type = self._metrics.exposition()
        response = web.Response(body=payload)
        # aiohttp refuses a charset inside content_type=, so set the header whole.
        response.headers["Content-Type"] = content_type
        return response


async def live_workers(redis: Redis) -> list[str]:
    """Ids of the workers whose heartbeat key has not expired (a dead one's lapses)."""
    found = [
        key.removeprefix(WORKER_PREFIX)
        async for key in redis.scan_iter(match=keys.WORKER_HEARTBEATS, count=1000)
    ]
    return sorted(found)


async def collect_status(redis: Redis, *, partitions: int) -> dict[str, object]:
    """Workers alive, inbound backlog, pending work signals, dead letters."""
    alive = await live_workers(redis)
    streams = 0
    backlog = 0
    async for stream in redis.scan_iter(match=keys.inbound("*"), count=1000, _type="stream"):
        streams += 1
        backlog += cast(int, await redis.xlen(stream))
    pending: dict[str, int] = {}
    for p in range(partitions):
        try:
            summary = await redis.xpending(keys.ready(p), keys.WORKER_GROUP)
        except ResponseError:  # the stream or group does not exist yet
            continue
        pending[keys.ready(p)] = cast(dict[str, int], summary)["pending"]
    return {
        "workers_alive": alive,
        "inbound_streams": streams,
        "inbound_messages": backlog,
        "pending_signals": pending,
        "dead_letters": cast(int, await redis.xlen(keys.DEAD_LETTER)),
    }
