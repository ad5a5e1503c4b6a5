"""Agent hooks: observe or adjust the loop without editing it (seed 000's lifecycle).

Async methods of several hooks fan out with error isolation: one hook raising is
logged and does not stop the others or the run. ``finalize_content`` is a pipeline:
each hook receives the previous hook's output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.events import Usage
from gateway.core.messages import Message
from gateway.core.providers.base import ToolCallChunk

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AgentHookContext:
    """What the loop knows at a hook call; the loop updates it as the run proceeds."""

    session_key: str
    run_id: str
    iteration: int = 0
    messages: list[Message] = field(default_factory=list)
    response: str = ""
    usage: Usage = field(default_factory=dict)
    tool_calls: list[ToolCallChunk] = field(default_factory=list)
    tool_results: list[Message] = field(default_factory=list)
    tool_events: list[dict[str, Any]] = field(default_factory=list)
    final_content: str | None = None
    stop_reason: str | None = None
    error: str | None = None


class AgentHook:
    """Subclass and override what you need; every method is a no-op by default."""

    def wants_streaming(self) -> bool:
        return False

    async def before_iteration(self, context: AgentHookContext) -> None:
        return None

    async def on_stream(self, context: AgentHookContext, delta: str) -> None:
        return None

    async def on_stream_end(self, context: AgentHookContext, *, resuming: bool) -> None:
        return None

    async def before_execute_tools(self, context: AgentHookContext) -> None:
        return None

    async def after_iteration(self, context: AgentHookContext) -> None:
        return None

    def finalize_content(self, context: AgentHookContext, content: str | None) -> str | None:
        return content


class CompositeHook(AgentHook):
    """Many hooks behind one: fan-out with error isolation, finalize as a pipeline."""

    def __init__(self, hooks: Sequence[AgentHook]) -> None:
        self._hooks = tuple(hooks)
        self._streaming = tuple(h for h in self._hooks if h.wants_streaming())

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def wants_streaming(self) -> bool:
        return bool(self._streaming)

    async def _each(self, method: str, *args: Any, **kwargs: Any) -> None:
        for hook in self._hooks:
            try:
                await getattr(hook, method)(*args, **kwargs)
            except Exception:
                log.exception("hook %s.%s failed; continuing", type(hook).__name__, method)

    async def before_iteration(self, context: AgentHookContext) -> None:
        await self._each("before_iteration", context)

    async def on_stream(self, context: AgentHookContext, delta: str) -> None:
        for hook in self._streaming:
            try:
                await hook.on_stream(context, delta)
            except Exception:
                log.exception("hook %s.on_stream failed; continuing", type(hook).__name__)

    async def on_stream_end(self, context: AgentHookContext, *, resuming: bool) -> None:
        for hook in self._streaming:
            try:
                await hook.on_stream_end(context, resuming=resuming)
            except Exception:
                log.exception("hook %s.on_stream_end failed; continuing", type(hook).__name__)

    async def before_execute_tools(self, context: AgentHookContext) -> None:
        await self._each("before_execute_tools", context)

    async def after_iteration(self, context: AgentHookContext) -> None:
        await self._each("after_iteration", context)

    def finalize_content(self, context: AgentHookContext, content: str | None) -> str | None:
        for hook in self._hooks:
            try:
                content = hook.finalize_content(context, content)
            except Exception:
                log.exception("hook %s.finalize_content failed; keeping input", type(hook).__name__)
        return content
