"""``gateway start --log-format json > log 2>&1``: every line of the file is one JSON
object, the start's own lines (model, addresses) included, so a log shipper can parse
the whole file."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_one_machine import Proc, ask

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


async def test_a_json_log_file_is_json_on_every_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": "echo/echo"}))
    gateway = await Proc.start(tmp_path, "start", "--port", "0", "--log-format", "json")
    try:
        base = (await gateway.wait_for(r"(http://127\.0\.0\.1:\d+)")).group(1)
        assert "hello" in await ask(base, "chat-1", "hello")
    finally:
        await gateway.end(signal.SIGTERM)
    records = [json.loads(line) for line in gateway.lines if line.strip()]  # fails on any other
    messages = [record["message"] for record in records]
    assert any(m.startswith("no model configured") for m in messages), messages
    assert any(m.startswith("chat   http://127.0.0.1:") for m in messages), messages
    assert "SIGTERM received: stopping the gateway" in messages
