"""One Telegram channel in its own process, publishing to Redis (the poller-lease test).

``python -m tests.fakes.telegram_channel_process <redis_url> <api_base> <token>`` runs
until SIGTERM; it prints ``ready`` once the channel's supervisor runs.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.channels.telegram import build_channel
from tests.fakes.channel_process import run_channel

if __name__ == "__main__":
    redis_url, api_base, token = sys.argv[1:4]
    config = {"token": token, "api_base": api_base, "allow_from": ["*"]}
    asyncio.run(run_channel(redis_url, "telegram", config, build_channel))
