"""``Bot``: the embedded SDK. The same core runtime as the workers, with no bus."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import TypedDict, Unpack

from gateway._helpers import RuntimeAPI, SessionsAPI
from gateway.core.events import RunResult, StreamEvent
from gateway.core.hooks import AgentHook
from gateway.core.memory import MemoryStore
from gateway.core.messages import Message
from gateway.core.runs import RunStream
from gateway.core.runtime import AgentRuntime, TurnRequest
from gateway.core.sessions.file import FileSessionStore
from gateway.core.settings import Settings, load_settings
from gateway.core.tools.base import ToolRegistry

DEFAULT_SESSION_KEY = "sdk:default"


class BotRunOptions(TypedDict, total=False):
    """The per-run options of ``Bot.run``, ``run_streamed`` and ``stream`` (seed 000).

    They are keyword-only; ``message`` and ``session_key`` may also be positional.
    Defaults: ``channel`` "cli", ``chat_id`` "direct", ``sender_id`` "user" (logical
    labels the tools see), ``media`` none (local paths attached to the message),
    ``ephemeral`` False (True: neither save the turn nor compact), ``hooks`` none
    (lifecycle hooks for this run only), ``model`` / ``model_preset`` none (a model
    for this run only; mutually exclusive).
    """

    channel: str
    chat_id: str
    sender_id: str
    media: Sequence[str] | None
    ephemeral: bool
    hooks: Sequence[AgentHook] | None
    model: str | None
    model_preset: str | None


def _exclusive(model: str | None, model_preset: str | None) -> None:
    if model is not None and model_preset is not None:
        raise ValueError("model and model_preset are mutually exclusive")


def _user_message(message: str, media: Sequence[str] | None) -> Message:
    if not media:
        return {"role": "user", "content": message}
    # The model sees the paths so it can open them with its file tools.
    listed = "\n".join(f"[attached: {path}]" for path in media)
    return {
        "role": "user",
        "content": f"{message}\n\n{listed}",
        "attachments": [{"type": "file", "path": str(path)} for path in media],
    }


class Bot:
    """One configured agent runtime, in-process.

    ``async with Bot.from_config() as bot: result = await bot.run("hi")``
    """

    def __init__(
        self,
        settings: Settings,
        *,
        workspace: str | Path | None = None,
        model: str | None = None,
        model_preset: str | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        _exclusive(model, model_preset)
        root = Path(workspace).expanduser() if workspace is not None else settings.workspace
        store = FileSessionStore(root.expanduser().resolve() / "sessions")
        self._runtime = AgentRuntime(
            settings,
            store=store,
            workspace=root,
            tools=tools,
            default_model=model,
            default_preset=model_preset,
        )
        self._closed = False
        self.sessions = SessionsAPI(store, self._runtime)
        self.memory: MemoryStore = self._runtime.memory
        self.runtime = RuntimeAPI(self._runtime)

    @classmethod
    def from_config(
        cls,
        config_path: str | Path | None = None,
        *,
        workspace: str | Path | None = None,
        model: str | None = None,
        model_preset: str | None = None,
    ) -> Bot:
        """Build a Bot from a YAML config (default ``$GATEWAY_HOME/config.yaml``).

        Raises ``FileNotFoundError`` for an explicit path that does not exist,
        ``ValueError`` when both ``model`` and ``model_preset`` are given, and
        ``core.errors.ConfigError`` for an invalid file.
        """
        _exclusive(model, model_preset)
        settings = load_settings(config_path, required=True)
        return cls(settings, workspace=workspace, model=model, model_preset=model_preset)

    def _turn(self, message: str, session_key: str, options: BotRunOptions) -> TurnRequest:
        if self._closed:
            raise RuntimeError("this Bot is closed")
        unknown = options.keys() - BotRunOptions.__optional_keys__
        if unknown:
            raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
        model, model_preset = options.get("model"), options.get("model_preset")
        _exclusive(model, model_preset)
        return TurnRequest(
            session_key=session_key,
            messages=[_user_message(message, options.get("media"))],
            model=model,
            model_preset=model_preset,
            channel=options.get("channel", "cli"),
            chat_id=options.get("chat_id", "direct"),
            sender_id=options.get("sender_id", "user"),
            ephemeral=options.get("ephemeral", False),
            hooks=tuple(options.get("hooks") or ()),
        )

    async def run(
        self, message: str, session_key: str = DEFAULT_SESSION_KEY, **options: Unpack[BotRunOptions]
    ) -> RunResult:
        """Run the agent once and return its ``RunResult`` (options: ``BotRunOptions``)."""
        return await self._runtime.run(self._turn(message, session_key, options))

    async def run_streamed(
        self, message: str, session_key: str = DEFAULT_SESSION_KEY, **options: Unpack[BotRunOptions]
    ) -> RunStream:
        """Start a run in its own task and return its ``RunStream`` (``BotRunOptions``)."""
        return self._runtime.start(self._turn(message, session_key, options))

    async def stream(
        self, message: str, session_key: str = DEFAULT_SESSION_KEY, **options: Unpack[BotRunOptions]
    ) -> AsyncGenerator[StreamEvent, None]:
        """Iterate a run's events; leaving the loop early cancels the run."""
        turn = self._turn(message, session_key, options)
        async with aclosing(self._runtime.stream(turn)) as events:
            async for event in events:
                yield event

    async def aclose(self) -> None:
        """Release providers and flush sessions. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._runtime.aclose()

    async def __aenter__(self) -> Bot:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
