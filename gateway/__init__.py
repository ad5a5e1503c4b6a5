"""gateway: a multi-channel chat gateway for LLM agents, and its embedded SDK.

``async with Bot.from_config() as bot: result = await bot.run("hi", session_key="user:1")``
"""

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
