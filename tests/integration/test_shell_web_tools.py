"""``exec`` with real processes (timeouts, cancellation, process groups) and ``web_fetch``
against a local aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.core.errors import ToolError
from gateway.core.settings import ExecToolSettings, WebFetchToolSettings
from gateway.core.tools import Tool, ToolContext
from gateway.core.tools.shell import make_exec_tool
from gateway.core.tools.web import html_to_text, make_web_fetch_tool

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(session_key="s", run_id="r", workspace=tmp_path)


def exec_tool(timeout_s: float = 10.0, max_output_chars: int = 16_000) -> Tool:
    return make_exec_tool(
        ExecToolSettings(enabled=True, timeout_s=timeout_s, max_output_chars=max_output_chars)
    )


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may linger if PID 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def written_text(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not (text := written_text(path)):
        assert time.monotonic() < deadline, f"{path} was never written"
        await asyncio.sleep(0.01)
    return text


async def wait_until_dead(pid: int, timeout_s: float = 10.0) -> None:
    """The commands sleep 30 s: dying well before that proves they were killed, and the
    generous bound keeps a loaded CI machine from failing on scheduling delays."""
    deadline = time.monotonic() + timeout_s
    while is_running(pid):
        assert time.monotonic() < deadline, (
            f"process {pid} is still running: {Path(f'/proc/{pid}/stat').read_text()!r}"
        )
        await asyncio.sleep(0.01)


async def test_exec_returns_output_and_exit_code(ctx: ToolContext) -> None:
    result = await exec_tool().invoke({"command": "echo out; echo err >&2; pwd; exit 3"}, ctx)
    assert result == f"out\nerr\n{ctx.workspace.resolve()}\n\n[exit code 3]"
    assert await exec_tool().invoke({"command": "true"}, ctx) == "(no output)\n[exit code 0]"


async def test_exec_does_not_pass_secrets_in_the_environment(
    ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-model")
    monkeypatch.setenv("GATEWAY_HTTP__API_KEYS", "also-secret")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    result = await exec_tool().invoke({"command": "env"}, ctx)
    assert "HARMLESS_SETTING=visible" in result
    assert "sk-not-for-the-model" not in result
    assert "also-secret" not in result


async def test_exec_truncates_long_output(ctx: ToolContext) -> None:
    command = (
        "printf 'A%.0s' $(seq 1 500); printf 'B%.0s' $(seq 1 5000); printf 'C%.0s' $(seq 1 300)"
    )
    result = await exec_tool(max_output_chars=900).invoke({"command": command}, ctx)
    assert result.startswith("A" * 500 + "B" * 100 + "\n[... 4900 bytes of output omitted ...]\n")
    assert result.endswith("C" * 300 + "\n[exit code 0]")


async def test_exec_timeout_kills_the_whole_group(ctx: ToolContext) -> None:
    command = "echo started; sleep 30 & echo $! > child.pid; wait"
    began = time.monotonic()
    with pytest.raises(ToolError, match=r"(?s)timed out after 0.5s and was killed.*started"):
        await exec_tool(timeout_s=0.5).invoke({"command": command}, ctx)
    assert time.monotonic() - began < 3
    await wait_until_dead(int((ctx.workspace / "child.pid").read_text()))


async def test_cancelling_the_run_kills_the_command_promptly(ctx: ToolContext) -> None:
    command = "echo $$ > shell.pid; sleep 30 & echo $! > child.pid; wait"
    task = asyncio.create_task(exec_tool().invoke({"command": command}, ctx))
    shell_pid = int(await wait_for_file(ctx.workspace / "shell.pid"))
    child_pid = int(await wait_for_file(ctx.workspace / "child.pid"))
    assert is_running(shell_pid) and is_running(child_pid)
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - began < 10  # far below the command's own 30 s
    assert not is_running(shell_pid)
    await wait_until_dead(child_pid)


async def test_background_processes_do_not_outlive_the_command(ctx: ToolContext) -> None:
    command = "sleep 30 > /dev/null 2>&1 & echo $! > child.pid"
    assert await exec_tool().invoke({"command": command}, ctx) == "(no output)\n[exit code 0]"
    await wait_until_dead(int((ctx.workspace / "child.pid").read_text()))


async def test_exec_in_a_missing_workspace(tmp_path: Path) -> None:
    gone = ToolContext(session_key="s", run_id="r", workspace=tmp_path / "missing")
    with pytest.raises(ToolError, match="workspace directory does not exist"):
        await exec_tool().invoke({"command": "true"}, gone)


PAGE = """<!doctype html><html><head><title>Hello page</title>
<style>body { color: red }</style><script>var hidden = "do not show";</script></head>
<body><h1>Main   title</h1><p>First &amp; <b>bold</b> paragraph.</p>
<ul><li>one</li><li>two</li></ul>
</body></html>"""


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def big(request: web.Request) -> web.Response:
    return web.Response(text="x" * 5000)


async def missing(request: web.Request) -> web.Response:
    return web.Response(status=404, text="gone")


async def image(request: web.Request) -> web.Response:
    return web.Response(body=b"\x89PNG", content_type="image/png")


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/page")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(10)
    return web.Response(text="too late")


@pytest_asyncio.fixture
async def site() -> AsyncIterator[str]:
    app = web.Application()
    for handler in (page, big, missing, image, moved, slow):
        app.router.add_get(f"/{handler.__name__}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def fetch_tool(timeout_s: float = 5.0, max_bytes: int = 1_000_000) -> Tool:
    return make_web_fetch_tool(
        WebFetchToolSettings(enabled=True, timeout_s=timeout_s, max_bytes=max_bytes)
    )


async def test_web_fetch_returns_status_and_page_text(site: str, ctx: ToolContext) -> None:
    result = await fetch_tool().invoke({"url": f"{site}/page"}, ctx)
    header, body = result.split("\n\n", 1)
    assert header == f"status: 200 OK\nurl: {site}/page\ncontent-type: text/html"
    assert body == "Hello page\nMain title\nFirst & bold paragraph.\none\ntwo"


async def test_web_fetch_follows_redirects_and_reports_errors_status(
    site: str, ctx: ToolContext
) -> None:
    moved = await fetch_tool().invoke({"url": f"{site}/moved"}, ctx)
    assert f"url: {site}/page" in moved and "Main title" in moved
    missing = await fetch_tool().invoke({"url": f"{site}/missing"}, ctx)
    assert missing.startswith("status: 404 Not Found")
    assert missing.endswith("\n\ngone")


async def test_web_fetch_stops_reading_past_max_bytes(site: str, ctx: ToolContext) -> None:
    result = await fetch_tool(max_bytes=1000).invoke({"url": f"{site}/big"}, ctx)
    body = result.split("\n\n", 1)[1]
    assert body == "x" * 1000 + "\n\n[truncated: the body is larger than 1000 bytes]"
    exact = await fetch_tool(max_bytes=5000).invoke({"url": f"{site}/big"}, ctx)
    assert exact.endswith("\n\n" + "x" * 5000)


async def test_web_fetch_does_not_show_binary_content(site: str, ctx: ToolContext) -> None:
    result = await fetch_tool().invoke({"url": f"{site}/image"}, ctx)
    assert result.endswith("[4 bytes of image/png content, not text: not shown]")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///etc/passwd", "not 'file' URLs"),
        ("ftp://127.0.0.1/x", "not 'ftp' URLs"),
        ("127.0.0.1/page", "not URLs without a scheme"),
        ("http:///nohost", "URL has no host"),
    ],
)
async def test_web_fetch_refuses_other_schemes(url: str, expected: str, ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match=expected):
        await fetch_tool().invoke({"url": url}, ctx)


async def test_web_fetch_timeout_and_connection_errors(site: str, ctx: ToolContext) -> None:
    began = time.monotonic()
    with pytest.raises(ToolError, match=r"timed out after 0\.3s"):
        await fetch_tool(timeout_s=0.3).invoke({"url": f"{site}/slow"}, ctx)
    assert time.monotonic() - began < 3
    with pytest.raises(ToolError, match=r"could not fetch http://127\.0\.0\.1:1/"):
        await fetch_tool().invoke({"url": "http://127.0.0.1:1/"}, ctx)


def test_html_to_text_skips_scripts_and_collapses_whitespace() -> None:
    assert html_to_text("<div>a\n\n  b</div><script>x()</script><p>c</p>") == "a b\nc"
