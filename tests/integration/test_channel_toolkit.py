"""The channel toolkit end to end: a fake platform adapter in a real gateway (real
redis-server, in-process worker, fake model server): access, pairing, groups, commands."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from redis.asyncio import Redis
from typer.testing import CliRunner

from gateway.app import GatewayApp
from gateway.channels.registry import BUILTIN_CHANNELS, ChannelRegistry, ChannelSpec
from gateway.channels.toolkit.commands import HELP_TEXT, NEW_TEXT, STOPPING_TEXT, command_list
from gateway.channels.toolkit.pairing import ALPHABET
from gateway.cli import app as cli_app
from gateway.core.bus import keys
from gateway.core.bus.codec import decode_event
from gateway.core.events import RunFailed
from gateway.core.messages import MAX_TEXT_CHARS
from gateway.core.sessions.redis import RedisSessionStore
from tests.fakes.fake_platform import FakePlatform
from tests.fakes.live_gateway import api_settings
from tests.fakes.openai_server import FakeModelServer, Reply

pytestmark = pytest.mark.integration


def registry(adapter: str) -> ChannelRegistry:
    spec = ChannelSpec("fake", f"tests.fakes.fake_platform:{adapter}")
    return ChannelRegistry([*BUILTIN_CHANNELS, spec])


CODE = re.compile(rf"pairing code: ([{ALPHABET}]{{8}})")


@pytest_asyncio.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    fake = await FakePlatform().start()
    yield fake
    await fake.stop()


def channel_config(platform: FakePlatform, **extra: Any) -> dict[str, Any]:
    return {"fake": {"api_base": platform.url, "edit_interval": 0.0, **extra}}


@pytest_asyncio.fixture
async def gateway_factory(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path, platform: FakePlatform
) -> AsyncIterator[Any]:
    apps: list[GatewayApp] = []

    async def make(adapter: str = "FakeChannel", **channel: Any) -> GatewayApp:
        settings = api_settings(
            redis_url,
            fake_model.base_url,
            tmp_path / "ws",
            channels=channel_config(platform, **channel),
        )
        app = GatewayApp(settings, registry=registry(adapter))
        await app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.shutdown()


async def inbound_streams(redis: Redis) -> list[str]:
    return [str(k) async for k in redis.scan_iter(match=f"{keys.PREFIX}:in:*")]


async def test_unknown_sender_gets_a_code_and_nothing_else(
    gateway_factory: Any, platform: FakePlatform, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway_factory()
    await platform.push("hi all", chat_id="g1", sender_id="u2", direct=False, mentioned=True)
    await platform.push("hello", chat_id="c1", sender_id="u1")
    await platform.wait_for(lambda: bool(platform.texts()))
    (reply,) = platform.texts()
    assert CODE.search(reply), reply
    assert platform.texts("g1") == []  # a group is never offered a code
    assert fake_model.requests == []
    assert await inbound_streams(redis) == []


async def test_pairing_from_code_to_approval_to_reply(
    gateway_factory: Any,
    platform: FakePlatform,
    fake_model: FakeModelServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    app = await gateway_factory()
    await platform.push("hello", sender_id="u1", username="ann")
    await platform.wait_for(lambda: bool(platform.texts("c1")))
    match = CODE.search(platform.texts("c1")[0])
    assert match is not None
    code = match.group(1)
    config = tmp_path / "cli.yaml"
    config.write_text(
        yaml.safe_dump({"redis": {"url": redis_url}, "channels": channel_config(platform)})
    )
    listed = await gateway_cli("pairing", "list", "-c", str(config))
    assert code in listed and "u1" in listed
    await gateway_cli("pairing", "approve", "fake", code.lower(), "-c", str(config))
    assert fake_model.requests == []
    await platform.push("hello again", sender_id="u1")
    await platform.wait_for(lambda: "echo: hello again" in platform.texts("c1"))
    assert len(fake_model.requests) == 1
    # Approval is kept in Redis: a restarted gateway still admits the sender.
    await app.shutdown()
    await gateway_factory()
    await platform.push("after restart", sender_id="u1")
    await platform.wait_for(lambda: "echo: after restart" in platform.texts("c1"))
    await gateway_cli("pairing", "revoke", "fake", "u1", "-c", str(config))
    sent = len(platform.texts("c1"))
    await platform.push("revoked now", sender_id="u1")
    await platform.wait_for(lambda: len(platform.texts("c1")) > sent)
    assert CODE.search(platform.texts("c1")[-1])
    assert len(fake_model.requests) == 2


async def test_code_cap_and_expiry(
    gateway_factory: Any,
    platform: FakePlatform,
    fake_model: FakeModelServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    await gateway_factory(adapter="ShortCodeFakeChannel", allow_from=["u9"])
    for n in range(1, 5):
        await platform.push("let me in", chat_id=f"c{n}", sender_id=f"u{n}")
    await sync(platform)
    offered = [platform.texts(f"c{n}") for n in range(1, 5)]
    assert [len(texts) for texts in offered] == [1, 1, 1, 0]  # the fourth: at the cap
    match = CODE.search(offered[0][0])
    assert match is not None
    await asyncio.sleep(4.1)  # codes live 3 s; Redis TIME counts whole seconds
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"redis": {"url": redis_url}}))
    expired = await gateway_cli(
        "pairing", "approve", "fake", match.group(1), "-c", str(config), ok=False
    )
    assert "no open pairing code" in expired
    await platform.push("let me in", chat_id="c4", sender_id="u4")
    await platform.wait_for(lambda: bool(platform.texts("c4")))
    assert CODE.search(platform.texts("c4")[0])
    assert len(fake_model.requests) == 1  # only the sync message


async def sync(platform: FakePlatform, chat_id: str = "c9", sender_id: str = "u9") -> None:
    """Once an allowed sender's message is answered, every message before it was decided."""
    text = f"sync {len(platform.updates)}"
    await platform.push(text, chat_id=chat_id, sender_id=sender_id)
    await platform.wait_for(lambda: f"echo: {text}" in platform.texts(chat_id))


async def test_a_webhook_channel_mounts_its_route_and_holds_no_lease(
    gateway_factory: Any, platform: FakePlatform, redis: Redis
) -> None:
    app = await gateway_factory(adapter="FakeWebhookChannel", allow_from=["u1"])
    await platform.wait_for(lambda: platform.webhooks == ["/hooks/fake"])
    update = {"update_id": 7, "chat_id": "c1", "sender_id": "u1", "text": "via hook"}
    async with aiohttp.ClientSession() as http:
        for expected in ("published", "duplicate"):  # a redelivery is dropped
            async with http.post(f"{app.url}/hooks/fake", json=update) as response:
                assert (await response.json())["handled"] == expected
    await platform.wait_for(lambda: "echo: via hook" in platform.texts("c1"))
    assert [k async for k in redis.scan_iter(match="gw:lease:conn:*")] == []


async def test_a_command_whose_answer_failed_is_answered_on_redelivery(
    gateway_factory: Any, platform: FakePlatform
) -> None:
    # Regression: the event was marked handled before the answer went out, so a failed
    # (or crashed) answer was never sent: the redelivery was taken for a duplicate.
    app = await gateway_factory(adapter="FakeWebhookChannel", allow_from=["u1"])
    await platform.wait_for(lambda: platform.webhooks == ["/hooks/fake"])
    update = {"update_id": 8, "chat_id": "c1", "sender_id": "u1", "text": "/help"}
    platform.failing_sends = 1
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/hooks/fake", json=update) as response:
            assert response.status == 500  # the platform will deliver it again
        for _ in range(2):  # answered once more, then a duplicate
            async with http.post(f"{app.url}/hooks/fake", json=update) as response:
                assert (await response.json())["handled"] == "command"
    assert platform.texts("c1") == [HELP_TEXT]


async def gateway_cli(*args: str, ok: bool = True) -> str:
    """Run ``gateway <args>`` in a thread (its own event loop), as the operator would."""
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, list(args))
    assert (result.exit_code == 0) is ok, result.output
    return result.output


async def test_approving_an_unknown_code_is_one_line(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "cli.yaml"
    config.write_text(yaml.safe_dump({"redis": {"url": redis_url}}))
    args = ["pairing", "approve", "fake", "ABCDEFGH", "-c", str(config)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode == 1
    assert out.decode().strip().splitlines() == [
        "error: fake: no open pairing code 'ABCDEFGH' (expired, used, or mistyped)"
    ]


@pytest.mark.parametrize(
    ("policy", "answered"),
    [
        ("mention", ["mentioned", "a reply"]),
        ("open", ["plain", "mentioned", "a reply"]),
        ("disabled", []),
    ],
)
async def test_group_policy(
    gateway_factory: Any,
    platform: FakePlatform,
    fake_model: FakeModelServer,
    policy: str,
    answered: list[str],
) -> None:
    await gateway_factory(allow_from=["g1", "u9"], group_policy=policy)
    group: dict[str, Any] = {"chat_id": "g1", "direct": False}
    await platform.push("stranger", chat_id="g2", sender_id="u5", direct=False, mentioned=True)
    await platform.push("plain", sender_id="u5", **group)
    await platform.push("mentioned", sender_id="u5", mentioned=True, **group)
    await platform.push("a reply", sender_id="u6", reply_to_bot=True, **group)
    await sync(platform)
    await platform.wait_for(lambda: len(platform.texts("g1")) == len(answered))
    assert sorted(platform.texts("g1")) == sorted(f"echo: {t}" for t in answered)
    assert platform.texts("g2") == []
    assert len(fake_model.requests) == len(answered) + 1


async def test_an_invalid_message_is_dropped_and_the_channel_goes_on(
    gateway_factory: Any, platform: FakePlatform, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway_factory(allow_from=["u1", "u9"])
    await platform.push("x" * (MAX_TEXT_CHARS + 1))
    await sync(platform)
    assert platform.texts("c1") == []
    assert await redis.exists(keys.inbound("fake:c1")) == 0  # nothing was queued
    assert len(fake_model.requests) == 1


async def test_help_and_new(
    gateway_factory: Any, platform: FakePlatform, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway_factory(allow_from=["u1"])
    await platform.push("/help@fakebot")
    await platform.wait_for(lambda: HELP_TEXT in platform.texts("c1"))
    assert [f"/{name}" for name, _ in command_list()] == ["/new", "/stop", "/help"]
    await platform.push("first")
    await platform.wait_for(lambda: "echo: first" in platform.texts("c1"))
    await platform.push("/new")
    await platform.wait_for(lambda: NEW_TEXT in platform.texts("c1"))
    await platform.push("second")
    # Until run.started carries the chat address, a fresh session's replies are
    # addressed by its session key: wait for the text in any chat.
    await platform.wait_for(lambda: "echo: second" in platform.texts())
    assert len(fake_model.requests) == 2
    fresh = " ".join(str(m.get("content")) for m in fake_model.requests[1]["messages"])
    assert "first" not in fresh and "second" in fresh
    store = RedisSessionStore(redis)
    old = await store.load("fake:c1")
    assert old is not None and "first" in str(old.messages)
    new = await store.load("fake#1:c1")
    assert new is not None and "first" not in str(new.messages)


async def test_stop_during_a_slow_reply(
    gateway_factory: Any, platform: FakePlatform, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway_factory(allow_from=["u1"])
    fake_model.script(Reply(text="x" * 400, chunk_size=4, chunk_delay_s=0.05))
    await platform.push("write a lot")
    await platform.wait_for(lambda: any(t.startswith("x") for t in platform.texts("c1")))
    await platform.push("/stop")
    await platform.wait_for(lambda: STOPPING_TEXT in platform.texts("c1"))
    failed = await wait_run_failed(redis, "fake:c1")
    assert failed.result is not None and failed.result.stop_reason == "cancelled"
    assert len(fake_model.requests) == 1


async def wait_run_failed(redis: Redis, session_key: str) -> RunFailed:
    last = "0-0"
    while True:
        reply = await redis.xread({keys.outbound(session_key): last}, block=10_000)
        assert reply, "no run.failed within 10 s"
        for entry_id, fields in reply[0][1]:
            last = entry_id
            event = decode_event(fields)
            if isinstance(event, RunFailed):
                return event
