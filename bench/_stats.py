"""Latency statistics and the printed table shared by the benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    count: int
    seconds: float
    latencies_ms: Sequence[float]
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index]

    def line(self) -> str:
        note = f"  {self.note}" if self.note else ""
        return (
            f"{self.name:<46} {self.rate:>9.1f}/s  p50 {self.percentile(50):7.3f} ms"
            f"  p99 {self.percentile(99):7.3f} ms  (n={self.count}){note}"
        )


def median_of(figures: Sequence[Figure]) -> Figure:
    """The run with the median throughput: benchmarks repeat and report the middle one."""
    ordered = sorted(figures, key=lambda f: f.rate)
    middle = ordered[len(ordered) // 2]
    rates = ", ".join(f"{f.rate:.0f}" for f in figures)
    return Figure(
        middle.name,
        middle.count,
        middle.seconds,
        middle.latencies_ms,
        f"median of {len(figures)} runs [{rates}]/s",
    )


def p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass(frozen=True)
class Target:
    """One target of the issue next to its measured figure."""

    name: str
    figure: str
    target: str
    met: bool
    reference: str = ""
    """The same figure last round (what the issue quotes)."""


def target_table(targets: Sequence[Target]) -> list[str]:
    width = max((len(t.name) for t in targets), default=10)
    head = f"{'target':<{width}}  {'measured':>24}  {'reference':>18}  {'target':>16}  met"
    lines = [head]
    for t in targets:
        verdict = "yes" if t.met else "NO"
        lines.append(
            f"{t.name:<{width}}  {t.figure:>24}  {t.reference:>18}  {t.target:>16}  {verdict}"
        )
    return lines
