"""RedisSessionStore against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from gateway.core.bus import keys
from gateway.core.errors import SessionError
from gateway.core.sessions.base import Session, SessionStore
from gateway.core.sessions.redis import RedisSessionStore
from tests.fakes.redis_server import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server for this module (the lead swaps in the shared fixture)."""
    port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("redis")
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(data_dir)]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert server.stdout is not None
    for line in server.stdout:  # blocks until the server says it is up, or exits
        if b"Ready to accept connections" in line:
            break
    else:
        raise RuntimeError(f"redis-server exited with {server.wait()} before becoming ready")
    # Keep draining its log so a full pipe can never stall the server.
    threading.Thread(target=server.stdout.read, daemon=True).start()
    yield port
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
async def client(redis_port: int) -> AsyncIterator[redis.Redis]:
    connection = redis.Redis(host="127.0.0.1", port=redis_port, decode_responses=False)
    await connection.flushdb()
    yield connection
    await connection.aclose()


@pytest.fixture
def store(client: redis.Redis) -> RedisSessionStore:
    return RedisSessionStore(client)


def _messages(count: int, tag: str = "m") -> list[dict[str, object]]:
    return [{"role": "user", "content": f"{tag}-{i} é 東"} for i in range(count)]


def test_is_a_session_store(store: RedisSessionStore) -> None:
    assert isinstance(store, SessionStore)


async def test_round_trip(store: RedisSessionStore, client: redis.Redis) -> None:
    session = Session(key="telegram:1:2", messages=_messages(3), metadata={"x": 1}, summary="s")
    await store.save(session)

    loaded = await RedisSessionStore(client).load("telegram:1:2")

    assert loaded is not None
    assert loaded.model_dump() == session.model_dump()
    score = await client.zscore(keys.SESSIONS_INDEX, "telegram:1:2")
    assert score == pytest.approx(session.updated_at)


async def test_works_with_a_decoding_client(redis_port: int, client: redis.Redis) -> None:
    connection = redis.Redis(host="127.0.0.1", port=redis_port, decode_responses=True)
    try:
        store = RedisSessionStore(connection)
        await store.save(Session(key="text:1", messages=_messages(1)))
        loaded = await store.load("text:1")
        assert loaded is not None
        assert loaded.messages == _messages(1)
        assert [info.key for info in await store.list()] == ["text:1"]
        assert await store.idle_sessions(0) == ["text:1"]
    finally:
        await connection.aclose()


async def test_missing_is_none(store: RedisSessionStore) -> None:
    assert await store.load("nobody") is None


async def test_list_and_delete(store: RedisSessionStore) -> None:
    await store.save(Session(key="a", messages=_messages(2), created_at=3.0))
    await store.save(Session(key="b", messages=_messages(5)))

    infos = {info.key: info for info in await store.list()}
    assert {k: i.message_count for k, i in infos.items()} == {"a": 2, "b": 5}
    assert infos["a"].created_at == 3.0

    assert await store.delete("a") is True
    assert await store.delete("a") is False
    assert await store.load("a") is None
    assert [info.key for info in await store.list()] == ["b"]


async def test_idle_sessions(store: RedisSessionStore, client: redis.Redis) -> None:
    for key in ("old", "new"):
        await store.save(Session(key=key))
    # Age "old" by rewriting its index score, as if it was last saved two hours ago.
    old_score = await client.zscore(keys.SESSIONS_INDEX, "old")
    assert old_score is not None
    await client.zadd(keys.SESSIONS_INDEX, {"old": old_score - 7200})

    assert await store.idle_sessions(3600) == ["old"]
    assert sorted(await store.idle_sessions(0)) == ["new", "old"]


async def test_corrupt_value_is_copied_aside(
    store: RedisSessionStore, client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await store.save(Session(key="good", messages=_messages(2)))
    await store.save(Session(key="bad", messages=_messages(2)))
    await client.set(keys.session("bad"), b'{"key": "bad", "messages": [')

    with caplog.at_level(logging.WARNING, logger="gateway.core.sessions.redis"):
        recovered = await store.load("bad")

    assert recovered is not None
    assert (recovered.key, recovered.messages) == ("bad", [])
    assert await client.get(f"{keys.session('bad')}:corrupt") == b'{"key": "bad", "messages": ['
    assert "'bad'" in caplog.text
    good = await store.load("good")
    assert good is not None
    assert good.messages == _messages(2)
    assert [info.key for info in await store.list()] == ["good"]  # the corrupt one is logged

    await store.save(recovered)
    reloaded = await store.load("bad")
    assert reloaded is not None
    assert reloaded.messages == []


async def test_many_sessions_concurrently(store: RedisSessionStore) -> None:
    session_keys = [f"chat:{i}" for i in range(200)]
    sessions = [Session(key=k, messages=_messages(3, tag=k)) for k in session_keys]
    await asyncio.gather(*(store.save(s) for s in sessions))

    loaded = await asyncio.gather(*(store.load(k) for k in session_keys))

    assert [s.messages if s else None for s in loaded] == [s.messages for s in sessions]
    assert len(await store.list()) == 200


async def test_redis_failure_is_a_session_error() -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    store = RedisSessionStore(unreachable, owns_client=True)
    with pytest.raises(SessionError, match="load of session 'k'"):
        await store.load("k")
    await store.aclose()


async def test_close_only_an_owned_client(redis_port: int, client: redis.Redis) -> None:
    async def names() -> set[str]:
        return {entry["name"] for entry in await client.client_list()}

    owned = redis.Redis(host="127.0.0.1", port=redis_port, client_name="owned-by-store")
    await owned.ping()
    await RedisSessionStore(owned).aclose()
    assert "owned-by-store" in await names()  # not given ownership: left open

    await RedisSessionStore(owned, owns_client=True).aclose()
    # The server drops the connection asynchronously after the client closes it.
    for _ in range(500):
        if "owned-by-store" not in await names():
            break
        await asyncio.sleep(0.01)
    assert "owned-by-store" not in await names()
