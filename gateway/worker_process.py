"""One standalone bus worker process: what ``gateway worker`` (and its alias
``python -m gateway.workers``) runs.

Runs a ``Worker`` and, unless ``jobs`` is off, the arq side jobs (reminders, deferred
retries, idle compaction) in the same process, with its own metrics served on
``worker.metrics_port`` (``/metrics``, ``/healthz``). SIGTERM or SIGINT stops it
gracefully: no new signals are read, running turns get ``stop_grace_s`` seconds, then
unfinished ones are cancelled unacked and handed to other workers. Prints
``worker <id> ready`` on stdout once it reads signals (process tests wait for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway._signals import GracefulStop
from gateway.channels.registry import REGISTRY
from gateway.core import process
from gateway.core.bus.client import RedisTarget
from gateway.core.errors import ConfigError
from gateway.core.metrics import GatewayMetrics
from gateway.core.settings import Settings
from gateway.workers.assemble import assemble_worker

log = logging.getLogger("gateway.workers")


async def run_worker(
    settings: Settings,
    *,
    target: RedisTarget,
    worker_id: str | None = None,
    deliver_channels: frozenset[str] | None = None,
    jobs: bool = True,
    stop_grace_s: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a worker (and the arq side jobs) until ``stop`` is set, or SIGTERM/SIGINT."""
    if stop is None:
        signals = GracefulStop("the worker", grace_s=stop_grace_s)
        signals.install()
        stop = signals.event
    if deliver_channels is None:
        deliver_channels = REGISTRY.delivered(settings.channels)
    metrics = GatewayMetrics()
    redis = target.client()
    try:
        await _ping(redis, target)
        async with AsyncExitStack() as stack:
            port = settings.worker.metrics_port
            if port is not None:
                url = await stack.enter_async_context(
                    serve_metrics(metrics, settings.worker.metrics_host, port)
                )
                print(f"metrics {url}/metrics", flush=True)
            assembly = await stack.enter_async_context(
                assemble_worker(
                    settings,
                    redis,
                    target=target,
                    jobs=jobs,
                    worker_id=worker_id,
                    deliver_channels=deliver_channels,
                    stop_grace_s=stop_grace_s,
                    metrics=metrics,
                )
            )
            worker = await stack.enter_async_context(assembly.running())
            print(f"worker {worker.worker_id} ready", flush=True)
            warm = process.freeze_after_start()
            stack.callback(warm.cancel)
            await stop.wait()
    finally:
        await redis.aclose()


async def _ping(redis: Redis, target: RedisTarget) -> None:
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(f"redis: cannot reach {target.display}: {exc}") from None


@asynccontextmanager
async def serve_metrics(metrics: GatewayMetrics, host: str, port: int) -> AsyncIterator[str]:
    """``/metrics`` and ``/healthz`` on ``host:port``; yields the URL."""

    async def exposition(request: web.Request) -> web.Response:
        payload, content_type = metrics.exposition()
        response = web.Response(body=payload)
        response.headers["Content-Type"] = content_type
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.add_routes([web.get("/metrics", exposition), web.get("/healthz", healthz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"worker.metrics_port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
