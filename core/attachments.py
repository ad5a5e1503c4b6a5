"""Attachments in what the model sees.

A user message keeps its ``attachments`` (saved files, see ``channels.toolkit.media``)
in the session as they came; only the request to the model turns them into
content: an image becomes an ``image_url`` part (a data URL of the saved file, or
its URL), any other file is named in the text with its path, so the agent's file
tools can open it.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
from pathlib import Path
from typing import Any

from gateway.core.messages import Message, content_text

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest image inlined as a data URL (larger ones are named like files)."""


def with_attachments(message: Message) -> Message:
    """``message`` with its attachments turned into model content (itself when it has none)."""
    attachments = message.get("attachments")
    if not attachments or message.get("role") != "user":
        return message
    notes: list[str] = []
    images: list[dict[str, Any]] = []
    for attachment in attachments:
        if not isinstance(attachment, dict):
            continue
        url = _image_url(attachment) if attachment.get("type") == "image" else None
        if url is not None:
            images.append({"type": "image_url", "image_url": {"url": url}})
        else:
            notes.append(_file_note(attachment))
    text = content_text(message.get("content"))
    if notes:
        text = "\n".join([text, *notes]) if text else "\n".join(notes)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return {**message, "content": content + images}


def _image_url(attachment: dict[str, Any]) -> str | None:
    path = attachment.get("path")
    if path:
        return _data_url(Path(path), attachment.get("mime_type") or "")
    url = str(attachment.get("url") or "")
    return url if url.startswith(("https://", "http://", "data:")) else None


def _data_url(path: Path, mime_type: str) -> str | None:
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            return None
        data = path.read_bytes()
    except OSError as exc:
        log.warning("image attachment %s cannot be read: %s", path, exc)
        return None
    mime = mime_type or mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _file_note(attachment: dict[str, Any]) -> str:
    where = attachment.get("path") or attachment.get("url") or "?"
    name = attachment.get("name") or Path(str(where)).name
    kind = attachment.get("mime_type") or attachment.get("type") or "file"
    return f"[attached {kind} {name!r}: {where}]"
