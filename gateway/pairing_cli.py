"""``gateway pairing``: see and answer the pairing codes of unknown senders.

A sender the channel does not know gets a code in their direct chat; the operator
admits them with ``approve`` (kept in Redis across restarts) and removes them with
``revoke``. Redis is found as ``gateway status`` finds it; nothing is started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from gateway._cli_common import cli_settings
from gateway.channels.toolkit.pairing import PairingStore, pending_codes
from gateway.core.bus.client import RedisTarget
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.redis_launcher import existing_redis, target_of

pairing_app = typer.Typer(help="Admit unknown senders by their pairing code.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default $GATEWAY_HOME/config.yaml)."),
]


def _settings(config: Path | None) -> Settings:
    return cli_settings(config)  # the CLI's one config-error path


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


async def _existing_redis(settings: Settings) -> RedisTarget | None:
    """The Redis configured, else the one a gateway started here; never starts one."""
    handle = await existing_redis(settings)
    return target_of(settings, handle) if handle is not None else None


def _with_redis(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        target = await _existing_redis(settings)
        if target is None:
            raise ConfigError("no Redis: set redis.url or REDIS_URL, or run `gateway start` here")
        client = target.client()
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except (ConfigError, RedisError, OSError) as exc:
        raise _fail(str(exc)) from exc


@pairing_app.command("list")
def list_codes(config: ConfigOption = None) -> None:
    """Open pairing codes and approved senders of every configured channel."""
    settings = _settings(config)
    names = sorted(settings.channels)

    async def collect(redis: Redis) -> tuple[list[list[str]], list[list[str]]]:
        now = time.time()
        codes = [
            [c.channel, c.code, c.sender_id, c.sender_name, f"{int(c.expires_at - now)}s"]
            for c in await pending_codes(redis, names)
        ]
        approved = [
            [name, sender]
            for name in names
            for sender in await PairingStore(redis, name).approved()
        ]
        return codes, approved

    codes, approved = _with_redis(settings, collect)
    console.print(
        _table(["channel", "code", "sender", "name", "expires in"], codes, "no open pairing codes")
    )
    console.print(_table(["channel", "approved sender"], approved, "no approved senders"))


def _table(headers: list[str], rows: list[list[str]], empty: str) -> Table | str:
    if not rows:
        return empty
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    return table


@pairing_app.command()
def approve(channel: str, code: str, config: ConfigOption = None) -> None:
    """Admit the sender who was given CODE on CHANNEL."""
    settings = _settings(config)
    sender = _with_redis(settings, lambda redis: PairingStore(redis, channel).approve(code))
    if sender is None:
        raise _fail(f"{channel}: no open pairing code {code!r} (expired, used, or mistyped)")
    console.print(f"approved sender {sender} on {channel}", highlight=False)


@pairing_app.command()
def revoke(channel: str, sender: str, config: ConfigOption = None) -> None:
    """Remove an approved SENDER from CHANNEL."""
    settings = _settings(config)
    removed = _with_redis(settings, lambda redis: PairingStore(redis, channel).revoke(sender))
    if not removed:
        raise _fail(f"{channel}: sender {sender!r} was not approved")
    console.print(f"revoked sender {sender} on {channel}", highlight=False)
