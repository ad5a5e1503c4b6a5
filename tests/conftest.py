"""Shared fixtures: the fake OpenAI-compatible model server, a real redis-server, SDK configs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakes.openai_server import FakeModelServer, fake_model  # noqa: F401
from tests.fakes.redis_server import aof_redis_server, redis, redis_server, redis_url  # noqa: F401


def write_config(path: Path, fake: FakeModelServer, workspace: Path, **extra: object) -> Path:
    """A config whose ``local`` and ``openai`` providers both point at the fake server."""
    data: dict[str, object] = {
        "model": "local/fake-model",
        "model_presets": {
            "fast": {"model": "local/fake-model", "temperature": 0.2, "max_tokens": 512},
            "reasoning": {"model": "local/reasoner", "temperature": 1.0},
        },
        "providers": {
            "local": {"base_url": fake.base_url, "api_key": "none", "max_retries": 0},
            "openai": {"base_url": fake.base_url, "api_key": "sk-test", "max_retries": 0},
        },
        "workspace": str(workspace),
        "agents": {
            "assistant": {
                "system_prompt": "You are helpful.",
                "tools": ["read_file", "write_file", "edit_file", "list_dir"],
            }
        },
    }
    data.update(extra)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    ws.mkdir()
    return ws


@pytest.fixture
def sdk_config(tmp_path: Path, fake_model: FakeModelServer, workspace: Path) -> Path:
    return write_config(tmp_path / "config.yaml", fake_model, workspace)


@pytest.fixture
def gateway_home(
    tmp_path: Path, sdk_config: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """``$GATEWAY_HOME`` holding ``config.yaml``, so ``Bot.from_config()`` finds it."""
    home = sdk_config.parent
    assert (home / "config.yaml") == sdk_config
    monkeypatch.setenv("GATEWAY_HOME", str(home))
    yield home
