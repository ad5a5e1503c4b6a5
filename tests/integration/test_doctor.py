"""``gateway doctor`` and the start-time model check, against the fake model server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway._cli_common import EXIT_FAILURE
from gateway.cli import app
from gateway.core.settings import Settings
from gateway.doctor import static_problems
from tests.fakes.openai_server import FakeModelServer

pytestmark = pytest.mark.integration


def config(
    tmp_path: Path, base_url: str, *, model: str = "local/fake-model", key: str = "k"
) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "model": model,
        "workspace": str(tmp_path / "ws"),
        "providers": {"local": {"base_url": base_url, "api_key": key}},
    }
    path.write_text(yaml.safe_dump(data))
    return path


async def doctor(path: Path) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["doctor", "-c", str(path)])
    return result.exit_code, result.output


async def test_doctor_passes_on_a_working_setup(tmp_path: Path) -> None:
    async with FakeModelServer(required_key="k") as server:
        code, output = await doctor(config(tmp_path, server.base_url))
    assert code == 0, output
    assert "reachable, key accepted" in output and "model local/fake-model: listed" in output


async def test_doctor_reports_a_refused_key(tmp_path: Path) -> None:
    async with FakeModelServer(required_key="right") as server:
        code, output = await doctor(config(tmp_path, server.base_url, key="wrong"))
    assert code == EXIT_FAILURE
    assert "key refused (HTTP 401)" in output


async def test_doctor_reports_a_model_the_provider_does_not_list(tmp_path: Path) -> None:
    async with FakeModelServer() as server:
        code, output = await doctor(config(tmp_path, server.base_url, model="local/gpt-typo"))
    assert code == EXIT_FAILURE
    assert "local/gpt-typo: not listed by the provider (it lists: fake-model)" in output


async def test_doctor_reports_an_unreachable_provider(tmp_path: Path) -> None:
    async with FakeModelServer() as server:
        url = server.base_url
    code, output = await doctor(config(tmp_path, url))  # the server is gone
    assert code == EXIT_FAILURE and "unreachable" in output


def test_static_check_finds_missing_credentials_and_unknown_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = Settings(
        model="openai/gpt-4o-mini",
        providers={"openai": {}},
        agents={"other": {"model": "nowhere/x"}},
    )
    problems = static_problems(settings)
    assert any("provider openai has no API key" in p for p in problems)
    assert any("unknown model provider 'nowhere'" in p for p in problems)
    assert static_problems(Settings(model="echo/echo")) == []


def test_start_warns_about_the_model_setup_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warning comes before anything starts (here start then fails on the port)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": "openai/gpt-4o-mini", "providers": {"openai": {}}}))
    result = CliRunner().invoke(
        app, ["start", "-c", str(path), "--redis-url", "redis://127.0.0.1:1"]
    )
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no API key" in warnings[0] and "gateway doctor" in warnings[0]
