"""The one Redis client factory: timeouts on every client, Sentinel, bounded renewals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.app import bus_status
from gateway.core.bus.client import RedisTarget, configured_redis
from gateway.core.bus.lease import renewing
from gateway.core.errors import ConfigError
from gateway.core.settings import RedisSettings, Settings, load_settings
from gateway.workers.jobs import create_job_pool
from tests.fakes.redis_server import RedisServer
from tests.fakes.sentinel import SERVICE, SentinelGroup
from tests.fakes.tcp_proxy import BlackHoleProxy

pytestmark = pytest.mark.integration

SENTINEL_PASSWORD = "sentinel-pw"


def test_every_client_gets_the_configured_timeouts() -> None:
    cfg = RedisSettings(socket_timeout_s=25, connect_timeout_s=3, health_check_interval_s=7)
    client = RedisTarget(cfg, "redis://127.0.0.1:1/0", "config").client()
    options = client.connection_pool.connection_kwargs
    assert options["socket_timeout"] == 25
    assert options["socket_connect_timeout"] == 3
    assert options["health_check_interval"] == 7


def test_resolution_order_is_sentinel_then_url_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:2/0")
    assert configured_redis(Settings()) == RedisTarget(
        RedisSettings(), "redis://127.0.0.1:2/0", "env"
    )
    by_url = Settings(redis={"url": "redis://127.0.0.1:3/0"})
    assert configured_redis(by_url) == RedisTarget(by_url.redis, "redis://127.0.0.1:3/0", "config")
    both = Settings(redis={"url": "redis://x:1/0", "sentinel": {"sentinels": ["h:26379"]}})
    target = configured_redis(both)
    assert target is not None and target.source == "sentinel" and target.url is None
    monkeypatch.delenv("REDIS_URL")
    assert configured_redis(Settings()) is None


@pytest.mark.parametrize("address", ["nohost", "h:0", "h:99999", ":26379", "h:²"])
def test_a_bad_sentinel_address_is_one_clear_error(tmp_path: Path, address: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"redis:\n  sentinel:\n    sentinels: ['{address}']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"redis\.sentinel\.sentinels.*host:port"):
        load_settings(config)


async def test_renewal_against_a_server_that_stops_answering_loses_the_lease(
    redis: Redis, redis_server: RedisServer
) -> None:
    # Regression: a renewal awaited its reply without a bound; on a half-open
    # connection the holder never learnt that its lease was gone.
    proxy = await BlackHoleProxy("127.0.0.1", redis_server.port).start()
    # No socket timeout on purpose: the bound must come from the lease itself.
    through = Redis.from_url(proxy.url, decode_responses=True)
    await redis.set("lease", "mine", px=1000)
    renewals: list[bool] = []
    renewed_twice = asyncio.Event()

    async def renew() -> bool:
        renewals.append(bool(await through.pexpire("lease", 1000)))
        if len(renewals) == 2:
            renewed_twice.set()
        return renewals[-1]

    try:
        async with renewing(
            renew, ttl_ms=1000, interval_s=0.2, lost=asyncio.Event(), what="test lease"
        ) as lost:
            async with asyncio.timeout(10):
                await renewed_twice.wait()  # real renewals went through first
            proxy.black_hole()
            async with asyncio.timeout(10):
                await lost.wait()
    finally:
        await through.aclose()
        await proxy.close()
    assert lost.is_set()
    assert renewals[:2] == [True, True]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[tuple[RedisServer, SentinelGroup]]:
    master = RedisServer(data_dir=tmp_path).start()
    group = SentinelGroup(master.port, tmp_path, password=SENTINEL_PASSWORD)
    try:
        yield master, group.start()
    finally:
        group.stop()
        master.close()


def sentinel_settings(group: SentinelGroup) -> Settings:
    sentinel = {
        "sentinels": group.addresses,
        "service_name": SERVICE,
        "password": SENTINEL_PASSWORD,
    }
    return Settings(redis={"sentinel": sentinel})


async def test_clients_reach_the_master_through_sentinel(
    sentinels: tuple[RedisServer, SentinelGroup],
) -> None:
    master, group = sentinels
    settings = sentinel_settings(group)
    target = configured_redis(settings)
    assert target is not None
    assert target.display == f"sentinel {','.join(group.addresses)} (service {SERVICE})"
    client = target.client()
    direct = Redis.from_url(master.url, decode_responses=True)
    pool = await create_job_pool(target)
    try:
        await client.xadd("gw:probe", {"via": "sentinel"})
        assert await direct.xlen("gw:probe") == 1
        assert await pool.ping()
        status = await bus_status(settings)
    finally:
        await pool.aclose()
        await direct.aclose()
        await client.aclose()
    assert status["redis"] == f"{target.display} (sentinel)"
    assert status["dead_letters"] == 0


async def test_a_wrong_sentinel_password_fails_clearly(
    sentinels: tuple[RedisServer, SentinelGroup],
) -> None:
    _, group = sentinels
    settings = sentinel_settings(group)
    wrong = settings.redis.model_copy(
        update={"sentinel": settings.redis.sentinel.model_copy(update={"password": None})}  # type: ignore[union-attr]
    )
    client = RedisTarget(wrong, None, "sentinel").client()
    try:
        with pytest.raises(MasterNotFoundError):
            await client.ping()
    finally:
        await client.aclose()


async def test_clients_follow_a_sentinel_failover(tmp_path: Path) -> None:
    (tmp_path / "master").mkdir()
    (tmp_path / "replica").mkdir()
    master = RedisServer(data_dir=tmp_path / "master").start()
    replica = RedisServer(data_dir=tmp_path / "replica").start()
    with SyncRedis(port=master.port) as admin:
        admin.config_set("repl-diskless-sync-delay", 0)  # the first sync at once, not in 5 s
    with SyncRedis(port=replica.port) as admin:
        admin.replicaof("127.0.0.1", master.port)
    group = SentinelGroup(
        master.port,
        tmp_path,
        password=SENTINEL_PASSWORD,
        count=1,
        replicas=(replica.port,),
        down_after_ms=500,
    ).start()
    client = configured_redis(sentinel_settings(group)).client()  # type: ignore[union-attr]
    try:
        await client.xadd("gw:probe", {"n": "1"})
        assert await client.wait(1, 10_000) == 1  # the replica has it
        master.kill()
        await asyncio.to_thread(group.wait_for_master, replica.port)
        # The pooled connection to the dead master fails once (the bus's loops retry
        # such errors); the next connection asks the sentinels and finds the new master.
        with contextlib.suppress(RedisConnectionError):
            await client.xadd("gw:probe", {"n": "2"})
        await client.xadd("gw:probe", {"n": "3"})
        with SyncRedis(port=replica.port, decode_responses=True) as promoted:
            numbers = [fields["n"] for _, fields in promoted.xrange("gw:probe")]
    finally:
        await client.aclose()
        group.stop()
        replica.close()
        master.close()
    assert numbers[0] == "1" and numbers[-1] == "3"


async def test_a_stalled_event_loop_does_not_lose_a_lease_redis_still_holds(
    redis: Redis,
) -> None:
    # The renewal's reply came in time, but this process did not run for longer than
    # the lease had left (a blocking import, a long GC): Redis, asked again, says the
    # lease is still ours.
    await redis.set("lease", "mine", px=60_000)
    renewals: list[bool] = []
    stalled_then_renewed = asyncio.Event()
    loop = asyncio.get_running_loop()

    stalls: list[float] = []

    async def renew() -> bool:
        if not stalls:
            stalls.append(1.5)
            loop.call_soon(time.sleep, 1.5)  # blocks the whole loop past the local bound
        renewals.append(bool(await redis.pexpire("lease", 60_000)))
        if len(renewals) == 3:
            stalled_then_renewed.set()
        return renewals[-1]

    async with renewing(
        renew, ttl_ms=1000, interval_s=0.2, lost=asyncio.Event(), what="stalled lease"
    ) as lost:
        async with asyncio.timeout(10):
            await stalled_then_renewed.wait()
    assert not lost.is_set()
    assert renewals == [True, True, True]
