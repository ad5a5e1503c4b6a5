"""``gateway chat`` driven in a pseudo-terminal (pexpect): through a gateway, and in-process."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest
import yaml
from redis.asyncio import Redis

from gateway.app import GatewayApp
from gateway.core.sessions.redis import RedisSessionStore
from gateway.core.settings import Settings, load_settings
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.fakes.redis_server import redis, redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

GATEWAY_BIN = str(Path(sys.executable).with_name("gateway"))
SLOW = Reply(text="word " * 400, chunk_size=5, chunk_delay_s=0.05)
PROMPT = "you>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_chat_config(
    tmp_path: Path, fake: FakeModelServer, redis_url: str, **http: object
) -> tuple[Path, Settings]:
    path = tmp_path / "config.yaml"
    data = {
        "model": "local/fake-model",
        "providers": {"local": {"base_url": fake.base_url, "api_key": "none", "max_retries": 0}},
        "workspace": str(tmp_path / "workspace"),
        "redis": {"url": redis_url},
        "http": {"host": "127.0.0.1", "port": free_port(), **http},
        "worker": {"ready_partitions": 2, "coalesce_ms": 10},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path, load_settings(path, required=True)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[list[pexpect.spawn]]:
    """Children spawned by the test; any still running at the end is killed."""
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def start_chat(
    children: list[pexpect.spawn], tmp_path: Path, config: Path, *args: str
) -> pexpect.spawn:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GATEWAY_") and name != "REDIS_URL"
    }
    env.update(GATEWAY_HOME=str(tmp_path), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(
        GATEWAY_BIN,
        ["chat", "--config", str(config), *args],
        env=env,
        encoding="utf-8",
        dimensions=(40, 120),
        timeout=30,
    )
    child.logfile_read = (tmp_path / "chat.log").open("w", encoding="utf-8")  # kept for failures
    children.append(child)
    return child


async def expect(child: pexpect.spawn, pattern: object) -> None:
    await child.expect(pattern, async_=True)


async def test_chat_through_a_running_gateway(
    tmp_path: Path,
    fake_model: FakeModelServer,
    redis_url: str,
    redis: Redis,
    spawn: list[pexpect.spawn],
) -> None:
    config, settings = write_chat_config(tmp_path, fake_model, redis_url, api_keys=["k-chat"])
    async with GatewayApp(settings):
        child = start_chat(spawn, tmp_path, config, "--session", "t1")
        await expect(child, "connected to the gateway at http://127.0.0.1")
        await expect(child, "session cli:t1")
        await expect(child, PROMPT)
        child.send("hello *there*\r")
        await expect(child, "echo: hello")
        await expect(child, PROMPT)

        fake_model.script(SLOW)
        child.send("tell me a long story\r")
        await expect(child, "word word")
        child.sendintr()  # Ctrl-C: stop the turn, through the bus
        await expect(child, "stopped")
        await expect(child, PROMPT)
        await fake_model.wait_streams_closed()

        child.send("/help\r")
        await expect(child, "/stop")
        await expect(child, PROMPT)
        child.send("/new\r")
        await expect(child, r"new chat: session cli:chat-[0-9a-f]+")
        await expect(child, PROMPT)
        child.sendcontrol("d")
        await expect(child, pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # The conversation went through the bus: the worker committed it to Redis.
    session = await RedisSessionStore(redis).load("cli:t1")
    assert session is not None
    contents = [(m["role"], m.get("content")) for m in session.messages]
    assert contents[:2] == [("user", "hello *there*"), ("assistant", "echo: hello *there*")]
    assert contents[2] == ("user", "tell me a long story")
    assert session.messages[3]["metadata"] == {"stopped": True}


async def test_a_second_ctrl_c_exits_while_a_reply_is_pending(
    tmp_path: Path, fake_model: FakeModelServer, redis_url: str, spawn: list[pexpect.spawn]
) -> None:
    config, settings = write_chat_config(tmp_path, fake_model, redis_url)
    async with GatewayApp(settings, with_worker=False):  # nobody answers, nobody stops
        child = start_chat(spawn, tmp_path, config)
        await expect(child, PROMPT)
        child.send("anyone there?\r")
        await expect(child, "…")  # the turn is under way (the prompt has left raw mode)
        child.sendintr()
        await expect(child, "stopping")
        child.sendintr()
        await expect(child, pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


async def test_chat_in_process_when_no_gateway_answers(
    tmp_path: Path, fake_model: FakeModelServer, redis_url: str, spawn: list[pexpect.spawn]
) -> None:
    config, _ = write_chat_config(tmp_path, fake_model, redis_url)  # its port: nobody listens
    child = start_chat(spawn, tmp_path, config, "--session", "local")
    await expect(child, "in-process")
    await expect(child, PROMPT)
    child.send("hi there\r")
    await expect(child, "echo: hi there")
    await expect(child, PROMPT)
    fake_model.script(SLOW)
    child.send("go on and on\r")
    await expect(child, "word word")
    child.sendintr()
    await expect(child, "stopped")
    await expect(child, PROMPT)
    await fake_model.wait_streams_closed()
    child.send("/stop\r")
    await expect(child, "nothing to stop")
    await expect(child, PROMPT)
    child.sendintr()  # at the prompt: once warns, twice exits
    await expect(child, "Ctrl-C again")
    await expect(child, PROMPT)
    child.sendintr()
    await expect(child, pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    sessions = tmp_path / "workspace" / "sessions"
    assert any("hi there" in p.read_text() for p in sessions.iterdir())


async def test_an_unknown_agent_is_one_line(
    tmp_path: Path, fake_model: FakeModelServer, redis_url: str, spawn: list[pexpect.spawn]
) -> None:
    config, _ = write_chat_config(tmp_path, fake_model, redis_url)
    child = start_chat(spawn, tmp_path, config, "--agent", "nobody")
    await expect(child, "no agent named 'nobody'")
    await expect(child, pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "Traceback" not in (child.before or "")
