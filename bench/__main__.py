"""``make bench``: every benchmark, printing throughput and p50/p99 latency."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from bench import sdk


async def run_all(selected: set[str]) -> None:
    suites = {"sdk": sdk.main}
    try:
        from bench import bus

        suites["bus"] = bus.main
    except ImportError as exc:  # the bus benchmark needs redis-server on PATH
        print(f"bus benchmark unavailable: {exc}", file=sys.stderr)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    for name, suite in suites.items():
        if selected and name not in selected:
            continue
        for line in await suite():
            print(line, flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_all(set(sys.argv[1:])))
