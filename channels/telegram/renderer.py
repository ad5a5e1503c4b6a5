"""Telegram's outbound half: sends, edits and "typing…" through python-telegram-bot.

The deliverer decides what to show and when (edit pacing, shared buckets, splitting
at ``max_message_chars`` after ``format``); this renderer makes one Bot API call per
request and turns Telegram's errors into the toolkit's typed outcomes.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from telegram import Bot, Message, ReplyParameters
from telegram import error as tg
from telegram.constants import ChatAction, MessageLimit, ParseMode
from telegram.warnings import PTBDeprecationWarning

from gateway.channels.toolkit import renderer as outcome
from gateway.channels.toolkit.format import telegram_html

NOT_MODIFIED = "message is not modified"
PARSE_ERROR = "can't parse entities"
MESSAGE_GONE = ("message to edit not found", "message can't be edited")
CHAT_GONE = ("chat not found", "group chat was deactivated", "have no rights", "not enough rights")


def chat_ref(chat_id: str) -> int | str:
    """Telegram chat ids are integers (negative for groups); ``@name`` stays a string."""
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


def retry_after_s(exc: tg.RetryAfter) -> float:
    """Its wait in seconds, whether PTB gives an int (22.x default) or a timedelta (opt-in)."""
    with warnings.catch_warnings():  # 22.2+ warns that the int form will become a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        period = exc.retry_after
    return period.total_seconds() if isinstance(period, dtm.timedelta) else float(period)


@asynccontextmanager
async def typed_errors() -> AsyncIterator[None]:
    """Telegram's errors as the toolkit's renderer outcomes (the deliverer acts on them)."""
    try:
        yield
    except tg.RetryAfter as exc:
        raise outcome.RetryAfter(retry_after_s(exc)) from exc
    except tg.Forbidden as exc:  # blocked by the user, kicked from the group
        raise outcome.Forbidden(exc.message) from exc
    except tg.ChatMigrated as exc:  # a group became a supergroup: a new chat id
        raise outcome.ChatGone(exc.message) from exc
    except tg.BadRequest as exc:
        text = exc.message.lower()
        if PARSE_ERROR in text:
            raise outcome.ParseRejected(exc.message) from exc
        if any(reason in text for reason in MESSAGE_GONE):
            raise outcome.MessageGone(exc.message) from exc
        if any(reason in text for reason in CHAT_GONE):
            raise outcome.ChatGone(exc.message) from exc
        raise
    except (tg.TimedOut, tg.NetworkError) as exc:
        raise outcome.Transient(str(exc)) from exc


class TelegramRenderer:
    """Posts and edits replies with a ``Bot`` of its own (any replica delivers)."""

    max_message_chars: int = int(MessageLimit.MAX_TEXT_LENGTH)  # 4096, counted after formatting
    quotes_replies = True
    typing_interval_s = 4.0
    """Telegram shows a chat action for about 5 s."""

    def __init__(self, bot: Bot, edit_interval_s: float) -> None:
        self.bot = bot
        self.edit_interval_s = edit_interval_s
        self._ready = asyncio.Lock()
        self._initialized = False

    def format(self, markdown: str) -> str:
        return telegram_html(markdown)

    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        thread_id: str | None = None,
        plain: bool = False,
        reply_to: str | None = None,
    ) -> str:
        await self._initialize()
        reply = None
        if reply_to is not None:  # quoted when it still exists, sent plainly when not
            reply = ReplyParameters(int(reply_to), allow_sending_without_reply=True)
        async with typed_errors():
            message = await self.bot.send_message(
                chat_ref(chat_id),
                text,
                parse_mode=None if plain else ParseMode.HTML,
                message_thread_id=int(thread_id) if thread_id else None,
                reply_parameters=reply,
            )
        return str(message.message_id)

    async def edit(self, chat_id: str, message_id: str, text: str, *, plain: bool = False) -> None:
        await self._initialize()
        try:
            async with typed_errors():
                edited = await self.bot.edit_message_text(
                    text,
                    chat_id=chat_ref(chat_id),
                    message_id=int(message_id),
                    parse_mode=None if plain else ParseMode.HTML,
                )
        except tg.BadRequest as exc:
            if NOT_MODIFIED not in exc.message.lower():
                raise
            return  # a replayed edit: the message already shows this text
        if not isinstance(edited, Message | bool):
            raise outcome.Transient(f"unexpected editMessageText answer {edited!r}")

    async def typing(self, chat_id: str, *, thread_id: str | None = None) -> None:
        await self._initialize()
        async with typed_errors():
            await self.bot.send_chat_action(
                chat_ref(chat_id),
                ChatAction.TYPING,
                message_thread_id=int(thread_id) if thread_id else None,
            )

    async def _initialize(self) -> None:
        if self._initialized:
            return
        async with self._ready:  # concurrent first calls initialize once
            if not self._initialized:
                await self.bot.initialize()
                self._initialized = True

    async def close(self) -> None:
        if self._initialized:
            self._initialized = False
            await self.bot.shutdown()
