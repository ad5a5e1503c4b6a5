"""gateway: a multi-channel chat gateway for LLM agents, and its embedded SDK.

``async with Bot.from_config() as bot: result = await bot.run("hi", session_key="user:1")``
"""

# Names are imported on first use (PEP 562), so that ``gateway.client`` (which needs
# only httpx and pydantic) can be imported without loading the server side.
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from core.errors import (
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
    from core.events import (
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
    from core.hooks import AgentHook, AgentHookContext
    from core.runs import RunStream
    from core.sessions.base import SessionInfo, SessionSnapshot
    from core.tools.base import Tool, ToolContext, ToolRegistry, tool
    from gateway._bot import Bot

_EXPORTS: dict[str, str] = {
    "AgentHook": "core.hooks",
    "AgentHookContext": "core.hooks",
    "Bot": "gateway._bot",
    "BusError": "core.errors",
    "ConfigError": "core.errors",
    "CorruptSessionError": "core.errors",
    "GatewayError": "core.errors",
    "LeaseLostError": "core.errors",
    "PayloadError": "core.errors",
    "ProviderError": "core.errors",
    "RetryableProviderError": "core.errors",
    "RunResult": "core.events",
    "RunStream": "core.runs",
    "STREAM_EVENT_REASONING_COMPLETED": "core.events",
    "STREAM_EVENT_REASONING_DELTA": "core.events",
    "STREAM_EVENT_RUN_COMPLETED": "core.events",
    "STREAM_EVENT_RUN_FAILED": "core.events",
    "STREAM_EVENT_RUN_STARTED": "core.events",
    "STREAM_EVENT_TEXT_COMPLETED": "core.events",
    "STREAM_EVENT_TEXT_DELTA": "core.events",
    "STREAM_EVENT_TOOL_COMPLETED": "core.events",
    "STREAM_EVENT_TOOL_FAILED": "core.events",
    "STREAM_EVENT_TOOL_STARTED": "core.events",
    "STREAM_EVENT_TYPES": "core.events",
    "SessionError": "core.errors",
    "SessionInfo": "core.sessions.base",
    "SessionLockReentryError": "core.errors",
    "SessionSnapshot": "core.sessions.base",
    "StreamEvent": "core.events",
    "StreamEventType": "core.events",
    "Tool": "core.tools.base",
    "ToolContext": "core.tools.base",
    "ToolError": "core.errors",
    "ToolRegistry": "core.tools.base",
    "UnknownModelError": "core.errors",
    "WorkspaceEscapeError": "core.errors",
    "tool": "core.tools.base",
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
