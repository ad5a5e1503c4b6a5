"""The @tool decorator (schema, docstring, context injection, calling) and the ToolRegistry."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from gateway.core.errors import ConfigError, ToolError
from gateway.core.tools import Tool, ToolContext, ToolRegistry, tool, truncate_result
from gateway.core.tools.base import parse_docstring

CTX = ToolContext(session_key="user:1", run_id="run-1", workspace=Path("/nonexistent"))


def params_of(t: Tool) -> dict[str, Any]:
    return t.openai_schema()["function"]["parameters"]  # type: ignore[no-any-return]


class Point(BaseModel):
    x: int
    y: int


@tool
def typed(
    text: str,
    count: int,
    ratio: float = 0.5,
    flag: bool = False,
    tags: list[str] | None = None,
    mode: Literal["fast", "slow"] = "fast",
    title: str = "",
    at: Point | None = None,
) -> str:
    """Exercise every kind of parameter.

    This second paragraph is not part of the description.

    Args:
        text: The text to use,
            described over two lines.
        count (int): How many times.
        flag: Whether to shout.

    Returns:
        Something that must not be read as a parameter.
    """
    return text * count


def test_schema_types_defaults_and_required() -> None:
    schema = params_of(typed)
    props = schema["properties"]
    assert schema["type"] == "object"
    assert schema["required"] == ["text", "count"]
    assert schema["additionalProperties"] is False
    assert props["text"]["type"] == "string"
    assert props["count"]["type"] == "integer"
    assert props["ratio"] == {"type": "number", "default": 0.5}
    assert props["flag"]["type"] == "boolean"
    assert props["flag"]["default"] is False
    assert props["tags"]["anyOf"] == [
        {"type": "array", "items": {"type": "string"}},
        {"type": "null"},
    ]
    assert props["tags"]["default"] is None
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert "$defs" in schema and "Point" in schema["$defs"]


def test_schema_has_no_generated_titles_but_keeps_a_property_named_title() -> None:
    schema = params_of(typed)
    assert "title" not in schema
    assert "title" in schema["properties"]
    assert all("title" not in prop for prop in schema["properties"].values())
    assert "title" not in schema["$defs"]["Point"]


def test_descriptions_come_from_the_docstring() -> None:
    function = typed.openai_schema()["function"]
    assert function["name"] == "typed"
    assert function["description"] == "Exercise every kind of parameter."
    props = function["parameters"]["properties"]
    assert props["text"]["description"] == "The text to use, described over two lines."
    assert props["count"]["description"] == "How many times."
    assert props["flag"]["description"] == "Whether to shout."
    assert "description" not in props["ratio"]
    assert "Returns" not in str(function)


def test_annotated_field_description_is_not_overwritten() -> None:
    @tool
    def limited(n: Annotated[int, Field(ge=1, description="from the annotation")] = 1) -> int:
        return n

    assert params_of(limited)["properties"]["n"] == {
        "type": "integer",
        "minimum": 1,
        "default": 1,
        "description": "from the annotation",
    }


def test_name_and_description_overrides() -> None:
    @tool(name="renamed", description="Given explicitly.")
    def original() -> str:
        """Docstring summary."""
        return "ok"

    assert original.name == "renamed"
    assert original.description == "Given explicitly."
    assert params_of(original)["properties"] == {}


def test_parameter_named_like_a_basemodel_attribute() -> None:
    @tool
    def clash(json: str, model_config: int = 0) -> str:
        return f"{json}:{model_config}"

    assert set(params_of(clash)["properties"]) == {"json", "model_config"}
    assert asyncio.run(clash.invoke({"json": "a", "model_config": 2}, CTX)) == "a:2"


async def test_context_is_injected_under_any_name_and_hidden_from_the_schema() -> None:
    @tool
    def whoami(context: ToolContext, greeting: str) -> str:
        return f"{greeting} {context.session_key} {context.run_id} {context.deps['x']}"

    ctx = ToolContext("chat:7", "run-9", Path("/w"), deps={"x": 42})
    assert list(params_of(whoami)["properties"]) == ["greeting"]
    assert await whoami.invoke({"greeting": "hi"}, ctx) == "hi chat:7 run-9 42"


async def test_sync_runs_on_the_loop_thread_and_blocking_in_a_worker_thread() -> None:
    @tool
    def inline() -> int:
        return threading.get_ident()

    @tool(blocking=True)
    def threaded() -> int:
        return threading.get_ident()

    loop_thread = threading.get_ident()
    assert await inline.invoke({}, CTX) == str(loop_thread)
    assert await threaded.invoke({}, CTX) != str(loop_thread)


async def test_async_function_and_argument_coercion() -> None:
    @tool
    async def add(a: int, b: int = 1) -> int:
        await asyncio.sleep(0)
        return a + b

    assert await add.invoke({"a": "2", "b": 3}, CTX) == "5"
    assert await add.invoke({"a": 2}, CTX) == "3"


async def test_results_become_text() -> None:
    @tool
    def result(kind: str) -> object:
        return {"str": "plain", "dict": {"a": [1, "é"]}, "none": None, "model": Point(x=1, y=2)}[
            kind
        ]

    assert await result.invoke({"kind": "str"}, CTX) == "plain"
    assert await result.invoke({"kind": "dict"}, CTX) == '{"a":[1,"é"]}'
    assert await result.invoke({"kind": "none"}, CTX) == "null"
    assert await result.invoke({"kind": "model"}, CTX) == '{"x":1,"y":2}'


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"count": 1}, "text: Field required"),
        ({"text": "a", "count": "many"}, "count: Input should be a valid integer"),
        ({"text": "a", "count": 1, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"text": "a", "count": 1, "mode": "medium"}, "mode: Input should be 'fast' or 'slow'"),
        ({"text": "a", "count": 1, "at": {"x": 1}}, "at.y: Field required"),
    ],
)
async def test_invalid_arguments_name_the_argument(
    arguments: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ToolError, match="invalid arguments for tool 'typed'") as caught:
        await typed.invoke(arguments, CTX)
    assert expected in str(caught.value)


async def test_tool_errors_pass_through_and_other_exceptions_are_wrapped() -> None:
    refusal = ToolError("refused on purpose")

    @tool
    def failing(kind: str) -> str:
        if kind == "tool":
            raise refusal
        raise ValueError("bad value")

    with pytest.raises(ToolError) as caught:
        await failing.invoke({"kind": "tool"}, CTX)
    assert caught.value is refusal
    with pytest.raises(ToolError, match=r"^ValueError: bad value$") as wrapped:
        await failing.invoke({"kind": "other"}, CTX)
    assert isinstance(wrapped.value.__cause__, ValueError)


async def test_cancellation_is_not_turned_into_a_tool_error() -> None:
    started = asyncio.Event()

    @tool
    async def waits_forever() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(waits_forever.invoke({}, CTX))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_unsupported_signatures_are_refused_at_decoration() -> None:
    def late_context(x: int, ctx: ToolContext) -> None:
        return None

    def varargs(*items: str) -> None:
        return None

    async def coroutine() -> None:
        return None

    with pytest.raises(TypeError, match="must come first"):
        tool(late_context)
    with pytest.raises(TypeError, match="not supported"):
        tool(varargs)
    with pytest.raises(TypeError, match="sync functions only"):
        tool(blocking=True)(coroutine)
    with pytest.raises(ValueError, match="1-64 letters"):
        tool(name="has space")(coroutine)


async def test_a_tool_built_from_a_raw_schema_and_handler() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(arguments: dict[str, Any], ctx: ToolContext) -> object:
        seen.append(arguments)
        return [ctx.chat_id]

    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    remote = Tool("remote_search", "", schema, handler)
    assert remote.openai_schema() == {
        "type": "function",
        "function": {"name": "remote_search", "parameters": schema},
    }
    assert await remote.invoke({"q": "x"}, CTX) == '["direct"]'
    assert seen == [{"q": "x"}]


def make_tool(name: str) -> Tool:
    @tool(name=name)
    def anything() -> str:
        return name

    return anything


def test_registry_basics_and_cached_schemas() -> None:
    first, second = make_tool("first"), make_tool("second")
    registry = ToolRegistry([first])
    schemas = registry.schemas()
    assert registry.schemas() is schemas
    registry.add(second)
    assert registry.schemas() == [first.openai_schema(), second.openai_schema()]
    assert registry.names() == ["first", "second"]
    assert registry.get("second") is second
    assert registry.get("third") is None
    assert "first" in registry and "third" not in registry
    assert len(registry) == 2
    assert list(registry) == [first, second]
    with pytest.raises(ValueError, match="'first' is already registered"):
        registry.add(make_tool("first"))


def test_registry_select() -> None:
    registry = ToolRegistry(make_tool(name) for name in ("a", "b", "c"))
    subset = registry.select(["c", "a", "c"])
    assert subset.names() == ["c", "a"]
    assert len(registry) == 3
    with pytest.raises(ConfigError) as caught:
        registry.select(["a", "shell", "web"])
    message = str(caught.value)
    assert "'shell', 'web'" in message
    assert "available tools: a, b, c" in message


def test_truncate_result_keeps_start_and_end() -> None:
    assert truncate_result("short", 10) == "short"
    text = "H" * 500 + "M" * 1000 + "T" * 500
    cut = truncate_result(text, 300)
    assert cut.startswith("H" * 200)
    assert cut.endswith("T" * 100)
    assert "[... 1700 characters omitted ...]" in cut
    assert len(cut) < 360


def test_parse_docstring_edge_cases() -> None:
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("One line.") == ("One line.", {})
    summary, args = parse_docstring(
        "Summary that\nwraps.\n\nArgs:\n    *names: Several.\n    **opts (dict): More.\n"
        "        Indented continuation.\n\nRaises:\n    ValueError: not an arg."
    )
    assert summary == "Summary that wraps."
    assert args == {"names": "Several.", "opts": "More. Indented continuation."}
