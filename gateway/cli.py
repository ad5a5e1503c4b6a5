"""The ``gateway`` command: start, worker, agent, status, doctor.

Exit codes: 0 success; 1 a failure at run time (a failed turn, Redis unreachable for
``status``, a failed ``doctor`` check); 2 a usage error (unknown option, bad option
value); 3 a configuration error (bad config file or value, no Redis to be found).
Every error is one line.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from gateway._cli_common import (
    EXIT_FAILURE,
    Announce,
    ConfigOption,
    LogFormatOption,
    LogLevelOption,
    OneLineCommand,
    OneLineErrors,
    RedisUrlOption,
    VerboseOption,
    check_redis_config,
    check_workspace,
    cli_logging,
    cli_settings,
    fail,
    model_note,
    warn_model_problems,
)
from gateway.chat import chat
from gateway.core import process
from gateway.core.errors import BusError, ConfigError, GatewayError
from gateway.core.settings import Settings, default_config_path
from gateway.pairing_cli import pairing_app

app = typer.Typer(
    cls=OneLineErrors,
    help="A multi-channel chat gateway for LLM agents.",
    no_args_is_help=True,
    # A crash is a bug: Rich's boxed traceback on a terminal, a plain one in a log file
    # (Rich would wrap it at 80 columns there).
    pretty_exceptions_enable=sys.stderr.isatty(),
)
console = Console(soft_wrap=True)  # a line in a log file is never wrapped


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"gateway {version('gateway')}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """A multi-channel chat gateway for LLM agents."""


@app.command()
def start(
    config: ConfigOption = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run workers apart.")] = False,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (http.host).")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="HTTP port (http.port).")
    ] = None,
    redis_url: RedisUrlOption = None,
    verbose: VerboseOption = False,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run channels, the HTTP API and (unless --no-worker) one in-process worker."""
    from gateway._signals import GracefulStop
    from gateway.app import GatewayApp

    settings = cli_settings(config, redis_url=redis_url)
    http = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if http:
        settings = settings.model_copy(update={"http": settings.http.model_copy(update=http)})
    check_redis_config(settings)
    check_workspace(settings)
    say = Announce(cli_logging(settings, verbose, log_format, log_level))
    say.info(model_note(settings))
    warn_model_problems(settings, say)

    async def main() -> None:
        signals = GracefulStop("the gateway", grace_s=30.0)
        async with GatewayApp(settings, with_worker=not no_worker) as gw:
            for line in gw.banner():
                say.info(line)
            if gw.redis_handle is not None and gw.redis_handle.note:
                say.info(gw.redis_handle.note)
            signals.install()
            warm = process.freeze_after_start()
            await signals.wait()
            warm.cancel()

    try:
        process.run(main())
    except GatewayError as exc:
        fail(exc)
    except RedisError as exc:  # Redis went away at a moment nothing retries (the stop)
        fail(BusError(f"Redis: {exc}"))


@app.command()
def worker(
    config: ConfigOption = None,
    redis_url: RedisUrlOption = None,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Consumer name (default host:pid:random).")
    ] = None,
    deliver_channel: Annotated[
        list[str] | None,
        typer.Option(
            "--deliver-channel",
            help="A channel with a deliverer, signalled at run.started (repeatable; "
            "default: the channels enabled in the config).",
        ),
    ] = None,
    no_jobs: Annotated[bool, typer.Option("--no-jobs", help="Do not run the arq jobs.")] = False,
    stop_grace: Annotated[
        float, typer.Option("--stop-grace", min=0, help="Seconds running turns get at stop.")
    ] = 30.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", min=0, max=65535, help="Serve /metrics (worker.metrics_port)."
        ),
    ] = None,
    verbose: VerboseOption = False,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run a bus worker: claim sessions from Redis and run their turns."""
    from gateway.redis_launcher import existing_redis, target_of
    from gateway.redis_state import data_dir_of
    from gateway.worker_process import run_worker

    settings = cli_settings(config, redis_url=redis_url)
    if metrics_port is not None:
        update = {"metrics_port": metrics_port}
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=update)})
    check_redis_config(settings)
    check_workspace(settings)
    warn_model_problems(settings, Announce(cli_logging(settings, verbose, log_format, log_level)))

    async def main() -> None:
        handle = await existing_redis(settings)
        if handle is None:
            raise ConfigError(
                "no Redis: no redis.url, no REDIS_URL, and no `gateway start` running for "
                f"this GATEWAY_HOME ({data_dir_of().parent}); start one, or pass --redis-url"
            )
        await run_worker(
            settings,
            target=target_of(settings, handle),
            worker_id=worker_id,
            deliver_channels=frozenset(deliver_channel) if deliver_channel else None,
            jobs=not no_jobs,
            stop_grace_s=stop_grace,
        )

    try:
        process.run(main())
    except GatewayError as exc:
        fail(exc)
    except RedisError as exc:  # Redis went away at a moment nothing retries (the stop)
        fail(BusError(f"Redis: {exc}"))


def worker_main() -> None:
    """``python -m gateway.workers``: the ``worker`` command on its own."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=sys.stderr.isatty())
    single.command(cls=OneLineCommand)(worker)
    single()


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

    settings = cli_settings(config)
    check_workspace(settings)

    async def main() -> int:
        async with Bot(settings, model=model) as bot:
            return await stream_to_console(bot, message, session, console)

    try:
        code = asyncio.run(main())
    except GatewayError as exc:  # an unknown --model, a session store that fails…
        fail(exc)
    raise typer.Exit(code)


app.command()(chat)
app.add_typer(pairing_app, name="pairing")


@app.command()
def status(config: ConfigOption = None, redis_url: RedisUrlOption = None) -> None:
    """Show config, workspace, model, providers and (when reachable) the bus.

    Exits 1 when no Redis answers."""
    settings = cli_settings(config, redis_url=redis_url)
    check_redis_config(settings)
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
    bus = _bus_status(settings)
    for key, value in bus.items():
        table.add_row(key, str(value))
    console.print(table)
    if "workers_alive" not in bus:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Check the model setup: config, provider reachable, key accepted, model listed."""
    from gateway.doctor import doctor as run_checks

    settings = cli_settings(config)
    checks = asyncio.run(run_checks(settings))
    for check in checks:
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {check.detail}", highlight=False)
    if not all(check.ok for check in checks):
        raise typer.Exit(EXIT_FAILURE)


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
