"""The web chat in a real headless Chromium, against a real gateway, Redis, worker and model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from gateway.app import GatewayApp
from tests.browser.conftest import browser_settings, screenshot, skip_loudly

try:
    from playwright.async_api import expect
except ImportError:  # the test extra was not installed
    skip_loudly("playwright is not installed (pip install -e '.[test]')", module=True)
from tests.fakes.openai_server import FakeModelServer, Reply

pytestmark = pytest.mark.integration

CODE_REPLY = "Here is **some** code:\n\n```python\nprint('hi')\n```\n\nDone."
SLOW = Reply(text="word " * 300, chunk_size=5, chunk_delay_s=0.05)
STOP = re.compile("Stop")

INJECTIONS = (
    '<img src=x onerror="window.__pwned = 1">',
    "<script>window.__pwned = 2</script>",
    "[click me](javascript:window.__pwned=3)",
    "[tab trick](java\tscript:window.__pwned=4)",
    '<a href="javascript:window.__pwned=5">raw link</a>',
    "<b>raw bold</b> <iframe src=javascript:alert(1)></iframe>",
    "![image](x onerror=alert(1))",
    "[fine](https://example.com/a?b=1)",
)
INJECTION_TEXT = "\n\n".join(INJECTIONS)


async def send(page: Any, text: str) -> None:
    box = page.get_by_label("Message")
    await box.fill(text)
    await box.press("Enter")


async def track_body_lengths(page: Any) -> None:
    """Record every length the newest assistant reply's text goes through."""
    await page.evaluate(
        """() => {
        window.__lengths = [];
        new MutationObserver(() => {
          const bodies = document.querySelectorAll('.msg.assistant .body');
          if (bodies.length) window.__lengths.push(bodies[bodies.length - 1].textContent.length);
        }).observe(document.getElementById('log'),
                   {childList: true, subtree: true, characterData: true});
      }"""
    )


async def test_send_streams_the_reply_and_reload_shows_the_history(
    page: Any, gateway: GatewayApp, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(text=CODE_REPLY, chunk_size=3, chunk_delay_s=0.02))
    await page.goto("/")
    await expect(page.locator("#key-dialog")).not_to_be_visible()  # loopback: no key asked
    await track_body_lengths(page)
    await page.get_by_label("Message").fill("hello\nthere")  # Shift+Enter is a newline:
    await page.get_by_label("Message").press("Shift+Enter")
    await expect(page.locator(".msg.user")).to_have_count(0)
    await page.get_by_label("Message").press("Enter")
    user = page.locator(".msg.user")
    await expect(user).to_have_count(1)
    await expect(user.locator("br")).to_have_count(1)
    reply = page.locator(".msg.assistant").last
    await expect(reply.locator("pre code")).to_have_text("print('hi')")
    await expect(reply.locator("strong")).to_have_text("some")
    await expect(reply.locator(".body")).to_contain_text("Done.")
    lengths = set(await page.evaluate("window.__lengths"))
    assert len(lengths - {0}) > 2, f"the reply did not stream: lengths {sorted(lengths)}"
    await expect(page.get_by_role("button", name=STOP)).to_be_hidden()

    await reply.get_by_role("button", name="Copy code").click()
    await expect(reply.get_by_role("button", name="Copy code")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "print('hi')"

    await page.reload()
    await expect(page.locator(".msg")).to_have_count(2)
    await expect(page.locator(".msg.user .body")).to_have_text("hellothere")
    await expect(page.locator(".msg.assistant pre code")).to_have_text("print('hi')")
    await screenshot(page, "conversation")


async def test_tool_activity_is_shown_and_new_chat_starts_over(
    page: Any, gateway: GatewayApp, fake_model: FakeModelServer
) -> None:
    fake_model.script(
        Reply(tool_calls=[("list_dir", {"path": "."})]), Reply(text="The folder is empty.")
    )
    await page.goto("/")
    await send(page, "what is in the workspace?")
    reply = page.locator(".msg.assistant").last
    await expect(reply.locator(".tool.done")).to_have_text("list_dir")
    await expect(reply.locator(".body")).to_have_text("The folder is empty.")
    await page.get_by_role("button", name="New chat").click()
    await expect(page.locator(".msg")).to_have_count(0)
    await send(page, "a fresh start")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: a fresh start")
    await page.reload()  # the new chat is the one kept
    await expect(page.locator(".msg")).to_have_count(2)
    await expect(page.locator(".msg.user .body")).to_have_text("a fresh start")
    # Only the new chat's model request: the old chat's history is not in it.
    assert [m["role"] for m in fake_model.requests[-1]["messages"]] == ["system", "user"]


async def test_stop_ends_a_slow_reply(
    page: Any, gateway: GatewayApp, fake_model: FakeModelServer
) -> None:
    fake_model.script(SLOW)
    await page.goto("/")
    await send(page, "write a long story")
    reply = page.locator(".msg.assistant").last
    await expect(reply.locator(".body")).to_contain_text("word word")
    await page.get_by_role("button", name=STOP).click()
    await expect(reply.locator(".note")).to_have_text("Stopped.")
    await expect(page.get_by_role("button", name=STOP)).to_be_hidden()
    await fake_model.wait_streams_closed()  # the model stream was cut, not read to its end
    shown = await reply.locator(".body").inner_text()
    assert 0 < len(shown.strip()) < len(SLOW.text.strip())
    # What was shown stays after a reload; the chat goes on.
    await page.reload()
    await expect(page.locator(".msg.assistant .note")).to_have_text("Stopped.")
    await send(page, "shorter please")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: shorter please")
    await screenshot(page, "stopped")


async def test_user_text_and_model_output_cannot_inject_html(
    browser: Any, gateway: GatewayApp, fake_model: FakeModelServer
) -> None:
    # A phone-sized screen, too.
    phone = {"width": 390, "height": 800}
    context = await browser.new_context(base_url=gateway.url, viewport=phone)
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    fake_model.script(Reply(text=INJECTION_TEXT, chunk_size=7))
    try:
        await page.goto("/")
        await send(page, INJECTION_TEXT)
        reply = page.locator(".msg.assistant").last
        await expect(reply.get_by_role("link", name="fine")).to_be_visible()
        for bubble in (page.locator(".msg.user").last, reply):
            body = bubble.locator(".body")
            # The markup is shown as text...
            await expect(body).to_contain_text('<img src=x onerror="window.__pwned = 1">')
            await expect(body).to_contain_text("<script>window.__pwned = 2</script>")
            # ...and made no element.
            for tag in ("img", "script", "iframe", "b"):
                assert await body.locator(tag).count() == 0, f"a <{tag}> was injected"
            hrefs = await body.locator("a").evaluate_all("links => links.map(a => a.href)")
            assert hrefs == ["https://example.com/a?b=1"]
        await page.reload()  # and from the history, too
        await expect(page.locator(".msg")).to_have_count(2)
        assert await page.locator("#log img, #log script, #log iframe").count() == 0
        assert await page.evaluate("window.__pwned") is None
        assert dialogs == []
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
        await expect(page.get_by_label("Message")).to_be_in_viewport()
        await screenshot(page, "injection-phone")
    finally:
        await context.close()


async def test_failures_are_shown_and_the_stream_resumes_after_a_restart(
    page: Any, gateway: GatewayApp, fake_model: FakeModelServer
) -> None:
    fake_model.script(Reply(status=500, error_message="model exploded"))
    await page.goto("/")
    await send(page, "this will fail")
    note = page.locator(".msg.assistant .note.error")
    await expect(note).to_contain_text("The reply failed")
    await send(page, "first")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: first")

    await gateway.stop()
    await expect(page.get_by_role("alert").first).to_contain_text("gateway")
    await gateway.start()
    await expect(page.locator("#banner")).to_be_hidden()
    await send(page, "second")
    await expect(page.locator(".msg.assistant").last).to_contain_text("echo: second")
    # Resumed after the last event seen: no reply shown twice.
    await expect(page.locator(".msg.assistant")).to_have_count(3)


async def test_a_gateway_with_api_keys_asks_for_one_once(
    browser: Any, redis_url: str, tmp_path: Path, fake_model: FakeModelServer
) -> None:
    settings = browser_settings(redis_url, tmp_path, fake_model, api_keys=["k-right"])
    async with GatewayApp(settings) as app:
        context = await browser.new_context(base_url=app.url)
        page = await context.new_page()
        try:
            await page.goto("/")
            dialog = page.locator("#key-dialog")
            await expect(dialog).to_be_visible()
            await page.locator("#key-input").fill("k-wrong")
            await page.locator("#key-input").press("Enter")
            await expect(dialog).to_contain_text("refused")
            await page.locator("#key-input").fill("k-right")
            await page.locator("#key-input").press("Enter")
            await expect(dialog).to_be_hidden()
            await send(page, "with a key")
            await expect(page.locator(".msg.assistant").last).to_contain_text("echo: with a key")
            await page.reload()  # kept in local storage: not asked again
            await expect(page.locator(".msg")).to_have_count(2)
            await expect(dialog).to_be_hidden()
        finally:
            await context.close()
