"""The on-disk format of ``FileSessionStore``: file names and JSONL records, no I/O.

Layout of a session file::

    {"_type":"session","key":..,"created_at":..,"updated_at":..,"summary":..,
     "metadata":{..},"message_count":n}                        line 1: the header
    {"role":"user","content":..}                               one message per line
    {"_type":"state","updated_at":..,"message_count":n}        commit record of an append

The ``message_count`` of the last header/state record commits the messages before
it; messages after it belong to a torn append and are not part of the session.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from pydantic_core import from_json, to_json

from gateway.core.errors import SessionError
from gateway.core.sessions.base import SessionInfo

MAX_ENCODED_NAME = 200
"""Longer encoded keys are shortened with a hash (file names stop at 255 bytes)."""


def encode_key(key: str) -> str:
    """The file stem of ``key``: percent-encoded, so no ``/`` and no leading dot.

    Reversible by ``decode_stem`` except for over-long keys, which become a prefix,
    ``=`` (a character quoting never emits) and a SHA-256; their header holds the key.
    """
    if not key:
        raise SessionError("a session key may not be empty")
    stem = quote(key, safe="")
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem) > MAX_ENCODED_NAME:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        stem = f"{stem[: MAX_ENCODED_NAME - len(digest) - 1]}={digest}"
    return stem


def decode_stem(stem: str) -> str | None:
    """The key of a file stem, or None for a hashed (over-long) one."""
    return None if "=" in stem else unquote(stem)


# -- writing ----------------------------------------------------------------------


def rewrite_payload(
    key: str,
    created_at: float,
    updated_at: float,
    summary: str,
    metadata_json: bytes,
    lines: list[bytes],
) -> bytes:
    """A whole session file: the header, then one message per line."""
    header = {
        "_type": "session",
        "key": key,
        "created_at": created_at,
        "updated_at": updated_at,
        "summary": summary,
        "metadata": from_json(metadata_json),
        "message_count": len(lines),
    }
    return b"\n".join([to_json(header), *lines]) + b"\n"


def append_payload(lines: list[bytes], updated_at: float, count: int) -> bytes:
    """New message lines plus the state record that commits all ``count`` messages."""
    state = to_json({"_type": "state", "updated_at": updated_at, "message_count": count})
    return b"\n".join([*lines, state]) + b"\n"


# -- reading ----------------------------------------------------------------------


@dataclass(slots=True)
class ParsedFile:
    """A session file split up: its header, committed messages and what was wrong."""

    header: dict[str, Any] | None
    lines: list[bytes]
    messages: list[dict[str, Any]]
    """The committed messages decoded (the same records as ``lines``)."""
    updated_at: float | None
    problems: list[str]
    uncommitted: int


def header_or_none(line: bytes) -> dict[str, Any] | None:
    """The header record in ``line``, or None when it is missing or malformed."""
    record = _json_dict(line)
    if record is None or record.get("_type") != "session":
        return None
    usable = (
        isinstance(record.get("key"), str)
        and _is_number(record.get("created_at"))
        and _is_number(record.get("updated_at"))
        and isinstance(record.get("summary", ""), str)
        and isinstance(record.get("metadata", {}), dict)
        and ("message_count" not in record or _is_count(record["message_count"]))
    )
    return record if usable else None


def last_state(tail: bytes) -> dict[str, Any] | None:
    """The last state record in ``tail`` (the end of a file), if it is usable."""
    for line in reversed(tail.split(b"\n")):
        record = _json_dict(line)
        if record is not None and record.get("_type") == "state":
            return _state_or_none(record)
    return None


def info_from_records(
    header: dict[str, Any] | None, state: dict[str, Any] | None
) -> SessionInfo | None:
    """A listing row from a usable header and last state record, without reading messages.

    None when the header is missing, or when it carries no ``message_count`` and no
    state record follows (such a file must be read whole to count its messages).
    """
    if header is None or (state is None and "message_count" not in header):
        return None
    latest = state or header
    return SessionInfo(
        key=header["key"],
        message_count=latest["message_count"],
        created_at=header["created_at"],
        updated_at=latest["updated_at"],
    )


def parse(data: bytes) -> ParsedFile:
    """Split a file into committed message lines, listing any corrupt line."""
    raw = data.split(b"\n")
    torn = raw.pop()  # b"" when the file ends with a newline; else a partial last write
    header = header_or_none(raw[0]) if raw else None
    problems = [] if header is not None else ["line 1: no usable session header"]
    committed: int | None = header.get("message_count") if header else None
    updated_at: float | None = None
    lines: list[bytes] = []
    messages: list[dict[str, Any]] = []
    for number, line in enumerate(raw[1:] if header else raw, 2 if header else 1):
        record = _json_dict(line)
        kind = None if record is None else record.get("_type")
        if record is not None and kind is None and isinstance(record.get("role"), str):
            lines.append(line)
            messages.append(record)
        elif record is not None and kind == "state" and _state_or_none(record):
            committed, updated_at = record["message_count"], record["updated_at"]
        elif not (number == 1 and header is None):
            problems.append(f"line {number}: not a message or record")
    keep = len(lines) if committed is None else min(committed, len(lines))
    uncommitted = len(lines) - keep + (1 if torn else 0)
    return ParsedFile(header, lines[:keep], messages[:keep], updated_at, problems, uncommitted)


def _json_dict(line: bytes) -> dict[str, Any] | None:
    try:
        value = from_json(line)
    except ValueError:
        return None  # not JSON: the caller reports the line as corrupt
    return value if isinstance(value, dict) else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _state_or_none(record: dict[str, Any]) -> dict[str, Any] | None:
    usable = _is_number(record.get("updated_at")) and _is_count(record.get("message_count"))
    return record if usable else None
