"""One default model: ``gateway agent``, ``gateway status`` and ``Bot.from_config`` agree."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway import Bot
from gateway import cli as cli_module
from gateway.cli import app
from gateway.core.providers.router import ModelRouter
from gateway.core.settings import ECHO_MODEL, OPENAI_ENV_MODEL, Settings, load_settings
from tests.fakes.openai_server import FakeModelServer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GATEWAY_MODEL", "GATEWAY_MODEL_PRESET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli_module.console, "width", 400)


def bare_config(tmp_path: Path, **extra: object) -> Path:
    """A config that names no model: the environment decides."""
    path = tmp_path / "config.yaml"
    data = {"workspace": str(tmp_path / "ws"), **extra}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def test_agent_command_and_sdk_pick_the_same_model_from_openai_api_key(
    tmp_path: Path, fake_model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_model.base_url)
    config = bare_config(tmp_path)
    args = ["agent", "-m", "from the cli", "--config", str(config)]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    async with Bot.from_config(config) as bot:
        assert bot.runtime.model == OPENAI_ENV_MODEL
        await bot.run("from the sdk")
    models = [r["model"] for r in fake_model.requests]
    assert models == [OPENAI_ENV_MODEL.split("/", 1)[1]] * 2


async def test_status_shows_the_model_the_sdk_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("GATEWAY_HOME", str(tmp_path / "empty-home"))  # no bus to report
    presets = {"fast": {"model": "echo/fast-echo"}}
    config = bare_config(tmp_path, model_presets=presets)
    for env, expected in (
        ({}, ECHO_MODEL),
        ({"OPENAI_API_KEY": "sk-test"}, OPENAI_ENV_MODEL),
        ({"GATEWAY_MODEL_PRESET": "fast"}, "echo/fast-echo"),
        ({"GATEWAY_MODEL": "echo/chosen", "OPENAI_API_KEY": "sk-test"}, "echo/chosen"),
    ):
        with monkeypatch.context() as env_patch:
            for name, value in env.items():
                env_patch.setenv(name, value)
            args = ["status", "--config", str(config)]
            status = await asyncio.to_thread(CliRunner().invoke, app, args)
            assert status.exit_code == 1, status.output  # no Redis here: exits 1
            shown = [line.split() for line in status.output.splitlines()]
            assert ["model", expected] in shown, status.output
            async with Bot.from_config(config) as bot:
                assert bot.runtime.model == expected, env


def test_router_default_follows_settings_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings(model_presets={"fast": {"model": "echo/quick", "temperature": 0.3}})
    assert settings.default_model_choice() == (OPENAI_ENV_MODEL, None)
    assert ModelRouter(settings).resolve().name == settings.default_model
    with_preset = settings.model_copy(update={"model_preset": "fast"})
    assert with_preset.default_model_choice() == (None, "fast")
    spec = ModelRouter(with_preset).resolve()
    assert spec.name == with_preset.default_model == "echo/quick" and spec.temperature == 0.3


def test_unknown_instance_preset_is_not_shown_as_echo(tmp_path: Path) -> None:
    settings = load_settings(bare_config(tmp_path, model_preset="missing"))
    assert settings.default_model == "unknown preset 'missing'"
