"""``python -m workers --redis-url URL --config PATH``: one bus worker process.

Runs a ``Worker`` and, unless ``--no-jobs``, the arq side jobs (reminders, deferred
retries, idle compaction) in the same process. SIGTERM or SIGINT stops it
gracefully: no new signals are read, running turns get ``--stop-grace`` seconds,
then unfinished ones are cancelled unacked and handed to other workers. Prints
``worker <id> ready`` on stdout once it reads signals (process tests wait for it).
``gateway worker`` calls ``run_worker`` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from redis.asyncio import Redis

from core import process
from core.errors import ConfigError
from core.settings import Settings, load_settings
from workers.assemble import assemble_worker

log = logging.getLogger("workers")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", help="Redis URL (default: the config's redis.url)")
    parser.add_argument("--config", help="config file (default: $GATEWAY_HOME/config.yaml)")
    parser.add_argument("--worker-id", help="consumer name (default: host:pid:random)")
    parser.add_argument(
        "--deliver-channel",
        action="append",
        help="a channel with a deliverer, signalled at run.started (repeatable; "
        "default: the channels enabled in the config)",
    )
    parser.add_argument("--no-jobs", action="store_true", help="do not run the arq side jobs")
    parser.add_argument("--stop-grace", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def redis_url_of(settings: Settings) -> str:
    url = settings.redis.url or os.environ.get("REDIS_URL")
    if not url:
        raise ConfigError("redis.url: no Redis URL; pass --redis-url or set REDIS_URL")
    return url


def enabled_channels(settings: Settings) -> frozenset[str]:
    return frozenset(name for name, channel in settings.channels.items() if channel.enabled)


async def run_worker(
    settings: Settings,
    *,
    worker_id: str | None = None,
    deliver_channels: frozenset[str] | None = None,
    jobs: bool = True,
    stop_grace_s: float = 30.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a worker (and the arq side jobs) until ``stop`` is set, or SIGTERM/SIGINT."""
    url = redis_url_of(settings)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if deliver_channels is None:
        deliver_channels = enabled_channels(settings)
    redis = Redis.from_url(url, decode_responses=True)
    assembled = assemble_worker(
        settings,
        redis,
        redis_url=url,
        jobs=jobs,
        worker_id=worker_id,
        deliver_channels=deliver_channels,
        stop_grace_s=stop_grace_s,
    )
    try:
        async with assembled as assembly, assembly.running() as worker:
            print(f"worker {worker.worker_id} ready", flush=True)
            warm = process.freeze_after_start()
            await stop.wait()
            warm.cancel()
            log.info("worker %s stopping", worker.worker_id)
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args.config, required=args.config is not None)
        if args.redis_url:
            redis = settings.redis.model_copy(update={"url": args.redis_url})
            settings = settings.model_copy(update={"redis": redis})
        deliver = frozenset(args.deliver_channel) if args.deliver_channel else None
        process.run(
            run_worker(
                settings,
                worker_id=args.worker_id,
                deliver_channels=deliver,
                jobs=not args.no_jobs,
                stop_grace_s=args.stop_grace,
            )
        )
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
