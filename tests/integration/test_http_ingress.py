"""HTTP ingress, SSE, health/metrics and the GatewayApp lifecycle on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.app import GatewayApp, bus_status
from gateway.channels.http import ingress
from gateway.core.bus import keys
from gateway.core.errors import ConfigError
from gateway.core.messages import MAX_TEXT_CHARS
from gateway.core.settings import Settings
from gateway.health import live_workers
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration


async def hash_of(redis: Redis, key: str) -> dict[str, str]:
    return await cast(Awaitable[dict[str, str]], redis.hgetall(key))


API_KEY = "k-test-123"
MESSAGE = {"channel": "http", "chat_id": "order-7", "sender_id": "backend", "text": "hello"}


def make_settings(redis_url: str, tmp_path: Path, **http: Any) -> Settings:
    return Settings(
        model="echo/echo",
        workspace=tmp_path / "workspace",
        redis={"url": redis_url},
        http={"host": "127.0.0.1", "port": 0, **http},
        agents={"assistant": {}, "helper": {}},
        worker={"ready_partitions": 2},
    )


@dataclass
class Sse:
    id: str
    event: str
    data: dict[str, Any]


async def read_sse(response: aiohttp.ClientResponse) -> list[Sse]:
    """Every frame until the server ends the stream (comment lines skipped)."""
    frames: list[Sse] = []
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if fields:
                frames.append(Sse(fields["id"], fields["event"], json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return frames


@pytest.fixture
async def gateway(redis_url: str, tmp_path: Path) -> AsyncIterator[GatewayApp]:
    async with GatewayApp(make_settings(redis_url, tmp_path)) as app:
        yield app


@pytest.fixture
async def queue_only(redis_url: str, tmp_path: Path) -> AsyncIterator[GatewayApp]:
    """A gateway without a worker: what is enqueued stays in Redis to be counted."""
    async with GatewayApp(make_settings(redis_url, tmp_path), with_worker=False) as app:
        yield app


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def enqueued(redis: Redis) -> tuple[int, int]:
    """(inbound messages in all sessions, ready signals in all partitions)."""
    inbound = [k async for k in redis.scan_iter(match=keys.inbound("*"))]
    messages = sum([await redis.xlen(k) for k in inbound])
    signals = sum([await redis.xlen(keys.ready(p)) for p in range(2)])
    return messages, signals


async def test_post_then_sse_streams_the_reply(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{gateway.url}/v1/messages", json=MESSAGE) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert set(body) == {"id", "session_key", "message_id", "events_url"}
    assert body["session_key"] == "http:order-7"
    async with client.get(f"{gateway.url}{body['events_url']}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        frames = await read_sse(resp)
    types = [f.event for f in frames]
    assert types[0] == "run.started" and types[-1] == "run.completed"
    assert "text.delta" in types
    assert all(f.data["type"] == f.event for f in frames)
    assert "hello" in frames[-1].data["content"]
    ids = [f.id for f in frames]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    # Last-Event-ID resumes right after the given event (and wins over ?after=).
    url = f"{gateway.url}{body['events_url']}"
    async with client.get(url, headers={"Last-Event-ID": ids[0]}) as resp:
        resumed = await read_sse(resp)
    assert [f.id for f in resumed] == ids[1:]


async def test_sse_ends_with_the_run_of_its_own_message(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    bodies = []
    for text in ("first", "second"):  # back to back: the second queues behind the first
        async with client.post(f"{gateway.url}/v1/messages", json={**MESSAGE, "text": text}) as r:
            bodies.append(await r.json())
    for body, text in zip(bodies, ("first", "second"), strict=True):
        async with client.get(f"{gateway.url}{body['events_url']}") as resp:
            frames = await read_sse(resp)
        assert frames[-1].event == "run.completed"
        assert text in frames[-1].data["content"]


async def test_follow_keeps_streaming_later_runs(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{gateway.url}/v1/messages", json=MESSAGE) as resp:
        body = await resp.json()
    completed: list[str] = []
    async with client.get(f"{gateway.url}{body['events_url']}&follow=1") as resp:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: ") and '"run.completed"' in line:
                completed.append(json.loads(line[6:])["content"])
                if len(completed) == 1:
                    again = {**MESSAGE, "text": "again"}
                    async with client.post(f"{gateway.url}/v1/messages", json=again):
                        pass
                else:
                    break
    assert "hello" in completed[0] and "again" in completed[1]


async def test_shutdown_ends_open_event_streams(
    redis_url: str, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    app = GatewayApp(make_settings(redis_url, tmp_path))
    await app.start()
    async with client.post(f"{app.url}/v1/messages", json=MESSAGE) as resp:
        body = await resp.json()
    async with client.get(f"{app.url}{body['events_url']}&follow=1") as resp:
        first = await resp.content.readline()
        assert first.startswith(b"id: ")
        async with asyncio.timeout(5):
            await app.shutdown()
            rest = await resp.content.read()  # the server closed the stream
    assert b"run.completed" in first + rest


async def test_idempotency_key_gives_one_message_and_the_same_body(
    queue_only: GatewayApp, client: aiohttp.ClientSession, redis: Redis
) -> None:
    url = f"{queue_only.url}/v1/messages"
    headers = {"Idempotency-Key": "order-7-msg-1"}

    async def post() -> dict[str, Any]:
        async with client.post(url, json=MESSAGE, headers=headers) as resp:
            assert resp.status == 202
            body: dict[str, Any] = await resp.json()
            return body

    bodies = await asyncio.gather(*(post() for _ in range(5)))
    assert all(b == bodies[0] for b in bodies)
    assert await post() == bodies[0]
    assert await enqueued(redis) == (1, 1)
    # Another key is another message.
    async with client.post(url, json=MESSAGE, headers={"Idempotency-Key": "other"}) as resp:
        assert resp.status == 202
        assert (await resp.json())["id"] != bodies[0]["id"]
    assert await enqueued(redis) == (2, 2)


async def test_a_client_hanging_up_mid_publish_still_gets_one_message_per_key(
    queue_only: GatewayApp,
    client: aiohttp.ClientSession,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client leaves after the message is stored but before its 202: a retry with
    the same key must get the first body back, not store the message a second time."""
    published, release = asyncio.Event(), asyncio.Event()
    real_publish = ingress.publish_inbound

    async def publish_then_hold(*args: Any, **kwargs: Any) -> Any:
        result = await real_publish(*args, **kwargs)
        published.set()
        await release.wait()
        return result

    monkeypatch.setattr(ingress, "publish_inbound", publish_then_hold)
    url = f"{queue_only.url}/v1/messages"
    headers = {"Idempotency-Key": "hang-up-1"}
    async with aiohttp.ClientSession() as leaving:
        request = asyncio.ensure_future(leaving.post(url, json=MESSAGE, headers=headers))
        await published.wait()
        request.cancel()  # the client hangs up; aiohttp cancels the server's handler
        with contextlib.suppress(asyncio.CancelledError):
            await request
    await asyncio.sleep(0.1)  # let the server notice the hang-up before the publish ends
    release.set()
    monkeypatch.setattr(ingress, "publish_inbound", real_publish)
    async with client.post(url, json=MESSAGE, headers=headers) as resp:
        assert resp.status == 202
    assert await enqueued(redis) == (1, 1)


BAD_REQUESTS: list[tuple[str, object, int, str]] = [
    ("malformed json", b'{"channel": "http",', 400, "invalid_request"),
    ("not utf-8", b"\xff\xfe", 400, "invalid_request"),
    ("array body", [MESSAGE], 400, "invalid_request"),
    ("missing chat_id", {k: v for k, v in MESSAGE.items() if k != "chat_id"}, 400,
     "invalid_request"),
    ("missing text and attachments", {**MESSAGE, "text": "  "}, 400, "invalid_request"),
    ("chat_id not a string", {**MESSAGE, "chat_id": 7}, 400, "invalid_request"),
    ("text not a string", {**MESSAGE, "text": ["hi"]}, 400, "invalid_request"),
    ("attachment without location", {**MESSAGE, "attachments": [{"type": "image"}]}, 400,
     "invalid_request"),
    ("unknown field", {**MESSAGE, "priority": 1}, 400, "invalid_request"),
    ("unknown channel", {**MESSAGE, "channel": "carrier-pigeon"}, 400, "invalid_request"),
    ("unknown agent", {**MESSAGE, "agent": "nobody"}, 404, "not_found"),
    ("oversize text", {**MESSAGE, "text": "x" * (MAX_TEXT_CHARS + 1)}, 413,
     "payload_too_large"),
    ("oversize body", {**MESSAGE, "sender_name": "x" * 300_000}, 413, "payload_too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_requests_are_refused_and_enqueue_nothing(
    queue_only: GatewayApp,
    client: aiohttp.ClientSession,
    redis: Redis,
    body: object,
    status: int,
    code: str,
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "bad-1"}
    async with client.post(f"{queue_only.url}/v1/messages", data=data, headers=headers) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["code"] == code and error["message"]
    assert await enqueued(redis) == (0, 0)
    assert await redis.exists(keys.idempotency("bad-1")) == 0


async def test_chunked_oversize_body_is_refused_while_reading(
    queue_only: GatewayApp, client: aiohttp.ClientSession, redis: Redis
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"channel": "http", "chat_id": "c", "sender_id": "s", "text": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}'

    async with client.post(f"{queue_only.url}/v1/messages", data=chunks()) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert await enqueued(redis) == (0, 0)


async def test_bad_idempotency_key_and_unknown_routes(
    queue_only: GatewayApp, client: aiohttp.ClientSession, redis: Redis
) -> None:
    headers = {"Idempotency-Key": "has space"}
    async with client.post(f"{queue_only.url}/v1/messages", json=MESSAGE, headers=headers) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_request"
    async with client.get(f"{queue_only.url}/v1/nothing-here") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    async with client.get(f"{queue_only.url}/v1/sessions/http%3Anobody/events") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    async with client.get(f"{queue_only.url}/v1/sessions/http%3Ax/events?after=yesterday") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_request"
    assert await enqueued(redis) == (0, 0)


async def test_api_keys_are_required_when_configured(
    redis_url: str, tmp_path: Path, client: aiohttp.ClientSession, redis: Redis
) -> None:
    settings = make_settings(redis_url, tmp_path, api_keys=["other-key", API_KEY])
    async with GatewayApp(settings, with_worker=False) as app:
        url = f"{app.url}/v1/messages"
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"},
                        {"Authorization": f"Basic {API_KEY}"}):  # fmt: skip
            async with client.post(url, json=MESSAGE, headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "unauthorized"
        assert await enqueued(redis) == (0, 0)
        for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": API_KEY}):
            async with client.post(url, json=MESSAGE, headers=headers) as resp:
                assert resp.status == 202
        async with client.get(f"{app.url}/healthz") as resp:
            assert resp.status == 200  # probes need no key
    assert await enqueued(redis) == (2, 2)


async def test_refuses_to_serve_off_loopback_without_api_keys(
    redis_url: str, tmp_path: Path
) -> None:
    app = GatewayApp(make_settings(redis_url, tmp_path, host="0.0.0.0"))
    with pytest.raises(ConfigError, match=r"http\.api_keys"):
        await app.start()
    assert app.url is None and app.redis is None


async def test_health_readiness_and_metrics(
    queue_only: GatewayApp, client: aiohttp.ClientSession, redis: Redis
) -> None:
    base = queue_only.url
    async with client.get(f"{base}/healthz") as resp:
        assert resp.status == 200
    async with client.get(f"{base}/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"
    async with client.post(f"{base}/v1/messages", json={**MESSAGE, "text": "secret words"}):
        pass
    async with client.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'gateway_messages_in_total{channel="http"} 1.0' in text
    for name in ("messages_out_total", "turn_latency_seconds", "lease_waits_total",
                 "redeliveries_total", "dead_letters_total", "process_cpu_seconds"):  # fmt: skip
        assert name in text
        assert name.startswith("process_") or f"gateway_{name}" in text
    assert "secret" not in text and "order-7" not in text
    await redis.xgroup_destroy(keys.ready(1), keys.WORKER_GROUP)
    async with client.get(f"{base}/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["missing_groups"] == [f"{keys.ready(1)}/{keys.WORKER_GROUP}"]


async def test_in_process_worker_records_turns_in_metrics(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    assert gateway.runtime is not None and "schedule" in gateway.runtime.tools
    async with client.post(f"{gateway.url}/v1/messages", json=MESSAGE) as resp:
        body = await resp.json()
    async with client.get(f"{gateway.url}{body['events_url']}") as resp:
        assert (await read_sse(resp))[-1].event == "run.completed"
    assert gateway.worker is not None
    await gateway.worker.stop()  # waits for the turn to finish recording, HTTP stays up
    async with client.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    counts = [
        line for line in text.splitlines() if line.startswith("gateway_turn_latency_seconds_count")
    ]
    assert len(counts) == 1 and float(counts[0].split()[-1]) >= 1
    assert "order-7" not in text and "hello" not in text


async def test_without_worker_there_is_no_runtime_or_side_jobs(queue_only: GatewayApp) -> None:
    assert queue_only.worker is None and queue_only.runtime is None
    assert "worker none" in "\n".join(queue_only.banner())


async def test_bus_status_reports_workers_and_backlog(
    redis_url: str, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    settings = make_settings(redis_url, tmp_path)
    async with GatewayApp(settings) as app:
        status = await bus_status(settings, home=tmp_path)
        assert status["redis"].endswith("(config)")
        assert len(status["workers_alive"]) == 1
    async with GatewayApp(settings, with_worker=False) as app:
        async with client.post(f"{app.url}/v1/messages", json=MESSAGE):
            pass
        status = await bus_status(settings, home=tmp_path)
    assert status["workers_alive"] == []
    assert status["inbound_streams"] == 1 and status["inbound_messages"] == 1
    assert status["dead_letters"] == 0
    assert set(status["pending_signals"]) == {keys.ready(0), keys.ready(1)}


async def test_start_and_stop_are_idempotent(
    redis_url: str, tmp_path: Path, client: aiohttp.ClientSession, redis: Redis
) -> None:
    app = GatewayApp(make_settings(redis_url, tmp_path))
    await app.initialize()
    await app.initialize()
    await app.start()
    url = app.url
    await app.start()
    assert app.url == url
    assert len(await live_workers(redis)) == 1
    await app.stop()
    await app.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(f"{url}/healthz"):
            pass
    await app.start()  # a stopped app starts again
    async with client.get(f"{app.url}/healthz") as resp:
        assert resp.status == 200
    await app.shutdown()
    await app.shutdown()
    assert await live_workers(redis) == []
    assert app.redis is None and app.url is None


async def test_failed_start_cleans_up_what_it_started(
    redis_url: str, tmp_path: Path, redis: Redis
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = GatewayApp(make_settings(redis_url, tmp_path, port=port))
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with app:
                pytest.fail("started on a port that is taken")
    assert app.url is None and app.redis is None and app.worker is None
    assert await live_workers(redis) == []
