"""``gateway chat``: chat with the agent in the terminal.

Through a running gateway's HTTP API when one answers at ``--url`` (default: the
configured ``http.host``/``http.port``), so through the bus as channel ``cli``;
else in-process through the SDK. The REPL lives in ``gateway.chat_repl``, imported
only when the command runs (prompt_toolkit is not loaded by other commands).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer


def chat(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config (default $GATEWAY_HOME/config.yaml)."),
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent to talk to.")] = None,
    session: Annotated[
        str, typer.Option("--session", "-s", help="Chat id: the session is cli:<id>.")
    ] = "direct",
    url: Annotated[
        str | None, typer.Option("--url", envvar="GATEWAY_URL", help="Gateway to talk to.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="GATEWAY_API_KEY", help="API key (else the config's)."),
    ] = None,
) -> None:
    """Chat with the agent in the terminal (through a running gateway, else in-process)."""
    from gateway._cli_common import cli_settings, err_console
    from gateway.chat_repl import run_chat
    from gateway.cli import console
    from gateway.core.errors import GatewayError

    settings = cli_settings(config)
    try:
        asyncio.run(
            run_chat(settings, console, chat_id=session, agent=agent, url=url, api_key=api_key)
        )
    except (GatewayError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
