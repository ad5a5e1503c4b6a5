"""Run a module as ``__main__`` with optional speedups hidden: the bench's A/B switch.

``python -m bench._launch [--no-hiredis] [--no-uvloop] [--no-gc-freeze] MODULE
ARGS...``: a hidden package fails to import, as where it is not installed, so redis-py
falls back to its Python reply parser and ``core.process.run`` to asyncio's loop;
``--no-gc-freeze`` skips ``core.process.freeze_after_start`` (the freeze and the raised
GC thresholds: Python's GC defaults). With ``BENCH_GC_LOG`` set, every gen-2 collection
is appended to that file at exit (one line each: module, start time (epoch s), pause in
wall ms and in CPU ms), and so is every event-loop stall (``stall <module> <epoch s>
<ms>``): a timer due every ``LAG_TICK_S`` that ran more than ``STALL_MS`` late, i.e. the
loop was busy (or the process descheduled) that long. The tail of first-delta latency is
made of these.
"""

from __future__ import annotations

import atexit
import gc
import os
import runpy
import sys
import time
from typing import Any


def _record_gen2(path: str, module: str) -> None:
    pauses: list[tuple[float, float, float]] = []
    started = [0.0, 0.0, 0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[:] = time.time(), time.perf_counter(), time.thread_time()
        else:
            wall = (time.perf_counter() - started[1]) * 1000
            pauses.append((started[0], wall, (time.thread_time() - started[2]) * 1000))

    def report() -> None:
        if os.environ.get("BENCH_GC_CENSUS"):
            _census(path + f".{module}.census")
        with open(path, "a") as out:
            out.writelines(f"{module} {at:.3f} {wall:.1f} {cpu:.1f}\n" for at, wall, cpu in pauses)

    gc.callbacks.append(callback)
    atexit.register(report)


LAG_TICK_S = 0.01
STALL_MS = 5.0


def _watch_loop_lag(path: str, module: str) -> None:
    """Start a lag probe on the process's loop once it runs (``freeze_after_start`` is
    the first call both processes make inside it); the stalls go to ``path`` at exit."""
    import asyncio

    from gateway.core import process

    stalls: list[tuple[float, float]] = []
    freeze = process.freeze_after_start

    def tick(loop: asyncio.AbstractEventLoop, due: float) -> None:
        late_ms = (loop.time() - due) * 1000
        if late_ms > STALL_MS:
            stalls.append((time.time() - late_ms / 1000, late_ms))
        loop.call_at(loop.time() + LAG_TICK_S, tick, loop, loop.time() + LAG_TICK_S)

    def freeze_and_watch() -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + LAG_TICK_S, tick, loop, loop.time() + LAG_TICK_S)
        return freeze()

    def report() -> None:
        with open(path, "a") as out:
            out.writelines(f"stall {module} {at:.3f} {ms:.1f}\n" for at, ms in stalls)

    process.freeze_after_start = freeze_and_watch
    atexit.register(report)


def _census(path: str) -> None:
    """What the collector still tracks (not frozen), by type: where gen-2 time goes."""
    from collections import Counter

    counts = Counter(type(o).__name__ for o in gc.get_objects())
    with open(path, "w") as out:
        out.write(f"frozen {gc.get_freeze_count()} tracked {sum(counts.values())}\n")
        out.writelines(f"{n} {name}\n" for name, n in counts.most_common(25))


def _skip_gc_freeze() -> None:
    import asyncio

    from gateway.core import process

    def no_freeze() -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(0, lambda: None)

    process.freeze_after_start = no_freeze


def main() -> None:
    args = sys.argv[1:]
    for flag, package in (("--no-hiredis", "hiredis"), ("--no-uvloop", "uvloop")):
        if flag in args:
            args.remove(flag)
            sys.modules[package] = None  # type: ignore[assignment]  # import now fails
    if "--no-gc-freeze" in args:
        args.remove("--no-gc-freeze")
        _skip_gc_freeze()
    module, rest = args[0], args[1:]
    if os.environ.get("BENCH_GC_LOG"):
        _record_gen2(os.environ["BENCH_GC_LOG"], module)
        _watch_loop_lag(os.environ["BENCH_GC_LOG"], module)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
