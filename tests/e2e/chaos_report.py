"""What a chaos run (``tests/e2e/chaos.py``) measures, and how it is judged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChaosConfig:
    chats: int = 30
    messages: int = 300
    send_seconds: float = 20.0
    """How long the clients take to send everything at the least (chaos happens
    meanwhile); longer when the bus falls behind (see ``window``)."""
    window: int = 3
    """Unanswered messages a chat may have before its client waits for a reply: the
    offered load follows what the machine sustains, so no chat's backlog reaches the
    agent's cap (which would drop messages by design)."""
    workers: int = 3
    kill_every_s: tuple[float, float] = (1.0, 3.0)
    repost_share: float = 0.1
    """Messages POSTed again (same key) after their 202."""
    duplicate_share: float = 0.05
    """Messages POSTed twice at once (same key)."""
    model_chunk_delay_s: float = 0.02
    settle_timeout_s: float = 90.0
    seed: int = 0


@dataclass
class Accepted:
    session_key: str
    message_id: str
    text: str
    sent_at: float

    @property
    def answer_key(self) -> str:
        """Message ids are stream entry ids: unique within their chat only."""
        return f"{self.session_key} {self.message_id}"


@dataclass
class ChaosReport:
    accepted: int = 0
    lost: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    dead_lettered: int = 0
    pending: dict[str, int] = field(default_factory=dict)
    mismatched_bodies: list[str] = field(default_factory=list)
    post_retries: int = 0
    worker_kills: int = 0
    worker_start_failures: list[str] = field(default_factory=list)
    """Replacement workers not ready in time (killed and started again)."""
    redis_restarts: int = 0
    gateway_restarts: int = 0
    reply_seconds: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} lost: {self.lost[:5]}")
        if self.out_of_order:
            found.append(f"{len(self.out_of_order)} chats out of order: {self.out_of_order[:3]}")
        if self.doubled:
            found.append(f"{len(self.doubled)} doubled: {self.doubled[:5]}")
        if self.dead_lettered:
            found.append(f"{self.dead_lettered} dead-lettered")
        if any(self.pending.values()):
            found.append(f"left pending: {self.pending}")
        if self.mismatched_bodies:
            found.append(f"repeated POSTs with another 202: {self.mismatched_bodies[:3]}")
        return found

    def percentile(self, q: float) -> float:
        if not self.reply_seconds:
            return float("nan")
        ordered = sorted(self.reply_seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        return "\n".join(
            [
                f"accepted         {self.accepted} messages in {self.elapsed_s:.1f} s",
                f"lost             {len(self.lost)}",
                f"out of order     {len(self.out_of_order)} chats",
                f"doubled          {len(self.doubled)}",
                f"dead-lettered    {self.dead_lettered}",
                f"left pending     {sum(self.pending.values())} {self.pending}",
                f"repeated POSTs with another 202: {len(self.mismatched_bodies)}",
                f"chaos            {self.worker_kills} worker kills, {self.redis_restarts} "
                f"Redis restarts, {self.gateway_restarts} gateway restarts, "
                f"{self.post_retries} POST retries, "
                f"{len(self.worker_start_failures)} worker starts failed "
                f"{self.worker_start_failures[:2]}",
                f"time to reply    p50 {self.percentile(0.5):.3f} s, "
                f"p99 {self.percentile(0.99):.3f} s, max {self.percentile(1.0):.3f} s",
            ]
        )


def first_difference(got: list[Any], expected: list[Any]) -> str:
    for n, (g, e) in enumerate(zip(got, expected, strict=False)):
        if g != e:
            return f"#{n}: got {g}, expected {e}"
    return f"{len(got)} replies for {len(expected)} messages"
