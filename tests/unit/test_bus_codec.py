"""Wire format and stream-id arithmetic of the bus (no I/O)."""

from __future__ import annotations

import json

import pytest

from gateway.core.bus.codec import (
    decode_event,
    decode_inbound,
    encode,
    next_stream_id,
    parse_stream_id,
)
from gateway.core.errors import PayloadError
from gateway.core.events import TextDelta
from gateway.core.messages import InboundMessage

MAX = 2**64 - 1


def test_inbound_round_trip() -> None:
    msg = InboundMessage(channel="telegram", chat_id="42", sender_id="u", text="hi")
    assert decode_inbound({"d": encode(msg)}) == msg


def test_event_round_trip() -> None:
    event = TextDelta(run_id="1-0", seq=3, delta="abc")
    assert decode_event({"d": encode(event)}) == event


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"x": "{}"},
        {"d": "not json"},
        {"d": json.dumps({"channel": "t"})},
        {"d": json.dumps({"channel": "t", "chat_id": "1", "sender_id": "u", "text": "x" * 40_000})},
    ],
    ids=["no-fields", "no-d", "bad-json", "missing-fields", "oversize-text"],
)
def test_bad_inbound_is_payload_error(fields: dict[str, str]) -> None:
    with pytest.raises(PayloadError):
        decode_inbound(fields)


def test_unknown_event_type_is_payload_error() -> None:
    with pytest.raises(PayloadError):
        decode_event({"d": json.dumps({"type": "run.exploded"})})


@pytest.mark.parametrize(
    ("entry_id", "expected"),
    [
        ("0-0", "0-1"),
        ("5-3", "5-4"),
        ("1700000000000-9", "1700000000000-10"),
        (f"7-{MAX}", "8-0"),
        (f"{2**53}-{2**53}", f"{2**53}-{2**53 + 1}"),
    ],
)
def test_next_stream_id(entry_id: str, expected: str) -> None:
    assert next_stream_id(entry_id) == expected


def test_last_possible_id_has_no_successor() -> None:
    with pytest.raises(PayloadError):
        next_stream_id(f"{MAX}-{MAX}")


@pytest.mark.parametrize("bad", ["", "5", "5-", "-3", "a-1", "1-b", "$", "+", f"{MAX + 1}-0"])
def test_parse_stream_id_rejects(bad: str) -> None:
    with pytest.raises(PayloadError):
        parse_stream_id(bad)


def test_parse_stream_id() -> None:
    assert parse_stream_id("12-34") == (12, 34)
