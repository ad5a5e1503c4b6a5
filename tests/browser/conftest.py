"""Fixtures of the browser tests: a real gateway (Redis, worker, fake model) and Chromium.

The browser is Debian's ``chromium`` (or ``$CHROMIUM``) driven by Playwright for
Python through ``executable_path``: Playwright's own browser download is not
available here. When no browser can be found the tests are skipped with a loud
warning naming what to install; never silently.
"""

from __future__ import annotations

import os
import shutil
import socket
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from gateway.app import GatewayApp
from gateway.core.settings import Settings
from tests.fakes.openai_server import FakeModelServer

ARTIFACTS = Path(__file__).parent / "artifacts"
"""Screenshots of the tests' conversations (gitignored)."""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    return None


def skip_loudly(reason: str, *, module: bool = False) -> NoReturn:
    warnings.warn(pytest.PytestWarning(f"BROWSER TESTS SKIPPED: {reason}"), stacklevel=2)
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason}", allow_module_level=module)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = find_chromium()
    if executable is None:
        skip_loudly(
            "no Chromium found (apt-get install chromium, or set $CHROMIUM to a Chromium binary)"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        skip_loudly("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def browser_settings(
    redis_url: str, tmp_path: Path, fake: FakeModelServer, **http: Any
) -> Settings:
    """A fixed port, so a gateway restarted by a test is found again by the page."""
    return Settings(
        model="local/fake-model",
        providers={"local": {"base_url": fake.base_url, "api_key": "none", "max_retries": 0}},
        workspace=tmp_path / "workspace",
        redis={"url": redis_url},
        http={"host": "127.0.0.1", "port": free_port(), **http},
        worker={"ready_partitions": 2, "coalesce_ms": 10, "max_deliveries": 1},
    )


@pytest.fixture
async def gateway(
    redis_url: str, tmp_path: Path, fake_model: FakeModelServer
) -> AsyncIterator[GatewayApp]:
    async with GatewayApp(browser_settings(redis_url, tmp_path, fake_model)) as app:
        yield app


@pytest.fixture
async def page(browser: Any, gateway: GatewayApp) -> AsyncIterator[Any]:
    context = await browser.new_context(base_url=gateway.url)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.url)
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
