"""The one logging setup: plain one-line records, JSON with session and run, levels,
probes at DEBUG; and the shutdown signals' messages."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Iterator

import pytest

from gateway._signals import FORCED_EXIT_CODE, GracefulStop
from gateway.core.logcontext import log_context
from gateway.logsetup import setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: logging.getLogger(name).level for name in ("arq", "aiohttp.access", "x")}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, named_level in named.items():
        logging.getLogger(name).setLevel(named_level)


def test_plain_records_are_one_line_whatever_their_length() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "plain", stream=stream)
    log = logging.getLogger("gateway.test")
    long_text = "word " * 100
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed: %s", long_text)
    with log_context(session_key="http:1", run_id="1-0"):
        log.info("inside a turn")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "ERROR gateway.test: failed: word" in lines[0] and "ValueError: boom" in lines[0]
    assert lines[1].endswith("inside a turn [session=http:1 run=1-0]")


def test_auto_is_plain_off_a_terminal() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "auto", stream=stream)
    logging.getLogger("gateway.test").info("hello")
    assert " INFO gateway.test: hello" in stream.getvalue()


def test_json_records_carry_logger_level_session_and_run() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream=stream)
    log = logging.getLogger("gateway.test")
    log.debug("outside")
    with log_context(session_key="telegram:42", run_id="17-0"):
        log.warning("inside %d", 1)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == "gateway.test" and first["level"] == "DEBUG"
    assert "session_key" not in first and first["message"] == "outside"
    assert second["session_key"] == "telegram:42" and second["run_id"] == "17-0"
    assert second["level"] == "WARNING" and second["message"] == "inside 1"


def test_levels_and_per_logger_levels() -> None:
    stream = io.StringIO()
    setup_logging("WARNING", "plain", {"x": "debug"}, stream=stream)
    logging.getLogger("gateway.test").info("hidden")
    logging.getLogger("x").debug("shown")
    logging.getLogger("arq.worker").info("shutdown on SIGUSR1")  # quiet by default
    assert stream.getvalue().count("\n") == 1 and "shown" in stream.getvalue()


def test_health_and_metrics_requests_are_debug() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "plain", stream=stream)
    access = logging.getLogger("aiohttp.access")
    access.info('127.0.0.1 "GET /healthz HTTP/1.1" 200')
    access.info('127.0.0.1 "GET /metrics HTTP/1.1" 200')
    access.info('127.0.0.1 "POST /v1/messages HTTP/1.1" 202')
    assert stream.getvalue() == ""  # access lines are off by default (their CPU cost)
    setup_logging("INFO", "plain", {"aiohttp.access": "INFO"}, stream=stream)
    access.info('127.0.0.1 "GET /healthz HTTP/1.1" 200')
    access.info('127.0.0.1 "POST /v1/messages HTTP/1.1" 202')
    assert stream.getvalue().count("\n") == 1 and "/v1/messages" in stream.getvalue()
    setup_logging("INFO", "plain", {"aiohttp.access": "DEBUG"}, stream=stream)
    access.info('127.0.0.1 "GET /readyz HTTP/1.1" 200')
    assert "DEBUG aiohttp.access" in stream.getvalue()


def test_debug_level_shows_every_request() -> None:
    stream = io.StringIO()
    setup_logging("DEBUG", "plain", stream=stream)
    logging.getLogger("aiohttp.access").info('127.0.0.1 "POST /v1/messages HTTP/1.1" 202')
    assert "/v1/messages" in stream.getvalue()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        setup_logging("INFO", "xml")  # type: ignore[arg-type]


async def test_signals_name_themselves_then_wait_then_force(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exits: list[int] = []
    stop = GracefulStop("the worker", grace_s=5, exit=exits.append)
    with caplog.at_level(logging.INFO, logger="gateway"):
        stop.on_signal(signal.SIGINT)
        assert stop.event.is_set() and not exits
        stop.on_signal(signal.SIGINT)
        assert not exits
        stop.on_signal(signal.SIGTERM)
    assert exits == [FORCED_EXIT_CODE]
    first, second, third = (r.getMessage() for r in caplog.records)
    assert first == "SIGINT received: stopping the worker"
    assert second.startswith("SIGINT received again: still stopping the worker, waiting up to 5s")
    assert third.startswith("SIGTERM received a third time: exiting now")
