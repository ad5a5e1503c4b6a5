"""What every ``gateway`` command shares: exit codes, options, one-line errors, settings
and logging from the command line."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from gateway.core.errors import ConfigError, GatewayError, UnknownModelError
from gateway.core.settings import Settings, check_redis_url, load_settings
from gateway.logsetup import LOG_FORMATS, LogFormat, setup_logging

err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)  # a line in a log file is never wrapped
_log = logging.getLogger("gateway")

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


def one_line_main(main: Callable[[], Any]) -> NoReturn:
    """Run a command line (click's non-standalone ``main``) so that a usage error (unknown
    option, bad value, missing argument) is one line on stderr with exit code 2, like
    every other error, instead of Rich's box."""
    try:
        code = main()
    except _USAGE_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `gateway`: the help
            exc.show()
        else:
            err_console.print(f"[red]usage error:[/red] {escape(usage_line(exc))}", **_ONE_LINE)
        sys.exit(exc.exit_code)
    except typer.Abort:  # EOF at a prompt
        err_console.print("aborted", **_ONE_LINE)
        sys.exit(EXIT_FAILURE)
    # Not standalone, typer.Exit(code) comes back as the code; a command's None is 0.
    sys.exit(code if isinstance(code, int) else 0)


class _OneLineMain:
    """``main`` with its usage errors on one line (``one_line_main``); a mixin for click
    commands and groups."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        base = cast(Any, super())
        run = partial(base.main, args, prog_name, complete_var, False, **extra)
        if not standalone_mode:
            return run()
        one_line_main(run)


class OneLineErrors(_OneLineMain, TyperGroup):  # type: ignore[misc]
    """The ``gateway`` command group."""


class OneLineCommand(_OneLineMain, TyperCommand):  # type: ignore[misc]
    """A command on its own (``python -m gateway.workers``)."""


_ONE_LINE: dict[str, Any] = {"highlight": False, "soft_wrap": True}
# click's UsageError, whether typer vendors click (0.20+) or uses it: BadParameter's base.
_USAGE_ERROR: Any = typer.BadParameter.__base__


def usage_line(exc: Any) -> str:
    """What was wrong, and where the help is."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return str(exc.format_message()).replace("\n", " ") + where


def fail(exc: BaseException) -> NoReturn:
    """One line on stderr; the exit code says whether it was the configuration (a model
    name that names no configured provider is one, like any other bad setting)."""
    config = isinstance(exc, ConfigError | UnknownModelError | FileNotFoundError)
    label = "config error" if config else "error"
    # soft_wrap: one line whatever the terminal's width.
    err_console.print(f"[red]{label}:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_CONFIG if config else EXIT_FAILURE) from None


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


def check_workspace(settings: Settings) -> None:
    """The workspace (under ``GATEWAY_HOME`` by default) must be writable: one line up
    front instead of a traceback from deep inside the first turn."""
    path = settings.workspace
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Created and removed at once: the directory takes new files.
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        fail(
            ConfigError(
                f"workspace {path} is not writable ({exc.strerror}): point GATEWAY_HOME, or "
                "'workspace:' in the config, at a writable directory"
            )
        )


def check_redis_config(settings: Settings) -> None:
    """A malformed ``REDIS_URL`` is a config error up front, not "unreachable" later."""
    from gateway.core.bus.client import configured_redis

    try:
        configured_redis(settings)
    except ConfigError as exc:
        fail(exc)


def cli_logging(
    settings: Settings, verbose: bool, log_format: str | None, log_level: str | None = None
) -> LogFormat:
    """Set logging up from the options and the config; returns the format chosen."""
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
    return fmt_checked


class Announce:
    """The lines a long-running command says itself (its model, its addresses, warnings):
    on the terminal, or as log records when the logs are JSON, so that ``> log 2>&1``
    stays one JSON object per line."""

    def __init__(self, log_format: LogFormat) -> None:
        self.json = log_format == "json"

    def info(self, text: str) -> None:
        if self.json:
            _log.info("%s", text)
        else:
            out_console.print(text, highlight=False)

    def warning(self, text: str) -> None:
        if self.json:
            _log.warning("%s", text)
        else:
            err_console.print(f"[yellow]warning:[/yellow] {escape(text)}", **_ONE_LINE)


def model_note(settings: Settings) -> str:
    if settings.default_model.startswith("echo/"):
        return (
            "no model configured: using the built-in offline 'echo' model "
            "(set GATEWAY_MODEL, or OPENAI_API_KEY, or 'model:' in the config)"
        )
    return f"model: {settings.default_model}"


def warn_model_problems(settings: Settings, say: Announce) -> None:
    from gateway.doctor import static_problems

    for problem in static_problems(settings):
        say.warning(f"{problem} (run `gateway doctor`)")
