"""The outbound toolkit end to end: a real redis-server, a worker, the fake model server
and a deliverer on a fake platform."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.channels.delivery import Deliverer
from gateway.channels.toolkit.media import save_attachment
from gateway.core.bus.inbound import publish_inbound
from gateway.core.messages import InboundMessage
from tests.fakes.openai_server import FakeModelServer, fake_model  # noqa: F401
from tests.fakes.recording_renderer import RecordingRenderer
from tests.integration.test_worker_kit import bus_settings, running_workers

pytestmark = pytest.mark.integration

CHANNEL = "fake"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_image_reaches_the_model_and_reply_reaches_a_chat_id_with_colons(
    redis: Redis,
    tmp_path: Path,
    fake_model: FakeModelServer,
) -> None:
    settings = bus_settings(tmp_path, fake=fake_model)
    image = await save_attachment(
        settings.workspace, CHANNEL, "room:7", "cat.png", PNG, max_bytes=1000, mime_type="image/png"
    )
    message = InboundMessage(
        channel=CHANNEL,
        chat_id="room:7",  # a ':' in the chat id, and a custom session key
        thread_id="topic:1",
        session_key="support-desk",
        sender_id="u1",
        text="what is this?",
        attachments=[image],
    )
    renderer = RecordingRenderer()
    cfg = settings.worker
    deliverer = Deliverer(
        redis,
        CHANNEL,
        renderer,
        partitions=cfg.ready_partitions,
        consumer="d1",
        block_ms=200,
    )
    await deliverer.start()
    try:
        async with running_workers(settings, redis, deliver_channels=frozenset({CHANNEL})):
            await publish_inbound(
                redis, message, partitions=cfg.ready_partitions, maxlen=cfg.stream_maxlen
            )
            # (The fake echoes the text parts joined by spaces: the image part adds one.)
            await renderer.wait_until(
                lambda: renderer.texts() == ["echo: what is this? "], timeout_s=20
            )
    finally:
        await deliverer.stop()
    [shown] = renderer.messages.values()
    assert (shown.chat_id, shown.thread_id) == ("room:7", "topic:1")
    [request] = fake_model.requests
    user = request["messages"][-1]
    assert user["role"] == "user"
    assert user["content"] == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
        },
    ]
