"""Processes the benchmarks start: the fake model server, and CPU time of any process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of stat(5)): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextlib.asynccontextmanager
async def model_server(env: Mapping[str, str] | None = None) -> AsyncIterator[tuple[str, int]]:
    """``python -m bench.model_server`` in its own process: yields (base_url, pid)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.model_server",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        if not line.startswith(b"ready "):
            raise RuntimeError(f"bench model server did not start: {line!r}")
        port = int(line.split()[1])
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
