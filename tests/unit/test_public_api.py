"""The public surface: ``gateway.__all__`` is exactly what seed 000 and our docs promise."""

from __future__ import annotations

import types

import gateway
from gateway.core.events import STREAM_EVENT_TYPES

SEED_NAMES = {
    "Bot",
    "RunResult",
    "RunStream",
    "StreamEvent",
    "AgentHook",
    "AgentHookContext",
    "STREAM_EVENT_TYPES",
    "STREAM_EVENT_RUN_STARTED",
    "STREAM_EVENT_TEXT_DELTA",
    "STREAM_EVENT_TEXT_COMPLETED",
    "STREAM_EVENT_REASONING_DELTA",
    "STREAM_EVENT_REASONING_COMPLETED",
    "STREAM_EVENT_TOOL_STARTED",
    "STREAM_EVENT_TOOL_COMPLETED",
    "STREAM_EVENT_TOOL_FAILED",
    "STREAM_EVENT_RUN_COMPLETED",
    "STREAM_EVENT_RUN_FAILED",
}


def test_all_is_sorted_unique_and_importable() -> None:
    names = gateway.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(gateway, name) is not None, name


def test_seed_surface_is_exported() -> None:
    assert set(gateway.__all__) >= SEED_NAMES


def test_no_private_names_leak() -> None:
    # Submodules become attributes once any test imports them: they are not leaks.
    public = {
        n
        for n in dir(gateway)
        if not n.startswith("_") and not isinstance(getattr(gateway, n), types.ModuleType)
    }
    assert public - {"annotations"} <= set(gateway.__all__)


def test_stream_event_constants() -> None:
    values = {
        getattr(gateway, n)
        for n in SEED_NAMES
        if n.startswith("STREAM_EVENT_") and n != "STREAM_EVENT_TYPES"
    }
    assert values == set(STREAM_EVENT_TYPES) and len(values) == 10
    assert gateway.STREAM_EVENT_TEXT_DELTA == "text.delta"


def test_exception_tree() -> None:
    for name in ("ConfigError", "ProviderError", "ToolError", "SessionError", "BusError"):
        assert issubclass(getattr(gateway, name), gateway.GatewayError)
    assert issubclass(gateway.WorkspaceEscapeError, gateway.ToolError)
    assert issubclass(gateway.RetryableProviderError, gateway.ProviderError)
    assert issubclass(gateway.LeaseLostError, gateway.BusError)
