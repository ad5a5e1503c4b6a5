"""SIGINT/SIGTERM for the long-running commands (``gateway start``, ``gateway worker``).

The first signal asks for a graceful stop and says which signal it was; a second one
during the grace period says what is still being waited for; a third exits at once
(unfinished turns are then re-run by another worker: nothing was acknowledged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger("gateway")

FORCED_EXIT_CODE = 130


class GracefulStop:
    def __init__(
        self, what: str, *, grace_s: float, exit: Callable[[int], object] = os._exit
    ) -> None:
        self.what = what
        self.grace_s = grace_s
        self.event = asyncio.Event()
        self.received = 0
        self._exit = exit

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.on_signal, sig)

    def on_signal(self, sig: int) -> None:
        self.received += 1
        name = signal.Signals(sig).name
        if self.received == 1:
            log.info("%s received: stopping %s", name, self.what)
            self.event.set()
        elif self.received == 2:
            log.warning(
                "%s received again: still stopping %s, waiting up to %gs for running turns "
                "to finish; send it once more to exit at once",
                name,
                self.what,
                self.grace_s,
            )
        else:
            log.error("%s received a third time: exiting now, without a clean stop", name)
            self._exit(FORCED_EXIT_CODE)

    async def wait(self) -> None:
        await self.event.wait()
