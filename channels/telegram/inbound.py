"""Telegram updates normalized to the toolkit's ``PlatformMessage``.

Private chats are direct; groups and supergroups are not (the toolkit's mention
gating applies, with the bot's username). A forum topic is the thread
(``message_thread_id``), so each topic is its own session and replies land in it.
A caption is the text of a photo or document. ``platform_event_id`` is the
``update_id``: the bus drops a redelivered update. The parts of an album (a media
group) are merged by ``merge_album`` into one message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from telegram import Message, MessageEntity, Update, User
from telegram.constants import ChatType

from gateway.channels.toolkit.access import PlatformMessage


@dataclass(frozen=True, slots=True)
class Media:
    """One file of a message, to download once the sender is admitted."""

    file_id: str
    name: str
    mime_type: str
    size: int | None


def normalize(update: Update, me: User) -> tuple[PlatformMessage, list[Media]] | None:
    """The message of ``update`` and its files; None for updates that carry no message."""
    message = update.message
    if message is None or message.from_user is None:
        return None  # edits, channel posts, service updates: not a conversation turn
    sender = message.from_user
    text = message.text or message.caption or ""
    mentioned, text = _mention(message, text, me)
    replied = message.reply_to_message
    reply_to_bot = bool(replied and replied.from_user and replied.from_user.id == me.id)
    return (
        PlatformMessage(
            chat_id=str(message.chat.id),
            sender_id=str(sender.id),
            text=text,
            sender_name=sender.full_name,
            username=sender.username or "",
            thread_id=str(message.message_thread_id) if message.is_topic_message else None,
            direct=message.chat.type == ChatType.PRIVATE,
            mentioned=mentioned,
            reply_to_bot=reply_to_bot and not _is_topic_root(message),
            event_id=str(update.update_id),
            reply_to=str(replied.message_id) if replied and not _is_topic_root(message) else None,
            # In a group the reply quotes the message it answers, so it reads in context.
            quote_id=None if message.chat.type == ChatType.PRIVATE else str(message.message_id),
        ),
        media_of(message),
    )


def album_of(update: Update) -> str | None:
    """``<chat id>:<media_group_id>`` for a part of an album, else None."""
    message = update.message
    if message is None or message.media_group_id is None:
        return None
    return f"{message.chat.id}:{message.media_group_id}"


def merge_album(
    parts: list[tuple[PlatformMessage, list[Media]]], event_id: str
) -> tuple[PlatformMessage, list[Media]]:
    """The parts of one album (in order) as one message: every file, the caption(s) as text.

    Usually only the first part has a caption; the album is addressed to the bot
    (mention, reply) when any part is, and a group reply quotes the first part.
    """
    if not parts:
        raise ValueError("an album without parts")
    first = parts[0][0]
    messages = [msg for msg, _ in parts]
    merged = replace(
        first,
        text="\n\n".join(msg.text for msg in messages if msg.text),
        mentioned=any(msg.mentioned for msg in messages),
        reply_to_bot=any(msg.reply_to_bot for msg in messages),
        reply_to=next((msg.reply_to for msg in messages if msg.reply_to), None),
        event_id=event_id,
    )
    return merged, [item for _, media in parts for item in media]


def _is_topic_root(message: Message) -> bool:
    # In a forum topic every message "replies" to the topic's creation message.
    replied = message.reply_to_message
    return bool(message.is_topic_message and replied and replied.forum_topic_created)


def _mention(message: Message, text: str, me: User) -> tuple[bool, str]:
    """Whether the bot is mentioned, and ``text`` without the mention."""
    handle = f"@{me.username}".lower() if me.username else None
    kinds: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    # parse_*entities slices by UTF-16 offsets, as Telegram counts them.
    found = message.parse_entities(kinds) if message.text else message.parse_caption_entities(kinds)
    for entity, part in found.items():
        by_name = entity.type == MessageEntity.MENTION and part.lower() == handle
        by_id = bool(entity.user and entity.user.id == me.id)
        if by_name or by_id:
            return True, " ".join(text.replace(part, " ", 1).split())
    return False, text


def media_of(message: Message) -> list[Media]:
    if message.photo:
        photo = message.photo[-1]  # the largest size
        return [
            Media(photo.file_id, f"photo-{photo.file_unique_id}.jpg", "image/jpeg", photo.file_size)
        ]
    found: list[Media] = []
    if message.document:
        doc = message.document
        name = doc.file_name or f"document-{doc.file_unique_id}"
        found.append(Media(doc.file_id, name, doc.mime_type or "", doc.file_size))
    if message.voice:
        voice = message.voice
        name = f"voice-{voice.file_unique_id}.ogg"
        found.append(Media(voice.file_id, name, voice.mime_type or "audio/ogg", voice.file_size))
    return found
