"""Process-wide settings of the long-running processes (gateway, worker): event loop, GC.

``run`` is ``asyncio.run`` on uvloop when the ``uvloop`` package is installed (the
``speedups`` extra), else on the standard loop. ``freeze_long_lived`` moves what
start-up created (modules, settings, compiled models: ~150k objects in the gateway)
out of the collector's sight: without it every gen-2 collection walks them all, a
95–139 ms pause in the gateway every 20–30 s under load.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

WARM_UP_S = 20.0
"""After start-up, first requests still import and build things that live for good."""

GC_THRESHOLDS = (20_000, 20, 20)
"""Collections per allocations, young to old (Python's default: 700, 10, 10).

A message makes a few thousand short-lived containers in each process (event models,
decoded JSON, asyncio tasks and futures), nearly all freed by reference counting. At
700 the young generation was collected several times a message and the oldest one
every few seconds (8-12 gen-2 collections of 25-55 ms CPU each in a 40 s bench run of
the worker): pauses that made the first-delta tail. Cycles still get collected, just
in larger, rarer batches.
"""


def event_loop_name() -> str:
    """``uvloop`` when ``run`` will use it, else ``asyncio``."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop if installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def freeze_long_lived() -> None:
    """Collect once, then exclude every surviving object from later collections."""
    gc.collect()
    gc.freeze()
    log.debug("gc: %d objects frozen", gc.get_freeze_count())


def _freeze_warm() -> None:
    # No collect here: under load it would be the very pause this avoids. Whatever
    # cyclic garbage exists at this moment stays frozen: a one-time, bounded cost.
    gc.freeze()
    log.debug("gc: %d objects frozen after warm-up", gc.get_freeze_count())


def freeze_after_start() -> asyncio.TimerHandle:
    """Freeze now (start-up is done) and once more after ``WARM_UP_S`` of serving;
    from now on collect at ``GC_THRESHOLDS``."""
    freeze_long_lived()
    gc.set_threshold(*GC_THRESHOLDS)
    return asyncio.get_running_loop().call_later(WARM_UP_S, _freeze_warm)
