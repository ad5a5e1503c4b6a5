"""Markdown to each platform's format: table tests, and splitting after conversion."""

from __future__ import annotations

import pytest

from gateway.channels.toolkit.format import (
    discord_markdown,
    format_parts,
    slack_mrkdwn,
    telegram_html,
)

CODE = '```python\nif a < b:\n    print("&")\n```'

TELEGRAM = [
    ("plain text", "plain text"),
    ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
    ("**bold** and __also__", "<b>bold</b> and <b>also</b>"),
    ("*it* and _it2_", "<i>it</i> and <i>it2</i>"),
    ("~~gone~~", "<s>gone</s>"),
    ("# Title", "<b>Title</b>"),
    ("use `x<y>` ok", "use <code>x&lt;y&gt;</code> ok"),
    (
        CODE,
        '<pre><code class="language-python">if a &lt; b:\n    print("&amp;")</code></pre>',
    ),
    ("```\nraw *not bold*\n```", "<pre><code>raw *not bold*</code></pre>"),
    (
        "[docs](https://x.io/a_b?q=1&r=2)",
        '<a href="https://x.io/a_b?q=1&amp;r=2">docs</a>',
    ),
    ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
    ("unclosed **bold", "unclosed **bold"),
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
]

SLACK = [
    ("plain text", "plain text"),
    ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
    ("**bold** and *it*", "*bold* and _it_"),
    ("~~gone~~", "~gone~"),
    ("# Title", "*Title*"),
    ("[docs](https://x.io/p)", "<https://x.io/p|docs>"),
    ("use `x<y>`", "use `x&lt;y&gt;`"),
    (CODE, '```\nif a &lt; b:\n    print("&amp;")\n```'),
    ("snake_case_name", "snake_case_name"),
]

DISCORD = [
    ("**bold** <b> & `code`", "**bold** <b> & `code`"),
    ("@everyone look @here", "@\u200beveryone look @\u200bhere"),
    ("mail me@hereford.uk", "mail me@hereford.uk"),
    (CODE, CODE),
]


@pytest.mark.parametrize(("markdown", "expected"), TELEGRAM)
def test_telegram_html(markdown: str, expected: str) -> None:
    assert telegram_html(markdown) == expected


@pytest.mark.parametrize(("markdown", "expected"), SLACK)
def test_slack_mrkdwn(markdown: str, expected: str) -> None:
    assert slack_mrkdwn(markdown) == expected


@pytest.mark.parametrize(("markdown", "expected"), DISCORD)
def test_discord_markdown(markdown: str, expected: str) -> None:
    assert discord_markdown(markdown) == expected


def test_no_formatted_part_exceeds_the_limit() -> None:
    # Every '<' grows fourfold in HTML: splitting the Markdown at the limit is not enough.
    markdown = " ".join(["a<b&c"] * 400) + "\n\n" + "```\n" + "x < y\n" * 200 + "```"
    parts = format_parts(markdown, 200, telegram_html)
    assert len(parts) > len(markdown) // 200
    assert all(len(formatted) <= 200 for formatted, _ in parts)
    # Each part is whole markup: code blocks are closed in the part that opened them.
    for formatted, _ in parts:
        assert formatted.count("<pre>") == formatted.count("</pre>")
    assert "".join(source for _, source in parts).count("x < y") == 200


def test_parts_keep_their_markdown_for_a_plain_resend() -> None:
    [(formatted, source)] = format_parts("**hi** <there>", 4096, telegram_html)
    assert formatted == "<b>hi</b> &lt;there&gt;"
    assert source == "**hi** <there>"
