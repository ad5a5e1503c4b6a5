"""Tools the model can call: the ``@tool`` decorator, the registry and the built-in tools."""

from gateway.core.tools.base import Tool, ToolContext, ToolRegistry, tool, truncate_result
from gateway.core.tools.builtin import builtin_tools
from gateway.core.tools.workspace import resolve_in_workspace

__all__ = [
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "builtin_tools",
    "resolve_in_workspace",
    "tool",
    "truncate_result",
]
