"""Telegram albums end to end: the real python-telegram-bot against the fake Bot API,
real gateways (real redis-server, in-process workers) and the fake model. An album's
parts reach the model as one message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_inbound
from tests.fakes.fake_telegram import FakeBotAPI
from tests.fakes.openai_server import FakeModelServer
from tests.integration.test_telegram import (  # noqa: F401
    ANN,
    PNG,
    final,
    gateway,
    inbound_streams,
    telegram,
)

pytestmark = pytest.mark.integration

PHOTOS = ["ph1", "ph2", "ph3"]


def images_and_text(fake_model: FakeModelServer) -> tuple[list[str], str]:
    """The one model request's last message: its image urls and its text."""
    (request,) = fake_model.requests
    parts = request["messages"][-1]["content"]
    images = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    text = " ".join(p["text"] for p in parts if p.get("type") == "text")
    return images, text


@pytest.fixture(autouse=True)
def files(telegram: FakeBotAPI) -> None:
    for file_id in PHOTOS:
        telegram.files[file_id] = PNG


async def test_an_album_in_one_batch_is_one_message_with_every_photo(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway()
    await telegram.push_album(PHOTOS, caption="what are these", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, "echo: what are these"))
    images, text = images_and_text(fake_model)
    assert len(images) == 3 and all(url.startswith("data:image/") for url in images)
    assert "what are these" in text
    assert len(telegram.called("sendMessage")) == 1  # one reply
    assert len(telegram.called("getFile")) == 3
    assert await redis.zcard(keys.album_due("telegram")) == 0  # nothing left buffered


async def test_an_album_split_over_two_batches_is_still_one_message(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    await gateway(album_window_s=3.0)  # the gap between the batches is milliseconds
    await telegram.push_album(PHOTOS[:1], caption="two batches", chat_id=ANN, user_id=ANN)
    # The next getUpdates confirms part 1: the poller handed it off (stashed) first.
    await telegram.wait_for(lambda: telegram.confirmed >= 2)
    await telegram.push_album(PHOTOS[1:], chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, "echo: two batches"))
    assert telegram.served == [1, 2, 3]
    images, _ = images_and_text(fake_model)
    assert len(images) == 3
    assert len(telegram.called("sendMessage")) == 1


async def test_a_redelivered_album_part_is_not_published_again(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway()
    parts = await telegram.push_album(PHOTOS, caption="once", chat_id=ANN, user_id=ANN)
    await telegram.replay(parts[0])  # while the album is buffered
    await telegram.wait_for(lambda: final(telegram, "echo: once"))
    await telegram.replay(parts[1])  # after it was published
    await telegram.push("after", chat_id=ANN, user_id=ANN)  # served after the replay
    await telegram.wait_for(lambda: final(telegram, "echo: after"))
    assert telegram.served.count(parts[1]["update_id"]) == 2
    assert [text.strip() for text in telegram.texts()] == ["echo: once", "echo: after"]
    assert len(fake_model.requests) == 2
    assert await redis.zcard(keys.album_due("telegram")) == 0  # the replay stored nothing


async def test_an_album_from_an_unknown_sender_gets_one_pairing_code_and_no_download(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer, redis: Redis
) -> None:
    await gateway()
    await telegram.push_album(PHOTOS, caption="hi", chat_id=7, user_id=7, username="eve")
    await telegram.wait_for(lambda: bool(telegram.texts()))
    await telegram.push("/help", chat_id=ANN, user_id=ANN)  # anything after the album
    await telegram.wait_for(lambda: len(telegram.texts()) == 2)
    code_reply = telegram.texts()[0]
    assert "pairing code" in code_reply
    assert len([t for t in telegram.texts() if "pairing code" in t]) == 1
    assert telegram.called("getFile") == []
    assert fake_model.requests == []
    assert await inbound_streams(redis) == []


async def test_webhook_album_parts_posted_separately_to_two_replicas_are_one_message(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    webhook = {
        "mode": "webhook",
        "webhook_url": "https://example.invalid/telegram/webhook",
        "webhook_secret": "s3",
    }
    replicas = [await gateway(**webhook), await gateway(**webhook)]
    updates = []
    for n, file_id in enumerate(PHOTOS):
        photo = {"file_id": file_id, "file_unique_id": f"u{file_id}", "width": 1, "height": 1}
        caption = {"caption": "by webhook"} if n == 0 else {}
        updates.append(
            telegram.update(chat_id=ANN, user_id=ANN, photo=[photo], media_group_id="w1", **caption)
        )
    headers = {"X-Telegram-Bot-Api-Secret-Token": "s3"}
    async with aiohttp.ClientSession() as http:
        for n, update in enumerate(updates):  # each part its own POST, alternating replicas
            url = f"{replicas[n % 2].url}/telegram/webhook"
            async with http.post(url, json=update, headers=headers) as response:
                assert response.status == 200
    await telegram.wait_for(lambda: final(telegram, "echo: by webhook"))
    images, _ = images_and_text(fake_model)
    assert len(images) == 3
    assert len(telegram.called("sendMessage")) == 1
    assert telegram.called("getUpdates") == []


async def spawn_poller(
    redis_url: str, telegram: FakeBotAPI, workspace: Path
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.telegram_channel_process",
        redis_url, telegram.url, telegram.token, "60",
        stdout=subprocess.PIPE, env={**os.environ, "GATEWAY_WORKSPACE": str(workspace)},
    )  # fmt: skip
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    return process


async def test_an_album_stashed_by_a_killed_poller_is_published_by_the_next_one(
    redis_url: str, redis: Redis, telegram: FakeBotAPI, tmp_path: Path
) -> None:
    first = await spawn_poller(redis_url, telegram, tmp_path)
    second: asyncio.subprocess.Process | None = None
    try:
        await telegram.wait_for(lambda: bool(telegram.called("getUpdates")))
        await telegram.push_album(PHOTOS, caption="kept", chat_id=ANN, user_id=ANN)
        await telegram.wait_for(lambda: telegram.confirmed >= 4)  # all three handed off
        first.send_signal(signal.SIGKILL)  # long before its 60 s window ends
        await first.wait()
        due = keys.album_due("telegram")
        assert await redis.zrange(due, 0, -1) == [f"{ANN}:mg1"]  # stored, not published
        await redis.zadd(due, {f"{ANN}:mg1": 0})  # as if the window passed while nobody ran
        second = await spawn_poller(redis_url, telegram, tmp_path)  # takes over the lease
        stream = keys.inbound(f"telegram:{ANN}")
        async with asyncio.timeout(30):
            (entry,) = (await redis.xread({stream: "0-0"}, block=30_000))[0][1]
        msg = decode_inbound(entry[1])
        assert msg.text == "kept" and len(msg.attachments) == 3
        assert telegram.served == [1, 2, 3]  # never fetched again: the offset was confirmed
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()


async def test_a_text_sent_right_after_an_album_joins_it(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    # Regression: the text was published at once and the album a window later, so the
    # model answered "what do you see?" without the photos.
    await gateway(album_window_s=2.0)
    await telegram.push_album(PHOTOS[:2], caption="my holiday", chat_id=ANN, user_id=ANN)
    await telegram.push("what do you see?", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: final(telegram, "echo: my holiday\n\nwhat do you see?"))
    images, text = images_and_text(fake_model)  # one request: photos and both texts
    assert len(images) == 2
    assert "my holiday" in text and "what do you see?" in text
    assert len(telegram.called("sendMessage")) == 1


async def test_a_command_after_an_album_acts_at_once(
    gateway: Any, telegram: FakeBotAPI, fake_model: FakeModelServer
) -> None:
    await gateway(album_window_s=2.0)
    await telegram.push_album(PHOTOS[:1], caption="later", chat_id=ANN, user_id=ANN)
    await telegram.push("/help", chat_id=ANN, user_id=ANN)
    await telegram.wait_for(lambda: any("/new" in shown for shown in telegram.texts()))
    assert fake_model.requests == []  # the album still waits for its window
    await telegram.wait_for(lambda: final(telegram, "echo: later"))
