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

WORKER_HEARTBEATS: Final = f"{PREFIX}:worker:*"
"""Pattern matching every ``worker_heartbeat`` key (``gateway status`` scans it)."""

SCHEDULE_QUEUE: Final = f"{PREFIX}:arq"
"""arq queue name for side jobs (scheduled messages, deferred retries, compaction)."""


def worker_heartbeat(worker_id: str) -> str:
    """A live worker's last heartbeat (unix s); expires when the worker stops beating."""
    return f"{PREFIX}:worker:{worker_id}"


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


def attempts(session_key: str) -> str:
    """Hash ``inbound entry id -> attempts`` (turns run for it) for dead-lettering."""
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
    """The session in its old form, one JSON value: still read, and replaced by the
    session's head and log at its first commit (``core.sessions.redis``)."""
    return f"{PREFIX}:session:{{{_tag(session_key)}}}"


def session_head(session_key: str) -> str:
    """Hash of the stored session's small fields: ``created_at``, ``updated_at``,
    ``summary``, ``metadata`` (JSON), ``rev`` (commits so far) and ``stamp`` (new with
    every write: what a worker's cached copy and an append are checked against)."""
    return f"{PREFIX}:shead:{{{_tag(session_key)}}}"


def session_log(session_key: str) -> str:
    """List of the stored session's messages, one JSON value each, oldest first: a turn
    appends what it added; a compaction rewrites it."""
    return f"{PREFIX}:slog:{{{_tag(session_key)}}}"


def stored_session(session_key: str) -> tuple[str, str, str]:
    """Every key of a stored session: head, log, old form (``SESSION_*`` scripts' KEYS)."""
    return session_head(session_key), session_log(session_key), session(session_key)


def session_corrupt(session_key: str) -> str:
    """Where an unparsable stored session is copied before it is replaced."""
    return f"{session(session_key)}:corrupt"


SESSIONS_INDEX: Final = f"{PREFIX}:sessions"
"""Sorted set ``session_key -> updated_at`` for listings and idle compaction."""


def control(session_key: str) -> str:
    """The chat's control stream: ``stop`` requests that cancel its running turn."""
    return f"{PREFIX}:control:{{{_tag(session_key)}}}"


# -- HTTP API (channels.http.api) ---------------------------------------------------

API_SESSIONS: Final = f"{PREFIX}:api:sessions"
"""Sorted set ``session id -> created_at`` of the sessions made through the agent API."""


def api_sessions_of(agent: str) -> str:
    """The same index for one agent's sessions."""
    return f"{API_SESSIONS}:{agent}"


def api_session(session_key: str) -> str:
    """JSON ``{session_id, agent, metadata, created_at}`` of an agent-API session."""
    return f"{PREFIX}:api:session:{{{_tag(session_key)}}}"


def pipeline_run(run_id: str) -> str:
    """JSON state of one pipeline run (status, steps, output)."""
    return f"{PREFIX}:pipeline:run:{run_id}"


def pipeline_latest(name: str) -> str:
    """Id of the latest run of pipeline ``name``."""
    return f"{PREFIX}:pipeline:latest:{name}"


def rate_bucket(client_id: str) -> str:
    """Token bucket (hash ``tokens``, ``at``) of one API key's request rate."""
    return f"{PREFIX}:ratelimit:{client_id}"


# -- channel toolkit (channels.toolkit) ----------------------------------------------
# A channel's pairing keys share the hash tag ``{pair:<channel>}``: one script touches them.


def pairing_codes(channel: str) -> str:
    """Hash ``code -> JSON {sender_id, sender_name, chat_id}`` of open pairing codes."""
    return f"{PREFIX}:pair:codes:{{pair:{channel}}}"


def pairing_expiry(channel: str) -> str:
    """Sorted set ``code -> expiry (unix s)``: its size is the number of open codes."""
    return f"{PREFIX}:pair:expiry:{{pair:{channel}}}"


def pairing_senders(channel: str) -> str:
    """Hash ``sender id -> open code``: a sender asking again gets the same code."""
    return f"{PREFIX}:pair:senders:{{pair:{channel}}}"


def paired(channel: str) -> str:
    """Set of sender ids an operator approved (no expiry: survives restarts)."""
    return f"{PREFIX}:pair:approved:{{pair:{channel}}}"


def generation(channel: str) -> str:
    """Hash ``default session key -> generation``, raised by ``/new`` (fresh session)."""
    return f"{PREFIX}:gen:{channel}"


def connection_lease_name(channel: str, token_digest: str) -> str:
    """The key a channel's inbound-connection lease is held under (a ``Lease`` key).

    Keyed by the bot token's digest, not the channel name alone: one connection per
    token, whichever channel entries share it."""
    return f"{PREFIX}:lease:conn:{channel}:{token_digest}"


def handled_event(channel: str, platform_event_id: str) -> str:
    """SET NX EX marker: a command or pairing request the channel already answered."""
    return f"{PREFIX}:handled:{channel}:{platform_event_id}"


# -- channel deliverers (channels.toolkit) ------------------------------------------


def channel_rate(channel: str, scope: str) -> str:
    """Token bucket (hash ``tokens``, ``at``, ``paused``) of a channel's bot (``scope``
    ``bot``) or of one chat (``chat:<id>``). One ``{channel}`` hash tag: the bot's and a
    chat's bucket are taken together by one script."""
    return f"{PREFIX}:rl:{{{channel}}}:{scope}"


def chat_address(session_key: str) -> str:
    """JSON chat address of the session's last ``run.started`` that carried one."""
    return f"{PREFIX}:daddr:{{{_tag(session_key)}}}"


# -- Telegram albums (channels.telegram.albums) ---------------------------------------
# A channel's album keys share the hash tag ``{album:<channel>}``: one script touches them.
# ``album`` is ``<chat id>:<media_group_id>``.


def album_due(channel: str) -> str:
    """Sorted set ``album -> when it is due (Redis clock, ms)``: flushers read it."""
    return f"{PREFIX}:album:due:{{album:{channel}}}"


def album_parts(channel: str, album: str) -> str:
    """Hash ``update id -> update JSON``: the parts received and not yet claimed."""
    return f"{PREFIX}:album:parts:{{album:{channel}}}:{album}"


def album_batch(channel: str, album: str) -> str:
    """Hash ``update id -> update JSON``: the parts a flusher claimed (frozen until done)."""
    return f"{PREFIX}:album:batch:{{album:{channel}}}:{album}"


def album_done(channel: str, album: str) -> str:
    """Set of update ids already published: a redelivered part is dropped."""
    return f"{PREFIX}:album:done:{{album:{channel}}}:{album}"
