"""One chat's sends and edits as the deliverer makes them.

``ChatCalls`` binds a renderer to a chat address and makes each call through
``PlatformCalls`` (tokens, timeout, typed outcomes), re-sending text the platform
cannot parse as plain Markdown. A send runs under a shield together with its
record, so a shutdown never leaves a posted message unrecorded (a replay would
post it twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.channels.base import Renderer
from gateway.channels.toolkit.ratelimit import RateLimiter
from gateway.channels.toolkit.renderer import (
    FormattingRenderer,
    ParseRejected,
    PlatformCalls,
    QuotingRenderer,
)
from gateway.core.events import ChatAddress

log = logging.getLogger(__name__)

T = TypeVar("T")
PlatformCall = Callable[[str, bool], Awaitable[T]]
"""``(text, plain)`` -> one send or edit."""
Record = Callable[[str], Awaitable[None]]
"""Records the id of a message just sent."""


class ChatCalls:
    def __init__(
        self,
        renderer: Renderer,
        address: ChatAddress,
        limiter: RateLimiter | None,
        *,
        timeout_s: float,
    ) -> None:
        self.renderer = renderer
        self.address = address
        self.timeout_s = timeout_s
        self._calls = PlatformCalls(limiter, address.chat_id, timeout_s=timeout_s)

    async def edit(self, message_id: str, body: str, source: str, *, final: bool) -> None:
        """Edit a message to ``body`` (``source``: its Markdown, for a plain re-send)."""
        renderer, chat = self.renderer, self.address.chat_id
        edit: PlatformCall[None]
        if isinstance(renderer, FormattingRenderer):
            edit = lambda text, plain: renderer.edit(chat, message_id, text, plain=plain)  # noqa: E731
        else:
            edit = lambda text, _plain: renderer.edit(chat, message_id, text)  # noqa: E731
        await self._call(edit, body, source, final=final)

    async def send(self, body: str, source: str, record: Record, *, final: bool) -> str:
        """Post ``body`` and ``record`` its id before anything else can happen."""
        send = self._send_call()

        async def send_and_record(text: str, plain: bool) -> str:
            sending = asyncio.ensure_future(self._send_then_record(send, record, text, plain))
            try:
                return await asyncio.shield(sending)
            except asyncio.CancelledError:
                # A cancel (shutdown) waits for the record: leaving now could post this
                # message twice, as the replay would not know of it.
                await sending
                raise

        return await self._call(send_and_record, body, source, final=final)

    def _send_call(self) -> PlatformCall[str]:
        renderer, chat, thread = self.renderer, self.address.chat_id, self.address.thread_id
        quote = self.address.quote_id
        if quote is not None and isinstance(renderer, QuotingRenderer):
            return lambda text, plain: renderer.send(
                chat, text, thread_id=thread, plain=plain, reply_to=quote
            )
        if isinstance(renderer, FormattingRenderer):
            return lambda text, plain: renderer.send(chat, text, thread_id=thread, plain=plain)
        return lambda text, _plain: renderer.send(chat, text, thread_id=thread)

    async def _send_then_record(
        self, send: PlatformCall[str], record: Record, text: str, plain: bool
    ) -> str:
        async with asyncio.timeout(self.timeout_s):  # inside the shield: bounded
            message_id = await send(text, plain)
        await record(message_id)
        return message_id

    async def _call(self, call: PlatformCall[T], body: str, source: str, *, final: bool) -> T:
        """One platform call; a body the platform cannot parse goes again as plain text."""
        try:
            return await self._calls.call(lambda: call(body, False), final=final)
        except ParseRejected as exc:
            log.info("%s refused the formatted text (%s); sending it plain", self.address, exc)
            return await self._calls.call(lambda: call(source, True), final=final)
