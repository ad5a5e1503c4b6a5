"""The built-in tools: the workspace file tools, plus ``exec`` and ``web_fetch`` if enabled."""

from __future__ import annotations

from gateway.core.settings import ToolsSettings
from gateway.core.tools.base import ToolRegistry
from gateway.core.tools.shell import make_exec_tool
from gateway.core.tools.web import make_web_fetch_tool
from gateway.core.tools.workspace import WORKSPACE_TOOLS


def builtin_tools(settings: ToolsSettings) -> ToolRegistry:
    """A new registry of the built-in tools that ``settings`` allows."""
    registry = ToolRegistry(WORKSPACE_TOOLS)
    if settings.exec.enabled:
        registry.add(make_exec_tool(settings.exec))
    if settings.web_fetch.enabled:
        registry.add(make_web_fetch_tool(settings.web_fetch))
    return registry
