"""Rendering one session's pending outbound events while its delivery lease is held.

``SessionRenderer.drain`` reads ``gw:out:{s}`` after the delivery cursor and turns
each run into platform messages: the first text is sent, later text edits it
(throttled by the renderer's ``edit_interval_s``), and the final text is split at
the platform limit (part 0 edited in place, further parts sent). Every message sent
is recorded through the lease before anything else happens, so a replay of the run
edits it instead of posting it again. Every platform call is bounded by the
deliverer's ``render_timeout_s``: a hung call fails the delivery (``TimeoutError``,
retried later) instead of holding the lease, and a shutdown, forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

from prometheus_client import Counter
from redis.asyncio import Redis

from channels.base import Renderer, TypingIndicator
from channels.delivery_lease import DeliveryLease
from channels.render import (
    SUPERSEDED_TEXT,
    ReplyText,
    chat_address,
    edit_delay,
    failure_text,
    split_message,
)
from core.bus.codec import parse_stream_id
from core.bus.consumer import READ_BLOCK_MS
from core.bus.outbound import read_events
from core.errors import LeaseLostError
from core.events import (
    RunCompleted,
    RunFailed,
    RunStarted,
    StreamEvent,
    TextCompleted,
    TextDelta,
    ToolStarted,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    def clock(self) -> Callable[[], float]: ...


@dataclass(slots=True)
class _RunView:
    """What one run shows on the platform, and what is still to be shown."""

    run_id: str
    message_ids: dict[int, str]
    reply: ReplyText = field(default_factory=ReplyText)
    shown: dict[int, str] = field(default_factory=dict)
    last_edit_at: float | None = None
    dirty: bool = False


class SessionRenderer:
    """Renders one session's pending events while its delivery lease is held."""

    def __init__(self, deliverer: DeliveryContext, lease: DeliveryLease) -> None:
        self._d = deliverer
        self._lease = lease
        self._renderer = deliverer.renderer
        self._address = chat_address(lease.session_key, deliverer.channel)
        self._view: _RunView | None = None
        self.read_until = "0-0"
        """The newest outbound id looked at, unreadable entries included: anything
        newer arrived after the drain's last read (its signal may have been turned away)."""

    async def drain(self, after: str) -> bool:
        """Render until nothing is in progress. False: gave up on a silent run."""
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

    def _flush_delay(self, view: _RunView) -> float:
        return edit_delay(self._d.clock(), view.last_edit_at, self._renderer.edit_interval_s)

    async def _view_for(self, run_id: str) -> _RunView:
        if self._view is None or self._view.run_id != run_id:
            self._view = _RunView(run_id, await self._lease.begin_run(run_id))
        return self._view

    async def _apply(self, entry_id: str, event: StreamEvent) -> None:
        view = await self._view_for(event.run_id)
        if isinstance(event, RunStarted):
            view.reply.reset()  # a re-run replaces the partial reply
            await self._typing()
        elif isinstance(event, TextDelta):
            view.reply.add_delta(event.delta)
            view.dirty = True
        elif isinstance(event, TextCompleted):
            view.reply.complete_segment(event.content)
            view.dirty = True
        elif isinstance(event, ToolStarted):
            await self._typing()
        elif isinstance(event, RunCompleted):
            await self._show(view, view.reply.text() or event.content, final=True)
            await self._finish(entry_id)
        elif isinstance(event, RunFailed):
            await self._show(view, failure_text(view.reply.text(), event.error), final=True)
            await self._finish(entry_id)

    async def _finish(self, entry_id: str) -> None:
        await self._lease.advance(entry_id)
        self._view = None
        if self._d.metrics is not None:
            self._d.metrics.messages_out.labels(channel=self._d.channel).inc()

    async def _flush_streaming(self, view: _RunView) -> None:
        try:
            await self._show(view, view.reply.text(), final=False)
        except LeaseLostError:
            raise
        except Exception:
            # A failed preview edit is retried at the next interval; the final one is not lost.
            log.warning("preview of run %s failed", view.run_id, exc_info=True)
            view.last_edit_at = self._d.clock()

    async def _show(self, view: _RunView, text: str, *, final: bool) -> None:
        parts = split_message(text, self._renderer.max_message_chars) if text.strip() else []
        chat = self._address.chat_id
        for part, body in enumerate(parts):
            if view.shown.get(part) == body:
                continue
            self._lease.check()
            message_id = view.message_ids.get(part)
            if message_id is None:
                view.message_ids[part] = await self._send_recorded(view.run_id, part, body)
            else:
                await self._platform(self._renderer.edit(chat, message_id, body))
            view.shown[part] = body
        if final:
            for part in sorted(set(view.message_ids) - set(range(len(parts)))):
                if view.shown.get(part) != SUPERSEDED_TEXT:
                    superseded = self._renderer.edit(chat, view.message_ids[part], SUPERSEDED_TEXT)
                    await self._platform(superseded)
                    view.shown[part] = SUPERSEDED_TEXT
        view.last_edit_at = self._d.clock()
        view.dirty = False

    async def _send_recorded(self, run_id: str, part: int, body: str) -> str:
        """Send one part and record it; a cancel (shutdown) waits for the record first."""
        sending = asyncio.ensure_future(self._send_then_record(run_id, part, body))
        try:
            return await asyncio.shield(sending)
        except asyncio.CancelledError:
            # Leaving now could post this part twice: the replay would not know of it.
            await sending
            raise

    async def _send_then_record(self, run_id: str, part: int, body: str) -> str:
        address = self._address
        sent = self._renderer.send(address.chat_id, body, thread_id=address.thread_id)
        message_id = await self._platform(sent)
        # Recorded before anything else: a replay must edit this, not send it again.
        await self._lease.record_part(run_id, part, message_id)
        return message_id

    async def _typing(self) -> None:
        if not self._d.can_type:
            return
        try:
            indicator = cast(TypingIndicator, self._renderer)
            await self._platform(
                indicator.typing(self._address.chat_id, thread_id=self._address.thread_id)
            )
        except Exception:
            log.warning("typing indicator failed for %s", self._address, exc_info=True)

    async def _platform(self, call: Awaitable[T]) -> T:
        """One platform call, bounded by ``render_timeout_s`` (``TimeoutError`` past it)."""
        async with asyncio.timeout(self._d.render_timeout_s):
            return await call
