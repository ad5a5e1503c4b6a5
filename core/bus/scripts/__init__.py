"""The bus's Lua scripts, run by SHA with a one-time load on ``NOSCRIPT``.

Each script declares every key it touches in ``KEYS`` and all of them share one
session's ``{hash tag}``, so the scripts also run on Redis Cluster. Fenced scripts
begin by comparing the lease value with the caller's token and return nil/0 when it
differs: the caller raises ``LeaseLostError``. (The ready, delivery-signal,
dead-letter streams and the sessions index are outside that slot: see README on
Redis Cluster.)
"""

from __future__ import annotations

from ._lua import LuaScript, ScriptArg
from .albums import CLAIM_ALBUM, DUE_ALBUMS, FINISH_ALBUM, STASH_ALBUM_PART
from .delivery import ADVANCE_DELIVERY, BEGIN_DELIVERY_RUN, DISCARD_SESSION, RECORD_SENT_PART
from .inbound import PENDING_INBOUND, PUBLISH_INBOUND
from .lease import RELEASE_LEASE, RENEW_LEASE
from .toolkit import APPROVE_PAIRING_CODE, ISSUE_PAIRING_CODE, RATE_LIMIT, TOKEN_BUCKET
from .turn import BEGIN_TURN, COMMIT_TURN, LOAD_SESSION, MOVE_ATTEMPT, PUBLISH_EVENTS, SAVE_SESSION

__all__ = [
    "ADVANCE_DELIVERY",
    "APPROVE_PAIRING_CODE",
    "BEGIN_DELIVERY_RUN",
    "BEGIN_TURN",
    "CLAIM_ALBUM",
    "COMMIT_TURN",
    "DISCARD_SESSION",
    "DUE_ALBUMS",
    "FINISH_ALBUM",
    "ISSUE_PAIRING_CODE",
    "LOAD_SESSION",
    "MOVE_ATTEMPT",
    "PENDING_INBOUND",
    "PUBLISH_EVENTS",
    "PUBLISH_INBOUND",
    "RATE_LIMIT",
    "RECORD_SENT_PART",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "SAVE_SESSION",
    "STASH_ALBUM_PART",
    "TOKEN_BUCKET",
    "LuaScript",
    "ScriptArg",
]
