"""The ``gateway`` command: agent -m and config errors, through typer's runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway import cli as cli_module
from gateway.cli import app

pytestmark = pytest.mark.integration

WIDE = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long tmp paths fit on one line (rich fixed the width when gateway.cli was imported)."""
    monkeypatch.setattr(cli_module.console, "width", 400)


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
    assert result.exit_code == 2
    assert "http.port" in result.output and "'lots'" in result.output


def test_unknown_model_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    monkeypatch.setenv("GATEWAY_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["agent", "-m", "x", "--model", "nowhere/model"])
    assert result.exit_code == 1
    assert "unknown model provider 'nowhere'" in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["agent", "-m", "x", "--config", str(tmp_path / "no.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output


async def test_status_shows_config_model_and_bus(
    sdk_config: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = await asyncio.to_thread(WIDE.invoke, app, ["status", "-c", str(sdk_config)])
    assert result.exit_code == 0, result.output
    for expected in (str(sdk_config), "local/fake-model", "local (", "(env)", "dead_letters"):
        assert expected in result.output


async def test_status_without_redis(
    sdk_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "empty-home"))
    result = await asyncio.to_thread(WIDE.invoke, app, ["status", "-c", str(sdk_config)])
    assert result.exit_code == 0, result.output
    assert "not running" in result.output
