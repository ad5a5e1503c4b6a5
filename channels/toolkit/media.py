"""Saving attachments an adapter downloaded, for the agent to see.

An adapter downloads through its platform client and hands the bytes (or a
stream of chunks) to ``save_attachment``: the file lands under the workspace at
``media/<channel>/<chat>/<id>-<name>`` and comes back as an ``Attachment`` to put
on the ``InboundMessage``. A file over ``max_bytes`` (the channel's
``max_attachment_bytes``) is refused with ``AttachmentTooLarge``, whose
``reply`` is the short text the adapter sends back to the chat.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Literal, TypeAlias

from gateway.core.messages import Attachment, new_id

MEDIA_DIR = "media"
AttachmentKind: TypeAlias = Literal["image", "file", "audio", "video"]
_KINDS: dict[str, AttachmentKind] = {"image": "image", "audio": "audio", "video": "video"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class AttachmentTooLarge(Exception):
    """A downloaded attachment exceeds the channel's ``max_attachment_bytes``."""

    def __init__(self, name: str, max_bytes: int) -> None:
        super().__init__(f"attachment {name!r} is larger than {max_bytes} bytes")
        self.reply = f"Sorry, {name or 'that file'} is too large (the limit is {_size(max_bytes)})."


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n} bytes"


def safe_part(text: str) -> str:
    """A path component from any platform id or file name (no separators, no dot-dot)."""
    cleaned = _UNSAFE.sub("_", text).strip("._") or "_"
    return cleaned[:80]


def attachment_kind(mime_type: str) -> AttachmentKind:
    return _KINDS.get(mime_type.split("/", 1)[0], "file")


async def save_attachment(
    workspace: Path,
    channel: str,
    chat_id: str,
    name: str,
    data: bytes | AsyncIterable[bytes],
    *,
    max_bytes: int,
    mime_type: str = "",
) -> Attachment:
    """Save one downloaded attachment; ``AttachmentTooLarge`` past ``max_bytes`` (nothing kept)."""
    path = await asyncio.to_thread(_target, workspace, channel, chat_id, name)
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise AttachmentTooLarge(name, max_bytes)
        await asyncio.to_thread(_write, path, data)
    else:
        await _write_stream(path, data, name, max_bytes)
    return Attachment(
        type=attachment_kind(mime_type),
        path=str(path),
        name=name,
        mime_type=mime_type,
    )


def _target(workspace: Path, channel: str, chat_id: str, name: str) -> Path:
    # Absolute: the model is told this path, and the file tools accept it in the workspace.
    folder = workspace.resolve() / MEDIA_DIR / safe_part(channel) / safe_part(chat_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{new_id()}-{safe_part(name or 'file')}"


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def _write_stream(
    path: Path, chunks: AsyncIterable[bytes], name: str, max_bytes: int
) -> None:
    """Collect the chunks, stopping as soon as the cap is passed (the rest never read)."""
    received: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise AttachmentTooLarge(name, max_bytes)
        received.append(chunk)
    await asyncio.to_thread(_write, path, b"".join(received))
