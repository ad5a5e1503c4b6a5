"""A local fake of the Telegram Bot API (aiohttp), for the real python-telegram-bot.

Point the adapter's ``api_base`` at ``url``: PTB calls ``{url}/bot<token>/<method>``
and downloads files from ``{url}/file/bot<token>/<path>``. Tests ``push`` updates
(long-polled by ``getUpdates``, which honours ``offset`` and ``timeout``), read what
the bot sent (``sent``, with the text as a user would see it after HTML parsing),
and script failures: ``rate_limit`` answers 429 with ``retry_after``.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 999, "is_bot": True, "first_name": "Gateway", "username": "gw_test_bot"}
_TAG = re.compile(r"<(/?)([a-z-]+)(\s[^<>]*)?>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")
_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a",
         "blockquote", "tg-spoiler", "span"}  # fmt: skip


def shown_html(text: str) -> str:
    """What Telegram shows for ``parse_mode=HTML``; ValueError where it refuses to parse."""
    stack: list[str] = []
    pos = 0
    for match in _TAG.finditer(text):
        if "<" in text[pos : match.start()] or ">" in text[pos : match.start()]:
            raise ValueError(f"unsupported start tag at byte offset {pos}")
        closing, name = match.group(1), match.group(2)
        if name not in _TAGS:
            raise ValueError(f"unsupported start tag {name!r}")
        if closing:
            if not stack or stack.pop() != name:
                raise ValueError(f"unmatched end tag {name!r}")
        else:
            stack.append(name)
        pos = match.end()
    if "<" in text[pos:] or ">" in text[pos:] or stack:
        raise ValueError("unclosed tag")
    bare = _TAG.sub("", text)
    if "&" in _ENTITY.sub("", bare):
        raise ValueError("unescaped &")
    return html.unescape(bare)


@dataclass
class Sent:
    message_id: int
    chat_id: int
    text: str
    """As shown to the user (HTML parsed)."""
    raw: str
    parse_mode: str | None
    thread_id: int | None
    reply_to: int | None
    edits: int = 0


@dataclass
class FakeBotAPI:
    token: str = "123456:TEST-token"
    updates: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[int, Sent] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    file_limit: int = 20 * 1024 * 1024
    """``getFile`` refuses larger files, as the Bot API does past 20 MB."""
    commands: list[dict[str, str]] = field(default_factory=list)
    webhook: dict[str, Any] = field(default_factory=dict)
    confirmed: int = 0
    """The highest ``offset`` a poller sent (updates below it are confirmed)."""
    limited: dict[str, list[int]] = field(default_factory=dict)
    replays: list[dict[str, Any]] = field(default_factory=list)
    served: list[int] = field(default_factory=list)
    """Update ids ``getUpdates`` returned, in order (redeliveries repeat)."""
    url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeBotAPI:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the test's side ---------------------------------------------------------------

    async def push(
        self,
        text: str = "",
        *,
        chat_id: int = 100,
        user_id: int = 100,
        username: str = "ann",
        chat_type: str = "private",
        thread_id: int | None = None,
        reply_to_bot: bool = False,
        **message: Any,
    ) -> dict[str, Any]:
        """A user sends a message; ``message`` adds fields (``photo``, ``caption``…)."""
        update = self.update(
            text, chat_id=chat_id, user_id=user_id, username=username, chat_type=chat_type,
            thread_id=thread_id, reply_to_bot=reply_to_bot, **message,
        )  # fmt: skip
        await self._notify()
        return update

    async def push_album(
        self, photos: list[str], *, caption: str = "", group: str = "mg1", **message: Any
    ) -> list[dict[str, Any]]:
        """A user sends an album: one update per photo (file ids), all queued at once (so
        one ``getUpdates`` batch); the first part carries the caption."""
        updates = []
        for n, file_id in enumerate(photos):
            photo = {"file_id": file_id, "file_unique_id": f"u{file_id}", "width": 1,
                     "height": 1, "file_size": len(self.files.get(file_id, b""))}  # fmt: skip
            extra = {"caption": caption} if caption and n == 0 else {}
            updates.append(self.update(photo=[photo], media_group_id=group, **extra, **message))
        await self._notify()
        return updates

    def update(
        self,
        text: str = "",
        *,
        chat_id: int = 100,
        user_id: int = 100,
        username: str = "ann",
        chat_type: str = "private",
        thread_id: int | None = None,
        reply_to_bot: bool = False,
        **message: Any,
    ) -> dict[str, Any]:
        """A new update queued for ``getUpdates`` (nobody is woken: ``push`` does that)."""
        body: dict[str, Any] = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type, "is_forum": thread_id is not None},
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": username.title(),
                "username": username,
            },
            **message,
        }
        if text:
            body["text"] = text
            body["entities"] = _mentions(text)
        if thread_id is not None:
            body.update(message_thread_id=thread_id, is_topic_message=True)
        if reply_to_bot:
            body["reply_to_message"] = {
                "message_id": 1, "date": 0, "chat": body["chat"], "from": BOT_USER, "text": "…",
            }  # fmt: skip
        update = {"update_id": len(self.updates) + 1, "message": body}
        self.updates.append(update)
        return update

    async def replay(self, update: dict[str, Any]) -> None:
        """Deliver ``update`` once more (as Telegram does when it never saw the offset)."""
        self.replays.append(update)
        await self._notify()

    def rate_limit(self, method: str, retry_after: int, times: int = 1) -> None:
        self.limited.setdefault(method, []).extend([retry_after] * times)

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [s.text for s in self.sent.values() if chat_id is None or s.chat_id == chat_id]

    def called(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the bot's side ----------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        await self._notify()
        if self.limited.get(method):
            retry_after = self.limited[method].pop(0)
            return web.json_response(
                {"ok": False, "error_code": 429, "description": "Too Many Requests",
                 "parameters": {"retry_after": retry_after}}, status=429,
            )  # fmt: skip
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return _error(404, f"Not Found: method {method}")
        answer: web.Response = await handler(params)
        await self._notify()
        return answer

    async def _getMe(self, params: dict[str, Any]) -> web.Response:
        return _ok(BOT_USER)

    async def _deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = {}
        return _ok(True)

    async def _setWebhook(self, params: dict[str, Any]) -> web.Response:
        self.webhook = params
        return _ok(True)

    async def _setMyCommands(self, params: dict[str, Any]) -> web.Response:
        self.commands = list(params["commands"])
        return _ok(True)

    async def _sendChatAction(self, params: dict[str, Any]) -> web.Response:
        return _ok(True)

    async def _getUpdates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        self.confirmed = max(self.confirmed, offset)

        def pending() -> list[dict[str, Any]]:
            # Telegram: updates below the highest offset ever sent are confirmed for good.
            return [u for u in self.updates if u["update_id"] >= max(self.confirmed, 1)]

        try:
            await self.wait_for(lambda: bool(pending() or self.replays),
                                float(params.get("timeout") or 0))  # fmt: skip
        except TimeoutError:
            return _ok([])
        batch, self.replays = [*self.replays, *pending()], []
        self.served.extend(update["update_id"] for update in batch)
        return _ok(batch)

    async def _sendMessage(self, params: dict[str, Any]) -> web.Response:
        try:
            shown = _shown(params)
        except ValueError as exc:
            return _error(400, f"Bad Request: can't parse entities: {exc}")
        reply = params.get("reply_parameters") or {}
        thread = params.get("message_thread_id")
        sent = Sent(
            message_id=next(self._ids), chat_id=int(params["chat_id"]), text=shown,
            raw=params["text"], parse_mode=params.get("parse_mode"),
            thread_id=int(thread) if thread else None,
            reply_to=int(reply["message_id"]) if reply else None,
        )  # fmt: skip
        self.sent[sent.message_id] = sent
        return _ok(self._message(sent))

    async def _editMessageText(self, params: dict[str, Any]) -> web.Response:
        sent = self.sent.get(int(params["message_id"]))
        if sent is None or sent.chat_id != int(params["chat_id"]):
            return _error(400, "Bad Request: message to edit not found")
        try:
            shown = _shown(params)
        except ValueError as exc:
            return _error(400, f"Bad Request: can't parse entities: {exc}")
        if shown == sent.text:
            return _error(400, "Bad Request: message is not modified: specified new message "
                               "content and reply markup are exactly the same")  # fmt: skip
        sent.text, sent.raw, sent.edits = shown, params["text"], sent.edits + 1
        return _ok(self._message(sent))

    async def _getFile(self, params: dict[str, Any]) -> web.Response:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        size = len(self.files[file_id])
        if size > self.file_limit:
            return _error(400, "Bad Request: file is too big")
        return _ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_size": size,
                "file_path": f"files/{file_id}",
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].removeprefix("files/")
        if request.match_info["token"] != self.token or file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])

    def _message(self, sent: Sent) -> dict[str, Any]:
        return {"message_id": sent.message_id, "date": int(time.time()), "from": BOT_USER,
                "chat": {"id": sent.chat_id, "type": "private"}, "text": sent.text}  # fmt: skip


def _shown(params: dict[str, Any]) -> str:
    text = str(params["text"])
    return shown_html(text) if params.get("parse_mode") == "HTML" else text


def _mentions(text: str) -> list[dict[str, Any]]:
    return [{"type": "mention", "offset": m.start(), "length": len(m.group())}
            for m in re.finditer(r"@\w+", text)]  # fmt: skip


async def _params(request: web.Request) -> dict[str, Any]:
    """PTB posts form fields, JSON-encoding the structured ones."""
    if request.content_type == "application/json":
        data: dict[str, Any] = await request.json()
        return data
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        text = str(value)
        try:
            params[key] = json.loads(text) if text[:1] in "[{" else text
        except ValueError:
            params[key] = text
    return params


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": status, "description": description}, status=status
    )
