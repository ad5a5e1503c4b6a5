"""The web chat's routes (page, history, stop) on a real gateway, Redis and fake model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import GatewayApp
from gateway.core.settings import Settings
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

CHAT = "/v1/chats/web/c1"
SLOW = Reply(text="word " * 200, chunk_size=5, chunk_delay_s=0.05)


def webchat_settings(
    redis_url: str, tmp_path: Path, fake: FakeModelServer, **http: Any
) -> Settings:
    return Settings(
        model="local/fake-model",
        providers={"local": {"base_url": fake.base_url, "api_key": "none", "max_retries": 0}},
        workspace=tmp_path / "workspace",
        redis={"url": redis_url},
        http={"host": "127.0.0.1", "port": 0, **http},
        worker={"ready_partitions": 2, "coalesce_ms": 10},
    )


@pytest.fixture
async def gateway(
    redis_url: str, tmp_path: Path, fake_model: FakeModelServer
) -> AsyncIterator[GatewayApp]:
    async with GatewayApp(webchat_settings(redis_url, tmp_path, fake_model)) as app:
        yield app


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def send(client: aiohttp.ClientSession, url: str, text: str) -> None:
    body = {"channel": "web", "chat_id": "c1", "sender_id": "web", "text": text}
    async with client.post(f"{url}/v1/messages", json=body) as resp:
        assert resp.status == 202, await resp.text()


async def history(client: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with client.get(f"{url}{CHAT}/history") as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def committed_history(
    client: aiohttp.ClientSession, url: str, messages: int, timeout_s: float = 10.0
) -> dict[str, Any]:
    """The history once it holds ``messages`` entries (the commit follows the final event)."""
    async with asyncio.timeout(timeout_s):
        while True:
            body = await history(client, url)
            if len(body["messages"]) >= messages:
                return body
            await asyncio.sleep(0.02)


async def events_until(
    client: aiohttp.ClientSession, url: str, after: str, stop: str, on_first_delta: Any = None
) -> list[tuple[str, dict[str, Any]]]:
    """SSE events (id, data) from ``after`` until one of type ``stop``."""
    seen: list[tuple[str, dict[str, Any]]] = []
    headers = {"Last-Event-ID": after}
    async with client.get(f"{url}/v1/sessions/web%3Ac1/events?follow=1", headers=headers) as resp:
        entry_id = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                entry_id = line[4:]
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            seen.append((entry_id, data))
            if data["type"] == "text.delta" and on_first_delta is not None:
                await on_first_delta()
                on_first_delta = None
            if data["type"] == stop:
                return seen
    raise AssertionError(f"stream ended before {stop}: {[d['type'] for _, d in seen]}")


async def test_page_and_static_files_are_served_with_a_strict_policy(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{gateway.url}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert '<textarea id="input"' in await resp.text()
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        async with client.get(f"{gateway.url}/webchat/{name}") as resp:
            assert resp.status == 200 and resp.content_type == kind
    async with client.get(f"{gateway.url}/webchat/routes.py") as resp:
        assert resp.status == 404
    # What `gateway start` (and so `make start`) prints.
    assert f"chat   {gateway.url}/  (web chat; `gateway chat` in a terminal)" in gateway.banner()


async def test_history_shows_committed_turns_and_where_the_stream_resumes(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    empty = await history(client, gateway.url or "")
    assert empty["messages"] == [] and empty["pending"] == [] and empty["after"] == "0-0"
    await send(client, gateway.url or "", "hello there")
    events = await events_until(client, gateway.url or "", "0-0", "run.completed")
    body = await committed_history(client, gateway.url or "", 2)
    assert body["session_key"] == "web:c1"
    assert body["messages"] == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "echo: hello there"},
    ]
    # Everything up to the final event is in the history: nothing is replayed twice.
    assert body["after"] == events[-1][0]


async def test_stop_cancels_the_running_turn_and_keeps_what_was_shown(
    gateway: GatewayApp, client: aiohttp.ClientSession, fake_model: FakeModelServer
) -> None:
    url = gateway.url or ""
    fake_model.script(SLOW)
    await send(client, url, "write a lot")

    async def press_stop() -> None:
        async with client.post(f"{url}{CHAT}/stop") as resp:
            assert resp.status == 202
            assert await resp.json() == {"stopping": True}

    events = await events_until(client, url, "0-0", "run.failed", on_first_delta=press_stop)
    failed = events[-1][1]
    assert failed["result"]["stop_reason"] == "cancelled"
    assert not any(data["type"] == "run.completed" for _, data in events)
    shown = "".join(data["delta"] for _, data in events if data["type"] == "text.delta")
    assert 0 < len(shown) < len(SLOW.text)
    body = await committed_history(client, url, 2)
    assert body["messages"] == [
        {"role": "user", "content": "write a lot"},
        {"role": "assistant", "content": shown, "stopped": True},
    ]
    # The stopped message is not run again; the next one is answered with it in context.
    await send(client, url, "short please")
    events = await events_until(client, url, body["after"], "run.completed")
    assert events[-1][1]["content"] == "echo: short please"
    sent = fake_model.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert len(fake_model.requests) == 2


async def test_stop_with_nothing_running_stops_nothing(
    gateway: GatewayApp, client: aiohttp.ClientSession
) -> None:
    async with client.post(f"{gateway.url}{CHAT}/stop") as resp:
        assert resp.status == 202
        assert await resp.json() == {"stopping": False}
    await send(client, gateway.url or "", "after a useless stop")
    events = await events_until(client, gateway.url or "", "0-0", "run.completed")
    assert events[-1][1]["content"] == "echo: after a useless stop"


async def test_chat_routes_need_the_api_key_and_a_known_channel(
    redis_url: str, tmp_path: Path, fake_model: FakeModelServer, client: aiohttp.ClientSession
) -> None:
    settings = webchat_settings(redis_url, tmp_path, fake_model, api_keys=["k-1"])
    async with GatewayApp(settings) as app:
        async with client.get(f"{app.url}/") as resp:
            assert resp.status == 200  # the page itself asks for the key
        async with client.get(f"{app.url}{CHAT}/history") as resp:
            assert resp.status == 401
        async with client.post(f"{app.url}{CHAT}/stop") as resp:
            assert resp.status == 401
        headers = {"X-API-Key": "k-1"}
        async with client.get(f"{app.url}{CHAT}/history", headers=headers) as resp:
            assert resp.status == 200
        async with client.get(f"{app.url}/v1/chats/nope/c1/history", headers=headers) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
