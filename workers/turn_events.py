"""How one turn's events reach the bus (the order of writes is ``workers.turn``'s).

``TurnEvents`` stamps each event with the inbound ids it answers, publishes what the
outbox releases while the runtime streams, keeps the batch holding the terminal event
(and anything after it) for the commit, and starts an ending the turn writes itself
(stop, interrupt, dead letter) with ``run.started`` while that is not known to be on
the bus.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.bus.session_writer import DeliverySignal, SessionWriter
from gateway.core.events import ChatAddress, RunStarted, StreamEvent, addressed, is_terminal
from gateway.core.settings import Settings
from gateway.workers.busy import Entry, TurnPlan
from gateway.workers.coalesce import CoalescingOutbox
from gateway.workers.endings import interrupted_event


class TurnEvents:
    """The events of one turn of ``plan`` on the session ``lease`` holds."""

    def __init__(
        self,
        lease: SessionWriter,
        plan: TurnPlan,
        outbox: CoalescingOutbox,
        *,
        settings: Settings,
        deliver_channels: frozenset[str],
        covered: Callable[[], list[Entry]],
    ) -> None:
        self._lease = lease
        self._plan = plan
        self._outbox = outbox
        self._settings = settings
        self._deliver_channels = deliver_channels
        self._covered = covered
        """The batch and every message steered into the turn so far."""
        self._key = lease.session_key
        self._channel = plan.batch[0][1].channel
        self.address = ChatAddress.of(plan.batch[0][1])
        self._started_out = False
        """True once a publish holding run.started returned: it is on the bus. Until
        then (it may linger in the outbox, or its write was cut short) an ending the
        turn writes itself (stop, interrupt, dead letter) starts the run again."""
        self.final: list[StreamEvent] = []
        """The batch holding the terminal event (and anything after it): written by the commit."""

    def stamped(self, event: StreamEvent, covered: list[Entry] | None = None) -> StreamEvent:
        """The event naming the inbound ids it answers (run.started: the batch so far;
        the terminal event: ``covered``, by default every message the turn took in)."""
        if isinstance(event, RunStarted):
            ids = [entry_id for entry_id, _ in self._plan.batch]
            address = event.address or self.address
            return event.model_copy(update={"message_ids": ids, "address": address})
        if is_terminal(event):
            ids = [entry_id for entry_id, _ in (self._covered() if covered is None else covered)]
            return event.model_copy(update={"message_ids": ids})
        return event

    async def publish_all(self) -> None:
        """Publish what the outbox releases until it ends (the publisher task)."""
        async for batch in self._outbox.batches():
            if self.final or any(is_terminal(event) for event in batch):
                # The run has ended: the commit, the very next write, carries the rest of
                # its events (one round trip less, and one wake-up less for each reader).
                self.final.extend(batch)
            else:
                await self.publish(batch)

    async def publish(self, events: list[StreamEvent]) -> None:
        """``PUBLISH_EVENTS``, fenced by the lease, with the deliverer's wake-up."""
        await self._lease.publish(
            addressed(events, self.address),
            maxlen=self._settings.worker.stream_maxlen,
            signal=self.signal_for(events),
        )
        if any(isinstance(event, RunStarted) for event in events):
            self._started_out = True

    def ending_seq(self) -> int:
        """The ``seq`` of an ending the turn writes itself: 1 (the ending starts with
        run.started) while run.started is not known to be on the bus; the events still
        in the outbox are dropped, so 1, 2 follow whatever the bus holds of this run."""
        return self._outbox.last_seq + 1 if self._started_out else 1

    def interrupted(self) -> list[StreamEvent]:
        """The ending of a turn a newer message interrupted (busy policy ``interrupt``)."""
        seq = self.ending_seq()
        events: list[StreamEvent] = []
        if seq == 1:
            start = RunStarted(run_id=self._plan.run_id, seq=1, session_key=self._key)
            events.append(self.stamped(start))
            seq = 2
        events.append(interrupted_event(self._plan.run_id, seq))
        return events

    def signal_for(self, events: list[StreamEvent]) -> DeliverySignal | None:
        """Wake the deliverer with the write that carries run.started (once per turn,
        again only when that write may not have reached the bus)."""
        if not any(isinstance(event, RunStarted) for event in events):
            return None
        if self._channel not in self._deliver_channels:
            return None
        return DeliverySignal(self._channel, self._settings.worker.ready_partitions)
