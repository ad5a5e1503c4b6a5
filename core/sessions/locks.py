"""Per-session locks: turns and session edits on one key run one at a time, in arrival order.

Two rules keep them from hanging or losing writes:

- **No re-entry.** A task that holds a key (and every task it starts, e.g. a tool or a
  hook) may not take the same key again: it would wait for itself forever. ``hold``
  raises ``SessionLockReentryError`` instead.
- **Invalidation.** A synchronous edit (``bot.sessions.clear``/``delete``) cannot wait
  for the lock. It calls ``invalidate`` instead, and whoever holds the key at that moment
  finds its hold ``stale``: what it loaded before the edit must not be saved over it.
  (A waiter takes the key after the edit and loads what the edit left.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from gateway.core.errors import SessionLockReentryError

_HELD: ContextVar[frozenset[str]] = ContextVar("gateway_held_session_keys", default=frozenset())
"""Keys held by the current task; tasks it creates inherit the set (a copied context)."""


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    """Holders plus waiters; the entry is dropped when it reaches zero."""
    epoch: int = 0
    """Bumped by ``invalidate``; a hold taken at another epoch is stale."""


class Hold:
    """One holder's view of its key: ``stale`` once the key was invalidated after it took it."""

    __slots__ = ("_entry", "_epoch")

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry
        self._epoch = entry.epoch

    @property
    def stale(self) -> bool:
        return self._entry.epoch != self._epoch


class SessionLocks:
    """One FIFO lock per session key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[Hold]:
        """Hold ``key`` until the block ends; raises ``SessionLockReentryError`` on re-entry."""
        held = _HELD.get()
        if key in held:
            raise SessionLockReentryError(
                f"session {key!r} is locked by the operation this code runs in (a hook, tool "
                "or stream consumer of its own turn): waiting for it would never end; run "
                "the operation after the turn, or use another session key"
            )
        entry = self._entries.setdefault(key, _Entry())
        entry.users += 1
        try:
            async with entry.lock:
                _HELD.set(held | {key})
                try:
                    yield Hold(entry)
                finally:
                    # Not ``reset(token)``: a generator finalized by the event loop exits
                    # in another context, where the token is refused.
                    _HELD.set(held)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def invalidate(self, key: str) -> None:
        """Mark every current hold of ``key`` stale (a clear or delete that did not wait)."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.epoch += 1

    def __len__(self) -> int:
        return len(self._entries)
