"""What a user can get wrong, run as the user runs it (``python -m gateway …`` processes):
each mistake is one line on stderr, no traceback, and an exit code that says which kind
(2 usage, 3 configuration, 1 anything else)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import PROJECT_ROOT
from tests.e2e.test_one_machine import Proc
from tests.fakes.redis_server import RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

RUN_TIMEOUT_S = 60.0


def gateway(
    home: Path, *args: str, module: str = "gateway", **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_"))}
    clean.pop("OPENAI_API_KEY", None)
    clean.update(GATEWAY_HOME=str(home), COLUMNS="80", **env)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=clean,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, label: str) -> str:
    """The single stderr line of a command that failed with ``code``."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{label}: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture
def unwritable_home(tmp_path: Path) -> Path:
    """A home that cannot be created, for root too (a file where a directory must be)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    return blocker / "home"


@pytest.mark.parametrize(
    "args", [["start", "--port", "0"], ["worker", "--redis-url", "redis://127.0.0.1:1"]]
)
def test_an_unwritable_home_is_a_config_error(unwritable_home: Path, args: list[str]) -> None:
    line = one_line(gateway(unwritable_home, *args), 3, "config error")
    assert f"workspace {unwritable_home / 'workspace'} is not writable" in line


def test_agent_with_an_unwritable_home_is_a_config_error(unwritable_home: Path) -> None:
    line = one_line(gateway(unwritable_home, "agent", "-m", "hi"), 3, "config error")
    assert "GATEWAY_HOME" in line


def test_an_unwritable_home_for_redis_data_is_a_config_error(
    unwritable_home: Path, tmp_path: Path
) -> None:
    """The workspace elsewhere, but the spawned Redis keeps its data in the home."""
    result = gateway(unwritable_home, "start", "--port", "0", GATEWAY_WORKSPACE=str(tmp_path))
    line = one_line(result, 3, "config error")
    assert f"cannot create {unwritable_home / 'redis'} for Redis's data" in line


def test_status_takes_a_redis_url_like_the_other_commands(tmp_path: Path) -> None:
    result = gateway(tmp_path, "status", "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 1 and "unreachable: redis://127.0.0.1:1/0" in result.stdout
    line = one_line(gateway(tmp_path, "status", "--redis-url", "nope"), 3, "config error")
    assert "--redis-url: not a usable Redis URL" in line


def test_status_with_an_unwritable_home_says_no_redis(unwritable_home: Path) -> None:
    result = gateway(unwritable_home, "status")
    assert result.returncode == 1 and "not running" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("http: {port: 80\n", ":2:1: "),
        ("http:\n\tport: 1\n", ":2:1: "),
        ("a: b\n  c: d\n", ":2:4: "),
    ],
)
def test_bad_yaml_says_where_in_one_line(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    line = one_line(gateway(tmp_path, "status"), 3, "config error")
    assert f"{tmp_path / 'config.yaml'}{where}not valid YAML: " in line
    assert "<unicode string>" not in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["start", "--bogus"], "No such option: --bogus"),
        (["start", "--port", "99999"], "'--port'"),
        (["worker", "--log-format", "xml"], "--log-format 'xml'"),
        (["agent"], "Missing option '--message'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    line = one_line(gateway(tmp_path, *args), 2, "usage error")
    assert expected in line and "--help" in line


def test_the_worker_module_alias_has_one_line_usage_errors(tmp_path: Path) -> None:
    result = gateway(tmp_path, "--bogus", module="gateway.workers")
    line = one_line(result, 2, "usage error")
    assert "No such option: --bogus" in line and "python -m gateway.workers --help" in line


def test_an_unknown_model_stops_the_start_as_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model: nowhere/model-x\n")
    result = gateway(tmp_path, "start", "--port", "0")
    errors = [line for line in result.stderr.splitlines() if line.startswith("config error: ")]
    assert result.returncode == 3 and len(errors) == 1, result.stderr
    assert "unknown model provider 'nowhere'" in errors[0]
    assert "Traceback" not in result.stderr


async def test_a_worker_stopped_while_its_redis_is_down_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    """Stopping deletes the worker's heartbeat key: with Redis gone that failed with a
    Rich traceback, wrapped at 80 columns in the log file."""
    server = RedisServer().start()
    try:
        worker = await Proc.start(
            tmp_path, "worker", "--redis-url", server.url, "--worker-id", "w1", "--stop-grace", "1"
        )
        await worker.wait_for("worker w1 ready")
        server.kill()
        await worker.wait_for("Redis failed")
        worker.process.send_signal(signal.SIGTERM)
        code = await worker.finish()
    finally:
        server.close()
    assert "Traceback" not in worker.output and "│" not in worker.output, worker.output
    assert code == 1, worker.output
    assert worker.lines[-1].startswith("error: Redis: "), worker.output
