"""Normalizing XAUTOCLAIM / XREAD replies across Redis 6.2, 7 and redis-py parsing (no I/O)."""

from __future__ import annotations

from gateway.core.bus.signals import parse_autoclaim, stream_batches


def test_autoclaim_redis_62_raw_reply() -> None:
    # Redis 6.2: [next, entries]; an entry deleted while pending comes back as nil.
    reply = ["1-5", [["1-1", ["s", "telegram:1", "c", "telegram"]], None, ["1-3", ["s", "x"]]]]
    parsed = parse_autoclaim(reply)
    assert parsed.next_start == "1-5"
    assert parsed.entries == [("1-1", {"s": "telegram:1", "c": "telegram"}), ("1-3", {"s": "x"})]
    assert parsed.deleted_ids == []


def test_autoclaim_redis_7_raw_reply() -> None:
    reply = ["0-0", [["2-0", ["s", "slack:C1", "c", "slack"]]], ["1-9", "1-10"]]
    parsed = parse_autoclaim(reply)
    assert parsed.next_start == "0-0"
    assert parsed.entries == [("2-0", {"s": "slack:C1", "c": "slack"})]
    assert parsed.deleted_ids == ["1-9", "1-10"]


def test_autoclaim_redis_py_parsed_reply() -> None:
    # redis-py turns entries into (id, dict) and a deleted (nil) entry into (None, None).
    reply = ["0-0", [("3-0", {"s": "a", "c": "b"}), (None, None)], []]
    parsed = parse_autoclaim(reply)
    assert parsed.entries == [("3-0", {"s": "a", "c": "b"})]
    assert parsed.deleted_ids == []


def test_autoclaim_empty_reply() -> None:
    parsed = parse_autoclaim(["0-0", []])
    assert (parsed.next_start, parsed.entries, parsed.deleted_ids) == ("0-0", [], [])


def test_stream_batches_resp2_and_resp3() -> None:
    entries = [("1-0", {"d": "x"})]
    assert stream_batches(None) == []
    assert stream_batches([]) == []
    assert stream_batches([["gw:ready:0", entries]]) == [("gw:ready:0", entries)]
    assert stream_batches({"gw:ready:1": [entries]}) == [("gw:ready:1", entries)]
