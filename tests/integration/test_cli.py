"""The ``gateway`` command: agent -m and config errors, through typer's runner."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import cli as cli_module
from gateway._cli_common import EXIT_CONFIG, EXIT_FAILURE, EXIT_USAGE
from gateway.cli import app

pytestmark = pytest.mark.integration

WIDE = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long tmp paths fit on one line (rich fixed the width when gateway.cli was imported)."""
    monkeypatch.setattr(cli_module.console, "width", 400)
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)


async def test_agent_message_prints_reply(sdk_config: Path) -> None:
    # The CLI runs its own event loop; the fake model server needs this one free meanwhile.
    args = ["agent", "-m", "Hello!", "--config", str(sdk_config)]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    assert "echo: Hello!" in result.output


def test_agent_with_echo_model_needs_no_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.setenv("GATEWAY_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["agent", "-m", "ping"])
    assert result.exit_code == 0, result.output
    assert "ping" in result.output


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("http: {port: lots}\n")
    result = CliRunner().invoke(app, ["agent", "-m", "x", "--config", str(bad)])
    assert result.exit_code == EXIT_CONFIG
    assert "http.port" in result.output and "'lots'" in result.output


def test_unknown_model_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.setenv("GATEWAY_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["agent", "-m", "x", "--model", "nowhere/model"])
    assert result.exit_code == EXIT_CONFIG, "a model naming no provider is a config error"
    assert "unknown model provider 'nowhere'" in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["agent", "-m", "x", "--config", str(tmp_path / "no.yaml")])
    assert result.exit_code == EXIT_CONFIG
    assert "not found" in result.output


async def test_status_shows_config_model_and_bus(
    sdk_config: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = await asyncio.to_thread(WIDE.invoke, app, ["status", "-c", str(sdk_config)])
    assert result.exit_code == 0, result.output
    for expected in (str(sdk_config), "local/fake-model", "local (", "(env)", "dead_letters"):
        assert expected in result.output


async def test_status_without_redis_exits_non_zero(
    sdk_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "empty-home"))
    result = await asyncio.to_thread(WIDE.invoke, app, ["status", "-c", str(sdk_config)])
    assert result.exit_code == EXIT_FAILURE, result.output
    assert "not running" in result.output
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    result = await asyncio.to_thread(WIDE.invoke, app, ["status", "-c", str(sdk_config)])
    assert result.exit_code == EXIT_FAILURE, result.output
    assert "unreachable" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("gateway ")


def test_usage_and_config_errors_have_distinct_exit_codes(tmp_path: Path) -> None:
    usage = CliRunner().invoke(app, ["start", "--no-such-option"])
    assert usage.exit_code == EXIT_USAGE
    config = CliRunner().invoke(app, ["start", "--config", str(tmp_path / "absent.yaml")])
    assert config.exit_code == EXIT_CONFIG
    assert {EXIT_USAGE, EXIT_CONFIG, EXIT_FAILURE} == {2, 3, 1}


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


@pytest.mark.parametrize("command", [["status"], ["worker"], ["start", "--no-worker"]])
@pytest.mark.parametrize("how", ["config", "env", "option"])
def test_malformed_redis_url_is_one_line(
    command: list[str], how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    args = [*command]
    if how == "config":
        (tmp_path / "config.yaml").write_text("redis: {url: 'localhost:6379'}\n")
    elif how == "env":
        monkeypatch.setenv("REDIS_URL", "localhost:6379")
    else:
        if command == ["status"]:
            return  # status takes no --redis-url
        args += ["--redis-url", "localhost:6379"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "not a usable Redis URL" in one_error_line(result.output)


def test_list_setting_from_env_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.setenv("GATEWAY_HTTP__API_KEYS", "k")
    monkeypatch.setenv("GATEWAY_CHANNELS", "not json")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == EXIT_CONFIG
    assert "GATEWAY_CHANNELS: expected a JSON object" in one_error_line(result.output)


def test_worker_against_unreachable_redis_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["worker", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == EXIT_CONFIG
    assert "cannot reach redis://127.0.0.1:1/0" in one_error_line(result.output)


def test_worker_without_any_redis_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["worker"])
    assert result.exit_code == EXIT_CONFIG
    line = one_error_line(result.output)
    assert "no `gateway start` running" in line and "--redis-url" in line


def test_start_options_override_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--host applies (an open bind without API keys is refused before anything starts)."""
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["start", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == EXIT_CONFIG
    assert "http.host = '0.0.0.0'" in result.output and "api_keys" in result.output


@pytest.mark.parametrize(
    "args", [["--log-format", "xml"], ["--log-level", "LOUD"], ["--port", "70000"]]
)
def test_bad_option_values_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["worker", "--redis-url", "redis://127.0.0.1:1", *args])
    if args[0] == "--port":
        result = CliRunner().invoke(app, ["start", *args])
    assert result.exit_code == EXIT_USAGE, result.output
