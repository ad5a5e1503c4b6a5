"""What every ``gateway`` command shares: exit codes, options, one-line errors, settings
and logging from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from gateway.core.errors import ConfigError, GatewayError
from gateway.core.settings import Settings, check_redis_url, load_settings
from gateway.logsetup import LOG_FORMATS, LogFormat, setup_logging

err_console = Console(stderr=True, soft_wrap=True)

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default $GATEWAY_HOME/config.yaml)."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG.")]
LogFormatOption = Annotated[
    str | None,
    typer.Option("--log-format", help="auto (Rich on a terminal, else plain), plain, json, rich."),
]
LogLevelOption = Annotated[
    str | None,
    typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR (default logging.level)."),
]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
RedisUrlOption = Annotated[
    str | None,
    typer.Option("--redis-url", help="Redis URL (default: config, REDIS_URL, or this home's)."),
]


def fail(exc: BaseException) -> NoReturn:
    """One line on stderr; the exit code says whether it was the configuration."""
    label = "config error" if isinstance(exc, ConfigError | FileNotFoundError) else "error"
    # soft_wrap: one line whatever the terminal's width.
    err_console.print(f"[red]{label}:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    code = EXIT_CONFIG if isinstance(exc, ConfigError | FileNotFoundError) else EXIT_FAILURE
    raise typer.Exit(code) from None


def cli_settings(config: Path | None, *, redis_url: str | None = None) -> Settings:
    try:
        settings = load_settings(config, required=True)
        if redis_url is not None:
            try:
                check_redis_url(redis_url)
            except ValueError as exc:
                raise ConfigError(f"--redis-url: {exc}") from None
            redis = settings.redis.model_copy(update={"url": redis_url})
            settings = settings.model_copy(update={"redis": redis})
    except (GatewayError, FileNotFoundError) as exc:
        fail(exc)
    return settings


def check_redis_config(settings: Settings) -> None:
    """A malformed ``REDIS_URL`` is a config error up front, not "unreachable" later."""
    from gateway.core.bus.client import configured_redis

    try:
        configured_redis(settings)
    except ConfigError as exc:
        fail(exc)


def cli_logging(
    settings: Settings, verbose: bool, log_format: str | None, log_level: str | None = None
) -> None:
    fmt = log_format or settings.logging.format
    if fmt not in LOG_FORMATS:
        raise typer.BadParameter(f"--log-format {fmt!r}: expected one of {', '.join(LOG_FORMATS)}")
    if log_level is not None and log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(
            f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}"
        )
    level = "DEBUG" if verbose else (log_level or settings.logging.level).upper()
    fmt_checked: LogFormat = fmt  # type: ignore[assignment]
    setup_logging(level, fmt_checked, settings.logging.levels)
