"""The sessions a worker committed or loaded lately, so a turn need not load them again.

Every write of a stored session sets a new ``stamp`` in its head
(``core.sessions.redis_form``). ``BEGIN_TURN`` is given the stamp of the cached copy
and leaves the history out of its reply when the stored stamp is the same, so a
long session costs its history's transfer and parse only when another process
wrote it since (another worker, a compaction, a delete). The cache hands out copies
(a turn extends its session; a failed turn must not change the cached one) and is
bounded by the messages it holds, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from gateway.core.sessions.redis_form import StoredSession

MAX_CACHED_MESSAGES: Final = 20_000
"""Messages kept over all cached sessions (a few MB for typical messages)."""


class SessionCache:
    """Least-recently-used copies of stored sessions, keyed by session key."""

    __slots__ = ("_entries", "_max_messages", "_messages")

    def __init__(self, max_messages: int = MAX_CACHED_MESSAGES) -> None:
        self._entries: OrderedDict[str, StoredSession] = OrderedDict()
        self._max_messages = max_messages
        self._messages = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stamp(self, key: str) -> str:
        """The stamp of the cached copy ('' when none is cached)."""
        cached = self._entries.get(key)
        return cached.stamp if cached is not None else ""

    def checkout(self, key: str) -> StoredSession | None:
        """A copy of the cached session, for one turn to change."""
        cached = self._entries.get(key)
        if cached is None:
            return None
        self._entries.move_to_end(key)
        return cached.copy()

    def put(self, stored: StoredSession) -> None:
        """Keep a copy of ``stored`` (only one whose stamp is known: else it could never
        be recognised as current)."""
        key = stored.session.key
        self.drop(key)
        if not stored.stamp or stored.length > self._max_messages:
            return
        self._entries[key] = stored.copy()
        self._messages += stored.length
        while self._messages > self._max_messages:
            _, evicted = self._entries.popitem(last=False)
            self._messages -= evicted.length

    def drop(self, key: str) -> None:
        cached = self._entries.pop(key, None)
        if cached is not None:
            self._messages -= cached.length
