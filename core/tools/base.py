"""Tools: turn a typed Python function into something the model can call, and a registry of them.

``@tool`` reads the function once, at decoration: pydantic builds the JSON schema of the
arguments from the type hints and validates the model's arguments on every call; the
docstring gives the description (first paragraph) and per-argument descriptions (a
Google-style ``Args:`` section). A first parameter annotated ``ToolContext`` receives the
run's context and is not shown to the model.

``Tool`` itself is a plain record around an async handler, so tools that come with their
own JSON schema (an MCP server's, say) are built with ``Tool(name, description, schema,
handler)`` directly.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_json

from gateway.core.errors import ConfigError, ToolError


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a running tool may know about the run that called it."""

    session_key: str
    run_id: str
    workspace: Path
    channel: str = "cli"
    chat_id: str = "direct"
    sender_id: str = "user"
    deps: Mapping[str, object] = field(default_factory=dict)
    """App-provided dependencies (a Redis client, the scheduler…), by name."""


ToolHandler = Callable[[dict[str, Any], ToolContext], Awaitable[object]]
"""Receives the model's raw arguments and the context; returns the result (any JSON-able value)."""

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what the OpenAI API accepts


class Tool:
    """A named, described function the model can call. Immutable once built."""

    __slots__ = ("_handler", "_schema", "description", "name", "parameters")

    def __init__(
        self, name: str, description: str, parameters: dict[str, Any], handler: ToolHandler
    ) -> None:
        if not _TOOL_NAME.match(name):
            raise ValueError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
        self.name = name
        self.description = description
        self.parameters = parameters
        self._handler = handler
        function: dict[str, Any] = {"name": name, "parameters": parameters}
        if description:
            function["description"] = description
        self._schema: dict[str, Any] = {"type": "function", "function": function}

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r})"

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry. Built once and shared: do not mutate it."""
        return self._schema

    async def invoke(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        """Run the tool; its result as text. Any failure becomes a ``ToolError`` for the model."""
        try:
            result = await self._handler(arguments, ctx)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc
        if isinstance(result, str):
            return result
        return to_json(result, fallback=str).decode()


def truncate_result(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters plus a note, keeping its start and its end.

    The end is kept because that is where a command's error or a file's last lines are.
    """
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    omitted = len(text) - limit
    return f"{text[:head]}\n\n[... {omitted} characters omitted ...]\n\n{text[len(text) - tail :]}"


class ToolRegistry:
    """Tools by name, in the order they were added."""

    __slots__ = ("_schemas", "_tools")

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: list[dict[str, Any]] | None = None
        for item in tools:
            self.add(item)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        self._schemas = None

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def select(self, names: Iterable[str]) -> ToolRegistry:
        """A registry of just ``names`` (in that order); an unknown name is a ``ConfigError``."""
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self._tools]
        if unknown:
            known = ", ".join(self._tools) or "(none)"
            raise ConfigError(
                f"unknown tool(s) {', '.join(map(repr, unknown))}; available tools: {known}"
            )
        return ToolRegistry(self._tools[name] for name in wanted)

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list. Cached until the next ``add``: do not mutate it."""
        if self._schemas is None:
            self._schemas = [item.openai_schema() for item in self._tools.values()]
        return self._schemas

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    blocking: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    blocking: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a ``Tool`` of a function; use as ``@tool`` or ``@tool(name=..., blocking=True)``.

    ``blocking=True`` runs a sync function in a worker thread; other sync functions are
    called directly on the event loop, so they must be quick.
    """

    def build(function: Callable[..., Any]) -> Tool:
        return _function_tool(function, name, description, blocking)

    return build if fn is None else build(fn)


def _function_tool(
    fn: Callable[..., Any], name: str | None, description: str | None, blocking: bool
) -> Tool:
    tool_name = name or fn.__name__
    summary, arg_docs = parse_docstring(inspect.getdoc(fn))
    params = list(inspect.signature(fn).parameters.values())
    hints = typing.get_type_hints(fn, include_extras=True)
    wants_ctx = bool(params) and hints.get(params[0].name) is ToolContext
    if wants_ctx:
        params = params[1:]
    fields: dict[str, Any] = {}
    for index, param in enumerate(params):
        annotation = hints.get(param.name, Any)
        _check_parameter(tool_name, param, annotation)
        extra: dict[str, Any] = (
            {"description": arg_docs[param.name]} if param.name in arg_docs else {}
        )
        default = ... if param.default is inspect.Parameter.empty else param.default
        # Internal field names with the real name as alias: a parameter may be called
        # ``json`` or ``model_x`` without clashing with BaseModel's own attributes.
        fields[f"arg{index}"] = (annotation, Field(default, alias=param.name, **extra))
    model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    call = _caller(fn, wants_ctx, blocking, [p.name for p in params])
    handler = _validating_handler(tool_name, model, call)
    return Tool(
        tool_name, description or summary, _without_titles(model.model_json_schema()), handler
    )


def _check_parameter(tool_name: str, param: inspect.Parameter, annotation: object) -> None:
    where = f"tool {tool_name!r}, parameter {param.name!r}"
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
        raise TypeError(
            f"{where}: *args, **kwargs and positional-only parameters are not supported"
        )
    if annotation is ToolContext:
        raise TypeError(f"{where}: a ToolContext parameter must come first")


_Call = Callable[[ToolContext, dict[str, Any]], Awaitable[object]]


def _caller(fn: Callable[..., Any], wants_ctx: bool, blocking: bool, names: list[str]) -> _Call:
    """A coroutine function calling ``fn`` the right way, decided once rather than per call."""
    is_async = inspect.iscoroutinefunction(fn)
    if blocking and is_async:
        raise TypeError(f"tool {fn.__name__!r}: blocking=True applies to sync functions only")

    def bind(ctx: ToolContext, kwargs: dict[str, Any]) -> Any:
        return fn(ctx, **kwargs) if wants_ctx else fn(**kwargs)

    async def direct(ctx: ToolContext, kwargs: dict[str, Any]) -> object:
        result = bind(ctx, kwargs)
        return await result if is_async else result

    async def threaded(ctx: ToolContext, kwargs: dict[str, Any]) -> object:
        return await asyncio.to_thread(bind, ctx, kwargs)

    return threaded if blocking else direct


def _validating_handler(tool_name: str, model: type[BaseModel], call: _Call) -> ToolHandler:
    aliases = [(internal, info.alias or internal) for internal, info in model.model_fields.items()]

    async def handler(arguments: dict[str, Any], ctx: ToolContext) -> object:
        try:
            parsed = model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(describe_invalid_arguments(tool_name, exc)) from exc
        values = parsed.__dict__
        return await call(ctx, {alias: values[internal] for internal, alias in aliases})

    return handler


def describe_invalid_arguments(tool_name: str, exc: ValidationError) -> str:
    """One line naming each bad argument and what was wrong with it."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return f"invalid arguments for tool {tool_name!r}: " + "; ".join(problems)


def _without_titles(schema: Any) -> Any:
    """Drop pydantic's ``title`` keywords (noise to the model); keep properties so named."""
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            cleaned[key] = {prop: _without_titles(sub) for prop, sub in value.items()}
        else:
            cleaned[key] = _without_titles(value)
    return cleaned


_ARGS_HEADERS = frozenset({"Args:", "Arguments:", "Parameters:"})
_ARG_LINE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each argument's text from a Google-style ``Args:`` section."""
    if not doc:
        return "", {}
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or line.strip() in _ARGS_HEADERS:
            break
        summary.append(line.strip())
    args: dict[str, list[str]] = {}
    in_args = False
    current: str | None = None
    arg_indent = 0
    for line in lines:
        if line and not line[0].isspace():  # anything at the margin starts or ends a section
            in_args, current = line.rstrip() in _ARGS_HEADERS, None
            continue
        text = line.strip()
        if not in_args or not text:
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(text)
        if match and (current is None or indent <= arg_indent):
            current, arg_indent = match.group(1), indent
            args[current] = [match.group(2)]
        elif current is not None:
            args[current].append(text)
    return " ".join(summary), {name: " ".join(filter(None, parts)) for name, parts in args.items()}
