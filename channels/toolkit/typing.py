"""A typing indicator kept up while a turn runs.

Platforms show "typing…" for a few seconds per call (Telegram ~5 s, Discord ~10 s),
so the indicator is refreshed every ``typing_interval_s`` (a renderer attribute,
default ``DEFAULT_INTERVAL_S``) until the reply completes or fails. A failed call is
logged once per run and does not stop the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.channels.base import TypingIndicator

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 4.0


class TypingLoop:
    """Shows "typing…" in one chat from ``start`` until ``stop``."""

    def __init__(
        self,
        indicator: TypingIndicator,
        chat_id: str,
        thread_id: str | None,
        *,
        timeout_s: float,
    ) -> None:
        self.indicator = indicator
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.timeout_s = timeout_s
        self.interval_s = float(getattr(indicator, "typing_interval_s", DEFAULT_INTERVAL_S))
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin (or keep) showing the indicator; idempotent."""
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=f"typing {self.chat_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        warned = False
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.indicator.typing(self.chat_id, thread_id=self.thread_id)
            except Exception as exc:  # cosmetic: the reply goes on without it
                if not warned:
                    log.warning("typing indicator failed for chat %s: %r", self.chat_id, exc)
                    warned = True
            await asyncio.sleep(self.interval_s)  # the platform's display cadence
