"""Waiting out a failing Redis, and ending tasks that may miss a cancellation.

``Outage`` is the backoff every loop on the bus uses (the signal consumer, the worker's
re-run after an outage, the arq side jobs); ``cancel_until_done`` / ``cancel_all`` end
the tasks a stop leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0


class Outage:
    """Backoff for a failing Redis operation, logged once when it starts and once on recovery."""

    def __init__(self, what: str, *, base_s: float = BACKOFF_BASE_S, max_s: float = BACKOFF_MAX_S):
        self.what = what
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0

    async def failed(self, exc: BaseException) -> None:
        """Count a failure (logging the first of an outage), then wait the backoff."""
        self.failures += 1
        if self.failures == 1:
            log.warning("%s: Redis failed (%s); retrying with backoff", self.what, exc)
        else:
            log.debug("%s: Redis failed again (%d): %s", self.what, self.failures, exc)
        await asyncio.sleep(min(self.max_s, self.base_s * 2 ** (self.failures - 1)))

    def recovered(self) -> None:
        if self.failures:
            log.warning("%s: Redis answers again (after %d failures)", self.what, self.failures)
        self.failures = 0


RECANCEL_S = 0.5
"""How long a cancelled task may take before ``cancel_until_done`` cancels it again."""


async def cancel_until_done(
    tasks: Iterable[asyncio.Future[Any]], *, rounds: int | None = None
) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait for them, cancelling again those still running every
    ``RECANCEL_S``; with ``rounds``, give up after that many and return those left.

    A cancellation that lands inside a redis-py command (or arq's) can be swallowed
    (seen in make chaos, and as stopped turns and a gateway stop that never ended
    under load): a task that missed it would otherwise run on, or be waited for ever.
    """
    pending = set(tasks)
    done_rounds = 0
    while pending and (rounds is None or done_rounds < rounds):
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        done_rounds += 1
    return pending


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they have ended."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
