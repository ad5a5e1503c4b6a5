"""One ``FakeChannel`` in its own process, publishing to Redis (the connection-lease test).

``python -m tests.fakes.fake_channel_process <redis_url> <platform_url>`` runs until
SIGTERM; it prints ``ready`` once the channel's supervisor runs.
"""

from __future__ import annotations

import asyncio
import sys

from tests.fakes.channel_process import run_channel
from tests.fakes.fake_platform import FakeChannel

if __name__ == "__main__":
    redis_url, platform_url = sys.argv[1], sys.argv[2]
    config = {"api_base": platform_url, "allow_from": ["*"]}
    asyncio.run(run_channel(redis_url, "fake", config, FakeChannel))
