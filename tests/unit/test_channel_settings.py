"""Per-channel settings: the class chosen by name, its own keys, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.channel_settings import (
    ChannelSettings,
    DiscordSettings,
    HttpChannelSettings,
    SlackSettings,
    TelegramSettings,
)
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings, load_settings


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


def test_each_channel_gets_its_own_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_TOKEN", "123:abc")
    settings = load(
        tmp_path,
        "channels:\n"
        "  telegram: {token: '${TG_TOKEN}', mode: webhook, webhook_url: 'https://x/tg'}\n"
        "  slack: {token: xoxb, signing_secret: s3cret, allow_from: ['*']}\n"
        "  discord: {gateway_url: 'ws://127.0.0.1:1'}\n"
        "  http: {busy_policy: collect}\n"
        "  custom: {group_policy: open}\n",
    )
    channels = settings.channels
    assert isinstance(channels["telegram"], TelegramSettings)
    assert channels["telegram"].token is not None
    assert channels["telegram"].token.get_secret_value() == "123:abc"
    assert isinstance(channels["slack"], SlackSettings)
    assert isinstance(channels["discord"], DiscordSettings)
    assert isinstance(channels["http"], HttpChannelSettings)
    assert type(channels["custom"]) is ChannelSettings
    defaults = channels["custom"]
    assert (defaults.allow_from, defaults.group_policy, defaults.edit_interval) == ([], "open", 1.0)
    assert defaults.max_attachment_bytes == 20 * 1024 * 1024


def test_a_base_instance_built_in_code_becomes_the_channels_class() -> None:
    settings = Settings(channels={"discord": ChannelSettings(allow_from=["u1"])})
    assert isinstance(settings.channels["discord"], DiscordSettings)
    assert settings.channels["discord"].allow_from == ["u1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "channels: {http: {signing_secret: x}}",
            "unknown key 'channels.http.signing_secret' (value <secret>)",
        ),
        ("channels: {telegram: {mode: push}}", "channels.telegram.mode = 'push': Input should be"),
        ("channels: {telegram: {mode: webhook}}", "mode 'webhook' needs webhook_url"),
        ("channels: {slack: {token: xoxb-secret}}", "HTTP events need signing_secret"),
        ("channels: {fake: {group_policy: all}}", "channels.fake.group_policy = 'all'"),
        ("channels: {fake: {allow_from: ['']}}", "entries must not be empty"),
        ("channels: {fake: {edit_interval: -1}}", "channels.fake.edit_interval = -1"),
    ],
)
def test_errors_are_one_line_and_hide_secrets(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message and expected in message, message
    assert "xoxb-secret" not in message
