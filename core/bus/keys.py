"""Every Redis key and stream name of the bus, in one place.

Keys of one session share the hash tag ``{session}`` so they land in one Redis
Cluster slot (Lua scripts touch several of them at once). Partitioned keys
(``gw:ready:{p}``, ``gw:deliver:{channel}:{p}``) spread signals over slots.

The tag is the session key with ``%`` and ``}`` percent-encoded (``_tag``): a hash
tag ends at the first ``}``, so a raw ``}`` would cut it short (a leading one would
even leave it empty, and Redis would then hash each whole key name apart), and
``gw:seen:{a}:b}:c`` would be ambiguous. Session keys without those two characters
appear in key names as they are.
"""

from __future__ import annotations

import zlib
from typing import Final

PREFIX: Final = "gw"

WORKER_GROUP: Final = "workers"
"""Consumer group reading ``gw:ready:*``."""

DELIVER_GROUP: Final = "deliverers"
"""Consumer group reading ``gw:deliver:{channel}:*``."""

DEAD_LETTER: Final = f"{PREFIX}:dead"
"""Stream of messages that failed ``max_deliveries`` times."""

WORKERS_ALIVE: Final = f"{PREFIX}:workers"
"""Hash ``worker_id -> last heartbeat (unix s)`` for ``gateway status``."""

SCHEDULE_QUEUE: Final = f"{PREFIX}:arq"
"""arq queue name for side jobs (scheduled messages, deferred retries, compaction)."""


def _tag(session_key: str) -> str:
    """The session key as a hash tag: no ``}`` inside, one-to-one with the key."""
    if "%" not in session_key and "}" not in session_key:
        return session_key
    return session_key.replace("%", "%25").replace("}", "%7D")


def partition(session_key: str, partitions: int) -> int:
    return zlib.crc32(session_key.encode("utf-8")) % partitions


def seen(session_key: str, platform_event_id: str) -> str:
    """SET NX EX marker that drops platform redeliveries."""
    return f"{PREFIX}:seen:{{{_tag(session_key)}}}:{platform_event_id}"


def idempotency(key: str) -> str:
    """HTTP ``Idempotency-Key`` -> what its publish stored (a hash, see ``PUBLISH_INBOUND``)."""
    return f"{PREFIX}:idem:{key}"


def inbound(session_key: str) -> str:
    """The chat's inbound stream."""
    return f"{PREFIX}:in:{{{_tag(session_key)}}}"


def ready(p: int) -> str:
    """Partition ``p`` of the work-signal streams."""
    return f"{PREFIX}:ready:{p}"


def lease(session_key: str) -> str:
    """``token`` of the worker holding the session (SET NX PX)."""
    return f"{PREFIX}:lease:{{{_tag(session_key)}}}"


def cursor(session_key: str) -> str:
    """Id of the last inbound entry whose turn was committed."""
    return f"{PREFIX}:cursor:{{{_tag(session_key)}}}"


def deliveries(session_key: str) -> str:
    """Hash ``inbound entry id -> attempts`` for dead-lettering."""
    return f"{PREFIX}:attempts:{{{_tag(session_key)}}}"


def outbound(session_key: str) -> str:
    """The chat's outbound event stream."""
    return f"{PREFIX}:out:{{{_tag(session_key)}}}"


def deliver(channel: str, p: int) -> str:
    """Partition ``p`` of a channel's delivery-signal streams."""
    return f"{PREFIX}:deliver:{channel}:{p}"


def deliver_lease(session_key: str) -> str:
    return f"{PREFIX}:dlease:{{{_tag(session_key)}}}"


def deliver_cursor(session_key: str) -> str:
    """Id of the last outbound event the channel rendered."""
    return f"{PREFIX}:dcursor:{{{_tag(session_key)}}}"


def sent_parts(session_key: str) -> str:
    """Hash ``run_id:part -> platform message id`` recorded before the cursor advances."""
    return f"{PREFIX}:sent:{{{_tag(session_key)}}}"


def session(session_key: str) -> str:
    """The stored session (Redis session store)."""
    return f"{PREFIX}:session:{{{_tag(session_key)}}}"


def session_corrupt(session_key: str) -> str:
    """Where an unparsable stored session is copied before it is replaced."""
    return f"{session(session_key)}:corrupt"


SESSIONS_INDEX: Final = f"{PREFIX}:sessions"
"""Sorted set ``session_key -> updated_at`` for listings and idle compaction."""
