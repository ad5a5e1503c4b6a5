"""The Telegram renderer against the fake Bot API: each Telegram answer becomes the
toolkit's typed outcome the deliverer acts on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from telegram import Bot
from telegram import error as tg

from gateway.channels.telegram.renderer import TelegramRenderer, typed_errors
from gateway.channels.toolkit import renderer as outcome
from tests.fakes.fake_telegram import FakeBotAPI, shown_html

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def rendered() -> AsyncIterator[tuple[FakeBotAPI, TelegramRenderer]]:
    fake = await FakeBotAPI().start()
    bot = Bot(fake.token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot")
    renderer = TelegramRenderer(bot, edit_interval_s=0.0)
    yield fake, renderer
    await renderer.close()
    await fake.stop()


async def test_an_identical_edit_is_success(
    rendered: tuple[FakeBotAPI, TelegramRenderer],
) -> None:
    fake, renderer = rendered
    message_id = await renderer.send("100", "<b>hi</b>")
    await renderer.edit("100", message_id, "<b>hi</b>")  # Telegram: "message is not modified"
    assert fake.sent[int(message_id)].text == "hi"
    assert fake.sent[int(message_id)].edits == 0


async def test_telegram_answers_become_typed_outcomes(
    rendered: tuple[FakeBotAPI, TelegramRenderer],
) -> None:
    fake, renderer = rendered
    with pytest.raises(outcome.ParseRejected):
        await renderer.send("100", "a < b")
    assert await renderer.send("100", "a < b", plain=True)
    with pytest.raises(outcome.MessageGone):
        await renderer.edit("100", "4242", "gone")
    fake.rate_limit("sendMessage", retry_after=3)
    with pytest.raises(outcome.RetryAfter) as limited:
        await renderer.send("100", "later")
    assert limited.value.seconds == 3.0


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (tg.Forbidden("Forbidden: bot was blocked by the user"), outcome.Forbidden),
        (tg.BadRequest("Bad Request: chat not found"), outcome.ChatGone),
        (tg.ChatMigrated(-100123), outcome.ChatGone),
        (tg.TimedOut(), outcome.Transient),
        (tg.NetworkError("connection reset"), outcome.Transient),
    ],
)
async def test_error_mapping(raised: tg.TelegramError, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        async with typed_errors():
            raise raised


def test_the_fake_parses_html_as_telegram_does() -> None:
    assert shown_html("<b>a &lt; b</b> &amp; c") == "a < b & c"
    for bad in ("a < b", "<b>open", "x & y", "<div>no</div>"):
        with pytest.raises(ValueError):
            shown_html(bad)
