"""What the bus benchmark's figures are made of: pauses, stalls, and the CPU budget.

``pause_lines``: gen-2 collections and event-loop stalls of the gateway and the worker
during the measured phases (from the log ``bench._launch`` writes), and how many of
the slow first deltas (over the p99 target) came within ``NEAR_S`` of one.
``budget_lines``: the CPU time one message costs, summed over every process on the
machine, against the 2 cores: the highest rate the machine could sustain if every
core were busy, and the highest one process allows (it runs on one core).
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NEAR_S = 0.2
"""A first delta this soon after a pause or stall began is counted as behind it."""
MODULES = {"gateway": "gateway", "workers": "worker"}


@dataclass
class Pauses:
    """Per process (``gateway``, ``worker``): (start epoch s, wall ms) of each event."""

    gc: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    gc_cpu_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    stalls: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    def starts(self) -> list[float]:
        found = [at for events in (*self.gc.values(), *self.stalls.values()) for at, _ in events]
        return sorted(found)


def read_pauses(log: Path, since: float) -> Pauses:
    pauses = Pauses()
    if not log.exists():
        return pauses
    for row in log.read_text().splitlines():
        fields = row.split()
        if fields[0] == "stall":
            _, module, at, ms = fields
            if float(at) >= since:
                pauses.stalls[MODULES[module]].append((float(at), float(ms)))
            continue
        module, at, wall, cpu = fields
        if float(at) >= since:
            pauses.gc[MODULES[module]].append((float(at), float(wall)))
            pauses.gc_cpu_ms[MODULES[module]].append(float(cpu))
    return pauses


def pause_lines(pauses: Pauses) -> list[str]:
    lines = []
    for name in MODULES.values():
        gcs, stalls = pauses.gc.get(name, []), pauses.stalls.get(name, [])
        worst_gc = max((ms for _, ms in gcs), default=0.0)
        worst_cpu = max(pauses.gc_cpu_ms.get(name, []), default=0.0)
        worst_stall = max((ms for _, ms in stalls), default=0.0)
        lines.append(
            f"{name} while measured: {len(gcs)} gen-2 GCs (longest {worst_gc:.1f} ms wall,"
            f" {worst_cpu:.1f} ms CPU); {len(stalls)} event-loop stalls over 5 ms"
            f" (longest {worst_stall:.1f} ms)"
        )
    return lines


def tail_line(
    first_delta_ms: Sequence[float], first_delta_at: Sequence[float], pauses: Pauses, over: float
) -> str:
    """How many first deltas over ``over`` ms came within ``NEAR_S`` after a GC or stall."""
    starts = pauses.starts()
    slow = [at for ms, at in zip(first_delta_ms, first_delta_at, strict=True) if ms > over]
    near = 0
    for at in slow:
        i = bisect.bisect_right(starts, at)
        # The first delta is stamped when it arrives; the pause began before it.
        if i and at - starts[i - 1] <= NEAR_S + over / 1000:
            near += 1
    return (
        f"first deltas over {over:g} ms: {len(slow)}, of which {near} within"
        f" {NEAR_S:g} s after a gen-2 GC or event-loop stall of the gateway or worker"
    )


def budget_lines(cpu_ms: dict[str, float], rate: float) -> list[str]:
    """CPU-seconds per message summed over processes, against the machine's cores."""
    cores = os.cpu_count() or 1
    total = sum(cpu_ms.values())
    busiest = max(cpu_ms, key=lambda name: cpu_ms[name])
    by_cores = cores * 1000 / total if total else 0.0
    by_process = 1000 / cpu_ms[busiest] if cpu_ms[busiest] else 0.0
    parts = " + ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms.items())
    return [
        f"CPU budget: {parts} = {total:.2f} ms of CPU per message;"
        f" {cores} cores give at most {by_cores:.0f} msgs/s,"
        f" the {busiest} (one process, one core) at most {by_process:.0f} msgs/s;"
        f" measured {rate:.0f} msgs/s ({rate * total / 1000:.2f} of {cores} cores busy)",
        f"CPU budget: 1,000 msgs/s on {cores} cores needs <= {cores:.2f} ms per message"
        f" summed over all processes (now {total:.2f} ms, {total / cores:.1f}x over)",
    ]
