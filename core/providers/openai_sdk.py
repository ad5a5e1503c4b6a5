"""The ``openai`` client with its per-request bookkeeping done once instead of per request.

A streamed chat request through ``AsyncOpenAI.post`` cost the worker ~1.1 ms of CPU on
the bench, about a third of it bookkeeping that is the same for every request: the
URL (``base_url`` parsed and merged with the path, ~0.09 ms), the request options
(a pydantic model built with deep-copied defaults, ~0.07 ms), and turning each
decoded chunk into ``cast_to`` (~0.08 ms a response, even for ``dict``). What stays
the SDK's: auth headers, retries, timeouts, status-to-exception mapping, the SSE
decoder and its error events. ``tests/integration/test_openai_sdk_shortcuts.py``
compares each shortcut with the SDK's own path, so an SDK upgrade that changes one
fails there.
"""

from __future__ import annotations

import openai
from httpx2 import URL
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion

CHAT_PATH = "/chat/completions"

OPTIONS: openai.RequestOptions = {"security": {"bearer_auth": True}}
"""What ``chat.completions.create`` passes: bearer auth; the client's timeout and retries."""

ChunkStream = openai.AsyncStream[object]
"""The SDK's SSE stream with ``cast_to=object``: ``_process_response_data`` returns each
decoded JSON chunk as it is (no ``construct_type`` walk); error events still raise."""


class ChatClient(openai.AsyncOpenAI):
    """``AsyncOpenAI`` that remembers merged URLs; nothing else differs."""

    def _prepare_url(self, url: str) -> URL:
        # URLs are immutable: one merge per (base_url, path) is enough. Keyed on the
        # base_url object too, so assigning ``client.base_url`` is still honoured.
        merged: dict[str, tuple[URL, URL]] = self.__dict__.setdefault("_merged", {})
        found = merged.get(url)
        base = self.base_url
        if found is not None and found[0] is base:
            return found[1]
        prepared = super()._prepare_url(url)
        merged[url] = (base, prepared)
        return prepared


def chat_options_template() -> FinalRequestOptions:
    """The options ``post(CHAT_PATH, content=..., options=OPTIONS)`` builds, without content."""
    return FinalRequestOptions.construct(
        method="post", url=CHAT_PATH, json_data=None, content=None, files=None, **OPTIONS
    )


def chat_options(template: FinalRequestOptions, body: bytes) -> FinalRequestOptions:
    """A shallow copy of ``template`` carrying ``body``: what ``post()`` would build.

    ``request()`` copies the options it is given the same shallow way before each
    attempt, so sharing the template's nested values is what the SDK already does.
    """
    return template.model_copy(update={"content": body})


async def post_chat(
    client: openai.AsyncOpenAI, template: FinalRequestOptions, body: bytes
) -> ChunkStream:
    """``client.post(CHAT_PATH, content=body, stream=True)`` with the template's options."""
    return await client.request(
        ChatCompletion, chat_options(template, body), stream=True, stream_cls=ChunkStream
    )
