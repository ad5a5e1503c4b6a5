"""Pairing: how an unknown sender is admitted by an operator.

An unknown sender in a direct chat gets a short code; the operator approves it with
``gateway pairing approve <channel> <code>``, which adds the sender to the channel's
approved set in Redis (kept across restarts). Codes expire after ``ttl_s``, and a
channel has at most ``max_open`` open codes at a time, so strangers cannot flood the
operator's list: issuing is one Lua script (prune, reuse, cap, store).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.scripts import APPROVE_PAIRING_CODE, ISSUE_PAIRING_CODE, ScriptArg

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
"""No 0/O, 1/I/L: a code read aloud or copied by hand is not mistyped."""
CODE_LENGTH = 8
CODE_TTL_S = 3600
MAX_OPEN_CODES = 3
_COLLISION_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Issued:
    code: str
    new: bool
    """False: the sender already had this open code."""


@dataclass(frozen=True, slots=True)
class PendingCode:
    channel: str
    code: str
    sender_id: str
    sender_name: str
    chat_id: str
    expires_at: float


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code: str) -> str:
    return code.strip().upper()


class PairingStore:
    """One channel's pairing codes and approved senders."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        *,
        ttl_s: int = CODE_TTL_S,
        max_open: int = MAX_OPEN_CODES,
    ) -> None:
        if ttl_s < 1 or max_open < 1:
            raise ValueError("pairing ttl_s and max_open must be at least 1")
        self.redis = redis
        self.channel = channel
        self.ttl_s = ttl_s
        self.max_open = max_open

    def _keys(self) -> list[str]:
        c = self.channel
        return [keys.pairing_codes(c), keys.pairing_expiry(c), keys.pairing_senders(c)]

    async def issue(self, sender_id: str, sender_name: str, chat_id: str) -> Issued | None:
        """The sender's open code (a new one if needed); None when the channel is at its cap."""
        payload = json.dumps(
            {"sender_id": sender_id, "sender_name": sender_name, "chat_id": chat_id}
        )
        for _ in range(_COLLISION_RETRIES):
            args: list[ScriptArg] = [new_code(), sender_id, payload, self.ttl_s, self.max_open]
            reply = await ISSUE_PAIRING_CODE.run(self.redis, self._keys(), args)
            if reply is None:
                return None
            code, status = cast(list[object], reply)
            if int(cast(int, status)) != 2:
                return Issued(code=str(code), new=int(cast(int, status)) == 1)
        raise RuntimeError("pairing codes kept colliding; is the random source broken?")

    async def approve(self, code: str) -> str | None:
        """Approve the sender of an open ``code``; their id, or None for no such open code."""
        script_keys = [*self._keys(), keys.paired(self.channel)]
        payload = await APPROVE_PAIRING_CODE.run(self.redis, script_keys, [normalize_code(code)])
        if payload is None:
            return None
        return str(json.loads(cast(str, payload))["sender_id"])

    async def revoke(self, sender_id: str) -> bool:
        """Remove an approved sender; False when they were not approved."""
        return bool(await self.redis.srem(keys.paired(self.channel), sender_id))  # type: ignore[misc]

    async def is_paired(self, sender_id: str) -> bool:
        found = await self.redis.sismember(keys.paired(self.channel), sender_id)  # type: ignore[misc]
        return bool(found)

    async def approved(self) -> list[str]:
        members = await self.redis.smembers(keys.paired(self.channel))  # type: ignore[misc]
        return sorted(str(m) for m in members)

    async def pending(self) -> list[PendingCode]:
        """Open codes, oldest first (expired ones are left out)."""
        now = time.time()
        scored = await self.redis.zrangebyscore(
            keys.pairing_expiry(self.channel), f"({now}", "+inf", withscores=True
        )
        if not scored:
            return []
        codes = [str(code) for code, _ in scored]
        payloads = await self.redis.hmget(keys.pairing_codes(self.channel), codes)  # type: ignore[misc]
        return [
            _pending(self.channel, code, float(expiry), payload)
            for (code, expiry), payload in zip(scored, payloads, strict=True)
            if payload is not None
        ]


def _pending(channel: str, code: object, expires_at: float, payload: str) -> PendingCode:
    data = json.loads(payload)
    return PendingCode(
        channel=channel,
        code=str(code),
        sender_id=str(data["sender_id"]),
        sender_name=str(data.get("sender_name", "")),
        chat_id=str(data.get("chat_id", "")),
        expires_at=expires_at,
    )


async def pending_codes(redis: Redis, channels: Sequence[str]) -> list[PendingCode]:
    """Open codes of every named channel."""
    found: list[PendingCode] = []
    for channel in channels:
        found.extend(await PairingStore(redis, channel).pending())
    return found
