"""The agent runtime: settings, models, tools, sessions and memory around the one loop.

The SDK (``gateway.Bot``) and the bus worker both drive ``AgentRuntime.stream``;
only the ``SessionStore`` they pass differs (files for the SDK, a fenced Redis store
per turn for the worker).

A turn runs in its own task (``start`` returns its ``RunStream``), which holds the
session's lock and feeds an unbounded buffer that the caller reads. So no lock is held
while the caller's code runs between two events: a consumer may await another
operation on the same session inside its loop (it waits for the turn to end, and the
turn no longer waits for the consumer). Code that runs *inside* the turn (hooks, tools)
and asks for its own session's lock gets ``SessionLockReentryError``, never a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from gateway.core.compaction import compact, needs_compaction
from gateway.core.errors import ProviderError
from gateway.core.events import RunCompleted, RunFailed, RunResult, StreamEvent
from gateway.core.hooks import AgentHook, CompositeHook
from gateway.core.loop import LoopSpec, SteeringInbox, run_loop
from gateway.core.memory import MemoryStore
from gateway.core.messages import Message, RunOptions, new_id
from gateway.core.providers.base import ModelSpec
from gateway.core.providers.router import ModelRouter
from gateway.core.runs import RunStream
from gateway.core.sessions.base import Session, SessionStore
from gateway.core.sessions.locks import Hold, SessionLocks
from gateway.core.settings import AgentSettings, Settings
from gateway.core.tools.base import ToolContext, ToolRegistry
from gateway.core.tools.builtin import builtin_tools

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
        """Per-session FIFO locks: turns and session edits on one key run one at a time.

        A sync edit that cannot wait (``bot.sessions.clear``) invalidates the key instead."""

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

    def _loop_spec(self, turn: TurnRequest, agent: AgentSettings) -> LoopSpec:
        run_id = turn.run_id or new_id()
        return LoopSpec(
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

    def start(self, turn: TurnRequest, *, store: SessionStore | None = None) -> RunStream:
        """Start one turn in its own task and return its handle.

        Turns on one key run one at a time, in the order they were started. Closing or
        cancelling the handle cancels the turn (the model stream and tools stop).
        """
        return RunStream(self._turn_events(turn, store or self.store))

    def events_here(
        self, turn: TurnRequest, *, store: SessionStore | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The events of one turn, run in the caller's own task (no buffer, no task of
        its own): for a consumer that never waits between events, such as the worker's
        producer, which only hands each to its outbox. The turn holds the session's lock
        while the consumer handles an event, so a consumer that waits must use ``stream``.
        Closing the generator, or cancelling its task, cancels the turn."""
        return self._turn_events(turn, store or self.store)

    async def stream(
        self, turn: TurnRequest, *, store: SessionStore | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The events of one turn (``start`` then its events); the turn is persisted
        before its final event. Closing the generator, or cancelling its consumer,
        cancels the turn and waits until it has stopped."""
        async with aclosing(self.start(turn, store=store).stream_events()) as events:
            async for event in events:
                yield event

    async def _turn_events(
        self, turn: TurnRequest, store: SessionStore
    ) -> AsyncGenerator[StreamEvent, None]:
        """The turn itself; only ``RunStream``'s task iterates it, so the lock it holds
        is never held across a yield to anyone else's code."""
        agent = self.settings.agent(turn.agent)
        spec = self._loop_spec(turn, agent)
        async with self.locks.hold(turn.session_key) as hold:
            session = await self._session(turn, store)
            prompt = self._prompt(agent, session, turn.options)
            prompt.extend(turn.messages)
            async with aclosing(run_loop(self.router, prompt, turn.messages, spec)) as events:
                async for event in events:
                    if isinstance(event, RunCompleted) and not turn.ephemeral:
                        await self._persist(store, session, event.result, agent, hold)
                    yield event

    async def _session(self, turn: TurnRequest, store: SessionStore) -> Session:
        """The history the turn continues: the stored session, or a new one; or, when the
        request carries the conversation (HTTP API), a copy of it with that history (a
        copy: a store may hand out its cached session, which a failed run must not change).
        """
        session = await store.load(turn.session_key) or Session(key=turn.session_key)
        if turn.options is not None and turn.options.history is not None:
            history = list(turn.options.history)
            session = session.model_copy(update={"messages": history, "summary": ""})
        return session

    async def _persist(
        self,
        store: SessionStore,
        session: Session,
        result: RunResult,
        agent: AgentSettings,
        hold: Hold,
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
        await self._save_unless_stale(store, session, hold)

    async def _save_unless_stale(self, store: SessionStore, session: Session, hold: Hold) -> None:
        if hold.stale:
            # Cleared or deleted while this turn ran: the turn belongs to the history
            # that was dropped, and saving it would bring that history back.
            log.info("session %r was cleared during the turn; the turn is not saved", session.key)
            return
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
        async with self.locks.hold(session_key) as hold:
            session = await store.load(session_key)
            if session is None or (only_over_budget and not needs_compaction(session, budget)):
                return ""
            summary = await compact(
                session, self._summarizer(), keep_last=keep_last, memory=self.memory
            )
            if summary:
                await self._save_unless_stale(store, session, hold)
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
