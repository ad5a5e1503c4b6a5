"""Merging an album's parts into one message (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Update

from gateway.channels.telegram.albums import album_event_id
from gateway.channels.telegram.inbound import Media, album_of, merge_album
from gateway.channels.toolkit.access import PlatformMessage


def part(n: int, text: str = "", **fields: Any) -> tuple[PlatformMessage, list[Media]]:
    msg = PlatformMessage(
        chat_id="-100", sender_id="7", text=text, direct=False, event_id=str(n),
        quote_id=str(10 + n), **fields,
    )  # fmt: skip
    return msg, [Media(f"f{n}", f"photo-{n}.jpg", "image/jpeg", 10)]


def test_the_album_is_one_message_with_every_file_and_the_caption() -> None:
    msg, media = merge_album([part(1), part(2, "look", mentioned=True), part(3)], "album:x:1")
    assert msg.text == "look"
    assert msg.mentioned  # a mention in any caption addresses the whole album
    assert msg.event_id == "album:x:1"
    assert msg.quote_id == "11"  # a group reply quotes the first photo
    assert [m.file_id for m in media] == ["f1", "f2", "f3"]


def test_every_caption_is_kept_and_a_reply_anywhere_counts() -> None:
    msg, _ = merge_album([part(1, "a"), part(2, "b", reply_to_bot=True, reply_to="5")], "e")
    assert msg.text == "a\n\nb"
    assert msg.reply_to_bot and msg.reply_to == "5"


def test_an_album_without_parts_is_an_error() -> None:
    with pytest.raises(ValueError):
        merge_album([], "e")


def test_album_of_names_chat_and_group_and_the_event_id_its_lowest_update() -> None:
    body = {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "group"}}
    grouped = Update.de_json({"update_id": 9, "message": {**body, "media_group_id": "g"}}, None)
    single = Update.de_json({"update_id": 10, "message": body}, None)
    assert album_of(grouped) == "-100:g"
    assert album_of(single) is None
    assert album_event_id("-100:g", [12, 9, 10]) == "album:-100:g:9"
