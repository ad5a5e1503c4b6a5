"""The agent HTTP API: agents, sessions, pipelines, OpenAI-compatible routes, OpenAPI.

``mount_api(app, redis, settings, metrics)`` adds every route (and the per-key rate limit)
to the gateway's aiohttp application. Every request that runs an agent publishes
a message on the bus and follows the run that answers it (``runs``): the agent
loop runs in the workers, never in the HTTP process.
"""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from gateway.channels.http.ingress import IngressMetrics
from gateway.core.settings import Settings

from .agents import AgentRoutes
from .context import ApiContext
from .openai_compat import OpenAIRoutes
from .openapi import OpenApiRoute
from .pipelines import PipelineRoutes, check_pipelines
from .ratelimit import rate_limit_middleware

__all__ = ["mount_api"]

CONTEXT_KEY = web.AppKey("agent_api", ApiContext)


def mount_api(
    app: web.Application, redis: Redis, settings: Settings, metrics: IngressMetrics | None = None
) -> None:
    check_pipelines(settings)
    ctx = ApiContext(redis, settings, metrics)
    app[CONTEXT_KEY] = ctx
    app.add_routes(
        [
            *AgentRoutes(ctx).routes(),
            *PipelineRoutes(ctx).routes(),
            *OpenAIRoutes(ctx).routes(),
            *OpenApiRoute().routes(),
        ]
    )

    async def close(_: web.Application) -> None:
        await ctx.close()

    app.on_shutdown.append(close)
    if settings.http.rate_limit is not None:
        # Appended last: it runs after the API-key check, so only valid keys spend tokens.
        app.middlewares.append(rate_limit_middleware(redis, settings.http.rate_limit))
