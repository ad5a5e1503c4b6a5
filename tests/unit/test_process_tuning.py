"""Process tuning of the gateway and worker: log handlers, event loop, frozen start-up objects."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator

import pytest
from rich.console import Console
from rich.logging import RichHandler

from core import process
from gateway import cli


@pytest.fixture
def bare_root_logger() -> Iterator[logging.Logger]:
    """The root logger as a fresh process has it (no handlers), restored afterwards."""
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.level)
    try:
        yield root
    finally:
        root.handlers, root.level = saved[0], saved[1]
        access.setLevel(saved[2])


def test_off_a_terminal_records_are_plain_and_access_lines_are_off(
    bare_root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, force_terminal=False))
    bare_root_logger.handlers = []  # pytest's capture handlers join after fixtures
    cli._logging(verbose=False)
    (handler,) = bare_root_logger.handlers
    assert not isinstance(handler, RichHandler)
    assert not logging.getLogger("aiohttp.access").isEnabledFor(logging.INFO)


def test_verbose_logs_access_lines(bare_root_logger: logging.Logger) -> None:
    bare_root_logger.handlers = []
    cli._logging(verbose=True)
    assert logging.getLogger("aiohttp.access").isEnabledFor(logging.INFO)


def test_on_a_terminal_records_go_through_rich(
    bare_root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "err_console", Console(stderr=True, force_terminal=True))
    bare_root_logger.handlers = []  # pytest's capture handlers join after fixtures
    cli._logging(verbose=False)
    (handler,) = bare_root_logger.handlers
    assert isinstance(handler, RichHandler)


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
    try:
        warm = process.freeze_after_start()
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        await asyncio.sleep(0.01)  # the warm-up freeze runs
        assert gc.get_freeze_count() > 0
        assert not warm.cancelled()
    finally:
        gc.unfreeze()
