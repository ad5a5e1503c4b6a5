"""The Telegram adapter end to end: the real python-telegram-bot against a local fake
Bot API, a real gateway (real redis-server, in-process worker) and the fake model."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from channels.toolkit.commands import command_list
from channels.toolkit.pairing import ALPHABET
from core.bus import keys
from gateway.app import GatewayApp
from tests.fakes.fake_telegram import BOT_USER, FakeBotAPI
from tests.fakes.live_gateway import api_settings
from tests.fakes.openai_server import FakeModelServer, Reply

pytestmark = pytest.mark.integration

CODE = re.compile(rf"pairing code: ([{ALPHABET}]{{8}})")
ANN = 100
GROUP = -1001


@pytest_asyncio.fixture
async def telegram() -> AsyncIterator[FakeBotAPI]:
    fake = await FakeBotAPI().start()
    yield fake
    await fake.stop()


@pytest_asyncio.fixture
async def gateway(
    redis_url: str, fake_model: FakeModelServer, tmp_path: Path, telegram: FakeBotAPI
) -> AsyncIterator[Any]:
    apps: list[GatewayApp] = []

    async def make(**channel: Any) -> GatewayApp:
        config = {
            "token": telegram.token,
            "api_base": telegram.url,
            "edit_interval": 0.0,
            "allow_from": [str(ANN)],
            **channel,
        }
        settings = api_settings(
            redis_url, fake_model.base_url, tmp_path / "ws", channels={"telegram": config}
        )
        app = GatewayApp(settings)
        await app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.shutdown()


def final(telegram: FakeBotAPI, text: str) -> bool:
    return text in telegram.texts()


async def test_an_allowed_dm_gets_a_streamed_reply(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    reply = " ".join(["The quick brown fox jumps over the lazy dog."] * 4)
    fake_model.script(Reply(text=reply, chunk_size=12, chunk_delay_s=0.05))
    await gateway()
    await telegram.push("tell me", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, reply))
    (sent,) = telegram.sent.values()
    assert sent.chat_id == ANN and sent.edits >= 1  # one send, then edits to the full text
    assert len(telegram.called("sendMessage")) == 1
    assert telegram.called("sendChatAction")
    assert [c["command"] for c in telegram.commands] == [n for n, _ in command_list()]
    assert len(fake_model.requests) == 1
