"""Responses serialized from the API's pydantic models."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel


def json_response(model: BaseModel, *, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )
