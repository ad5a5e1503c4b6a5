"""The Telegram adapter: python-telegram-bot's ``Application`` as client glue on ``BaseChannel``.

Polling (the default) runs PTB's own ``Updater.start_polling`` in the replica that
holds the connection lease. PTB confirms an offset on its next ``getUpdates`` once
the batch was put on its update queue, so this adapter's queue *is* the hand-off:
``put`` returns only after the message is on the bus. A crash before that re-fetches
the update (and the bus drops it if it had made it). Webhook mode serves
``/telegram/webhook`` on the gateway's HTTP server instead, on every replica.
An album's parts are stashed in Redis and published together by the album flusher,
which runs beside the connection (``channels.telegram.albums``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, cast

from aiohttp import web
from redis.exceptions import RedisError
from telegram import Bot, BotCommand, Update, User
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application, ApplicationBuilder
from telegram.request import HTTPXRequest

from gateway.channels.base import BaseChannel, ChannelContext, Handled, Renderer
from gateway.channels.http.errors import error_response
from gateway.channels.telegram.albums import Album, AlbumBuffer, AlbumFlusher
from gateway.channels.telegram.inbound import Media, album_of, merge_album, normalize
from gateway.channels.telegram.renderer import TelegramRenderer
from gateway.channels.toolkit.access import PlatformMessage, Verdict
from gateway.channels.toolkit.commands import command_list
from gateway.channels.toolkit.media import AttachmentTooLarge, save_attachment
from gateway.core.channel_settings import TelegramSettings
from gateway.core.errors import ConfigError
from gateway.core.messages import Attachment

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.telegram.org"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message"]
GREETING = "Hello! Send me a message and I will answer. /help lists the commands."
BUS_RETRY_S = 1.0
BOT_API_FILE_LIMIT = 20 * 1024 * 1024
"""What ``getFile`` serves on Telegram's own Bot API server."""


class _HandOff(asyncio.Queue[object]):
    """PTB's update queue whose ``put`` publishes: the offset moves only after the bus has it."""

    def __init__(self, handle: Callable[[object], Awaitable[None]]) -> None:
        super().__init__()
        self._handle = handle

    async def put(self, item: object) -> None:
        await self._handle(item)


class TelegramChannel(BaseChannel):
    """Long polling through PTB, one poller per bot token across replicas."""

    poll_timeout_s: ClassVar[int] = 10
    """``getUpdates`` long-poll time (Telegram holds the request until an update or this)."""
    album_rescan_s: ClassVar[float] = 5.0
    """Longest an album left by a dead process waits to be found (see ``AlbumFlusher``)."""

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        config = ctx.config
        if not isinstance(config, TelegramSettings):
            raise ConfigError(f"channels.{ctx.name}: not Telegram settings")
        if config.token is None:
            raise ConfigError(f"channels.{ctx.name}.token: a bot token is needed (from @BotFather)")
        self.settings = config
        self.workspace: Path = ctx.settings.workspace
        api = (config.api_base or DEFAULT_API_BASE).rstrip("/")
        token = config.token.get_secret_value()
        builder = (
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api}/bot")
            .base_file_url(f"{api}/file/bot")
        )
        if self.needs_connection_lease:
            builder = builder.update_queue(_HandOff(self._on_update))
        else:
            builder = builder.updater(None)
        self.application: Application = builder.build()  # type: ignore[type-arg]
        bot = Bot(
            token,
            base_url=f"{api}/bot",
            base_file_url=f"{api}/file/bot",
            request=HTTPXRequest(connection_pool_size=8),
        )
        self._renderer = TelegramRenderer(bot, config.edit_interval)
        self.me: User | None = None
        self._bus_down_logged = False
        buffer = AlbumBuffer(ctx.redis, self.name, window_s=config.album_window_s)
        self.albums = AlbumFlusher(buffer, self._publish_album, rescan_s=self.album_rescan_s)

    def renderer(self) -> Renderer:
        return self._renderer

    async def stop(self) -> None:
        await super().stop()
        await self._renderer.close()

    # -- connection --------------------------------------------------------------------

    async def run_connection(self) -> None:
        app = self.application
        await app.initialize()  # getMe: the bot's id and username, for mentions
        try:
            await self._introduce(app.bot)
            async with asyncio.TaskGroup() as group:  # the flusher runs where parts arrive
                group.create_task(self.albums.run(), name=f"albums of {self.name}")
                await self._receive()
        finally:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            await app.shutdown()

    async def _introduce(self, bot: Bot) -> None:
        self.me = bot.bot
        self.bot_username = self.me.username or ""
        commands = [BotCommand(name, description) for name, description in command_list()]
        await bot.set_my_commands(commands)  # one list, from the toolkit

    async def _receive(self) -> None:
        updater = self.application.updater
        if updater is None:
            raise RuntimeError("polling without an updater")
        await updater.start_polling(
            timeout=self.poll_timeout_s,
            drop_pending_updates=False,  # messages sent while no replica polled are answered
            allowed_updates=ALLOWED_UPDATES,
            error_callback=self._polling_error,
        )
        await asyncio.Event().wait()  # until stopped (cancelled) or the lease is lost

    def _polling_error(self, exc: TelegramError) -> None:
        # PTB retries with backoff; a Conflict means another process polls this token.
        log.warning("channel %s: getUpdates failed (PTB retries): %s", self.name, exc)

    # -- inbound -----------------------------------------------------------------------

    async def _on_update(self, item: object) -> None:
        """Publish one update; a bus outage holds the offset (retried) instead of losing it."""
        if not isinstance(item, Update):
            return
        while True:
            try:
                await self.process(item)
                self._bus_down_logged = False
                return
            except (RedisError, OSError) as exc:
                if not self._bus_down_logged:
                    log.warning("channel %s: bus unreachable, holding updates: %r", self.name, exc)
                    self._bus_down_logged = True
                await asyncio.sleep(BUS_RETRY_S)
            except Exception:  # one bad update never stops the adapter
                log.exception("channel %s: dropped update %s", self.name, item.update_id)
                return

    async def process(self, update: Update) -> Handled:
        """Normalize, then stash an album's part or publish (``_admit``) the message."""
        if self.me is None:
            raise RuntimeError("update before the bot knows itself (getMe)")
        normalized = normalize(update, self.me)
        if normalized is None:
            return Handled.IGNORED
        album = album_of(update) or await self._album_to_follow(*normalized)
        if album is not None:  # safe in Redis now; published with the rest when due
            stored = await self.albums.stash(album, update.update_id, update.to_json())
            return Handled.BUFFERED if stored else Handled.DUPLICATE
        return await self._admit(*normalized)

    async def _album_to_follow(self, msg: PlatformMessage, media: list[Media]) -> str | None:
        """The album a direct chat's next message joins, so it does not overtake it.

        An album waits a window before it is published; a text sent right after it
        ("what are these?") would otherwise reach the model first, without the photos.
        It joins the album instead (or, once the album is being published, follows it
        as the album's next batch). Groups are left alone: another member's message
        must not join someone's album. Commands act at once.
        """
        if not msg.direct or media or msg.text.startswith("/"):
            return None
        return await self.albums.buffer.waiting_in(msg.chat_id)

    async def _publish_album(self, album: Album) -> None:
        """One message for the whole album: access, pairing and downloads decided once.

        Raises what is worth retrying (the flusher tries again later); anything else
        drops the album, as one bad update is dropped."""
        try:
            if self.me is None:
                raise RuntimeError("album before the bot knows itself (getMe)")
            bot = self.application.bot
            updates = [Update.de_json(json.loads(part), bot) for part in album.parts]
            parts = [n for n in (normalize(u, self.me) for u in updates) if n is not None]
            await self._admit(*merge_album(parts, album.event_id))
        except Exception as exc:
            if _transient(exc):
                raise
            log.exception("channel %s: dropped album %s", self.name, album.album)

    async def _admit(self, msg: PlatformMessage, media: list[Media]) -> Handled:
        """Gate, download files (admitted senders only) and hand to the toolkit."""
        if _is_start(msg.text, self.bot_username):
            return await self._start_command(msg)
        if media:
            if await self.access.decide(msg) is not Verdict.ADMIT:
                return await self.handle(msg)  # a code or nothing; nothing downloaded
            try:
                attachments = [await self._download(msg.chat_id, item) for item in media]
            except AttachmentTooLarge as exc:
                reply = exc.reply
                await self.answer_once(
                    msg,
                    lambda: self._renderer.send(
                        msg.chat_id, reply, thread_id=msg.thread_id, plain=True
                    ),
                )
                return Handled.IGNORED
            msg = replace(msg, attachments=attachments)
        return await self.handle(msg)

    async def _start_command(self, msg: PlatformMessage) -> Handled:
        if await self.access.decide(msg) is not Verdict.ADMIT:
            return await self.handle(msg)  # an unknown sender: their pairing code
        await self.answer_once(
            msg,
            lambda: self._renderer.send(msg.chat_id, GREETING, thread_id=msg.thread_id, plain=True),
        )
        return Handled.COMMAND

    async def _download(self, chat_id: str, media: Media) -> Attachment:
        limit = self.settings.max_attachment_bytes
        if media.size is not None and media.size > limit:
            raise AttachmentTooLarge(media.name, limit)  # refused before downloading
        try:
            file = await self.application.bot.get_file(media.file_id)
        except BadRequest as exc:
            # The Bot API serves files up to 20 MB; past that (a limit set higher, a file
            # sent without its size) it refuses: the sender's mistake, answered like ours.
            if "too big" not in exc.message.lower():
                raise
            raise AttachmentTooLarge(media.name, min(limit, BOT_API_FILE_LIMIT)) from exc
        data = bytes(await file.download_as_bytearray())
        return await save_attachment(
            self.workspace,
            self.name,
            chat_id,
            media.name,
            data,
            max_bytes=limit,
            mime_type=media.mime_type,
        )


class TelegramWebhookChannel(TelegramChannel):
    """Telegram posts updates to ``/telegram/webhook``; every replica serves it (no lease)."""

    needs_connection_lease: ClassVar[bool] = False

    def __init__(self, ctx: ChannelContext) -> None:
        super().__init__(ctx)
        if self.settings.webhook_secret is None:
            raise ConfigError(
                f"channels.{ctx.name}.webhook_secret: webhook mode needs a secret "
                "(Telegram sends it in X-Telegram-Bot-Api-Secret-Token)"
            )
        self._secret = self.settings.webhook_secret.get_secret_value().encode()

    async def _receive(self) -> None:
        await self.application.bot.set_webhook(
            cast(str, self.settings.webhook_url),
            secret_token=self._secret.decode(),
            allowed_updates=ALLOWED_UPDATES,
        )
        await asyncio.Event().wait()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(WEBHOOK_PATH, self._webhook)]

    async def _webhook(self, request: web.Request) -> web.Response:
        presented = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(presented, self._secret):
            return error_response(401, "unauthorized", "wrong or missing webhook secret")
        if self.me is None:
            return error_response(503, "unavailable", "the bot is starting", retry_after_s=1)
        try:
            update = Update.de_json(await request.json(), self.application.bot)
        except (ValueError, TypeError, KeyError) as exc:
            return error_response(400, "invalid_request", f"not a Telegram update: {exc}")
        await self.process(update)  # an error answers 500: Telegram delivers it again
        return web.json_response({"ok": True})


def _is_start(text: str, bot_username: str) -> bool:
    word = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    name, _, addressee = word.partition("@")
    return name == "/start" and (not addressee or addressee.lower() == bot_username.lower())


def _transient(exc: Exception) -> bool:
    """Worth trying again: the bus or Telegram unreachable, or Telegram asking to wait."""
    if isinstance(exc, RedisError | OSError | RetryAfter | TimedOut):
        return True
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def build_channel(ctx: ChannelContext) -> TelegramChannel:
    """The registry's factory: the adapter for ``channels.telegram.mode``."""
    config = ctx.config
    if isinstance(config, TelegramSettings) and config.mode == "webhook":
        return TelegramWebhookChannel(ctx)
    return TelegramChannel(ctx)
