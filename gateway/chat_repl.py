"""The terminal chat of ``gateway chat`` (the command itself is ``gateway.chat``).

Through a running gateway's HTTP API when one answers (so through the bus, channel
``cli``), else in-process through the SDK; the first line says which. Input with
``prompt_toolkit`` (history in ``$GATEWAY_HOME/chat_history``; Enter sends,
Alt+Enter or Esc then Enter adds a line, pasted newlines are kept); replies
stream as Markdown rendered by ``rich``.

Keys: Ctrl-C during a reply stops that turn (through the bus: the worker cancels
it); a second Ctrl-C, or Ctrl-C twice at the prompt, or Ctrl-D exits.
"""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from gateway.chat_backends import (
    ChatBackend,
    ChatError,
    HttpChat,
    LocalChat,
    gateway_answers,
)
from gateway.core.events import StreamEvent
from gateway.core.runtime import AgentRuntime
from gateway.core.sessions.file import FileSessionStore
from gateway.core.settings import Settings, gateway_home

HELP = """\
/new   start a new conversation
/stop  stop the running reply (Ctrl-C while it streams does the same)
/help  this help
Enter sends; Alt+Enter (or Esc, Enter) adds a line. Ctrl-D (or Ctrl-C twice) exits."""
REFRESH_S = 0.08
"""Least time between two re-renders of a streaming reply."""


class ExitChat(Exception):
    """The user asked to leave."""


def gateway_url(settings: Settings) -> str:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.http.port}"


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter")
    @bindings.add("c-j")  # Enter typed while the terminal was not in raw mode yet
    def _send(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


class Reply:
    """Renders one streaming reply as Markdown, tool activity as dim lines."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._text = ""
        # A dim ellipsis until the first words arrive: the turn is under way.
        self._live = Live(
            Text("…", style="dim"), console=console, auto_refresh=False, vertical_overflow="visible"
        )
        self._shown_at = 0.0
        self.ended = False

    def __enter__(self) -> Reply:
        self._live.__enter__()
        self._live.refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        self._render()
        self._live.__exit__(None, None, None)

    def _render(self) -> None:
        self._shown_at = time.monotonic()
        self._live.update(Markdown(self._text), refresh=True)

    def show(self, event: StreamEvent) -> None:
        if event.type == "run.started":
            self._text = ""  # a re-run after a worker crash starts over
        elif event.type == "text.delta":
            self._text += event.delta
            if time.monotonic() - self._shown_at >= REFRESH_S:
                self._render()
        elif event.type == "tool.started":
            self._live.console.print(f"[dim]⚙ {event.name}…[/dim]", highlight=False)
        elif event.type == "tool.failed":
            self._live.console.print(f"[dim]✗ {event.name}: {event.error}[/dim]", highlight=False)
        elif event.type == "run.completed":
            self._text = event.content or self._text
            self.ended = True
        elif event.type == "run.failed":
            self.ended = True
            self._render()
            reason = event.result.stop_reason if event.result else None
            if reason in ("cancelled", "interrupted"):
                self._live.console.print("[yellow]stopped[/yellow]")
            else:
                self._live.console.print(f"[red]the reply failed:[/red] {event.error}")


class ChatRepl:
    def __init__(self, backend: ChatBackend, console: Console) -> None:
        self.backend = backend
        self.console = console
        self._turn: asyncio.Task[None] | None = None
        self._stop_request: asyncio.Future[bool] | None = None
        self._stopping = False
        self._exiting = False

    async def run(self) -> None:
        self.console.print(self.backend.describe(), highlight=False, soft_wrap=True)
        self.console.print("[dim]/help for commands; Ctrl-D to exit[/dim]")
        history = FileHistory(str(gateway_home() / "chat_history"))
        prompt: PromptSession[str] = PromptSession(
            history=history, multiline=True, key_bindings=_key_bindings()
        )
        # For the whole session: the prompt reads Ctrl-C as a key (raw mode), but between
        # two prompts it is a signal, and must never end the process with a traceback.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_interrupt)
        try:
            await self._loop(prompt)
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _loop(self, prompt: PromptSession[str]) -> None:
        interrupted = False
        while True:
            try:
                # handle_sigint off: prompt_toolkit would replace our handler and then
                # remove it. In raw mode Ctrl-C reaches it as a key anyway.
                text = await prompt.prompt_async("you> ", handle_sigint=False)
            except KeyboardInterrupt:
                if interrupted:
                    return
                interrupted = True
                self.console.print("[dim](Ctrl-C again or Ctrl-D to exit)[/dim]")
                continue
            except EOFError:
                return
            interrupted = False
            try:
                await self.handle(text.strip())
            except ExitChat:
                return
            except ChatError as exc:
                self.console.print(f"[red]error:[/red] {exc}", highlight=False)

    async def handle(self, text: str) -> None:
        if not text:
            return
        if text == "/help":
            self.console.print(HELP, highlight=False, markup=False)
        elif text == "/new":
            key = self.backend.new_chat()
            self.console.print(f"new chat: session {key}", highlight=False)
        elif text == "/stop":
            stopped = await self.backend.stop()
            self.console.print("stop requested" if stopped else "nothing to stop")
        elif text.startswith("/") and " " not in text:
            self.console.print(f"unknown command {text} (try /help)", highlight=False)
        else:
            await self.turn(text)

    async def turn(self, text: str) -> None:
        """Stream the reply; the first Ctrl-C asks to stop it, the second exits."""
        self._stopping = self._exiting = False
        with Reply(self.console) as reply:
            self._turn = asyncio.create_task(self._consume(text, reply))
            try:
                await self._turn
            except asyncio.CancelledError:
                if self._exiting:
                    raise ExitChat from None
                raise
            finally:
                self._turn = None
            if not reply.ended:
                self.console.print("[yellow]stopped[/yellow]")

    async def _consume(self, text: str, reply: Reply) -> None:
        async for event in self.backend.stream(text):
            reply.show(event)

    def _on_interrupt(self) -> None:
        if self._turn is None:
            return  # between two prompts: nothing to stop
        if self._stopping:
            self._exiting = True
            self._turn.cancel()
            return
        self._stopping = True
        self.console.print("[dim]stopping… (Ctrl-C again to exit)[/dim]")
        self._stop_request = asyncio.ensure_future(self.backend.stop())
        self._stop_request.add_done_callback(self._stop_sent)

    def _stop_sent(self, stopping: asyncio.Future[bool]) -> None:
        if not stopping.cancelled() and (error := stopping.exception()) is not None:
            self.console.print(f"[red]could not stop the reply:[/red] {error}", highlight=False)


async def run_chat(
    settings: Settings,
    console: Console,
    *,
    chat_id: str,
    agent: str | None,
    url: str | None,
    api_key: str | None,
) -> None:
    if agent is not None and agent not in {settings.default_agent, *settings.agents}:
        known = sorted({settings.default_agent, *settings.agents})
        raise ChatError(f"--agent: no agent named {agent!r} (configured: {', '.join(known)})")
    url = url or gateway_url(settings)
    if await gateway_answers(url):
        keys = settings.http.api_keys
        key = api_key or (keys[0].get_secret_value() if keys else None)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=5)) as http:
            backend = HttpChat(http, url, chat_id, api_key=key, agent=agent)
            await backend.check()
            await ChatRepl(backend, console).run()
        return
    workspace = settings.workspace.expanduser()
    store = FileSessionStore(workspace.resolve() / "sessions")  # where Bot keeps them
    runtime = AgentRuntime(settings, store=store, workspace=workspace)
    try:
        await ChatRepl(LocalChat(runtime, chat_id, agent=agent), console).run()
    finally:
        await runtime.aclose()
