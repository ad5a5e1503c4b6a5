"""The bus's promise under chaos, in ``make test``: every accepted message answered
exactly once, in order, while workers, Redis and the gateway are killed (see
``tests/e2e/chaos.py``; ``make chaos`` runs the same at 10,000 messages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.chaos import Chaos
from tests.e2e.chaos_report import ChaosConfig
from tests.fakes.redis_server import RedisServer, aof_redis_server  # noqa: F401


@pytest.mark.timeout(300)  # about a minute alone; more on a machine busy with other tests
async def test_every_accepted_message_is_answered_once_in_order_under_chaos(
    aof_redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    config = ChaosConfig(chats=30, messages=300, send_seconds=20.0, seed=6)
    report = await Chaos(aof_redis_server, config, tmp_path).run()
    print(report.summary())  # shown when the test fails
    assert report.accepted == config.messages
    assert report.worker_kills >= 3
    assert report.redis_restarts == 1 and report.gateway_restarts == 1
    assert report.problems() == []
