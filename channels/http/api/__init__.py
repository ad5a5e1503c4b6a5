"""The agent HTTP API: agents, sessions, pipelines, OpenAI-compatible routes, OpenAPI.

``mount_api(app, redis, settings)`` adds every route (and the per-key rate limit)
to the gateway's aiohttp application. Every request that runs an agent publishes
a message on the bus and follows the run that answers it (``runs``): the agent
loop runs in the workers, never in the HTTP process.
"""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from core.settings import Settings

from .agents import AgentRoutes
from .context import ApiContext
from .openai_compat import OpenAIRoutes
from .pipelines import PipelineRoutes, check_pipelines

__all__ = ["mount_api"]

CONTEXT_KEY = web.AppKey("agent_api", ApiContext)


def mount_api(app: web.Application, redis: Redis, settings: Settings) -> None:
    check_pipelines(settings)
    ctx = ApiContext(redis, settings)
    app[CONTEXT_KEY] = ctx
    app.add_routes(
        [*AgentRoutes(ctx).routes(), *PipelineRoutes(ctx).routes(), *OpenAIRoutes(ctx).routes()]
    )

    async def close(_: web.Application) -> None:
        await ctx.close()

    app.on_shutdown.append(close)
