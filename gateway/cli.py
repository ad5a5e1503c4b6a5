"""The ``gateway`` command: start, worker, agent, status."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from core import process
from core.errors import GatewayError
from core.settings import Settings, default_config_path, load_settings

app = typer.Typer(help="A multi-channel chat gateway for LLM agents.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default $GATEWAY_HOME/config.yaml)."),
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config, required=True)
    except (GatewayError, FileNotFoundError) as exc:
        err_console.print(f"[red]config error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc


def _logging(verbose: bool) -> None:
    # Rich formatting cost 36% of the gateway's CPU under load (663 µs a record, 16 µs
    # plain): Rich only on a terminal, and aiohttp's access records only with -v.
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _model_note(settings: Settings) -> str:
    if settings.default_model.startswith("echo/"):
        return (
            "no model configured: using the built-in offline 'echo' model "
            "(set GATEWAY_MODEL, or OPENAI_API_KEY, or 'model:' in the config)"
        )
    return f"model: {settings.default_model}"


def _with_env_defaults(settings: Settings) -> Settings:
    """``OPENAI_API_KEY`` alone switches an unconfigured gateway to OpenAI."""
    import os

    if (
        settings.model is None
        and settings.model_preset is None
        and os.environ.get("OPENAI_API_KEY")
    ):
        return settings.model_copy(update={"model": "openai/gpt-4.1-mini"})
    return settings


async def _until_signalled(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def start(
    config: ConfigOption = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run workers apart.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run channels, the HTTP API and (unless --no-worker) one in-process worker."""
    from gateway.app import GatewayApp

    _logging(verbose)
    settings = _with_env_defaults(_settings(config))
    console.print(_model_note(settings), highlight=False)

    async def main() -> None:
        async with GatewayApp(settings, with_worker=not no_worker) as gw:
            for line in gw.banner():
                console.print(line, highlight=False)
            warm = process.freeze_after_start()
            await _until_signalled(asyncio.Event())
            warm.cancel()

    try:
        process.run(main())
    except GatewayError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


@app.command()
def worker(
    config: ConfigOption = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", envvar="REDIS_URL")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a bus worker: claim sessions from Redis and run their turns."""
    from workers.__main__ import run_worker

    _logging(verbose)
    settings = _with_env_defaults(_settings(config))
    if redis_url:
        settings = settings.model_copy(
            update={"redis": settings.redis.model_copy(update={"url": redis_url})}
        )
    try:
        process.run(run_worker(settings))
    except GatewayError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


@app.command()
def agent(
    message: Annotated[str, typer.Option("--message", "-m", help="The message to send.")],
    config: ConfigOption = None,
    session: Annotated[str, typer.Option("--session", "-s")] = "cli:direct",
    model: Annotated[str | None, typer.Option("--model")] = None,
) -> None:
    """Send one message to the agent in-process (no bus) and print the reply as it streams."""
    from gateway._bot import Bot
    from gateway._console import stream_to_console

    settings = _with_env_defaults(_settings(config))

    async def main() -> int:
        async with Bot(settings, model=model) as bot:
            return await stream_to_console(bot, message, session, console)

    try:
        code = asyncio.run(main())
    except GatewayError as exc:  # an unknown --model, a session store that fails…
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


@app.command()
def status(config: ConfigOption = None) -> None:
    """Show config, workspace, model, providers and (when reachable) the bus."""
    settings = _with_env_defaults(_settings(config))
    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths and URLs wrap whole instead of being cut
    path = config or default_config_path()
    table.add_row("config", f"{path}" + ("" if Path(path).is_file() else " (not found: defaults)"))
    table.add_row("workspace", str(settings.workspace))
    table.add_row("model", settings.default_model)
    table.add_row("providers", _providers_summary(settings))
    table.add_row(
        "agents", ", ".join(sorted(settings.agents)) or f"{settings.default_agent} (default)"
    )
    for key, value in _bus_status(settings).items():
        table.add_row(key, str(value))
    console.print(table)


def _providers_summary(settings: Settings) -> str:
    rows = []
    for name, provider in sorted(settings.providers.items()):
        key = "key set" if provider.api_key else "no key"
        rows.append(f"{name} ({provider.base_url or 'default url'}, {key})")
    return "; ".join(rows) or "none configured (echo built in)"


def _bus_status(settings: Settings) -> dict[str, Any]:
    from gateway.app import bus_status

    try:
        return asyncio.run(bus_status(settings))
    except (OSError, GatewayError) as exc:
        return {"redis": f"unreachable ({exc})"}
