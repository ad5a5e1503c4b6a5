"""Reading what a client sends: bodies, JSON, stream ids and session keys from the URL.

Every malformed input becomes an ``ApiError`` (a 4xx with the error shape), never
an exception that escapes as a 500: JSON nested past the interpreter's recursion
limit, integers past Python's 4,300-digit conversion limit, ``NaN``/``Infinity``,
lone UTF-16 surrogates (``"\\ud800"`` parses, but no UTF-8 encoder, pydantic's or
Redis's, can write it), non-ASCII digits (``str.isdigit()`` accepts ``"²"``), a body
that trickles in slower than ``timeout_s``, and compressed bodies (415).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Final, NoReturn

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from gateway.channels.http.errors import ApiError
from gateway.core.bus.codec import parse_stream_id
from gateway.core.errors import PayloadError

MAX_SESSION_KEY_CHARS: Final = 600
"""Longer than any key ``channel:chat_id:thread_id`` can make (64 + 256 + 256 + 2)."""

_STREAM_ID: Final = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?", re.ASCII)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_MAX_INT_DIGITS: Final = 4300


@web.middleware
async def identity_bodies_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for a body with a ``Content-Encoding``: the server does not decode them.

    Messages are small; decoding would only add risk: aiohttp's decoder can leave a
    truncated deflate body waiting for ever, and a few KiB of gzip can expand to GiB.
    """
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if request.body_exists and encoding not in ("", "identity"):
        raise ApiError(
            415, "invalid_request", "compressed bodies are not accepted; send it uncompressed"
        )
    return await handler(request)


async def read_body(request: web.Request, max_bytes: int, *, timeout_s: float | None) -> bytes:
    """The raw body; 413 past ``max_bytes`` (checked while reading), 408 past ``timeout_s``."""
    too_large = ApiError(413, "payload_too_large", f"the body is over {max_bytes} bytes")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                raw += chunk
                if len(raw) > max_bytes:
                    raise too_large
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body did not arrive within {timeout_s:g} s"
        ) from None
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # A body that breaks its framing (a bad chunk): the client's fault.
        reason = first_line(exc)
        raise ApiError(400, "invalid_request", f"the body cannot be read: {reason}") from None
    return bytes(raw)


def first_line(exc: BaseException) -> str:
    """The first line of an aiohttp error, without the raw bytes it quotes below it."""
    if isinstance(exc.__cause__, HttpProcessingError):  # RequestPayloadError wraps it
        exc = exc.__cause__
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return (text or type(exc).__name__).splitlines()[0].strip(" :")


async def read_json_body(
    request: web.Request, max_bytes: int, *, timeout_s: float | None = None
) -> object:
    """The parsed JSON body (see ``read_body`` and ``parse_json``)."""
    return parse_json(await read_body(request, max_bytes, timeout_s=timeout_s))


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_int(text: str) -> int:
    # int() refuses more digits than this (sys.get_int_max_str_digits), with a message
    # about interpreter settings; say it in the client's terms instead.
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"a number has over {_MAX_INT_DIGITS} digits")
    return int(text)


def parse_json(raw: bytes) -> object:
    """Strict JSON (400 with the reason otherwise) whose every string is valid Unicode (422)."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_int=_parse_int)
    except RecursionError:
        raise ApiError(400, "invalid_request", "the body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int digit limit
        raise ApiError(400, "invalid_request", f"the body is not valid JSON: {exc}") from None
    if (where := _lone_surrogate(data)) is not None:
        # Valid JSON syntax, but text nothing downstream can encode: unprocessable (422).
        raise ApiError(
            422, "invalid_request", f"field {where!r} holds a lone surrogate (invalid Unicode)"
        )
    return data


def _lone_surrogate(data: object) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, or None."""
    todo: list[tuple[str, object]] = [("body", data)]
    while todo:
        where, value = todo.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                if not key.isascii() and _SURROGATE.search(key):
                    return where
                todo.append((key if where == "body" else f"{where}.{key}", item))
        elif isinstance(value, list):
            todo.extend((f"{where}.{i}", item) for i, item in enumerate(value))
    return None


def stream_id_param(value: str, name: str) -> str:
    """A full stream id from ``1700-0`` or ``1700`` (ASCII digits only); else 400."""
    refused = ApiError(400, "invalid_request", f"{name} must be a stream id like 1700-0")
    if not _STREAM_ID.fullmatch(value):
        raise refused
    full = value if "-" in value else f"{value}-0"
    try:
        parse_stream_id(full)  # in the unsigned 64-bit range
    except PayloadError:
        raise refused from None
    return full


def session_key_param(value: str) -> str:
    """A session key from the URL: bounded, and writable as UTF-8 (the Redis key)."""
    if not value or len(value) > MAX_SESSION_KEY_CHARS:
        raise ApiError(404, "not_found", "no such session")
    if not value.isascii() and _SURROGATE.search(value):
        raise ApiError(400, "invalid_request", "the session key is not valid Unicode")
    return value
