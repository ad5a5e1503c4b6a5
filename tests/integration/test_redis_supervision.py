"""The redis-server a gateway spawned stays where the workers look for it: started
again on the same port when it dies under the gateway, and brought back on the same
port by a restarted gateway even while the old server's connections linger in
TIME_WAIT."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import redis_server
from gateway.core.settings import Settings
from gateway.redis_launcher import resolve_redis
from gateway.redis_state import data_dir_of, pid_alive, read_state

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

BACK_WITHIN_S = 20.0


@pytest.fixture(autouse=True)
def no_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("GATEWAY_REDIS__URL", raising=False)


async def answers_again(client: Redis) -> None:
    """PING until the server answers (a client retrying as the workers do)."""
    async with asyncio.timeout(BACK_WITHIN_S):
        while True:
            try:
                await client.ping()
                return
            except (RedisError, OSError):
                await asyncio.sleep(0.1)


async def test_a_killed_server_is_started_again_on_the_same_port(tmp_path: Path) -> None:
    handle = await resolve_redis(Settings(), home=tmp_path)
    client = Redis.from_url(handle.url)
    try:
        await client.set("kept", "yes")
        await client.execute_command("BGREWRITEAOF")  # on disk now, whatever everysec missed
        first = read_state(data_dir_of(tmp_path))
        assert first is not None
        await _aof_rewritten(client)
        os.kill(first.pid, signal.SIGKILL)
        await answers_again(client)
        again = read_state(data_dir_of(tmp_path))
        assert again is not None and again.url == handle.url and again.pid != first.pid
        assert await client.get("kept") == b"yes", "started from the same AOF"
    finally:
        await client.aclose()
        await handle.close()
    assert again is not None and not pid_alive(again.pid), "the restarted server stops too"
    assert read_state(data_dir_of(tmp_path)) is None


async def _aof_rewritten(client: Redis) -> None:
    async with asyncio.timeout(BACK_WITHIN_S):
        while True:
            if not (await client.info("persistence"))["aof_rewrite_in_progress"]:
                return
            await asyncio.sleep(0.05)


async def test_a_restarted_gateway_gets_the_same_port_despite_lingering_connections(
    tmp_path: Path,
) -> None:
    """The server closes its clients' connections first, so its port keeps TIME_WAIT
    entries: a probe binding without SO_REUSEADDR took that for "in use" and moved
    Redis to another port, stranding every worker that kept the old URL."""
    first = await resolve_redis(Settings(), home=tmp_path)
    client = Redis.from_url(first.url)
    await client.ping()
    await first.close()  # the server closes the client's connection: TIME_WAIT on its port
    await client.aclose()
    second = await resolve_redis(Settings(), home=tmp_path)
    try:
        assert second.url == first.url, "workers keep their URL"
    finally:
        await second.close()


async def test_a_gateway_stopping_while_redis_restarts_leaves_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped in the middle of the restart (the new server spawned, not ready yet): the
    cancelled start must stop that server, not leave it running with no one to stop it."""
    handle = await resolve_redis(Settings(), home=tmp_path)
    first = read_state(data_dir_of(tmp_path))
    assert first is not None
    starting: asyncio.Queue[int] = asyncio.Queue()

    async def never_ready(process: asyncio.subprocess.Process, tail: object) -> None:
        starting.put_nowait(process.pid)
        await asyncio.Event().wait()

    monkeypatch.setattr(redis_server, "_until_ready", never_ready)
    os.kill(first.pid, signal.SIGKILL)
    async with asyncio.timeout(BACK_WITHIN_S):
        second_pid = await starting.get()
    await handle.close()
    assert not pid_alive(second_pid), "the half-started server was stopped"
