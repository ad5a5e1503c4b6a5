"""Rendering one session's pending outbound events while its delivery lease is held.

``SessionRenderer.drain`` reads ``gw:out:{s}`` after the delivery cursor and turns
each run into platform messages: the first text is sent, later text edits it
(throttled by the channel's ``edit_interval``), and the final text is split at
the platform limit (part 0 edited in place, further parts sent). Every message sent
is recorded through the lease before anything else happens, so a replay of the run
edits it instead of posting it again. Every platform call is bounded by the
deliverer's ``render_timeout_s``: a hung call fails the delivery (``TimeoutError``,
retried later) instead of holding the lease, and a shutdown, forever.

Platform calls go through ``channels.toolkit.renderer.PlatformCalls`` (shared rate
limits, typed outcomes): a throttled streamed edit is deferred, and the edits that
would have gone out meanwhile merge into the next (the latest text wins); a
permanent error drops the run's delivery (logged once); a deleted message is
posted anew; text the platform will not parse is re-sent plain.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from prometheus_client import Counter
from redis.asyncio import Redis

from gateway.channels.base import Renderer, TypingIndicator
from gateway.channels.delivery_lease import DeliveryLease
from gateway.channels.render import (
    SUPERSEDED_TEXT,
    ReplyText,
    edit_delay,
    failure_text,
    split_message,
)
from gateway.channels.toolkit.chat_calls import ChatCalls
from gateway.channels.toolkit.format import format_parts
from gateway.channels.toolkit.ratelimit import RateLimiter
from gateway.channels.toolkit.renderer import ChatGone, FormattingRenderer, MessageGone, Throttled
from gateway.channels.toolkit.typing import TypingLoop
from gateway.core.bus.codec import parse_stream_id
from gateway.core.bus.consumer import READ_BLOCK_MS
from gateway.core.bus.outbound import read_events
from gateway.core.errors import LeaseLostError
from gateway.core.events import (
    ChatAddress,
    RunCompleted,
    RunFailed,
    RunStarted,
    StreamEvent,
    TextCompleted,
    TextDelta,
    ToolStarted,
)

log = logging.getLogger(__name__)


class DeliveryMetrics(Protocol):
    """The counters a deliverer updates (``gateway.metrics.GatewayMetrics`` has them)."""

    @property
    def messages_out(self) -> Counter: ...
    @property
    def lease_waits(self) -> Counter: ...
    @property
    def redeliveries(self) -> Counter: ...


class DeliveryContext(Protocol):
    """What a session renderer needs from its deliverer (``Deliverer`` provides it)."""

    @property
    def redis(self) -> Redis: ...
    @property
    def channel(self) -> str: ...
    @property
    def renderer(self) -> Renderer: ...
    @property
    def can_type(self) -> bool: ...
    @property
    def metrics(self) -> DeliveryMetrics | None: ...
    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def render_timeout_s(self) -> float: ...
    @property
    def edit_interval_s(self) -> float: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def limiter(self) -> RateLimiter | None: ...
    async def address_of(self, session_key: str, event: RunStarted | None) -> ChatAddress: ...


@dataclass(slots=True)
class _RunView:
    """What one run shows on the platform, and what is still to be shown."""

    run_id: str
    message_ids: dict[int, str]
    reply: ReplyText = field(default_factory=ReplyText)
    shown: dict[int, str] = field(default_factory=dict)
    last_edit_at: float | None = None
    not_before: float = 0.0
    """A throttled streamed edit waits until then (the bucket's answer)."""
    dirty: bool = False
    dropped: bool = False
    """A permanent platform error: nothing more of this run is shown."""


class SessionRenderer:
    """Renders one session's pending events while its delivery lease is held."""

    def __init__(self, deliverer: DeliveryContext, lease: DeliveryLease) -> None:
        self._d = deliverer
        self._lease = lease
        self._renderer = deliverer.renderer
        self._address = ChatAddress(channel=deliverer.channel, chat_id=lease.session_key)
        self._calls = self._chat_calls(self._address)
        self._typing: TypingLoop | None = None
        self._view: _RunView | None = None
        self.read_until = "0-0"
        """The newest outbound id looked at, unreadable entries included: anything
        newer arrived after the drain's last read (its signal may have been turned away)."""

    async def drain(self, after: str) -> bool:
        """Render until nothing is in progress. False: gave up on a silent run."""
        self._set_address(await self._d.address_of(self._lease.session_key, None))
        try:
            return await self._drain(after)
        finally:
            await self._stop_typing()

    async def _drain(self, after: str) -> bool:
        clock, idle_s = self._d.clock, self._d.idle_timeout_s
        idle_until = clock() + idle_s
        self.read_until = after
        while not self._lease.lost.is_set():
            view = self._view
            if view is None:
                block_ms = None
            else:
                wait_s = idle_until - clock()
                if view.dirty:
                    wait_s = min(wait_s, self._flush_delay(view))
                # Capped: one read never outlasts the client's socket timeout.
                block_ms = min(READ_BLOCK_MS, max(1, int(wait_s * 1000)))
            skipped: list[str] = []
            batch = await read_events(
                self._d.redis,
                self._lease.session_key,
                after=after,
                block_ms=block_ms,
                skipped=skipped,
            )
            for entry_id, event in batch:
                await self._apply(entry_id, event)
                after = entry_id
            self.read_until = max(after, *skipped, self.read_until, key=parse_stream_id)
            if batch:
                idle_until = clock() + idle_s
            view = self._view
            if view is None and not batch:
                return True
            if view is not None and view.dirty and self._flush_delay(view) == 0:
                await self._flush_streaming(view)
            elif view is not None and not batch and clock() >= idle_until:
                log.warning("run %s of %s went silent; will retry", view.run_id, self._address)
                return False
        raise self._lease.lost_error("render")

    def _set_address(self, address: ChatAddress) -> None:
        self._address = address
        self._calls = self._chat_calls(address)

    def _chat_calls(self, address: ChatAddress) -> ChatCalls:
        timeout_s = self._d.render_timeout_s
        return ChatCalls(self._renderer, address, self._d.limiter, timeout_s=timeout_s)

    def _flush_delay(self, view: _RunView) -> float:
        now = self._d.clock()
        throttle = edit_delay(now, view.last_edit_at, self._d.edit_interval_s)
        return max(throttle, view.not_before - now)

    async def _view_for(self, run_id: str) -> _RunView:
        if self._view is None or self._view.run_id != run_id:
            self._view = _RunView(run_id, await self._lease.begin_run(run_id))
        return self._view

    async def _apply(self, entry_id: str, event: StreamEvent) -> None:
        view = await self._view_for(event.run_id)
        if isinstance(event, RunStarted):
            view.reply.reset()  # a re-run replaces the partial reply
            if event.address is not None:
                self._set_address(await self._d.address_of(self._lease.session_key, event))
            self._start_typing()
        elif isinstance(event, TextDelta):
            view.reply.add_delta(event.delta)
            view.dirty = True
        elif isinstance(event, TextCompleted):
            view.reply.complete_segment(event.content)
            view.dirty = True
        elif isinstance(event, ToolStarted):
            self._start_typing()
        elif isinstance(event, RunCompleted):
            await self._show(view, view.reply.text() or event.content, final=True)
            await self._finish(entry_id)
        elif isinstance(event, RunFailed):
            await self._show(view, failure_text(view.reply.text(), event.error), final=True)
            await self._finish(entry_id)

    async def _finish(self, entry_id: str) -> None:
        await self._stop_typing()
        await self._lease.advance(entry_id)
        self._view = None
        if self._d.metrics is not None:
            self._d.metrics.messages_out.labels(channel=self._d.channel).inc()

    async def _flush_streaming(self, view: _RunView) -> None:
        try:
            await self._show(view, view.reply.text(), final=False)
        except Throttled as exc:
            # Deltas keep arriving meanwhile; the deferred edit shows all of them.
            view.not_before = self._d.clock() + exc.seconds
        except LeaseLostError:
            raise
        except Exception:
            # A failed preview edit is retried at the next interval; the final one is not lost.
            log.warning("preview of run %s failed", view.run_id, exc_info=True)
            view.last_edit_at = self._d.clock()

    def _parts(self, text: str) -> list[tuple[str, str]]:
        """``(body, markdown)`` of each part: the body formatted for the platform."""
        limit = self._renderer.max_message_chars
        if isinstance(self._renderer, FormattingRenderer):
            return format_parts(text, limit, self._renderer.format)
        return [(part, part) for part in split_message(text, limit)]

    async def _show(self, view: _RunView, text: str, *, final: bool) -> None:
        if view.dropped:
            return
        parts = self._parts(text) if text.strip() else []
        try:
            for part, (body, source) in enumerate(parts):
                if view.shown.get(part) == body:
                    continue
                self._lease.check()
                await self._show_part(view, part, body, source, final=final)
                view.shown[part] = body
            if final:
                await self._supersede(view, keep=len(parts))
        except ChatGone as exc:
            log.warning("dropping reply %s to %s: %s (permanent)", view.run_id, self._address, exc)
            view.dropped = True
            await self._stop_typing()
        view.last_edit_at = self._d.clock()
        view.dirty = False

    async def _show_part(
        self, view: _RunView, part: int, body: str, source: str, *, final: bool
    ) -> None:
        message_id = view.message_ids.get(part)
        if message_id is not None:
            try:
                await self._calls.edit(message_id, body, source, final=final)
                return
            except MessageGone:
                log.info("message %s of run %s is gone; posting it again", message_id, view.run_id)

        async def record(message_id: str) -> None:
            # Recorded before anything else: a replay must edit this, not send it again.
            await self._lease.record_part(view.run_id, part, message_id)

        view.message_ids[part] = await self._calls.send(body, source, record, final=final)

    async def _supersede(self, view: _RunView, *, keep: int) -> None:
        for part in sorted(set(view.message_ids) - set(range(keep))):
            if view.shown.get(part) != SUPERSEDED_TEXT:
                message_id = view.message_ids[part]
                with contextlib.suppress(MessageGone):  # deleted already: nothing to mark
                    await self._calls.edit(message_id, SUPERSEDED_TEXT, SUPERSEDED_TEXT, final=True)
                view.shown[part] = SUPERSEDED_TEXT

    def _start_typing(self) -> None:
        if not self._d.can_type:
            return
        if self._typing is None:
            indicator = cast(TypingIndicator, self._renderer)
            address = self._address
            timeout_s = self._d.render_timeout_s
            self._typing = TypingLoop(
                indicator, address.chat_id, address.thread_id, timeout_s=timeout_s
            )
        self._typing.start()

    async def _stop_typing(self) -> None:
        if self._typing is not None:
            await self._typing.stop()
            self._typing = None
