"""gateway: a multi-channel chat gateway for LLM agents, and its embedded SDK.

``async with Bot.from_config() as bot: result = await bot.run("hi", session_key="user:1")``
"""

# Names are imported on first use (PEP 562), so that ``gateway.client`` (which needs
# only httpx and pydantic) can be imported without loading the server side.
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from gateway._bot import Bot
    from gateway.core.errors import (
        BusError,
        ConfigError,
        CorruptSessionError,
        GatewayError,
        LeaseLostError,
        PayloadError,
        ProviderError,
        RetryableProviderError,
        SessionError,
        SessionLockReentryError,
        ToolError,
        UnknownModelError,
        WorkspaceEscapeError,
    )
    from gateway.core.events import (
        STREAM_EVENT_REASONING_COMPLETED,
        STREAM_EVENT_REASONING_DELTA,
        STREAM_EVENT_RUN_COMPLETED,
        STREAM_EVENT_RUN_FAILED,
        STREAM_EVENT_RUN_STARTED,
        STREAM_EVENT_TEXT_COMPLETED,
        STREAM_EVENT_TEXT_DELTA,
        STREAM_EVENT_TOOL_COMPLETED,
        STREAM_EVENT_TOOL_FAILED,
        STREAM_EVENT_TOOL_STARTED,
        STREAM_EVENT_TYPES,
        RunResult,
        StreamEvent,
        StreamEventType,
    )
    from gateway.core.hooks import AgentHook, AgentHookContext
    from gateway.core.runs import RunStream
    from gateway.core.sessions.base import SessionInfo, SessionSnapshot
    from gateway.core.tools.base import Tool, ToolContext, ToolRegistry, tool

_EXPORTS: dict[str, str] = {
    "AgentHook": "gateway.core.hooks",
    "AgentHookContext": "gateway.core.hooks",
    "Bot": "gateway._bot",
    "BusError": "gateway.core.errors",
    "ConfigError": "gateway.core.errors",
    "CorruptSessionError": "gateway.core.errors",
    "GatewayError": "gateway.core.errors",
    "LeaseLostError": "gateway.core.errors",
    "PayloadError": "gateway.core.errors",
    "ProviderError": "gateway.core.errors",
    "RetryableProviderError": "gateway.core.errors",
    "RunResult": "gateway.core.events",
    "RunStream": "gateway.core.runs",
    "STREAM_EVENT_REASONING_COMPLETED": "gateway.core.events",
    "STREAM_EVENT_REASONING_DELTA": "gateway.core.events",
    "STREAM_EVENT_RUN_COMPLETED": "gateway.core.events",
    "STREAM_EVENT_RUN_FAILED": "gateway.core.events",
    "STREAM_EVENT_RUN_STARTED": "gateway.core.events",
    "STREAM_EVENT_TEXT_COMPLETED": "gateway.core.events",
    "STREAM_EVENT_TEXT_DELTA": "gateway.core.events",
    "STREAM_EVENT_TOOL_COMPLETED": "gateway.core.events",
    "STREAM_EVENT_TOOL_FAILED": "gateway.core.events",
    "STREAM_EVENT_TOOL_STARTED": "gateway.core.events",
    "STREAM_EVENT_TYPES": "gateway.core.events",
    "SessionError": "gateway.core.errors",
    "SessionInfo": "gateway.core.sessions.base",
    "SessionLockReentryError": "gateway.core.errors",
    "SessionSnapshot": "gateway.core.sessions.base",
    "StreamEvent": "gateway.core.events",
    "StreamEventType": "gateway.core.events",
    "Tool": "gateway.core.tools.base",
    "ToolContext": "gateway.core.tools.base",
    "ToolError": "gateway.core.errors",
    "ToolRegistry": "gateway.core.tools.base",
    "UnknownModelError": "gateway.core.errors",
    "WorkspaceEscapeError": "gateway.core.errors",
    "tool": "gateway.core.tools.base",
}

__all__ = [
    "STREAM_EVENT_REASONING_COMPLETED",
    "STREAM_EVENT_REASONING_DELTA",
    "STREAM_EVENT_RUN_COMPLETED",
    "STREAM_EVENT_RUN_FAILED",
    "STREAM_EVENT_RUN_STARTED",
    "STREAM_EVENT_TEXT_COMPLETED",
    "STREAM_EVENT_TEXT_DELTA",
    "STREAM_EVENT_TOOL_COMPLETED",
    "STREAM_EVENT_TOOL_FAILED",
    "STREAM_EVENT_TOOL_STARTED",
    "STREAM_EVENT_TYPES",
    "AgentHook",
    "AgentHookContext",
    "Bot",
    "BusError",
    "ConfigError",
    "CorruptSessionError",
    "GatewayError",
    "LeaseLostError",
    "PayloadError",
    "ProviderError",
    "RetryableProviderError",
    "RunResult",
    "RunStream",
    "SessionError",
    "SessionInfo",
    "SessionLockReentryError",
    "SessionSnapshot",
    "StreamEvent",
    "StreamEventType",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "UnknownModelError",
    "WorkspaceEscapeError",
    "tool",
]


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
