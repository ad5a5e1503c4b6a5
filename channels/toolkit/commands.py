"""Chat commands, handled once for every channel: ``/new``, ``/stop``, ``/help``.

``command_list()`` is the one list platforms register (Telegram ``setMyCommands``,
Slack slash commands, Discord application commands). A command is answered by the
channel itself and never reaches the bus as a message: it costs no model call.

``/new`` raises the chat's *generation*: the session key gains it (``fake#2:chat``),
so the next message starts a fresh session while the old one stays stored and
readable under its old key. ``/stop`` asks the chat's running turn to stop through
the bus's control stream (``core.bus.control``), which every worker watches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from gateway.core.bus import keys
from gateway.core.bus.control import request_stop
from gateway.core.messages import default_session_key


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    description: str


COMMANDS: tuple[Command, ...] = (
    Command("new", "Start a new conversation (the old one is kept)"),
    Command("stop", "Stop the reply being written"),
    Command("help", "List the commands"),
)


def command_list() -> list[tuple[str, str]]:
    """``(name, description)`` of every command, for platforms that register them."""
    return [(command.name, command.description) for command in COMMANDS]


def parse_command(text: str, bot_username: str = "") -> str | None:
    """The command named by ``text`` (``/new``, ``/new@ThisBot``), None for any other text.

    A command addressed to another bot (``/new@OtherBot``) is not ours.
    """
    word = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    if not word.startswith("/"):
        return None
    name, _, addressee = word[1:].partition("@")
    if addressee and addressee.lower() != bot_username.lower().lstrip("@"):
        return None
    name = name.lower()
    return name if any(command.name == name for command in COMMANDS) else None


HELP_TEXT = "\n".join(f"/{c.name} - {c.description}" for c in COMMANDS)
NEW_TEXT = "Started a new conversation."
STOPPING_TEXT = "Stopping."
NOTHING_TO_STOP_TEXT = "Nothing to stop."


class Sessions:
    """Where one chat's messages go: its default session key plus its generation."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel

    async def key(self, chat_id: str, thread_id: str | None) -> str:
        base = default_session_key(self.channel, chat_id, thread_id)
        raw = await self.redis.hget(keys.generation(self.channel), base)  # type: ignore[misc]
        return self._keyed(chat_id, thread_id, int(cast(str, raw)) if raw else 0)

    async def start_new(self, chat_id: str, thread_id: str | None) -> str:
        """Raise the chat's generation; the new session key."""
        base = default_session_key(self.channel, chat_id, thread_id)
        generation = await self.redis.hincrby(keys.generation(self.channel), base, 1)  # type: ignore[misc]
        return self._keyed(chat_id, thread_id, int(generation))

    def _keyed(self, chat_id: str, thread_id: str | None, generation: int) -> str:
        if generation == 0:
            return default_session_key(self.channel, chat_id, thread_id)
        # In the channel part: channel names hold no '#', so no chat id can collide.
        return default_session_key(f"{self.channel}#{generation}", chat_id, thread_id)


async def run_command(name: str, sessions: Sessions, chat_id: str, thread_id: str | None) -> str:
    """Carry out a command of ``chat_id``; the text to answer with."""
    if name == "new":
        await sessions.start_new(chat_id, thread_id)
        return NEW_TEXT
    if name == "stop":
        key = await sessions.key(chat_id, thread_id)
        stopped = await request_stop(sessions.redis, key)
        return STOPPING_TEXT if stopped is not None else NOTHING_TO_STOP_TEXT
    if name == "help":
        return HELP_TEXT
    raise ValueError(f"unknown command {name!r}")
