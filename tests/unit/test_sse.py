"""``SSEDataDecoder``: the same events however the body is split into reads."""

from __future__ import annotations

import pytest

from gateway.core.providers.sse import EventTooLarge, SSEDataDecoder

BODY = (
    b': comment\n\nevent: message\nid: 1\ndata: {"a": 1}\n\n'
    b"data: line one\ndata:line two\ndata\n\n"
    b"retry: 5\n\nunknown: x\ndata: last\n\n"
)
EVENTS = [b'{"a": 1}', b"line one\nline two\n", b"last"]


def decode(pieces: list[bytes]) -> list[bytes]:
    decoder = SSEDataDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_split_gives_the_same_events(ending: bytes) -> None:
    body = BODY.replace(b"\n", ending)
    assert decode([body]) == EVENTS
    for cut in range(len(body) + 1):
        assert decode([body[:cut], body[cut:]]) == EVENTS, cut
    assert decode([bytes([b]) for b in body]) == EVENTS


def test_an_unfinished_event_is_not_dispatched() -> None:
    assert decode([b"data: x\n\ndata: y\n"]) == [b"x"]
    assert decode([b"data: x\n\ndata: y"]) == [b"x"]


def test_a_long_line_over_many_reads() -> None:
    line = b"x" * 100_000
    pieces = [b"data: "] + [line[i : i + 1000] for i in range(0, len(line), 1000)] + [b"\n\n"]
    assert decode(pieces) == [line]


def test_an_event_past_the_limit_is_refused() -> None:
    decoder = SSEDataDecoder(limit=1000)
    assert decoder.feed(b"data: " + b"x" * 900 + b"\n\n") == [b"x" * 900]  # within it
    with pytest.raises(EventTooLarge, match="over 1000 bytes"):
        for _ in range(5):  # a line that never ends, read after read
            decoder.feed(b"y" * 300)
    many = SSEDataDecoder(limit=1000)
    with pytest.raises(EventTooLarge):
        many.feed(b"data: aaaaaaaaaa\n" * 200)  # an event of many lines that never ends
