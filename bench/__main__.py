"""``make bench``: every benchmark, then each target of the issue next to its figure.

``python -m bench [sdk] [bus]`` runs a subset. Environment variables that shorten runs
are listed in each suite's docstring (``bench/sdk.py``, ``bench/bus.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable

from bench import sdk
from bench._stats import Target, target_table
from gateway.core.process import event_loop_name


def _hiredis() -> str:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return "no"
    return "yes"


Suite = Callable[[], Awaitable[list[Target]]]
"""A benchmark: prints its figures as it goes, returns the targets it measured."""


async def run_all(selected: set[str]) -> None:
    suites: dict[str, Suite] = {"sdk": sdk.main}
    try:
        from bench import bus

        suites["bus"] = bus.main
    except ImportError as exc:  # the bus benchmark needs redis-server on PATH
        print(f"bus benchmark unavailable: {exc}", file=sys.stderr)
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.1f}; python "
        f"{sys.version.split()[0]}; gateway/worker loop {event_loop_name()}; hiredis {_hiredis()}"
    )
    targets: list[Target] = []
    for name, suite in suites.items():
        if selected and name not in selected:
            continue
        targets += await suite()
    print()
    for line in target_table(targets):
        print(line)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_all(set(sys.argv[1:])))
