"""An in-memory platform for deliverer tests: records every send and edit.

``messages`` is what the chat shows now (message id -> text); ``sends`` and
``edits`` count the calls. ``fail_next_sends`` makes the next N sends raise, like a
platform outage; ``hang_sends`` makes sends never return; ``identical_edits`` counts
edits that changed nothing (Telegram answers those with 400 "message is not
modified").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


class PlatformDown(Exception):
    """Raised by the fake platform when told to fail."""


@dataclass
class SentMessage:
    chat_id: str
    thread_id: str | None
    text: str


@dataclass
class RecordingRenderer:
    max_message_chars: int = 4096
    edit_interval_s: float = 0.0
    messages: dict[str, SentMessage] = field(default_factory=dict)
    sends: int = 0
    edits: int = 0
    identical_edits: int = 0
    typings: int = 0
    fail_next_sends: int = 0
    send_attempts: int = 0
    """Calls of ``send``, including failed and hanging ones."""
    hang_sends: bool = False
    """Sends never return, like a platform API that stopped answering."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, chat_id: str, text: str, *, thread_id: str | None = None) -> str:
        self.send_attempts += 1
        self.changed.set()
        if self.fail_next_sends > 0:
            self.fail_next_sends -= 1
            raise PlatformDown("send refused")
        if self.hang_sends:
            await asyncio.Event().wait()  # never set
        self.sends += 1
        message_id = f"m{len(self.messages) + 1}"
        self.messages[message_id] = SentMessage(chat_id, thread_id, text)
        self.changed.set()
        return message_id

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        message = self.messages[message_id]
        assert message.chat_id == chat_id, f"edit of {message_id} in the wrong chat"
        self.edits += 1
        if message.text == text:
            self.identical_edits += 1
        message.text = text
        self.changed.set()

    async def typing(self, chat_id: str, *, thread_id: str | None = None) -> None:
        self.typings += 1

    def texts(self) -> list[str]:
        """The chat's messages in the order they were posted."""
        return [m.text for m in self.messages.values()]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for a send/edit after which ``predicate()`` holds."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
