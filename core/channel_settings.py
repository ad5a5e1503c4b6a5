"""Per-channel settings: one common base, one class per channel, chosen by channel name.

``channels: {telegram: {...}, slack: {...}}`` validates each entry with the class its
name selects (``CHANNEL_SETTINGS``; any other name gets the base class, and the channel
registry rejects names it does not know at start). Errors keep the full key path
(``channels.slack.signing_secret``) so ``describe_validation_error`` prints one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

BusyPolicy = Literal["followup", "collect", "steer", "interrupt"]
GroupPolicy = Literal["mention", "open", "disabled"]

OPEN_TO_ALL = "*"
"""An ``allow_from`` entry that admits every sender."""


def _empty_is_none(value: Any) -> Any:
    # An unset ``${VAR}`` expands to '' and must mean "not configured", not an empty secret.
    return None if value in ("", None) else value


class ChannelSettings(BaseModel):
    """The keys every channel has."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    token: SecretStr | None = None
    api_base: str | None = None
    """Point the platform client at a self-hosted or local API (e.g. a Bot API server)."""
    allow_from: list[str] = Field(default_factory=list)
    """Sender ids or usernames (or group chat ids) admitted; ``"*"`` admits everyone.
    Empty admits nobody but senders an operator paired (deny by default)."""
    group_policy: GroupPolicy = "mention"
    edit_interval: float = Field(default=1.0, ge=0)
    """Seconds between two streaming edits of one chat."""
    agent: str | None = None
    """The agent answering this channel; None: the default agent."""
    busy_policy: BusyPolicy | None = None
    max_attachment_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    render_timeout_s: float = Field(default=30.0, gt=0)
    """Longest wait for one platform send or edit; a hung call fails the delivery (retried)."""

    @field_validator("token", mode="before")
    @classmethod
    def _no_empty_token(cls, value: Any) -> Any:
        return _empty_is_none(value)

    @field_validator("allow_from")
    @classmethod
    def _no_blank_entries(cls, value: list[str]) -> list[str]:
        cleaned = [entry.strip() for entry in value]
        if any(not entry for entry in cleaned):
            raise ValueError("entries must not be empty (an unset ${VAR}?)")
        return cleaned


class HttpChannelSettings(ChannelSettings):
    """``POST /v1/messages``: replies are read over SSE, its listener is ``http:``."""


class WebChannelSettings(ChannelSettings):
    """The browser chat served by the gateway."""


class CliChannelSettings(ChannelSettings):
    """``gateway chat`` in a terminal."""


class SdkChannelSettings(ChannelSettings):
    """The embedded SDK (``Bot``)."""


class TelegramSettings(ChannelSettings):
    mode: Literal["polling", "webhook"] = "polling"
    """``polling``: one replica holds the ``getUpdates`` connection (a lease);
    ``webhook``: Telegram posts to ``webhook_url`` and any replica answers."""
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    """Checked against ``X-Telegram-Bot-Api-Secret-Token`` on every webhook call."""
    album_window_s: float = Field(default=1.0, gt=0)
    """An album (media group) is published as one message once no part came for this long."""

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _no_empty_secret(cls, value: Any) -> Any:
        return _empty_is_none(value)

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> TelegramSettings:
        if self.enabled and self.mode == "webhook" and not self.webhook_url:
            raise ValueError("mode 'webhook' needs webhook_url")
        return self


class SlackSettings(ChannelSettings):
    signing_secret: SecretStr | None = None
    """Verifies Events API requests (``X-Slack-Signature``)."""
    app_token: SecretStr | None = None
    """``xapp-`` token: Socket Mode (one replica holds the socket) instead of HTTP events."""

    @field_validator("signing_secret", "app_token", mode="before")
    @classmethod
    def _no_empty_secret(cls, value: Any) -> Any:
        return _empty_is_none(value)

    @model_validator(mode="after")
    def _http_events_need_secret(self) -> SlackSettings:
        if self.enabled and self.token and not self.app_token and not self.signing_secret:
            raise ValueError("HTTP events need signing_secret (or set app_token for Socket Mode)")
        return self


class DiscordSettings(ChannelSettings):
    gateway_url: str | None = None
    """The Discord gateway websocket (a local fake in tests); None: Discord's own."""


CHANNEL_SETTINGS: Mapping[str, type[ChannelSettings]] = {
    "http": HttpChannelSettings,
    "web": WebChannelSettings,
    "cli": CliChannelSettings,
    "sdk": SdkChannelSettings,
    "telegram": TelegramSettings,
    "slack": SlackSettings,
    "discord": DiscordSettings,
}


def settings_class(name: str) -> type[ChannelSettings]:
    return CHANNEL_SETTINGS.get(name, ChannelSettings)


def validate_channels(raw: Any) -> Any:
    """Each entry of ``channels`` validated by its own class; anything else left to pydantic."""
    if not isinstance(raw, Mapping):
        return raw
    return {name: _validate_one(str(name), value) for name, value in raw.items()}


def _validate_one(name: str, value: Any) -> Any:
    cls = settings_class(name)
    if isinstance(value, cls):
        return value
    if isinstance(value, ChannelSettings):  # built in code with the base class
        value = value.model_dump(exclude_unset=True)
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        # Re-raised with the channel name in the location: pydantic would drop it.
        raise ValidationError.from_exception_data(
            exc.title, [_with_prefix(name, error) for error in exc.errors()]
        ) from None


def _with_prefix(name: str, error: Any) -> InitErrorDetails:
    details = InitErrorDetails(type=error["type"], loc=(name, *error["loc"]), input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details
