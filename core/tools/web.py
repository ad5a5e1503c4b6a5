"""The opt-in ``web_fetch`` tool: GET an http(s) URL and return its status and text.

Reading stops at ``max_bytes`` (of the decoded body, so compression cannot blow it up);
HTML is reduced to its visible text. The whole request has one wall-clock timeout.
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import aiohttp

from gateway.core.errors import ToolError
from gateway.core.settings import WebFetchToolSettings
from gateway.core.tools.base import Tool, tool

_READ_CHUNK = 64 * 1024
_MAX_REDIRECTS = 5
_HEADERS = {
    "User-Agent": "gateway-web-fetch/1",
    "Accept": "text/html,text/plain,application/json;q=0.9,*/*;q=0.5",
}
_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/xhtml+xml"}
)


def make_web_fetch_tool(settings: WebFetchToolSettings) -> Tool:
    """The ``web_fetch`` tool, with the timeout and size limit of ``settings``."""

    @tool(name="web_fetch")
    async def web_fetch(url: str) -> str:
        """Fetch a web page or document with HTTP GET and return its status and text.

        Args:
            url: The address to fetch; only http:// and https:// URLs are allowed.
        """
        return await fetch_text(url, settings)

    return web_fetch


async def fetch_text(url: str, settings: WebFetchToolSettings) -> str:
    """GET ``url``: a status header, then the body as text (HTML reduced to visible text)."""
    _check_url(url)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=_HEADERS) as session,
            session.get(url, max_redirects=_MAX_REDIRECTS) as response,
        ):
            body, truncated = await _read_capped(response.content, settings.max_bytes)
            header = (
                f"status: {response.status} {response.reason or ''}".rstrip()
                + f"\nurl: {response.url}\ncontent-type: {response.content_type}\n\n"
            )
            text = _body_text(body, response.content_type, response.charset)
    except TimeoutError:
        raise ToolError(f"fetching {url} timed out after {settings.timeout_s:g}s") from None
    except aiohttp.ClientError as exc:
        raise ToolError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from exc
    if truncated:
        text += f"\n\n[truncated: the body is larger than {settings.max_bytes} bytes]"
    return header + text


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ToolError(f"not a valid URL: {url!r}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme!r} URLs" if parts.scheme else "URLs without a scheme"
        raise ToolError(f"only http:// and https:// URLs can be fetched, not {shown}")
    if not parts.hostname:
        raise ToolError(f"URL has no host: {url!r}")


async def _read_capped(content: aiohttp.StreamReader, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the body, and whether there was more (left unread)."""
    body = bytearray()
    async for chunk in content.iter_chunked(_READ_CHUNK):
        room = max_bytes - len(body)
        if len(chunk) > room:
            body += chunk[:room]
            return bytes(body), True
        body += chunk
    return bytes(body), False


def _body_text(body: bytes, content_type: str, charset: str | None) -> str:
    is_textual = (
        content_type.startswith("text/")
        or content_type in _TEXT_TYPES
        or content_type.endswith(("+json", "+xml"))
    )
    if not is_textual:
        return f"[{len(body)} bytes of {content_type} content, not text: not shown]"
    text = body.decode(_known_codec(charset), errors="replace")
    return html_to_text(text) if "html" in content_type else text


def _known_codec(charset: str | None) -> str:
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            return "utf-8"  # a server naming a charset Python lacks: UTF-8 is the best guess
    return "utf-8"


_WHITESPACE = re.compile(r"\s+")
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg"})
_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "title"}
    | {"section", "article", "header", "footer", "table", "ul", "ol", "blockquote", "hr"}
)


class _TextExtractor(HTMLParser):
    """Collects visible text, with line breaks where block elements begin and end."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:  # as a browser does: source line breaks are just spaces
            self.parts.append(_WHITESPACE.sub(" ", data))


def html_to_text(html: str) -> str:
    """The visible text of an HTML document, whitespace collapsed, one block per line."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = (" ".join(line.split()) for line in "".join(extractor.parts).split("\n"))
    return "\n".join(line for line in lines if line)
