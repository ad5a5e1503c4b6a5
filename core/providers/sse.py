"""Server-sent events as the chat completions stream uses them: each event's ``data``.

Lines end in LF, CRLF or CR (also when a CRLF is split between two reads); ``data``
lines of one event are joined with LF; a blank line ends the event. The other fields
(``event``, ``id``, ``retry``) and comments are read past: a chat completions stream
carries everything in ``data``, errors included. An event without data is not
dispatched, as the SSE specification says. An event (or a line) bigger than
``MAX_EVENT_BYTES`` is refused: a server that never ends one would fill the memory.
"""

from __future__ import annotations

_LF = b"\n"
_CR = b"\r"

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""Far above any chunk a model streams (a whole file in a tool call's arguments included)."""


class EventTooLarge(ValueError):
    """An event, or a line, passed ``MAX_EVENT_BYTES`` before it ended."""


class SSEDataDecoder:
    """Feed the body's bytes as they arrive; each call returns the events completed."""

    __slots__ = ("_data", "_limit", "_skip_lf", "_tail")

    def __init__(self, *, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._tail: list[bytes] = []
        """Bytes of the current, unfinished line (several reads for a long line)."""
        self._data: list[bytes] = []
        """The ``data`` values of the current, unfinished event."""
        self._skip_lf = False
        """The last read ended in CR: a LF starting the next one ends no further line."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events ``chunk`` completes; ``EventTooLarge`` past the limit."""
        events = self._feed(chunk)
        # Bytes held for the unfinished line and event.
        held = sum(map(len, self._tail)) + sum(map(len, self._data))
        if held > self._limit:
            raise EventTooLarge(f"an event over {self._limit} bytes")
        return events

    def _feed(self, chunk: bytes) -> list[bytes]:
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == _LF:
                chunk = chunk[1:]
        if _CR in chunk:
            self._skip_lf = chunk.endswith(_CR)
            chunk = chunk.replace(b"\r\n", _LF).replace(_CR, _LF)
        if _LF not in chunk:
            if chunk:
                self._tail.append(chunk)
            return []
        if self._tail:
            self._tail.append(chunk)
            chunk = b"".join(self._tail)
            self._tail = []
        lines = chunk.split(_LF)
        last = lines.pop()
        if last:
            self._tail.append(last)
        return self._events(lines)

    def _events(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else _LF.join(data))
                    data = self._data = []
            elif line[:6] == b"data: ":
                data.append(line[6:])
            elif line[:5] == b"data:":
                data.append(line[5:])
            elif line == b"data":
                data.append(b"")
        return events
