"""An in-memory platform for deliverer tests: records every send and edit.

``messages`` is what the chat shows now (message id -> text); ``sends`` and
``edits`` count the calls. ``fail_next_sends`` makes the next N sends raise, like a
platform outage; ``hang_sends`` makes sends never return; ``identical_edits`` counts
edits that changed nothing (Telegram answers those with 400 "message is not
modified"). Typed platform answers: ``retry_after`` makes the next calls answer 429
(``RetryAfter``) with those delays; ``forbidden`` makes every call refuse for good
(the bot was blocked); ``deleted`` messages answer edits with ``MessageGone``.
``FormattingRecordingRenderer`` also formats (``format``) and can refuse to parse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.channels.toolkit.renderer import Forbidden, MessageGone, ParseRejected, RetryAfter


class PlatformDown(Exception):
    """Raised by the fake platform when told to fail."""


@dataclass
class SentMessage:
    chat_id: str
    thread_id: str | None
    text: str
    plain: bool = False


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
    retry_after: list[float] = field(default_factory=list)
    """The next calls answer 429 with these retry-after seconds, one each."""
    rate_limited: int = 0
    forbidden: bool = False
    refused: int = 0
    deleted: set[str] = field(default_factory=set)
    call_times: list[float] = field(default_factory=list)
    """``time.time()`` of every send and edit that went through."""
    typing_interval_s: float = 4.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _answer(self) -> None:
        """Raise what the platform was told to answer to the next call."""
        if self.forbidden:
            self.refused += 1
            raise Forbidden("bot was blocked by the user")
        if self.retry_after:
            self.rate_limited += 1
            raise RetryAfter(self.retry_after.pop(0))

    async def send(self, chat_id: str, text: str, *, thread_id: str | None = None) -> str:
        return await self._send(chat_id, text, thread_id=thread_id, plain=False)

    async def _send(self, chat_id: str, text: str, *, thread_id: str | None, plain: bool) -> str:
        self.send_attempts += 1
        self.changed.set()
        if self.fail_next_sends > 0:
            self.fail_next_sends -= 1
            raise PlatformDown("send refused")
        if self.hang_sends:
            await asyncio.Event().wait()  # never set
        self._answer()
        self.sends += 1
        self.call_times.append(time.time())
        message_id = f"m{len(self.messages) + 1}"
        self.messages[message_id] = SentMessage(chat_id, thread_id, text, plain)
        self.changed.set()
        return message_id

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        await self._edit(chat_id, message_id, text, plain=False)

    async def _edit(self, chat_id: str, message_id: str, text: str, *, plain: bool) -> None:
        self._answer()
        if message_id in self.deleted:
            raise MessageGone(f"message {message_id} to edit not found")
        message = self.messages[message_id]
        assert message.chat_id == chat_id, f"edit of {message_id} in the wrong chat"
        self.edits += 1
        self.call_times.append(time.time())
        if message.text == text:
            self.identical_edits += 1
        message.text = text
        message.plain = plain
        self.changed.set()

    async def typing(self, chat_id: str, *, thread_id: str | None = None) -> None:
        self.typings += 1
        self.changed.set()

    def texts(self) -> list[str]:
        """The chat's messages in the order they were posted (deleted ones left out)."""
        return [m.text for key, m in self.messages.items() if key not in self.deleted]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for a send/edit after which ``predicate()`` holds."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@dataclass
class FormattingRecordingRenderer(RecordingRenderer):
    """A platform with its own markup: ``formatter`` converts; ``reject_markup`` makes it
    refuse any formatted text containing that string (as Telegram refuses bad HTML)."""

    formatter: Callable[[str], str] = str
    reject_markup: str | None = None
    parse_rejections: int = 0

    def format(self, markdown: str) -> str:
        return self.formatter(markdown)

    def _parse(self, text: str, plain: bool) -> None:
        if not plain and self.reject_markup is not None and self.reject_markup in text:
            self.parse_rejections += 1
            raise ParseRejected("can't parse entities")

    async def send(
        self, chat_id: str, text: str, *, thread_id: str | None = None, plain: bool = False
    ) -> str:
        self._parse(text, plain)
        return await self._send(chat_id, text, thread_id=thread_id, plain=plain)

    async def edit(self, chat_id: str, message_id: str, text: str, *, plain: bool = False) -> None:
        self._parse(text, plain)
        await self._edit(chat_id, message_id, text, plain=plain)
