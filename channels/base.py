"""The contracts every channel adapter implements.

A ``Channel`` owns its platform connection (polling, webhooks, sockets): it turns
platform events into ``InboundMessage``s and publishes them. A ``Renderer`` is the
outbound half: the channel-agnostic ``channels.delivery.Deliverer`` decides *what*
to show and *when*, the renderer only posts and edits platform messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from redis.asyncio import Redis

from core.bus.inbound import Published
from core.messages import InboundMessage
from core.settings import ChannelSettings, Settings

PublishInbound = Callable[[InboundMessage], Awaitable[Published]]
"""Publishes one normalized message onto the bus (dedupe, ``XADD``, work signal)."""


@runtime_checkable
class Renderer(Protocol):
    """Posts and edits messages on one platform.

    ``max_message_chars`` is the platform's limit for one message;
    ``edit_interval_s`` the least time between two edits of one chat (rate limits).
    """

    max_message_chars: int
    edit_interval_s: float

    async def send(self, chat_id: str, text: str, *, thread_id: str | None = None) -> str:
        """Post a new message; returns the platform's id for it."""
        ...

    async def edit(self, chat_id: str, message_id: str, text: str) -> None:
        """Replace the text of a message this renderer posted.

        An edit to the text the message already shows must succeed quietly (Telegram
        answers it with 400 "message is not modified"): a replay after a crash
        repeats the edits it cannot know were made.
        """
        ...


@runtime_checkable
class TypingIndicator(Protocol):
    """Optional renderer capability: show "typing…" while the agent works."""

    async def typing(self, chat_id: str, *, thread_id: str | None = None) -> None: ...


@runtime_checkable
class Channel(Protocol):
    """One platform adapter: inbound connection plus its renderer."""

    name: str

    async def start(self) -> None:
        """Connect and begin publishing inbound messages."""
        ...

    async def stop(self) -> None:
        """Disconnect; idempotent."""
        ...

    def renderer(self) -> Renderer: ...


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What a channel factory gets to build its adapter."""

    name: str
    settings: Settings
    config: ChannelSettings
    redis: Redis
    publish: PublishInbound
