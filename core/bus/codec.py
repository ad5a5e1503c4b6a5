"""How bus payloads look on the wire, and stream-id arithmetic.

Every stream entry carries its JSON in the field ``d``; signal entries carry the
session key in ``s`` and the channel in ``c``. Stream ids are ``"<ms>-<seq>"``,
both unsigned 64-bit integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from pydantic import BaseModel, ValidationError

from gateway.core.errors import PayloadError
from gateway.core.events import StreamEvent, parse_event
from gateway.core.messages import InboundMessage

PAYLOAD_FIELD: Final = "d"
SESSION_FIELD: Final = "s"
CHANNEL_FIELD: Final = "c"

_MAX_U64: Final = 2**64 - 1


def encode(model: BaseModel) -> str:
    """The JSON stored in an entry's ``d`` field."""
    return model.model_dump_json()


def _payload(fields: Mapping[str, str]) -> str:
    payload = fields.get(PAYLOAD_FIELD)
    if payload is None:
        raise PayloadError(f"stream entry has no {PAYLOAD_FIELD!r} field: {sorted(fields)}")
    return payload


def decode_inbound(fields: Mapping[str, str]) -> InboundMessage:
    """The message in an inbound entry; ``PayloadError`` if it is not valid JSON of one."""
    try:
        return InboundMessage.model_validate_json(_payload(fields))
    except ValidationError as exc:
        raise PayloadError(f"invalid inbound message: {exc.error_count()} error(s): {exc}") from exc


def decode_event(fields: Mapping[str, str]) -> StreamEvent:
    """The event in an outbound entry; ``PayloadError`` if it is not a known event."""
    try:
        return parse_event(_payload(fields))
    except ValidationError as exc:
        raise PayloadError(f"invalid stream event: {exc.error_count()} error(s): {exc}") from exc


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    """``"5-3"`` -> ``(5, 3)``; ``PayloadError`` for anything that is not a full stream id."""
    ms_text, sep, seq_text = entry_id.partition("-")
    if not sep or not ms_text.isdigit() or not seq_text.isdigit():
        raise PayloadError(f"not a stream id: {entry_id!r}")
    ms, seq = int(ms_text), int(seq_text)
    if ms > _MAX_U64 or seq > _MAX_U64:
        raise PayloadError(f"stream id out of range: {entry_id!r}")
    return ms, seq


def next_stream_id(entry_id: str) -> str:
    """The smallest id greater than ``entry_id`` (``"5-3"`` -> ``"5-4"``).

    Computed here rather than in Lua: Lua numbers are doubles and lose precision
    above 2**53, while sequence numbers go up to 2**64 - 1.
    """
    ms, seq = parse_stream_id(entry_id)
    if seq < _MAX_U64:
        return f"{ms}-{seq + 1}"
    if ms < _MAX_U64:
        return f"{ms + 1}-0"
    raise PayloadError(f"no stream id follows {entry_id!r}")


def pairs_to_dict(flat: Sequence[str]) -> dict[str, str]:
    """A raw ``[field, value, field, value, ...]`` reply (HGETALL, XRANGE entry fields,
    a script's list) as a mapping."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
