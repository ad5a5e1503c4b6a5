"""``Bot``: the embedded SDK. The same core runtime as the workers, with no bus."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from types import TracebackType

from core.events import RunResult, StreamEvent
from core.hooks import AgentHook
from core.memory import MemoryStore
from core.messages import Message
from core.runtime import AgentRuntime, TurnRequest
from core.sessions.file import FileSessionStore
from core.settings import Settings, load_settings
from core.tools.base import ToolRegistry
from gateway._helpers import RuntimeAPI, SessionsAPI
from gateway._stream import RunStream


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

    def _turn(
        self,
        message: str,
        *,
        session_key: str,
        channel: str,
        chat_id: str,
        sender_id: str,
        media: Sequence[str] | None,
        ephemeral: bool,
        hooks: Sequence[AgentHook] | None,
        model: str | None,
        model_preset: str | None,
    ) -> TurnRequest:
        if self._closed:
            raise RuntimeError("this Bot is closed")
        _exclusive(model, model_preset)
        return TurnRequest(
            session_key=session_key,
            messages=[_user_message(message, media)],
            model=model,
            model_preset=model_preset,
            channel=channel,
            chat_id=chat_id,
            sender_id=sender_id,
            ephemeral=ephemeral,
            hooks=tuple(hooks or ()),
        )

    async def run(
        self,
        message: str,
        session_key: str = "sdk:default",
        channel: str = "cli",
        chat_id: str = "direct",
        sender_id: str = "user",
        media: Sequence[str] | None = None,
        ephemeral: bool = False,
        hooks: Sequence[AgentHook] | None = None,
        model: str | None = None,
        model_preset: str | None = None,
    ) -> RunResult:
        """Run the agent once and return its ``RunResult``."""
        turn = self._turn(
            message,
            session_key=session_key,
            channel=channel,
            chat_id=chat_id,
            sender_id=sender_id,
            media=media,
            ephemeral=ephemeral,
            hooks=hooks,
            model=model,
            model_preset=model_preset,
        )
        return await self._runtime.run(turn)

    async def run_streamed(
        self,
        message: str,
        session_key: str = "sdk:default",
        channel: str = "cli",
        chat_id: str = "direct",
        sender_id: str = "user",
        media: Sequence[str] | None = None,
        ephemeral: bool = False,
        hooks: Sequence[AgentHook] | None = None,
        model: str | None = None,
        model_preset: str | None = None,
    ) -> RunStream:
        """Start a run in the background and return its ``RunStream``."""
        turn = self._turn(
            message,
            session_key=session_key,
            channel=channel,
            chat_id=chat_id,
            sender_id=sender_id,
            media=media,
            ephemeral=ephemeral,
            hooks=hooks,
            model=model,
            model_preset=model_preset,
        )
        return RunStream(self._runtime.stream(turn))

    async def stream(
        self,
        message: str,
        session_key: str = "sdk:default",
        channel: str = "cli",
        chat_id: str = "direct",
        sender_id: str = "user",
        media: Sequence[str] | None = None,
        ephemeral: bool = False,
        hooks: Sequence[AgentHook] | None = None,
        model: str | None = None,
        model_preset: str | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Iterate a run's events; leaving the loop early cancels the run."""
        run = await self.run_streamed(
            message,
            session_key,
            channel,
            chat_id,
            sender_id,
            media,
            ephemeral,
            hooks,
            model,
            model_preset,
        )
        async with run:
            async for event in run.stream_events():
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
