"""The Telegram adapter end to end: the real python-telegram-bot against a local fake
Bot API, a real gateway (real redis-server, in-process worker) and the fake model."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
import yaml
from redis.asyncio import Redis

from gateway.app import GatewayApp
from gateway.channels.toolkit.commands import command_list
from gateway.channels.toolkit.pairing import ALPHABET, PairingStore
from gateway.core.bus import keys
from gateway.core.bus.codec import decode_inbound
from gateway.core.settings import HttpSettings, RedisSettings, load_settings
from tests.e2e.conftest import WorkerLauncher, worker_launcher, write_worker_config  # noqa: F401
from tests.fakes.fake_telegram import BOT_USER, FakeBotAPI
from tests.fakes.live_gateway import api_settings
from tests.fakes.openai_server import FakeModelServer, Reply
from tests.fakes.tcp_proxy import BlackHoleProxy

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
    return text in [shown.strip() for shown in telegram.texts()]


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
    assert sent.reply_to is None  # a direct chat needs no quote
    assert len(telegram.called("sendMessage")) == 1
    assert telegram.called("sendChatAction")
    assert [c["command"] for c in telegram.commands] == [n for n, _ in command_list()]
    assert len(fake_model.requests) == 1


async def test_messages_sent_while_no_gateway_ran_are_answered_at_start(
    gateway: Any, telegram: FakeBotAPI
) -> None:
    await telegram.push("while you were away", chat_id=ANN, user_id=ANN)
    await gateway()  # pending updates are not dropped at start
    await telegram.wait_for(lambda: final(telegram, "echo: while you were away"))
    (delete,) = telegram.called("deleteWebhook")
    assert delete.get("drop_pending_updates") in (None, "false", False)


async def inbound_streams(redis: Redis) -> list[str]:
    return [str(k) async for k in redis.scan_iter(match=f"{keys.PREFIX}:in:*")]


async def test_an_unknown_user_gets_a_pairing_code_and_no_model_call(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway()
    await telegram.push("/start", chat_id=7, user_id=7, username="eve")
    await telegram.push("hello", chat_id=7, user_id=7, username="eve")
    await telegram.push("/start", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: len(telegram.texts()) == 3)
    code_reply, again, greeting = telegram.texts()
    assert CODE.search(code_reply) and CODE.search(again)  # the same open code, twice
    assert "/help" in greeting
    assert fake_model.requests == []
    assert await inbound_streams(redis) == []
    match = CODE.search(code_reply)
    assert match is not None
    assert await PairingStore(redis, "telegram").approve(match.group(1)) == "7"  # the CLI's call
    await telegram.push("hello again", chat_id=7, user_id=7, username="eve")
    await telegram.wait_for(lambda: final(telegram, "echo: hello again"))
    assert len(fake_model.requests) == 1


async def test_group_messages_need_a_mention_or_a_reply(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    await gateway()
    group: dict[str, Any] = {"chat_id": GROUP, "user_id": ANN, "chat_type": "supergroup"}
    await telegram.push("chatting among ourselves", **group)
    asked = await telegram.push(f"@{BOT_USER['username']} what time is it", **group)
    await telegram.wait_for(lambda: final(telegram, "echo: what time is it"))
    again = await telegram.push("and tomorrow?", reply_to_bot=True, **group)
    await telegram.wait_for(lambda: final(telegram, "echo: and tomorrow?"))
    assert len(fake_model.requests) == 2  # the unaddressed message cost nothing
    assert {s.chat_id for s in telegram.sent.values()} == {GROUP}
    # Each reply quotes the message it answers.
    quoted = [s.reply_to for s in telegram.sent.values()]
    assert quoted == [asked["message"]["message_id"], again["message"]["message_id"]]


async def test_a_forum_topic_is_its_own_session_and_gets_replies_in_the_topic(
    gateway: Any, telegram: FakeBotAPI, redis: Redis
) -> None:
    await gateway(group_policy="open", allow_from=[str(GROUP)])
    await telegram.push("in topic 7", chat_id=GROUP, user_id=5, chat_type="supergroup", thread_id=7)
    await telegram.wait_for(lambda: final(telegram, "echo: in topic 7"))
    (sent,) = telegram.sent.values()
    assert sent.thread_id == 7
    assert await redis.exists(keys.inbound(f"telegram:{GROUP}:7"))


async def test_a_429_during_streaming_leaves_one_complete_reply(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    reply = " ".join(f"word{n}" for n in range(60))
    fake_model.script(Reply(text=reply, chunk_size=20, chunk_delay_s=0.05))
    telegram.rate_limit("editMessageText", retry_after=1, times=2)
    await gateway()
    await telegram.push("go", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, reply))
    assert telegram.texts() == [reply]  # shown once, complete
    assert len(telegram.called("sendMessage")) == 1


async def test_a_redelivered_update_is_answered_once(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    await gateway()
    update = await telegram.push("once", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, "echo: once"))
    await telegram.replay(update)
    await telegram.push("twice", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, "echo: twice"))
    assert telegram.texts() == ["echo: once", "echo: twice"]
    assert len(fake_model.requests) == 2


async def test_a_long_reply_comes_in_parts_within_the_limit(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    paragraph = ("lorem ipsum dolor sit amet " * 10).strip()
    reply = "\n\n".join([paragraph] * 40)[:9000]
    assert len(reply) == 9000
    fake_model.script(Reply(text=reply, chunk_size=500))
    await gateway()
    await telegram.push("long", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(
        lambda: " ".join(telegram.texts()).split() == reply.split(), timeout_s=30
    )
    parts = telegram.texts()
    assert len(parts) == 3
    assert all(len(part) <= 4096 for part in parts)


async def test_html_special_characters_are_shown_as_written(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    code = "if a < b and c > d:\n    print('<b>&amp;</b>')"
    reply = f"Compare a < b && c > d:\n\n```python\n{code}\n```"
    fake_model.script(Reply(text=reply))
    await gateway()
    await telegram.push("show code", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: any(code in text for text in telegram.texts()))
    (sent,) = telegram.sent.values()
    assert sent.parse_mode == "HTML" and '<pre><code class="language-python">' in sent.raw
    assert sent.text.startswith("Compare a < b && c > d:")


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


async def test_a_photo_reaches_the_model_as_an_image(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    telegram.files["ph1"] = PNG
    photo = {"file_id": "ph1", "file_unique_id": "uph1", "width": 1, "height": 1}
    await gateway()
    await telegram.push(
        chat_id=ANN, user_id=ANN, caption="what is this", photo=[{**photo, "file_size": len(PNG)}]
    )
    await telegram.wait_for(lambda: final(telegram, "echo: what is this"))
    (request,) = fake_model.requests
    parts = request["messages"][-1]["content"]
    images = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert len(images) == 1 and images[0].startswith("data:image/")


async def test_a_file_over_the_limit_is_refused_with_a_short_reply(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    telegram.files["ph1"] = PNG
    photo = {"file_id": "ph1", "file_unique_id": "uph1", "width": 1, "height": 1}
    await gateway(max_attachment_bytes=10)
    await telegram.push(chat_id=ANN, user_id=ANN, photo=[{**photo, "file_size": len(PNG)}])
    await telegram.wait_for(lambda: bool(telegram.texts()))
    (refusal,) = telegram.texts()
    assert "too large" in refusal
    assert telegram.called("getFile") == []  # refused from its announced size
    assert fake_model.requests == []
    assert await inbound_streams(redis) == []


async def test_a_file_the_bot_api_refuses_as_too_big_gets_the_short_reply(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    # Regression: getFile's "file is too big" (past the Bot API's 20 MB) was logged with
    # a traceback and the message dropped without a word to the sender.
    telegram.files["doc1"] = b"x" * 64
    telegram.file_limit = 32
    await gateway()
    document = {"file_id": "doc1", "file_unique_id": "udoc1", "file_name": "big.bin"}
    await telegram.push(chat_id=ANN, user_id=ANN, document=document)  # no file_size given
    await telegram.wait_for(lambda: bool(telegram.texts()))
    (refusal,) = telegram.texts()
    assert "big.bin is too large" in refusal
    assert fake_model.requests == []
    assert await inbound_streams(redis) == []


async def test_webhook_mode_refuses_a_wrong_secret(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    app = await gateway(
        mode="webhook", webhook_url="https://example.invalid/telegram/webhook", webhook_secret="s3"
    )
    await telegram.wait_for(lambda: telegram.webhook.get("secret_token") == "s3")
    update = {
        "update_id": 41,
        "message": {
            "message_id": 5, "date": 0, "text": "via webhook",
            "chat": {"id": ANN, "type": "private"},
            "from": {"id": ANN, "is_bot": False, "first_name": "Ann"},
        },
    }  # fmt: skip
    url = f"{app.url}/telegram/webhook"
    async with aiohttp.ClientSession() as http:
        for secret in ("wrong", None):
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
            async with http.post(url, json=update, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
        assert await inbound_streams(redis) == []
        headers = {"X-Telegram-Bot-Api-Secret-Token": "s3"}
        async with http.post(url, json=update, headers=headers) as response:
            assert response.status == 200
    await telegram.wait_for(lambda: final(telegram, "echo: via webhook"))
    assert telegram.called("getUpdates") == []
    assert len(fake_model.requests) == 1


async def spawn_poller(redis_url: str, telegram: FakeBotAPI) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.telegram_channel_process",
        redis_url, telegram.url, telegram.token, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    return process


async def published_texts(redis: Redis, count: int) -> list[str]:
    """The texts on the chat's inbound stream once it holds ``count`` entries."""
    stream, last = keys.inbound(f"telegram:{ANN}"), "0-0"
    texts: list[str] = []
    async with asyncio.timeout(30):
        while len(texts) < count:
            for _, entries in await redis.xread({stream: last}, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    texts.append(decode_inbound(fields).text)
    return texts


async def test_the_poller_lease_is_taken_over_when_the_polling_process_dies(
    redis_url: str, redis: Redis, telegram: FakeBotAPI
) -> None:
    first = await spawn_poller(redis_url, telegram)
    await telegram.wait_for(lambda: bool(telegram.called("getUpdates")))
    second = await spawn_poller(redis_url, telegram)
    try:
        for n in range(5):
            await telegram.push(f"m{n}", chat_id=ANN, user_id=ANN)
        await published_texts(redis, 5)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        for n in range(5, 10):
            await telegram.push(f"m{n}", chat_id=ANN, user_id=ANN)
        texts = await published_texts(redis, 10)
        assert sorted(texts) == sorted(f"m{n}" for n in range(10))  # each once
    finally:
        for process in (first, second):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()


async def test_an_update_fetched_but_not_on_the_bus_is_fetched_again_after_a_crash(
    redis_url: str, redis: Redis, telegram: FakeBotAPI
) -> None:
    target = urlsplit(redis_url)
    proxy = await BlackHoleProxy(target.hostname or "127.0.0.1", target.port or 6379).start()
    first = await spawn_poller(proxy.url, telegram)
    second: asyncio.subprocess.Process | None = None
    try:
        await telegram.wait_for(lambda: bool(telegram.called("getUpdates")))
        proxy.black_hole()  # the poller's Redis stops answering: its publish hangs
        await telegram.push("m0", chat_id=ANN, user_id=ANN)
        await telegram.wait_for(lambda: 1 in telegram.served)
        # Its lease lapses unrenewed, so it stops polling: PTB's last getUpdates (timeout 0)
        # confirms the offset it holds. Then it dies holding an update the bus never got.
        await telegram.wait_for(lambda: any(_final_poll(p) for p in telegram.called("getUpdates")))
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await spawn_poller(redis_url, telegram)
        assert await published_texts(redis, 1) == ["m0"]  # not confirmed, so fetched again
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
        await proxy.close()


def _final_poll(params: dict[str, Any]) -> bool:
    return str(params.get("timeout")) in ("0", "0.0")


SLOW_REPLY = " ".join(f"word{i}" for i in range(60))


async def test_a_worker_killed_mid_reply_leaves_one_reply_edited_to_completion(
    redis_url: str,
    fake_model: FakeModelServer,
    worker_launcher: WorkerLauncher,
    telegram: FakeBotAPI,
    tmp_path: Path,
) -> None:
    config = tmp_path / "worker.yaml"
    write_worker_config(config, workspace=tmp_path / "ws", model_base_url=fake_model.base_url)
    data = yaml.safe_load(config.read_text())
    data["channels"] = {
        "telegram": {
            "token": telegram.token, "api_base": telegram.url,
            "edit_interval": 0.0, "allow_from": [str(ANN)],
        }
    }  # fmt: skip
    config.write_text(yaml.safe_dump(data))
    settings = load_settings(config, required=True).model_copy(
        update={"redis": RedisSettings(url=redis_url), "http": HttpSettings(port=0)}
    )
    fake_model.script(Reply(text=SLOW_REPLY, chunk_size=8, chunk_delay_s=0.1))
    doomed = await worker_launcher.start("A", redis_url=redis_url, config=config)
    async with GatewayApp(settings, with_worker=False):
        await telegram.push("go", chat_id=ANN, user_id=ANN)
        await telegram.wait_for(lambda: any(s.edits >= 1 for s in telegram.sent.values()))
        await doomed.kill()
        await worker_launcher.start("B", redis_url=redis_url, config=config)
        await telegram.wait_for(lambda: final(telegram, "echo: go"), timeout_s=60)
    (sent,) = telegram.sent.values()  # the re-run edited the cut-off reply in place
    assert sent.text.strip() == "echo: go"
    assert len(fake_model.requests) == 2
