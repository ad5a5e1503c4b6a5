"""The events a turn writes about itself: which failures are worth another attempt, and
the endings of an interrupted or dead-lettered turn (``workers.turn``)."""

from __future__ import annotations

from gateway.core.events import RunFailed, RunResult, RunStarted, StreamEvent


def is_attempt_failure(event: RunFailed) -> bool:
    """A provider failure worth another attempt; timeouts, a refused key or an unknown
    model are final (the chat gets the error at once)."""
    if event.permanent:
        return False
    return event.result is None or event.result.stop_reason == "error"


def interrupted_event(run_id: str, seq: int) -> RunFailed:
    """The end of a turn cancelled by a newer message (busy policy ``interrupt``)."""
    reason = "interrupted by a newer message"
    result = RunResult(stop_reason="interrupted", error=reason)
    return RunFailed(run_id=run_id, seq=seq, error=reason, result=result)


def dead_letter_events(
    run_id: str,
    next_seq: int,
    session_key: str,
    *,
    attempts: int,
    cause: str,
    message_ids: list[str],
) -> list[StreamEvent]:
    """What the chat sees when its messages are dead-lettered (``run.started`` first
    when this attempt published nothing yet, i.e. ``next_seq`` is 1)."""
    events: list[StreamEvent] = []
    if next_seq == 1:
        events.append(
            RunStarted(run_id=run_id, seq=1, session_key=session_key, message_ids=message_ids)
        )
        next_seq = 2
    text = f"Sorry, I could not process your message after {attempts} attempts."
    result = RunResult(stop_reason="error", error=cause)
    metadata = {"dead_lettered": True, "attempts": attempts}
    events.append(
        RunFailed(
            run_id=run_id,
            seq=next_seq,
            error=text,
            result=result,
            metadata=metadata,
            message_ids=message_ids,
        )
    )
    return events
