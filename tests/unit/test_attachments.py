"""Saving downloaded attachments, and what the model sees of them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.channels.toolkit.media import AttachmentTooLarge, save_attachment
from gateway.core.messages import InboundMessage
from gateway.core.providers.openai_compat import sanitize_messages

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_saved_under_the_workspace_media_folder(tmp_path: Path) -> None:
    attachment = await save_attachment(
        tmp_path, "telegram", "-100:42", "../../etc/passwd", b"data", max_bytes=10
    )
    path = Path(attachment.path)
    assert path.is_relative_to(tmp_path.resolve() / "media" / "telegram" / "-100_42")
    assert path.read_bytes() == b"data"
    assert attachment.type == "file"


async def test_too_large_is_refused_with_a_short_reply(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024

    with pytest.raises(AttachmentTooLarge) as refused:
        await save_attachment(tmp_path, "slack", "C1", "big.bin", chunks(), max_bytes=4096)
    assert "too large" in refused.value.reply and "\n" not in refused.value.reply
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


async def test_image_becomes_an_image_part_and_a_file_is_named(tmp_path: Path) -> None:
    image = await save_attachment(
        tmp_path, "fake", "c", "cat.png", PNG, max_bytes=1000, mime_type="image/png"
    )
    doc = await save_attachment(
        tmp_path, "fake", "c", "notes.pdf", b"%PDF", max_bytes=1000, mime_type="application/pdf"
    )
    message = InboundMessage(
        channel="fake", chat_id="c", sender_id="u", text="look", attachments=[image, doc]
    ).to_user_message()
    [sent] = sanitize_messages([message])
    assert set(sent) == {"role", "content"}
    text, picture = sent["content"]
    assert text["type"] == "text" and text["text"].startswith("look\n")
    assert doc.path in text["text"] and "notes.pdf" in text["text"]
    assert picture == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
    }
    # The stored history keeps the attachment records, not the data.
    assert message["content"] == "look" and len(message["attachments"]) == 2
