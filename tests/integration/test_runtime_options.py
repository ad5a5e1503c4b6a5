"""``TurnRequest.options`` (``RunOptions``): what the HTTP API carries into a turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.messages import RunOptions
from gateway.core.runtime import AgentRuntime, TurnRequest
from gateway.core.sessions.base import Session
from gateway.core.sessions.file import FileSessionStore
from gateway.core.settings import Settings
from tests.fakes.openai_server import FakeModelServer, fake_model  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(fake_model: FakeModelServer, tmp_path: Path) -> AsyncIterator[AgentRuntime]:
    settings = Settings(
        model="local/fake-model",
        providers={"local": {"base_url": fake_model.base_url, "api_key": "x", "max_retries": 0}},
        workspace=tmp_path / "ws",
        agents={"assistant": {"system_prompt": "Base prompt.", "tools": []}},
    )
    created = AgentRuntime(settings, store=FileSessionStore(tmp_path / "sessions"))
    yield created
    await created.aclose()  # its model client's aiohttp session


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def test_explicit_history_replaces_the_stored_one_and_is_saved(
    runtime: AgentRuntime, fake_model: FakeModelServer
) -> None:
    await runtime.store.save(Session(key="k", messages=[user("stored"), user("turns")]))
    history = [user("earlier"), {"role": "assistant", "content": "reply"}]
    options = RunOptions(history=history, system="Be brief.", temperature=0.1, max_tokens=7)
    result = await runtime.run(
        TurnRequest(session_key="k", messages=[user("now")], options=options)
    )
    assert result.content == "echo: now"
    sent = fake_model.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Base prompt.\n\nBe brief."}
    assert [m["content"] for m in sent["messages"][1:]] == ["earlier", "reply", "now"]
    assert (sent["temperature"], sent["max_tokens"]) == (0.1, 7)
    saved = await runtime.store.load("k")
    assert saved is not None
    assert [m["content"] for m in saved.messages] == ["earlier", "reply", "now", "echo: now"]


async def test_without_history_the_stored_session_is_used(
    runtime: AgentRuntime, fake_model: FakeModelServer
) -> None:
    await runtime.store.save(Session(key="k", messages=[user("stored")]))
    options = RunOptions(temperature=0.5)
    await runtime.run(TurnRequest(session_key="k", messages=[user("now")], options=options))
    sent = fake_model.requests[-1]
    assert [m["content"] for m in sent["messages"][1:]] == ["stored", "now"]
    assert sent["messages"][0]["content"] == "Base prompt."
    assert sent["temperature"] == 0.5 and "max_tokens" not in sent
