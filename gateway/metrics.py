"""The gateway's Prometheus metrics: defined in ``core.metrics`` (workers record them too)."""

from gateway.core.metrics import TURN_LATENCY_BUCKETS, GatewayMetrics

__all__ = ["TURN_LATENCY_BUCKETS", "GatewayMetrics"]
