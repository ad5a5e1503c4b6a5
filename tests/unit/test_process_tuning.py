"""Process tuning of the gateway and worker: the event loop, frozen start-up objects."""

from __future__ import annotations

import asyncio
import gc

import pytest

from gateway.core import process


def test_run_uses_the_event_loop_it_names() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = process.run(loop_module())
    expected = "uvloop" if process.event_loop_name() == "uvloop" else "asyncio"
    assert module.split(".")[0] == expected


async def test_freeze_after_start_freezes_now_and_after_warm_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process, "WARM_UP_S", 0.0)
    thresholds = gc.get_threshold()
    try:
        warm = process.freeze_after_start()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == process.GC_THRESHOLDS
        gc.unfreeze()
        await asyncio.sleep(0.01)  # the warm-up freeze runs
        assert gc.get_freeze_count() > 0
        assert not warm.cancelled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
