"""One Telegram channel in its own process, publishing to Redis (the poller-lease tests).

``python -m tests.fakes.telegram_channel_process <redis_url> <api_base> <token>
[<album_window_s>]`` runs until SIGTERM; it prints ``ready`` once the channel's
supervisor runs. Files it downloads go to ``$GATEWAY_WORKSPACE``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from gateway.channels.telegram import build_channel
from tests.fakes.channel_process import run_channel

if __name__ == "__main__":
    redis_url, api_base, token = sys.argv[1:4]
    config: dict[str, Any] = {"token": token, "api_base": api_base, "allow_from": ["*"]}
    if len(sys.argv) > 4:
        config["album_window_s"] = float(sys.argv[4])
    asyncio.run(run_channel(redis_url, "telegram", config, build_channel))
