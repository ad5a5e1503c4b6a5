"""Session keys name one chat each, and their Redis keys share one hash slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from gateway.core.bus import keys
from gateway.core.messages import InboundMessage, default_session_key, parse_session_key

TRICKY = ["x:t", "x", "t", "%", "%3A", "a%25b", "{", "}", "}x", "a}b{c", "{a}", ":", "::"]


def test_a_chat_with_a_colon_is_not_a_chat_in_a_thread() -> None:
    assert default_session_key("http", "x:t") != default_session_key("http", "x", "t")
    first = InboundMessage(channel="http", chat_id="x:t", sender_id="u", text="a")
    second = InboundMessage(channel="http", chat_id="x", thread_id="t", sender_id="u", text="b")
    assert first.session_key != second.session_key


def test_plain_ids_read_as_they_are() -> None:
    assert default_session_key("http", "order-7") == "http:order-7"
    assert default_session_key("telegram", "-100123", "42") == "telegram:-100123:42"


@pytest.mark.parametrize("chat", TRICKY)
@pytest.mark.parametrize("thread", [None, *TRICKY])
def test_keys_are_one_to_one_and_parse_back(chat: str, thread: str | None) -> None:
    key = default_session_key("web", chat, thread)
    assert parse_session_key(key) == ("web", chat, thread)


def test_distinct_chats_get_distinct_keys() -> None:
    made = {
        default_session_key("web", chat, thread) for chat in TRICKY for thread in [None, *TRICKY]
    }
    assert len(made) == len(TRICKY) * (len(TRICKY) + 1)


def session_keys_of(s: str) -> list[str]:
    return [
        keys.inbound(s),
        keys.outbound(s),
        keys.lease(s),
        keys.cursor(s),
        keys.attempts(s),
        keys.deliver_lease(s),
        keys.deliver_cursor(s),
        keys.sent_parts(s),
        keys.session(s),
        keys.session_corrupt(s),
        keys.seen(s, "event}{1"),
    ]


@pytest.mark.parametrize("s", ["web:plain", *(f"web:{chat}" for chat in TRICKY), "}", "%7D"])
def test_every_key_of_a_session_is_in_one_hash_slot(s: str) -> None:
    slots = {key_slot(name.encode()) for name in session_keys_of(s)}
    assert len(slots) == 1, session_keys_of(s)


def test_braces_cannot_make_two_sessions_share_a_key() -> None:
    assert keys.inbound("a}") != keys.inbound("a%7D")
    assert keys.seen("a}:b", "c") != keys.seen("a", "b}:c")
    assert keys.inbound("web:plain") == "gw:in:{web:plain}"
