"""The agent runtime: settings, models, tools, sessions and memory around the one loop.

The SDK (``gateway.Bot``) and the bus worker both drive ``AgentRuntime.stream``;
only the ``SessionStore`` they pass differs (files for the SDK, a fenced Redis store
per turn for the worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from core.compaction import compact, needs_compaction
from core.errors import ProviderError
from core.events import RunCompleted, RunFailed, RunResult, StreamEvent
from core.hooks import AgentHook, CompositeHook
from core.loop import LoopSpec, SteeringInbox, run_loop
from core.memory import MemoryStore
from core.messages import Message, RunOptions, new_id
from core.providers.base import ModelSpec
from core.providers.router import ModelRouter
from core.sessions.base import Session, SessionStore
from core.settings import AgentSettings, Settings
from core.tools.base import ToolContext, ToolRegistry
from core.tools.builtin import builtin_tools

log = logging.getLogger(__name__)

COMPACTION_KEEP_LAST = 8


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One turn: the new user message(s) for a session, and per-run options."""

    session_key: str
    messages: list[Message]
    agent: str | None = None
    run_id: str | None = None
    model: str | None = None
    model_preset: str | None = None
    channel: str = "cli"
    chat_id: str = "direct"
    sender_id: str = "user"
    ephemeral: bool = False
    hooks: Sequence[AgentHook] = ()
    steering: SteeringInbox | None = None
    options: RunOptions | None = None
    """Sampling overrides, an explicit history and extra system text (HTTP API)."""


class SessionLocks:
    """One FIFO lock per session key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class AgentRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        store: SessionStore,
        workspace: Path | None = None,
        tools: ToolRegistry | None = None,
        deps: Mapping[str, object] | None = None,
        default_model: str | None = None,
        default_preset: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.workspace = (workspace or settings.workspace).expanduser().resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.router = ModelRouter(settings)
        self.memory = MemoryStore(self.workspace)
        self.tools = tools if tools is not None else builtin_tools(settings.tools)
        self.deps: Mapping[str, object] = dict(deps or {})
        self._default_spec = self.router.resolve(default_model, default_preset)
        self._agent_tools = {
            name: self.tools.select(agent.tools) for name, agent in settings.agents.items()
        }
        self.locks = SessionLocks()
        """Per-session FIFO locks: turns and session edits on one key run one at a time."""

    @property
    def model(self) -> str:
        """The instance default model (``provider/model``)."""
        return self._default_spec.name

    def resolve_model(self, turn: TurnRequest, agent: AgentSettings) -> ModelSpec:
        """Per-run override, else the agent's model, else the instance default."""
        if turn.model or turn.model_preset:
            spec = self.router.resolve(turn.model, turn.model_preset)
        elif agent.model or agent.model_preset:
            spec = self.router.resolve(agent.model, agent.model_preset)
        else:
            spec = self._default_spec
        return _with_sampling(spec, turn.options)

    def _tools_for(self, agent_name: str | None, agent: AgentSettings) -> ToolRegistry:
        name = agent_name or self.settings.default_agent
        if name not in self._agent_tools:
            self._agent_tools[name] = self.tools.select(agent.tools)
        return self._agent_tools[name]

    def _prompt(
        self, agent: AgentSettings, session: Session, options: RunOptions | None = None
    ) -> list[Message]:
        system = agent.system_prompt
        if options is not None and options.system:
            system += f"\n\n{options.system}"
        memory = self.memory.read()
        if memory.strip():
            system += f"\n\n# Long-term memory\n{memory.strip()}"
        if session.summary:
            system += f"\n\n# Summary of the earlier conversation\n{session.summary}"
        return [{"role": "system", "content": system}, *session.messages]

    async def stream(
        self, turn: TurnRequest, *, store: SessionStore | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Run one turn under the session's lock; persist it before the final event."""
        store = store or self.store
        agent = self.settings.agent(turn.agent)
        run_id = turn.run_id or new_id()
        spec = LoopSpec(
            run_id=run_id,
            session_key=turn.session_key,
            models=self.router.failover_chain(self.resolve_model(turn, agent)),
            tools=self._tools_for(turn.agent, agent),
            tool_context=ToolContext(
                session_key=turn.session_key,
                run_id=run_id,
                workspace=self.workspace,
                channel=turn.channel,
                chat_id=turn.chat_id,
                sender_id=turn.sender_id,
                deps=self.deps,
            ),
            max_iterations=agent.max_iterations,
            timeout_s=agent.timeout_s,
            max_result_chars=self.settings.tools.max_result_chars,
            hooks=CompositeHook(turn.hooks),
            steering=turn.steering,
        )
        async with self.locks.hold(turn.session_key):
            session = await store.load(turn.session_key) or Session(key=turn.session_key)
            if turn.options is not None and turn.options.history is not None:
                # The request carries the conversation: it replaces the stored one (a copy:
                # a store may hand out its cached session, which a failed run must not change).
                history = list(turn.options.history)
                session = session.model_copy(update={"messages": history, "summary": ""})
            prompt = self._prompt(agent, session, turn.options)
            prompt.extend(turn.messages)
            events = run_loop(self.router, prompt, turn.messages, spec)
            try:
                async for event in events:
                    if isinstance(event, RunCompleted) and not turn.ephemeral:
                        await self._persist(store, session, event.result, agent)
                    yield event
            finally:
                await events.aclose()

    async def _persist(
        self, store: SessionStore, session: Session, result: RunResult, agent: AgentSettings
    ) -> None:
        session.messages.extend(result.messages)
        session.updated_at = time.time()
        if needs_compaction(session, agent.history_token_budget):
            try:
                await compact(
                    session, self._summarizer(), keep_last=COMPACTION_KEEP_LAST, memory=self.memory
                )
            except ProviderError as exc:
                # Compaction is upkeep: a summarizer failure (often the very context length
                # that triggered it) must not lose the completed turn. The next turn retries.
                log.warning(
                    "compaction of session %r failed; saved it uncompacted: %s", session.key, exc
                )
        await store.save(session)

    def _summarizer(self) -> Callable[[list[Message]], Awaitable[str]]:
        spec = self._default_spec

        async def summarize(messages: list[Message]) -> str:
            return await self.router.complete(spec, messages)

        return summarize

    async def run(self, turn: TurnRequest, *, store: SessionStore | None = None) -> RunResult:
        """Collect ``stream``: the result of run.completed or run.failed."""
        result: RunResult | None = None
        async for event in self.stream(turn, store=store):
            if isinstance(event, RunCompleted | RunFailed):
                result = event.result
        if result is None:
            raise RuntimeError("the agent loop ended without a final event")
        return result

    async def compact_session(
        self,
        session_key: str,
        *,
        keep_last: int = COMPACTION_KEEP_LAST,
        only_over_budget: bool = False,
        agent: str | None = None,
        store: SessionStore | None = None,
    ) -> str:
        """Summarize a session's oldest turns, keeping ``keep_last`` messages.

        With ``only_over_budget`` it does so only when the history passes the agent's
        token budget. Returns the new summary ('' when nothing was compacted).
        """
        store = store or self.store
        budget = self.settings.agent(agent).history_token_budget
        async with self.locks.hold(session_key):
            session = await store.load(session_key)
            if session is None or (only_over_budget and not needs_compaction(session, budget)):
                return ""
            summary = await compact(
                session, self._summarizer(), keep_last=keep_last, memory=self.memory
            )
            if summary:
                await store.save(session)
            return summary

    async def aclose(self) -> None:
        await self.router.aclose()
        await self.store.aclose()


def _with_sampling(spec: ModelSpec, options: RunOptions | None) -> ModelSpec:
    """``spec`` with the request's temperature / max_tokens, where given."""
    if options is None:
        return spec
    update = {"temperature": options.temperature, "max_tokens": options.max_tokens}
    changed = {name: value for name, value in update.items() if value is not None}
    return spec.model_copy(update=changed) if changed else spec
