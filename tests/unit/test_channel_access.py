"""Access decisions and command parsing (fakeredis holds the approved senders)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import pytest_asyncio

from gateway.channels.toolkit.access import Access, PlatformMessage, Verdict
from gateway.channels.toolkit.commands import parse_command
from gateway.channels.toolkit.pairing import PairingStore
from gateway.core.channel_settings import ChannelSettings


@pytest_asyncio.fixture
async def pairing() -> AsyncIterator[PairingStore]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield PairingStore(client, "fake")
    await client.aclose()


def message(**fields: Any) -> PlatformMessage:
    return PlatformMessage(**{"chat_id": "c1", "sender_id": "u1", "text": "hi", **fields})


async def decide(pairing: PairingStore, msg: PlatformMessage, **config: Any) -> Verdict:
    return await Access(ChannelSettings(**config), pairing).decide(msg)


async def test_direct_chats_deny_by_default(pairing: PairingStore) -> None:
    assert await decide(pairing, message()) is Verdict.PAIR
    assert await decide(pairing, message(), allow_from=["u1"]) is Verdict.ADMIT
    assert await decide(pairing, message(username="ann"), allow_from=["@ann"]) is Verdict.ADMIT
    assert await decide(pairing, message(), allow_from=["*"]) is Verdict.ADMIT
    await pairing.redis.sadd("gw:pair:approved:{pair:fake}", "u1")  # type: ignore[misc]
    assert await decide(pairing, message()) is Verdict.ADMIT


@pytest.mark.parametrize(
    ("policy", "fields", "verdict"),
    [
        ("mention", {}, Verdict.IGNORE),
        ("mention", {"mentioned": True}, Verdict.ADMIT),
        ("mention", {"reply_to_bot": True}, Verdict.ADMIT),
        ("mention", {"mentioned": True, "chat_id": "g2"}, Verdict.IGNORE),
        ("open", {}, Verdict.ADMIT),
        ("open", {"chat_id": "g2"}, Verdict.IGNORE),
        ("disabled", {"mentioned": True}, Verdict.IGNORE),
    ],
)
async def test_groups(
    pairing: PairingStore, policy: str, fields: dict[str, Any], verdict: Verdict
) -> None:
    msg = message(direct=False, sender_id="u5", **{"chat_id": "g1", **fields})
    assert await decide(pairing, msg, allow_from=["g1"], group_policy=policy) is verdict


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/new", "new"),
        ("  /STOP please", "stop"),
        ("/help@FakeBot", "help"),
        ("/help@otherbot", None),
        ("/unknown", None),
        ("new", None),
        ("", None),
    ],
)
def test_parse_command(text: str, command: str | None) -> None:
    assert parse_command(text, "fakebot") == command
