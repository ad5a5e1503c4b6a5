"""``make bench``: every benchmark, then each target of the issue next to its figure.

``python -m bench [sdk] [bus]`` runs a subset. Environment variables that shorten runs
are listed in each suite's docstring (``bench/sdk.py``, ``bench/bus.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from bench import sdk
from bench._stats import Target, target_table
from gateway.core.process import event_loop_name, run


def _hiredis() -> str:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return "no"
    return "yes"


Suite = Callable[[], Coroutine[Any, Any, list[Target]]]
"""A benchmark: prints its figures as it goes, returns the targets it measured."""
Loop = Callable[[Coroutine[Any, Any, list[Target]]], list[Target]]
"""Runs a suite to the end on an event loop of its own."""


def _on_asyncio(main: Coroutine[Any, Any, list[Target]]) -> list[Target]:
    return asyncio.run(main)


def _on_uvloop(main: Coroutine[Any, Any, list[Target]]) -> list[Target]:
    return run(main)


def run_all(selected: set[str]) -> None:
    """Each suite on its own event loop: the SDK's on asyncio's own (what an embedding
    program most likely runs), the bus's load generator on uvloop when installed (as
    the gateway and the worker: it shares their two cores, so it should cost little)."""
    suites: dict[str, tuple[Suite, Loop]] = {"sdk": (sdk.main, _on_asyncio)}
    try:
        from bench import bus

        suites["bus"] = (bus.main, _on_uvloop)
    except ImportError as exc:  # the bus benchmark needs redis-server on PATH
        print(f"bus benchmark unavailable: {exc}", file=sys.stderr)
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.1f}; python "
        f"{sys.version.split()[0]}; gateway/worker loop {event_loop_name()}; hiredis {_hiredis()}"
    )
    targets: list[Target] = []
    for name, (suite, loop) in suites.items():
        if selected and name not in selected:
            continue
        targets += loop(suite())
    print()
    for line in target_table(targets):
        print(line)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run_all(set(sys.argv[1:]))
