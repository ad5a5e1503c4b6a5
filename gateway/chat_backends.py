"""Where ``gateway chat`` sends its messages: a running gateway, or the SDK in-process.

``HttpChat`` goes through the bus like every channel (channel ``cli``): it posts to
``POST /v1/messages``, reads the reply from the ``events_url`` of the 202 (SSE),
and stops a turn with ``POST /v1/chats/cli/{chat}/stop``. ``LocalChat`` runs the
agent in this process with the SDK's runtime (file sessions in the workspace, as
``Bot`` and ``gateway agent`` keep them).
Both use the session key ``cli:<chat>``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import quote

import aiohttp

from gateway.core.errors import GatewayError
from gateway.core.events import StreamEvent, parse_event
from gateway.core.messages import default_session_key
from gateway.core.runs import RunStream
from gateway.core.runtime import AgentRuntime, TurnRequest

CHANNEL = "cli"
PROBE_TIMEOUT_S = 1.5


class ChatError(GatewayError):
    """A failure the chat reports in one line and survives (the gateway went away…)."""


class ChatBackend(Protocol):
    chat_id: str

    def describe(self) -> str: ...

    def stream(self, text: str) -> AsyncIterator[StreamEvent]:
        """The events of the turn that answers ``text``, up to its final event."""
        ...

    async def stop(self) -> bool:
        """Cancel the running turn; False when nothing was running."""
        ...

    def new_chat(self) -> str:
        """Start a new conversation; returns its session key."""
        ...


def new_chat_id() -> str:
    return f"chat-{secrets.token_hex(4)}"


async def gateway_answers(url: str) -> bool:
    """True when a gateway answers ``GET /healthz`` at ``url``."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url}/healthz") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


class HttpChat:
    """A chat through a running gateway's HTTP API."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        chat_id: str,
        *,
        api_key: str | None = None,
        agent: str | None = None,
    ) -> None:
        self._http = session
        self._url = url
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._agent = agent
        self.chat_id = chat_id

    def describe(self) -> str:
        key = default_session_key(CHANNEL, self.chat_id)
        return f"connected to the gateway at {self._url} (through the bus; session {key})"

    async def check(self) -> None:
        """Fail early, in one line, when the gateway refuses us (API key, channel)."""
        await self._json("GET", self._chat_path("history"))

    async def stream(self, text: str) -> AsyncIterator[StreamEvent]:
        body = {"channel": CHANNEL, "chat_id": self.chat_id, "sender_id": "terminal"}
        body["text"] = text
        if self._agent:
            body["agent"] = self._agent
        accepted = await self._json("POST", "/v1/messages", body)
        async for event in self._events(str(accepted["events_url"])):
            yield event

    async def stop(self) -> bool:
        reply = await self._json("POST", self._chat_path("stop"))
        return bool(reply.get("stopping"))

    def new_chat(self) -> str:
        self.chat_id = new_chat_id()
        return default_session_key(CHANNEL, self.chat_id)

    def _chat_path(self, action: str) -> str:
        return f"/v1/chats/{CHANNEL}/{quote(self.chat_id, safe='')}/{action}"

    async def _events(self, events_url: str) -> AsyncIterator[StreamEvent]:
        try:
            async with self._http.get(self._url + events_url, headers=self._headers) as resp:
                await _raise_for_error(resp)
                async for raw in resp.content:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("data:"):
                        yield parse_event(line[5:].strip())
        except aiohttp.ClientError as exc:
            raise ChatError(f"the gateway stopped answering ({exc})") from exc

    async def _json(
        self, method: str, path: str, body: dict[str, str] | None = None
    ) -> dict[str, object]:
        try:
            async with self._http.request(
                method, self._url + path, json=body, headers=self._headers
            ) as resp:
                await _raise_for_error(resp)
                reply: dict[str, object] = await resp.json()
                return reply
        except aiohttp.ClientError as exc:
            raise ChatError(f"the gateway at {self._url} is not answering ({exc})") from exc


async def _raise_for_error(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    try:
        message = (await resp.json())["error"]["message"]
    except (aiohttp.ContentTypeError, json.JSONDecodeError, KeyError, TypeError):
        message = resp.reason or "error"
    if resp.status == 401:
        message += " (give one with --api-key or GATEWAY_API_KEY)"
    raise ChatError(f"the gateway answered {resp.status}: {message}")


class LocalChat:
    """A chat with the agent in this process (no gateway, no bus)."""

    def __init__(self, runtime: AgentRuntime, chat_id: str, *, agent: str | None = None) -> None:
        self._runtime = runtime
        self._agent = agent
        self._run: RunStream | None = None
        self.chat_id = chat_id

    def describe(self) -> str:
        key = default_session_key(CHANNEL, self.chat_id)
        where = self._runtime.workspace
        return f"no gateway answers: chatting in-process via the SDK (session {key}, in {where})"

    async def stream(self, text: str) -> AsyncIterator[StreamEvent]:
        turn = TurnRequest(
            session_key=default_session_key(CHANNEL, self.chat_id),
            messages=[{"role": "user", "content": text}],
            agent=self._agent,
            channel=CHANNEL,
            chat_id=self.chat_id,
            sender_id="terminal",
        )
        self._run = run = RunStream(self._runtime.stream(turn))
        async with run:
            async for event in run.stream_events():
                yield event

    async def stop(self) -> bool:
        run, self._run = self._run, None
        if run is None or run.done:
            return False
        await run.cancel()
        return True

    def new_chat(self) -> str:
        self.chat_id = new_chat_id()
        return default_session_key(CHANNEL, self.chat_id)
