"""Who may talk to the bot: deny by default, operators pair senders, groups need a mention.

A sender is *allowed* when ``allow_from`` holds ``"*"``, their id or their username,
or an operator paired them (``PairingStore``). In a direct chat an allowed sender is
answered and anyone else is offered a pairing code. In a group (never offered a
code: it would be posted to everyone) the group's own id in ``allow_from`` admits
its members; ``group_policy`` then decides: ``mention`` answers messages that mention
the bot or reply to it, ``open`` answers every message, ``disabled`` none.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.channels.toolkit.pairing import PairingStore
from gateway.core.channel_settings import OPEN_TO_ALL, ChannelSettings
from gateway.core.messages import Attachment


@dataclass(frozen=True, slots=True)
class PlatformMessage:
    """One platform message, normalized by an adapter before any decision is made."""

    chat_id: str
    sender_id: str
    text: str
    sender_name: str = ""
    username: str = ""
    """The sender's handle (``allow_from`` may name it instead of the id)."""
    thread_id: str | None = None
    direct: bool = True
    """A one-to-one chat with the bot (False: a group or channel)."""
    mentioned: bool = False
    """The message mentions the bot (the adapter strips the mention from ``text``)."""
    reply_to_bot: bool = False
    event_id: str | None = None
    """The platform's id of this delivery (Telegram ``update_id``, Slack ``event_id``…)."""
    reply_to: str | None = None
    quote_id: str | None = None
    """This message's platform id, when the reply should quote it (in groups)."""
    attachments: Sequence[Attachment] = field(default_factory=tuple)


class Verdict(enum.Enum):
    ADMIT = "admit"
    PAIR = "pair"
    """An unknown sender in a direct chat: offer a pairing code, nothing else."""
    IGNORE = "ignore"


class Access:
    """The access decision of one channel."""

    def __init__(self, config: ChannelSettings, pairing: PairingStore) -> None:
        self.allow = frozenset(config.allow_from)
        self._usernames = frozenset(entry.lstrip("@").lower() for entry in config.allow_from)
        self.group_policy = config.group_policy
        self.pairing = pairing

    async def decide(self, msg: PlatformMessage) -> Verdict:
        if msg.direct:
            return Verdict.ADMIT if await self._sender_allowed(msg) else Verdict.PAIR
        if self.group_policy == "disabled":
            return Verdict.IGNORE
        if self.group_policy == "mention" and not (msg.mentioned or msg.reply_to_bot):
            return Verdict.IGNORE
        if msg.chat_id in self.allow or await self._sender_allowed(msg):
            return Verdict.ADMIT
        return Verdict.IGNORE

    async def _sender_allowed(self, msg: PlatformMessage) -> bool:
        if OPEN_TO_ALL in self.allow or msg.sender_id in self.allow:
            return True
        if msg.username and msg.username.lstrip("@").lower() in self._usernames:
            return True  # handles are case-insensitive on Telegram, Slack and Discord
        return await self.pairing.is_paired(msg.sender_id)
