"""What the bus benchmark's figures are made of: pauses, stalls, and the CPU budget.

``pause_lines``: gen-2 collections and event-loop stalls of the gateway and the worker
during the measured phases (from the log ``bench._launch`` writes); ``tail_line``: how
many of the slow first deltas (over the p99 target) waited through one.
``budget_lines``: the CPU time one message costs, summed over every process on the
machine, against the 2 cores: the highest rate the machine could sustain if every
core were busy, and the highest one process allows (it runs on one core); and the
CPU other jobs on the machine took meanwhile (the development machine is shared).
"""

from __future__ import annotations

import bisect
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LONGEST_PAUSE_S = 5.0
"""Pauses are looked for this far back from a first delta's POST."""
MODULES = {"gateway": "gateway", "gateway.workers": "worker"}


@dataclass
class Pauses:
    """Per process (``gateway``, ``worker``): (start epoch s, wall ms) of each event."""

    gc: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    gc_cpu_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    stalls: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))


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


@dataclass
class LatencySample:
    """One latency run's first deltas and what else happened meanwhile."""

    first_delta_ms: Sequence[float]
    first_delta_at: Sequence[float]
    client_stalls: list[tuple[float, float]]
    """The load generator's own loop stalls (``bench._load.LoopProbe``)."""
    others_cores: float
    """Cores the machine spent on processes other than the benchmark's during the run."""


def tail_line(sample: LatencySample, pauses: Pauses, over: float) -> str:
    """How many first deltas over ``over`` ms waited through a gen-2 GC, else an
    event-loop stall of the gateway or the worker, else one of the load generator
    (a pause overlapping the time from the POST to the first delta)."""
    gcs = sorted(event for events in pauses.gc.values() for event in events)
    stalls = sorted(event for events in pauses.stalls.values() for event in events)
    client = sorted(sample.client_stalls)
    slow = [
        (at, ms)
        for ms, at in zip(sample.first_delta_ms, sample.first_delta_at, strict=True)
        if ms > over
    ]
    counts = [0, 0, 0]
    for at, ms in slow:
        for i, events in enumerate((gcs, stalls, client)):
            if _overlaps(events, at - ms / 1000, at):
                counts[i] += 1
                break
    return (
        f"first deltas over {over:g} ms: {len(slow)}; waited through a gen-2 GC {counts[0]},"
        f" a gateway/worker loop stall {counts[1]}, a load-generator stall {counts[2]},"
        f" none of these {len(slow) - sum(counts)}; other jobs on the machine used"
        f" {sample.others_cores:.2f} cores meanwhile"
    )


def _overlaps(events: list[tuple[float, float]], start: float, end: float) -> bool:
    """Any (start epoch s, ms) event overlapping [start, end]; ``events`` sorted."""
    i = bisect.bisect_right(events, (end, float("inf")))
    while i > 0:
        i -= 1
        at, ms = events[i]
        if at + ms / 1000 >= start:
            return True
        if at < start - LONGEST_PAUSE_S:
            return False
    return False


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine (all cores, every process) from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def budget_lines(cpu_ms: dict[str, float], rate: float, machine_ms: float) -> list[str]:
    """CPU-seconds per message summed over processes, against the machine's cores;
    ``machine_ms``: what the whole machine spent per message (others' jobs included)."""
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
        f" measured {rate:.0f} msgs/s: these processes kept {rate * total / 1000:.2f} of"
        f" {cores} cores busy, other processes on the machine"
        f" {rate * max(0.0, machine_ms - total) / 1000:.2f}",
        f"CPU budget: 1,000 msgs/s on {cores} cores needs <= {cores:.2f} ms per message"
        f" summed over all processes (now {total:.2f} ms, {total / cores:.1f}x over)",
    ]
