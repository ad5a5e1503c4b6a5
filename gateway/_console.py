"""Printing a streamed run to the terminal (``gateway agent``)."""

from __future__ import annotations

from contextlib import aclosing

from rich.console import Console

from gateway._bot import Bot


async def stream_to_console(bot: Bot, message: str, session_key: str, console: Console) -> int:
    """Stream the reply; tool calls as dim lines. Returns the exit code (1 if the run failed)."""
    # aclosing: returning mid-stream ends the run now, before the caller closes the Bot.
    async with aclosing(bot.stream(message, session_key=session_key)) as events:
        async for event in events:
            if event.type == "text.delta":
                console.print(event.delta, end="", highlight=False, markup=False)
            elif event.type == "tool.started":
                console.print(f"\n[dim][tool] {event.name}[/dim]", highlight=False)
            elif event.type == "tool.failed":
                console.print(f"[dim][tool failed] {event.error}[/dim]", highlight=False)
            elif event.type == "run.completed":
                console.print()
                return 0
            elif event.type == "run.failed":
                console.print(f"\n[red]run failed:[/red] {event.error}", highlight=False)
                return 1
    return 1
