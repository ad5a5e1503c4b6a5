"""The contracts every channel adapter implements, and ``BaseChannel``, their shared part.

A ``Channel`` owns its platform connection (polling, webhooks, sockets): it turns
platform events into ``InboundMessage``s and publishes them. A ``Renderer`` is the
outbound half: the channel-agnostic ``channels.delivery.Deliverer`` decides *what*
to show and *when*, the renderer only posts and edits platform messages.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from aiohttp import web
from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.channels.toolkit.access import Access, PlatformMessage, Verdict
from gateway.channels.toolkit.commands import Sessions, parse_command, run_command
from gateway.channels.toolkit.connection import ConnectionLease
from gateway.channels.toolkit.pairing import CODE_TTL_S, PairingStore
from gateway.core.bus import keys
from gateway.core.bus.inbound import Published
from gateway.core.messages import InboundMessage
from gateway.core.settings import ChannelSettings, Settings

log = logging.getLogger(__name__)

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

    def routes(self) -> list[web.RouteDef]:
        """Routes the gateway mounts on its HTTP server (a platform's webhook); may be []."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What a channel factory gets to build its adapter."""

    name: str
    settings: Settings
    config: ChannelSettings
    redis: Redis
    publish: PublishInbound
    owner: str = ""
    """This process, for leases held by the channel (``host:pid:…``)."""


class Handled(enum.Enum):
    """What ``BaseChannel.handle`` did with one platform message."""

    PUBLISHED = "published"
    DUPLICATE = "duplicate"
    """A redelivery of an event already handled."""
    COMMAND = "command"
    PAIRING = "pairing"
    """The sender was offered a pairing code (or the channel's codes are all taken)."""
    IGNORED = "ignored"
    BUFFERED = "buffered"
    """Kept to be published with the rest of its group (a Telegram album's part)."""


SEEN_TTL_S = 86_400


class BaseChannel(ABC):
    """What every platform adapter repeats, done once.

    An adapter writes its client glue: ``run_connection`` (the platform client, run
    as a supervised task in the gateway's loop: restarted with backoff after a crash),
    ``renderer``, optionally ``routes`` (a webhook on the gateway's HTTP server), and
    calls ``handle`` with each platform message normalized to a ``PlatformMessage``.
    ``handle`` applies access and mention gating, pairing, the chat commands, the
    ``/new`` session generation and agent routing, then publishes.

    ``needs_connection_lease``: the connection is held by one replica per bot token
    (polling, sockets); webhook adapters set it False and every replica serves them.
    """

    needs_connection_lease: ClassVar[bool] = True
    connection_ttl_ms: ClassVar[int] = 5_000
    """A dead holder's connection is taken over within about this time plus one poll."""
    acquire_poll_s: ClassVar[float] = 1.0
    restart_backoff_s: ClassVar[tuple[float, float]] = (1.0, 30.0)
    pairing_ttl_s: ClassVar[int] = CODE_TTL_S
    bot_username: str = ""
    """The bot's handle: ``/new@<bot_username>`` is addressed to it."""

    def __init__(self, ctx: ChannelContext) -> None:
        self.name = ctx.name
        self.ctx = ctx
        self.config = ctx.config
        self.redis = ctx.redis
        ctx.settings.agent(ctx.config.agent)  # an unknown agent is a ConfigError at start
        self.agent = ctx.config.agent
        self.pairing = PairingStore(ctx.redis, ctx.name, ttl_s=self.pairing_ttl_s)
        self.access = Access(ctx.config, self.pairing)
        self.sessions = Sessions(ctx.redis, ctx.name)
        owner = ctx.owner or f"{socket.gethostname()}:{os.getpid()}"
        token = ctx.config.token.get_secret_value() if ctx.config.token else None
        self.connection: ConnectionLease | None = None
        if self.needs_connection_lease:
            self.connection = ConnectionLease(
                ctx.redis, ctx.name, token, ttl_ms=self.connection_ttl_ms, owner=owner
            )
        self._task: asyncio.Task[None] | None = None

    # -- what an adapter writes --------------------------------------------------------

    @abstractmethod
    def renderer(self) -> Renderer: ...

    @abstractmethod
    async def run_connection(self) -> None:
        """Run the platform client; return when it is done for good, raise when it broke."""

    def routes(self) -> list[web.RouteDef]:
        return []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"channel {self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        first, most = self.restart_backoff_s
        delay = first
        while True:
            began = loop.time()
            try:
                await self._connect_once()
                log.info("channel %s: connection finished", self.name)
                return
            except Exception as exc:  # any crash of platform code: restart, never die
                delay = first if loop.time() - began > most else delay
                log.warning("channel %s crashed, restarting in %.1fs: %r", self.name, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)

    async def _connect_once(self) -> None:
        lease = self.connection
        if lease is None:
            await self.run_connection()
            return
        while True:  # polled: a lease that lapses (holder killed) notifies nobody
            if await lease.try_acquire():
                break
            await asyncio.sleep(self.acquire_poll_s)
        log.info("channel %s: this replica holds the connection", self.name)
        try:
            async with lease.keepalive() as lost:
                if not await _first_of(self.run_connection(), lost.wait()):
                    raise ConnectionError("connection lease lost; another replica may take over")
        finally:
            await lease.release()

    # -- inbound -----------------------------------------------------------------------

    async def handle(self, msg: PlatformMessage) -> Handled:
        """Gate, answer commands, or publish one platform message."""
        verdict = await self.access.decide(msg)
        if verdict is Verdict.IGNORE:
            return Handled.IGNORED
        if verdict is Verdict.PAIR:
            await self.answer_once(msg, lambda: self._offer_code(msg))
            return Handled.PAIRING
        command = parse_command(msg.text, self.bot_username)
        if command is not None:

            async def answer() -> None:
                text = await run_command(command, self.sessions, msg.chat_id, msg.thread_id)
                await self.renderer().send(msg.chat_id, text, thread_id=msg.thread_id)

            await self.answer_once(msg, answer)
            return Handled.COMMAND
        try:
            inbound = await self._inbound(msg)
        except ValidationError as exc:  # e.g. an oversize text: drop it, keep the connection
            reason = exc.errors()[0]["msg"]
            log.warning("channel %s: dropped a message of %s: %s", self.name, msg.sender_id, reason)
            return Handled.IGNORED
        published = await self.ctx.publish(inbound)
        return Handled.DUPLICATE if published.duplicate else Handled.PUBLISHED

    async def _inbound(self, msg: PlatformMessage) -> InboundMessage:
        return InboundMessage(
            channel=self.name,
            chat_id=msg.chat_id,
            thread_id=msg.thread_id,
            sender_id=msg.sender_id,
            sender_name=msg.sender_name or msg.username,
            text=msg.text,
            attachments=list(msg.attachments),
            reply_to=msg.reply_to,
            platform_event_id=msg.event_id,
            quote_id=msg.quote_id,
            session_key=await self.sessions.key(msg.chat_id, msg.thread_id),
            agent=self.agent,
        )

    async def answer_once(
        self, msg: PlatformMessage, answer: Callable[[], Awaitable[object]]
    ) -> None:
        """Run ``answer`` (a command's reply, a pairing code) unless this event was answered.

        Messages dedupe on publish; what the channel answers itself dedupes on a marker
        set only *after* the answer went out. A crash between the two answers again on
        redelivery (a repeated /help or /new is harmless), and so may two deliveries of
        one event handled at the same moment (a webhook retried while the first still
        runs); marking first lost the answer for good, since the platform is told the
        update was handled once we return.
        """
        if msg.event_id is None:
            await answer()
            return
        marker = keys.handled_event(self.name, msg.event_id)
        if await self.redis.exists(marker):
            return
        await answer()
        await self.redis.set(marker, "1", ex=SEEN_TTL_S)

    async def _offer_code(self, msg: PlatformMessage) -> None:
        issued = await self.pairing.issue(
            msg.sender_id, msg.sender_name or msg.username, msg.chat_id
        )
        if issued is None:
            log.warning(
                "channel %s: no pairing code for %s: open codes at the limit",
                self.name,
                msg.sender_id,
            )
            return
        if issued.new:
            log.info("channel %s: pairing code issued to sender %s", self.name, msg.sender_id)
        text = (
            f"This bot answers approved senders only. Your pairing code: {issued.code}\n"
            f"The operator approves it with: gateway pairing approve {self.name} {issued.code}"
        )
        await self.renderer().send(msg.chat_id, text, thread_id=msg.thread_id)


async def _first_of(work: Coroutine[Any, Any, None], lost: Coroutine[Any, Any, Any]) -> bool:
    """Run ``work`` until it ends or ``lost`` fires; True when ``work`` ended (its error raised)."""
    work_task = asyncio.ensure_future(work)
    lost_task = asyncio.ensure_future(lost)
    try:
        await asyncio.wait([work_task, lost_task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work_task, lost_task):
            task.cancel()
        await asyncio.wait([work_task, lost_task])
    if work_task.done() and not work_task.cancelled():
        work_task.result()
        return True
    return False
