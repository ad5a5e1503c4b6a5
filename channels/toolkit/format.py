"""The model's Markdown in each platform's format: pure functions, no I/O.

Fenced code blocks and inline code are cut out first (their text is only
escaped), then links, bold, italics, strikethrough and headings are converted in
what remains. ``format_parts`` splits the Markdown with ``split_message`` and
formats each part; a part that grows past the limit in conversion is split again
with a smaller budget, so no formatted part exceeds it and no tag or code block is
cut in two (splitting the converted HTML itself could cut inside a tag).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from gateway.channels.render import split_message

Formatter = Callable[[str], str]

_FENCE = re.compile(r"```([^\n`]*)\n(.*?)(?:\n```|```|$)", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(
    r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?!\*)|(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"
)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", re.M)
_SLOT = "\x00{}\x00"
_SLOT_RE = re.compile("\x00(\\d+)\x00")


class _Slots:
    """Pieces already in the target format, kept out of the later substitutions."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def put(self, piece: str) -> str:
        self.pieces.append(piece)
        return _SLOT.format(len(self.pieces) - 1)

    def fill(self, text: str) -> str:
        return _SLOT_RE.sub(lambda m: self.pieces[int(m.group(1))], text)


def telegram_html(markdown: str) -> str:
    """Telegram HTML (``parse_mode=HTML``): everything else escaped."""
    slots = _Slots()

    def fence(m: re.Match[str]) -> str:
        lang = m.group(1).strip().split(" ")[0]
        attr = f' class="language-{html.escape(lang)}"' if lang else ""
        return slots.put(f"<pre><code{attr}>{html.escape(m.group(2), quote=False)}</code></pre>")

    text = _FENCE.sub(fence, markdown)
    text = _INLINE_CODE.sub(
        lambda m: slots.put(f"<code>{html.escape(m.group(1), False)}</code>"), text
    )
    text = _LINK.sub(
        lambda m: slots.put(
            f'<a href="{html.escape(m.group(2))}">{html.escape(m.group(1), quote=False)}</a>'
        ),
        text,
    )
    text = html.escape(text, quote=False)
    text = _HEADING.sub(r"<b>\1</b>", text)
    text = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    text = _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", text)
    text = _STRIKE.sub(r"<s>\1</s>", text)
    return slots.fill(text)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_mrkdwn(markdown: str) -> str:
    """Slack mrkdwn: ``*bold*``, ``_italic_``, ``~strike~``, ``<url|text>``; ``& < >`` escaped."""
    slots = _Slots()

    def fence(m: re.Match[str]) -> str:
        return slots.put(f"```\n{_slack_escape(m.group(2))}\n```")

    text = _FENCE.sub(fence, markdown)
    text = _INLINE_CODE.sub(lambda m: slots.put(f"`{_slack_escape(m.group(1))}`"), text)
    text = _LINK.sub(
        lambda m: slots.put(f"<{m.group(2)}|{_slack_escape(m.group(1)).replace('|', '¦')}>"), text
    )
    text = _slack_escape(text)
    text = _HEADING.sub(lambda m: slots.put(f"*{m.group(1)}*"), text)
    # Italics first: their single markers would otherwise match the bold written below.
    text = _ITALIC.sub(lambda m: f"_{m.group(1) or m.group(2)}_", text)
    text = _BOLD.sub(lambda m: slots.put(f"*{m.group(1) or m.group(2)}*"), text)
    text = _STRIKE.sub(r"~\1~", text)
    return slots.fill(text)


_MASS_MENTION = re.compile(r"@(everyone|here)\b")


def discord_markdown(markdown: str) -> str:
    """Discord renders Markdown itself; only ``@everyone``/``@here`` are neutralised."""
    return _MASS_MENTION.sub("@\u200b\\1", markdown)


def format_parts(markdown: str, limit: int, fmt: Formatter) -> list[tuple[str, str]]:
    """``(formatted, markdown)`` parts of ``markdown``, each formatted one within ``limit``."""
    parts: list[tuple[str, str]] = []
    for source in split_message(markdown, limit):
        parts.extend(_fit(source, limit, fmt))
    return parts


def _fit(source: str, limit: int, fmt: Formatter) -> list[tuple[str, str]]:
    formatted = fmt(source)
    if len(formatted) <= limit:
        return [(formatted, source)]
    # Conversion grew it: split the source smaller, in proportion to the growth.
    budget = max(16, min(len(source) - 1, len(source) * limit // len(formatted) - 8))
    return [fitted for piece in split_message(source, budget) for fitted in _fit(piece, limit, fmt)]
