"""The shared reader's ``XREAD``: what it covers, the command as sent, its reply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from gateway.channels.http.subscription import StreamPos
from gateway.core.bus.codec import pairs_to_dict


class Planned(NamedTuple):
    """Where a read reads one stream: after ``after`` (at ``pos``), for ``session_key``."""

    session_key: str
    after: str
    pos: StreamPos


Read = dict[str, Planned]
"""A read: each stream it covers."""


class XreadCommand:
    """Packs ``XREAD COUNT c BLOCK ms STREAMS ...`` for a ``Read``.

    A read names every followed stream, so it is re-sent whole after each reply: the
    streams' names are encoded once (not per read), only the positions anew.
    """

    def __init__(self, *, count: int, block_ms: int) -> None:
        args = (b"XREAD", b"COUNT", b"%d" % count, b"BLOCK", b"%d" % block_ms, b"STREAMS")
        self._head = b"".join(_bulk(arg) for arg in args)
        self._names: dict[str, bytes] = {}

    def pack(self, read: Read) -> bytes:
        names = self._names
        parts = [b"*%d\r\n" % (6 + 2 * len(read)), self._head]
        for stream in read:
            name = names.get(stream)
            if name is None:
                name = names[stream] = _bulk(stream.encode())
            parts.append(name)
        for planned in read.values():
            parts.append(_bulk(planned.after.encode()))
        if len(names) > 4 * len(read) + 64:  # forget the streams no longer followed
            self._names = {stream: names[stream] for stream in read}
        return b"".join(parts)


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def xread_batches(reply: object) -> list[tuple[str, Sequence[Any]]]:
    """A raw ``XREAD`` reply (RESP2 list, RESP3 map; None on timeout) as (stream, entries)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return [(str(k), cast(Sequence[Any], v)) for k, v in reply.items()]
    return [(str(k), cast(Sequence[Any], v)) for k, v in cast(list[Sequence[Any]], reply)]


def entry_fields(fields: object) -> Mapping[str, str]:
    """An entry's raw ``[field, value, ...]`` (or a mapping) as a mapping."""
    if isinstance(fields, Mapping):
        return cast(Mapping[str, str], fields)
    return pairs_to_dict(cast(Sequence[str], fields))
