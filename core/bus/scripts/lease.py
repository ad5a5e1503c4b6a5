"""Lease renewal and release by the holder of the token (``core.bus.lease``)."""

from __future__ import annotations

from typing import Final

from ._lua import LuaScript

# -- leases: acquired with SET NX PX (one command, no script); renewed and released
# only by the holder of the token. Every fenced script starts with the same
# token comparison, which is the whole fence: a token is unique per grant.

RENEW_LEASE: Final = LuaScript(
    """
-- KEYS: lease   ARGV: token, ttl ms   -> 1 renewed, 0 not ours
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
""",
)

RELEASE_LEASE: Final = LuaScript(
    """
-- KEYS: lease   ARGV: token   -> 1 released, 0 not ours
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)
