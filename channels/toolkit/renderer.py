"""The renderer contract's typed outcomes, and the deliverer's platform calls acting on them.

A renderer (one per platform) raises one of these from ``send``/``edit``; anything
else it raises counts as ``Transient``:

- ``RetryAfter(seconds)``: the platform said 429. The bucket is paused for every
  replica; a streamed edit is skipped (the next one carries the latest text), a
  final one waits and goes out.
- ``MessageGone``: the message to edit was deleted: a new one is posted instead.
- ``ChatGone`` / ``Forbidden``: permanent (chat deleted, bot blocked or without
  permission): the run's delivery is dropped and logged once, never retried.
- ``ParseRejected``: the platform refused the formatted text: re-sent as plain text.
- ``Transient``: network errors and 5xx: retried with backoff (tenacity), then the
  delivery is retried later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from gateway.channels.toolkit.ratelimit import RateLimiter
from gateway.core.errors import LeaseLostError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ATTEMPTS = 3
MAX_RETRY_AFTERS = 20
"""429s answered to one final call before the delivery is left for a later retry."""


class RenderError(Exception):
    """A platform call failed in a way the deliverer acts on."""


class RetryAfter(RenderError):
    def __init__(self, seconds: float, *, whole_bot: bool = False) -> None:
        super().__init__(f"rate limited; retry after {seconds:g}s")
        self.seconds = seconds
        self.whole_bot = whole_bot
        """True when the platform limits the bot, not only this chat."""


class MessageGone(RenderError):
    """The message to edit no longer exists."""


class ChatGone(RenderError):
    """The chat no longer exists (or the bot left it): permanent."""


class Forbidden(ChatGone):
    """The bot may not post here (blocked, no permission): permanent."""


class ParseRejected(RenderError):
    """The platform refused to parse the formatted text."""


class Transient(RenderError):
    """A network error or 5xx: worth retrying."""


@runtime_checkable
class FormattingRenderer(Protocol):
    """A renderer whose platform has its own markup (Telegram HTML, Slack mrkdwn…).

    The deliverer hands it text already converted by ``format``; with ``plain=True``
    the text is the model's Markdown, to be shown without parsing (after a
    ``ParseRejected``).
    """

    max_message_chars: int
    edit_interval_s: float

    def format(self, markdown: str) -> str: ...

    async def send(
        self, chat_id: str, text: str, *, thread_id: str | None = None, plain: bool = False
    ) -> str: ...

    async def edit(
        self, chat_id: str, message_id: str, text: str, *, plain: bool = False
    ) -> None: ...


@runtime_checkable
class QuotingRenderer(FormattingRenderer, Protocol):
    """A formatting renderer whose sends can quote the message they answer."""

    quotes_replies: bool

    async def send(
        self,
        chat_id: str,
        text: str,
        *,
        thread_id: str | None = None,
        plain: bool = False,
        reply_to: str | None = None,
    ) -> str: ...


def is_transient(exc: BaseException) -> bool:
    """Worth calling again at once: ``Transient`` and errors the renderer did not type.

    Typed outcomes are the caller's to act on; a hung call may have posted (the
    delivery's replay decides), and a bus error or lost lease is not the platform's.
    """
    if isinstance(exc, Transient):
        return True
    if not isinstance(exc, Exception):
        return False  # cancellation
    return not isinstance(exc, (RenderError, TimeoutError, RedisError, LeaseLostError))


class Throttled(Exception):
    """A streamed edit may not go out yet: no token, or the bucket is paused."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"throttled for {seconds:g}s")
        self.seconds = seconds


class PlatformCalls:
    """Makes one chat's platform calls: rate-limited, bounded, retried as their error says."""

    def __init__(self, limiter: RateLimiter | None, chat_id: str, *, timeout_s: float) -> None:
        self.limiter = limiter
        self.chat_id = chat_id
        self.timeout_s = timeout_s

    async def call(self, make: Callable[[], Awaitable[T]], *, final: bool) -> T:
        """Run ``make()`` once a token is taken.

        Not ``final`` (a streamed edit): ``Throttled`` when no token is free or the
        platform answers 429. ``final``: waits for the token and through 429s.
        """
        for _ in range(MAX_RETRY_AFTERS):
            await self._token(final=final)
            try:
                return await self._retrying(make)
            except RetryAfter as exc:
                log.info("platform asked to wait %gs (chat %s)", exc.seconds, self.chat_id)
                if self.limiter is not None:
                    scope = None if exc.whole_bot else self.chat_id
                    await self.limiter.pause(exc.seconds, scope)  # for every replica
                if not final:
                    raise Throttled(exc.seconds) from exc
                if self.limiter is None:
                    await asyncio.sleep(exc.seconds)  # nothing shared to pause: wait here
        raise Transient(f"still rate limited after {MAX_RETRY_AFTERS} retry-afters")

    async def _token(self, *, final: bool) -> None:
        if self.limiter is None:
            return
        if final:
            await self.limiter.take(self.chat_id)
        elif (wait_s := await self.limiter.try_take(self.chat_id)) > 0:
            raise Throttled(wait_s)

    async def _retrying(self, make: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(TRANSIENT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with asyncio.timeout(self.timeout_s):
                    return await make()
        raise AssertionError("tenacity ended without a result")  # reraise=True: unreachable
