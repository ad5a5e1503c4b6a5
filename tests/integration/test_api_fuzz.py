"""Property-based fuzzing of every route in ``/openapi.json``: no 5xx, ever.

Bodies are arbitrary JSON, or objects with the route's own field names holding
arbitrary values (so validation is reached past the outer shape); path segments
are arbitrary text. A running worker answers the requests that are valid.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.channels.http.api.openapi import OPERATIONS, Op
from tests.fakes.live_gateway import API_KEY, LiveGateway, live_gateway  # noqa: F401
from tests.fakes.redis_server import redis_server, redis_url  # noqa: F401

pytestmark = pytest.mark.integration

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(
        ["", "assistant", "agent/assistant", "user", "\ud800", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SEGMENTS = st.text(max_size=20) | st.sampled_from(["assistant", "research-and-summarize", "runs"])
FUZZED = [op for op in OPERATIONS if op.path.startswith("/v1/") and not op.path.endswith("/events")]
"""``/v1/sessions/{key}/events`` follows a live stream (its own tests cover it)."""


def body_for(op: Op) -> st.SearchStrategy[Any]:
    if op.body is None:
        return st.none()
    fields = {name: JSON for name in op.body.model_fields}
    shaped = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(JSON, shaped)


def fill(path: str, segments: list[str]) -> str:
    parts = iter(segments)
    return re.sub(r"\{\w+\}", lambda _: quote(next(parts), safe="") or "x", path)


@st.composite
def requests(draw: st.DrawFn) -> tuple[Op, str, Any]:
    op = draw(st.sampled_from(FUZZED))
    holes = len(re.findall(r"\{\w+\}", op.path))
    path = fill(op.path, draw(st.lists(SEGMENTS, min_size=holes, max_size=holes)))
    query = draw(st.dictionaries(st.sampled_from(["limit", "agent", "wait"]), SEGMENTS, max_size=2))
    if query:
        path += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return op, path, draw(body_for(op))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_no_route_answers_5xx(live_gateway: LiveGateway, request: tuple[Op, str, Any]) -> None:
    op, path, body = request
    content = None if body is None else json.dumps(body).encode()
    with httpx.Client(base_url=live_gateway.url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
        response = c.request(op.method, path, content=content)
        text = response.read().decode("utf-8", "replace")
    assert response.status_code < 500, (op.method, path, body, text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"}, text
