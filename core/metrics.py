"""Prometheus metrics of one gateway process, on a registry of their own.

Each ``GatewayMetrics`` owns a ``CollectorRegistry`` (not the global one), so
several apps in one process (tests, embedded use) never collide. Labels carry only
channel names, which come from the channel registry (bounded): never message
content, session keys or chat ids.

It lives in ``core`` so that both sides can take it: ``gateway`` serves it on
``GET /metrics`` and hands the same instance to its in-process ``workers.Worker``;
``channels`` keep asking only for small Protocols that this class satisfies.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

NAMESPACE = "gateway"
"""Every metric is named ``gateway_…``; process metrics are ``process_…``."""

TURN_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    """The counters and histograms the HTTP layer, deliverers and workers update.

    - ``messages_in{channel}``: inbound messages accepted onto the bus.
    - ``messages_out{channel}``: replies delivered (a run's final text posted or streamed).
    - ``turn_latency``: seconds from a turn's start to its final event (workers).
    - ``lease_waits``: signals that found their session's lease (or a chat's delivery
      lease) held by another (workers and deliverers).
    - ``redeliveries``: work processed more than once: a signal claimed from a dead
      consumer, or a turn re-run after a failed attempt (workers and deliverers).
    - ``dead_letters``: messages moved to the dead-letter stream (workers).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if registry is None:  # CPU, memory, open fds of this process; the Python version
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.messages_in = Counter(
            "messages_in",
            "Inbound messages accepted onto the bus.",
            ["channel"],
            registry=self.registry,
            namespace=NAMESPACE,
        )
        self.messages_out = Counter(
            "messages_out",
            "Replies delivered to a channel.",
            ["channel"],
            registry=self.registry,
            namespace=NAMESPACE,
        )
        self.turn_latency = Histogram(
            "turn_latency_seconds",
            "Seconds from the start of an agent turn to its final event.",
            buckets=TURN_LATENCY_BUCKETS,
            registry=self.registry,
            namespace=NAMESPACE,
        )
        self.lease_waits = Counter(
            "lease_waits",
            "Signals that found the session lease held.",
            registry=self.registry,
            namespace=NAMESPACE,
        )
        self.redeliveries = Counter(
            "redeliveries",
            "Signals processed more than once.",
            registry=self.registry,
            namespace=NAMESPACE,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Messages moved to the dead-letter stream.",
            registry=self.registry,
            namespace=NAMESPACE,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
