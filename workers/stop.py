"""Ending a turn that the chat asked to stop (``core.bus.control``).

A stopped turn is final, unlike an interrupted one: it publishes ``run.failed``
(stop_reason ``cancelled``) and commits the cursor past the messages it covered,
so they are not run again. The history keeps what the chat saw: the user's
messages and the part of the reply that was already published (marked
``metadata.stopped``), so the next turn's model knows the answer was cut short.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.codec import decode_event, parse_stream_id
from gateway.core.bus.session_writer import DeliverySignal, SessionWriter
from gateway.core.errors import PayloadError
from gateway.core.events import RunFailed, RunResult, RunStarted, StreamEvent, TextDelta
from gateway.core.messages import InboundMessage, Message
from gateway.core.sessions.base import Session, SessionStore

STOPPED_TEXT = "stopped by the user"
SHOWN_SCAN = 2_000
"""Outbound entries read back (newest first) to find what the stopped run showed."""


class TurnStopped(Exception):
    """A stop request covers the running turn."""

    def __init__(self, upto: str) -> None:
        super().__init__(f"stop requested for messages up to {upto}")
        self.upto = upto
        """The newest message the chat had sent when it asked to stop."""

    def covered(
        self, entries: Sequence[tuple[str, InboundMessage]]
    ) -> list[tuple[str, InboundMessage]]:
        """The ``entries`` the stop is about: a message steered into the turn after the
        stop was asked is left pending, for the next turn to answer."""
        upto = parse_stream_id(self.upto)
        return [entry for entry in entries if parse_stream_id(entry[0]) <= upto]


def stopped_events(run_id: str, next_seq: int, session_key: str) -> list[StreamEvent]:
    """The end of a stopped turn (``run.started`` first when nothing was published yet)."""
    events: list[StreamEvent] = []
    if next_seq == 1:
        events.append(RunStarted(run_id=run_id, seq=1, session_key=session_key))
        next_seq = 2
    result = RunResult(stop_reason="cancelled", error=STOPPED_TEXT)
    events.append(RunFailed(run_id=run_id, seq=next_seq, error=STOPPED_TEXT, result=result))
    return events


async def commit_stopped(
    writer: SessionWriter,
    sessions: SessionStore,
    entries: Sequence[tuple[str, InboundMessage]],
    run_id: str,
    *,
    events: Sequence[StreamEvent],
    maxlen: int,
    signal: DeliverySignal | None,
) -> None:
    """Commit the stopped turn in one fenced script: its final ``events``, its messages
    and the reply shown so far in the history, and the cursor past them."""
    key = writer.session_key
    session = await sessions.load(key) or Session(key=key)
    session.messages.extend(message.to_user_message() for _, message in entries)
    shown = await shown_text(writer.redis, key, run_id)
    if shown:
        reply: Message = {"role": "assistant", "content": shown, "metadata": {"stopped": True}}
        session.messages.append(reply)
    await writer.commit(
        session=session,
        cursor=entries[-1][0],
        entry_ids=[entry_id for entry_id, _ in entries],
        events=events,
        maxlen=maxlen,
        signal=signal,
    )


async def shown_text(redis: Redis, session_key: str, run_id: str) -> str:
    """The text deltas of the newest attempt of ``run_id`` on the outbound stream."""
    raw = await redis.xrevrange(keys.outbound(session_key), count=SHOWN_SCAN)
    pieces: list[str] = []
    for _, fields in raw:
        try:
            event = decode_event(fields)
        except PayloadError:
            continue  # logged by every reader of the stream; nothing to show from it
        if event.run_id != run_id:
            continue
        if isinstance(event, RunStarted):
            break
        if isinstance(event, TextDelta):
            pieces.append(event.delta)
    return "".join(reversed(pieces))
