"""The agent API's routes on a real gateway: errors, auth, rate limit, pipelines, OpenAPI."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import GatewayApp
from gateway.channels.http.api.openapi import build_document
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from tests.fakes.live_gateway import api_settings
from tests.fakes.openai_server import FakeModelServer, Reply, fake_model  # noqa: F401
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

KEY = "route-key-1"


def settings_for(redis_url: str, fake: FakeModelServer, tmp_path: Path, **http: Any) -> Settings:
    return api_settings(
        redis_url, fake.base_url, tmp_path / "ws", http={"host": "127.0.0.1", "port": 0, **http}
    )


@pytest.fixture
async def gateway(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path
) -> AsyncIterator[GatewayApp]:
    async with GatewayApp(settings_for(redis_url, fake_model, tmp_path)) as app:
        yield app


@pytest.fixture
async def http(gateway: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(gateway.url), timeout=30) as client:
        yield client


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"]


async def test_every_error_code_has_the_error_shape(http: httpx.AsyncClient) -> None:
    invoke = "/v1/agents/assistant/invoke"
    cases: list[tuple[str, str, Any, tuple[int, str]]] = [
        ("POST", "/v1/agents/nobody/invoke", {"input": "x"}, (404, "not_found")),
        ("GET", "/v1/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV", None, (404, "not_found")),
        ("GET", "/v1/pipelines/nope/status", None, (404, "not_found")),
        ("GET", "/v1/pipelines/runs/nope", None, (404, "not_found")),
        ("POST", invoke, {"input": "x", "extra": 1}, (422, "invalid_request")),
        ("POST", invoke, {"input": 5}, (422, "invalid_request")),
        ("POST", invoke, {"input": "x", "session_id": "bad"},
         (422, "invalid_request")),
        ("POST", invoke, [], (400, "invalid_request")),
        ("POST", "/v1/sessions", {"agent": "nobody"}, (404, "not_found")),
        ("GET", "/v1/sessions?limit=0", None, (400, "invalid_request")),
        ("GET", "/v1/sessions?limit=99999999999999", None, (400, "invalid_request")),
        ("GET", "/v1/sessions?agent=nobody", None, (404, "not_found")),
        ("POST", "/v1/pipelines/research-and-summarize/runs?wait=maybe", {"input": "x"},
         (400, "invalid_request")),
    ]  # fmt: skip
    for method, path, body, expected in cases:
        response = await http.request(method, path, json=body)
        assert error_of(response) == expected, (method, path, response.text)
    for route, body in (
        ("/v1/agents/assistant/invoke", b'{"input": "\\ud800"}'),
        ("/v1/sessions", b'{"agent": "assistant", "metadata": {"\\udfff": 1}}'),
    ):
        lone = await http.post(route, content=body)
        assert error_of(lone) == (422, "invalid_request"), lone.text
    for path in ("/v1/sessions/%ED%A0%80", "/v1/pipelines/runs/%ED%A0%80", "/v1/sessions/a%00b"):
        assert error_of(await http.get(path)) == (404, "not_found"), path
    raw = await http.post("/v1/agents/assistant/invoke", content=b"{not json")
    assert error_of(raw) == (400, "invalid_request")
    big = await http.post("/v1/agents/assistant/invoke", content=b" " * (300 * 1024))
    assert big.status_code == 413


async def test_a_session_belongs_to_its_agent(http: httpx.AsyncClient) -> None:
    made = (await http.post("/v1/sessions", json={"agent": "researcher"})).json()
    wrong = await http.post(
        "/v1/agents/assistant/invoke", json={"input": "x", "session_id": made["session_id"]}
    )
    assert error_of(wrong) == (400, "invalid_request")
    wrong = await http.post(
        f"/v1/sessions/{made['session_id']}/messages", json={"input": "x", "agent": "assistant"}
    )
    assert error_of(wrong) == (400, "invalid_request")


async def test_delete_removes_the_session_and_its_streams(
    http: httpx.AsyncClient, redis: Any
) -> None:
    reply = (await http.post("/v1/agents/assistant/invoke", json={"input": "x"})).json()
    session_id = reply["session_id"]
    # The turn's commit follows its final event: wait for it, then delete.
    for _ in range(200):
        response = await http.delete(f"/v1/sessions/{session_id}")
        if response.status_code != 409:
            break
        await asyncio.sleep(0.02)
    assert response.status_code == 204
    assert error_of(await http.get(f"/v1/sessions/{session_id}")) == (404, "not_found")
    assert await redis.keys(f"*{session_id}*") == []
    assert (await http.get("/v1/sessions")).json() == {"data": []}
    metrics = (await http.get("/metrics")).text
    assert 'messages_in_total{channel="api"} 1.0' in metrics


async def test_a_failed_run_streams_an_error_event(
    http: httpx.AsyncClient, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(status=400, error_message="refused"))
    async with http.stream("POST", "/v1/agents/assistant/stream", json={"input": "x"}) as resp:
        assert resp.status_code == 200
        lines = [line async for line in resp.aiter_lines() if line.startswith("event:")]
    assert lines == ["event: error"]


async def test_pipeline_without_waiting_and_from_a_second_gateway(
    gateway: GatewayApp,
    http: httpx.AsyncClient,
    fake_model: FakeModelServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    fake_model.script(Reply(text="facts", chunk_delay_s=0.05), Reply(text="summary"))
    started = await http.post(
        "/v1/pipelines/research-and-summarize/runs?wait=false", json={"input": "batteries"}
    )
    assert started.status_code == 202
    run = started.json()
    assert run["status"] == "running" and run["output"] is None
    other_settings = settings_for(redis_url, fake_model, tmp_path / "b")
    async with (
        GatewayApp(other_settings, with_worker=False) as other,
        httpx.AsyncClient(base_url=str(other.url)) as second,
    ):
        for _ in range(500):
            state = (await second.get(f"/v1/pipelines/runs/{run['run_id']}")).json()
            if state["status"] != "running":
                break
            await asyncio.sleep(0.02)
        assert state["status"] == "completed" and state["output"] == "summary"
        assert [s["status"] for s in state["steps"]] == ["completed", "completed"]
        assert state["steps"][0]["duration_ms"] >= 50  # the first step streamed for ~50 ms+
        status = (await second.get("/v1/pipelines/research-and-summarize/status")).json()
        assert status["run_id"] == run["run_id"] and status["status"] == "completed"


async def test_pipeline_step_failure_fails_the_run(
    http: httpx.AsyncClient, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(text="facts"), Reply(status=400, error_message="no"))
    result = (
        await http.post("/v1/pipelines/research-and-summarize/runs", json={"input": "x"})
    ).json()
    assert result["status"] == "failed" and result["output"] is None
    assert [s["status"] for s in result["steps"]] == ["completed", "failed"]
    assert "summarizer" in result["error"]


async def test_a_step_output_too_long_for_the_next_step_fails_the_run(
    http: httpx.AsyncClient, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(text="y" * 32_001, chunk_size=4096))
    result = (
        await http.post("/v1/pipelines/research-and-summarize/runs", json={"input": "x"})
    ).json()
    assert result["status"] == "failed"
    assert [s["status"] for s in result["steps"]] == ["completed", "failed"]
    assert "over 32000 characters" in result["error"]


async def test_idle_pipeline_status(http: httpx.AsyncClient) -> None:
    status = (await http.get("/v1/pipelines/research-and-summarize/status")).json()
    assert status == {
        "pipeline": "research-and-summarize",
        "run_id": None,
        "status": "idle",
        "elapsed_ms": None,
    }


async def test_api_keys_plain_and_hashed(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path
) -> None:
    hashed = "sha256:" + hashlib.sha256(b"hashed-secret").hexdigest().upper()
    settings = settings_for(redis_url, fake_model, tmp_path, api_keys=[KEY, hashed])
    async with GatewayApp(settings) as app, httpx.AsyncClient(base_url=str(app.url)) as client:
        assert error_of(await client.get("/v1/agents")) == (401, "unauthorized")
        wrong = await client.get("/v1/agents", headers={"X-API-Key": "nope"})
        assert error_of(wrong) == (401, "unauthorized")
        # The digest itself is not a key.
        as_digest = await client.get("/v1/agents", headers={"X-API-Key": hashed})
        assert error_of(as_digest) == (401, "unauthorized")
        for headers in (
            {"X-API-Key": KEY},
            {"Authorization": f"Bearer {KEY}"},
            {"X-API-Key": "hashed-secret"},
        ):
            assert (await client.get("/v1/agents", headers=headers)).status_code == 200
        # Health and the OpenAPI document stay public.
        assert (await client.get("/openapi.json")).status_code == 200


async def test_keys_are_required_off_loopback(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="api_keys"):
        async with GatewayApp(settings_for(redis_url, fake_model, tmp_path, host="0.0.0.0")):
            pass


async def test_loopback_without_keys_is_open(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/agents")).status_code == 200


async def test_rate_limit_per_key_with_retry_after(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path
) -> None:
    settings = settings_for(redis_url, fake_model, tmp_path, api_keys=[KEY, "k2"], rate_limit=3)
    async with GatewayApp(settings) as app, httpx.AsyncClient(base_url=str(app.url)) as client:
        statuses = [
            (await client.get("/v1/agents", headers={"X-API-Key": KEY})).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = await client.get("/v1/agents", headers={"X-API-Key": KEY})
        assert error_of(limited) == (429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 20
        # Another key has its own bucket; bad keys are refused before they spend tokens.
        assert (await client.get("/v1/agents", headers={"X-API-Key": "k2"})).status_code == 200
        assert (await client.get("/v1/agents", headers={"X-API-Key": "x"})).status_code == 401


async def test_unknown_pipeline_agent_stops_the_start(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path
) -> None:
    pipelines = {"p": {"steps": [{"agent": "ghost"}]}}
    settings = api_settings(redis_url, fake_model.base_url, tmp_path / "ws", pipelines=pipelines)
    with pytest.raises(ConfigError, match=r"pipelines\.p\.steps\.0\.agent = 'ghost'"):
        async with GatewayApp(settings):
            pass


async def test_openapi_lists_exactly_the_served_routes(
    gateway: GatewayApp, http: httpx.AsyncClient
) -> None:
    assert gateway.web is not None
    served = {
        (route.method, route.resource.canonical)
        for route in gateway.web.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    document = (await http.get("/openapi.json")).json()
    assert document == build_document()
    listed = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert served == listed
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    assert schemas["InvokeRequest"]["additionalProperties"] is False
    assert set(schemas["InvokeResponse"]["required"]) == {"output", "usage", "session_id", "run_id"}
